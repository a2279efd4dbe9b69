"""Fixtures for the captioner tests: the vLLM environment (built once and cached by ensure_vllm_env, or
$VIDEOCURATE_VLLM_PYTHON), the tiny random-init VLM built offline, one vLLM server per session on
loopback, and one offline engine in a Ray actor. Helpers live in caption_helpers.py."""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests run with --import-mode=importlib: put this folder on sys.path for the caption_helpers module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402

TIMES: dict[str, float] = {}


@pytest.fixture(scope="session")
def vllm_python() -> str:
    from captioner.vllm_env import ensure_vllm_env

    start = time.monotonic()
    python = ensure_vllm_env()
    TIMES["vllm_env_s"] = time.monotonic() - start
    return python


@pytest.fixture(scope="session")
def tiny_model(vllm_python, tmp_path_factory) -> str:
    from captioner.server import build_tiny

    out = str(tmp_path_factory.mktemp("tiny_vlm"))
    start = time.monotonic()
    build_tiny(out, vllm_python)
    TIMES["tiny_model_s"] = time.monotonic() - start
    return out


@pytest.fixture(scope="session")
def vllm_server(vllm_python, tiny_model):
    from captioner.server import VLLMServer

    with VLLMServer(tiny_model, python=vllm_python) as server:
        TIMES["server_start_s"] = server.startup_s
        yield server


@pytest.fixture(scope="module")  # the actor holds a CPU of the session's 2-CPU Ray: give it back after
def engine_actor(vllm_python, tiny_model, ray_local):
    from captioner.engine_actor import ActorCaptioner
    from captioner.offline import EngineConfig

    config = EngineConfig(tiny_model, dtype="float32", enforce_eager=True, max_tokens=1024)
    start = time.monotonic()
    with ActorCaptioner(config, python=vllm_python) as actor:
        TIMES["engine_actor_start_s"] = time.monotonic() - start
        yield actor


def pytest_terminal_summary(terminalreporter):
    if TIMES:
        terminalreporter.write_line("captioner set-up times: " + ", ".join(f"{k}={v:.1f}" for k, v in TIMES.items()))
