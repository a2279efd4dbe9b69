"""The server backend against a real HTTP server on loopback that misbehaves on purpose: every request
ends ok or failed with a kind, within a bounded time, and the one repair attempt happens."""

from __future__ import annotations

import json
import time

from caption_helpers import HANG, FakeOpenAI, completion, requests, valid_caption

from captioner.openai_backend import ServerCaptioner, ServerConfig
from captioner.schema import parse_caption


def _run(fake: FakeOpenAI, n: int = 4, **cfg):
    config = ServerConfig(fake.base_url, **{"timeout_s": 5.0, "retries": 2, "backoff_s": 0.05, **cfg})
    start = time.monotonic()
    results = ServerCaptioner(config).caption_batch(requests(n, k=2))
    return results, time.monotonic() - start


def test_valid_answers_and_what_is_sent():
    with FakeOpenAI(lambda body, n: completion(valid_caption())) as fake:
        results, _ = _run(fake)
    assert [r.status for r in results] == ["ok"] * 4 and [r.attempts for r in results] == [1] * 4
    assert [r.clip_id for r in results] == [r.clip_id for r in requests(4, k=2)]
    assert parse_caption(results[0].caption).shot_type == "close-up shot"
    assert results[0].source["model"] == "fake" and results[0].source["schema_version"] == "1"
    body = fake.bodies[0]
    assert body["response_format"]["type"] == "json_schema"
    assert "maxLength" not in json.dumps(body["response_format"]["json_schema"]["schema"])
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_garbage_then_valid_is_repaired_with_the_validation_error():
    def respond(body, n):
        repair = len(body["messages"]) > 1
        return completion(valid_caption() if repair else '{"short_description": "a cat", "shot_type": 7}')

    with FakeOpenAI(respond) as fake:
        results, _ = _run(fake)
    assert all(r.status == "ok" and r.attempts == 2 for r in results)
    assert len(fake.bodies) == 8
    repair = next(b for b in fake.bodies if len(b["messages"]) > 1)
    assert [m["role"] for m in repair["messages"]] == ["user", "assistant", "user"]
    assert "shot_type" in repair["messages"][2]["content"][0]["text"]
    assert results[0].prompt_tokens == 22 and results[0].completion_tokens == 14  # both attempts counted


def test_garbage_twice_fails_as_invalid_caption_with_the_raw_text_kept():
    with FakeOpenAI(lambda body, n: completion("not json at all {{{")) as fake:
        results, _ = _run(fake)
    for r in results:
        assert (r.status, r.error_kind, r.attempts, r.raw, r.caption) == ("failed", "invalid_caption", 2,
                                                                          "not json at all {{{", None)
        assert "not valid JSON" in r.error and "repair" in r.error


def test_truncated_answers_are_invalid_not_parsed():
    with FakeOpenAI(lambda body, n: completion(valid_caption(), finish_reason="length")) as fake:
        results, _ = _run(fake, n=2)
    assert all(r.error_kind == "invalid_caption" and "max_tokens" in r.error for r in results)
    assert all(r.finish_reason == "length" and r.raw == valid_caption() for r in results)


def test_a_hanging_server_gives_timeouts_within_the_deadline():
    with FakeOpenAI(lambda body, n: HANG) as fake:
        results, seconds = _run(fake, n=6, timeout_s=1.0, concurrency=3)
    assert [r.error_kind for r in results] == ["timeout"] * 6 and all(r.status == "failed" for r in results)
    assert seconds < 6  # two waves of 1 s deadlines, no retries of timeouts
    assert len(fake.bodies) == 6


def test_5xx_is_retried_with_backoff_then_server_error():
    with FakeOpenAI(lambda body, n: (503, {"error": {"message": "overloaded"}})) as fake:
        results, seconds = _run(fake, n=2, retries=2, backoff_s=0.2)
    assert [r.error_kind for r in results] == ["server_error"] * 2
    assert len(fake.bodies) == 6 and seconds >= 0.6  # 3 attempts each, sleeping 0.2 then 0.4 s
    assert "503" in results[0].error and "3 attempts" in results[0].error


def test_transient_5xx_recovers():
    def respond(body, n):
        return (500, {"error": {"message": "boom"}}) if n < 2 else completion(valid_caption())

    with FakeOpenAI(respond) as fake:
        results, _ = _run(fake, n=2, concurrency=1)
    assert [r.status for r in results] == ["ok", "ok"]


def test_4xx_and_non_openai_bodies():
    with FakeOpenAI(lambda body, n: (400, {"error": {"message": "prompt too long"}})) as fake:
        results, _ = _run(fake, n=2)
    assert [r.error_kind for r in results] == ["request_error"] * 2 and len(fake.bodies) == 2
    with FakeOpenAI(lambda body, n: (200, b"<html>proxy error</html>")) as fake:
        results, _ = _run(fake, n=2)
    assert [r.error_kind for r in results] == ["server_error"] * 2 and "JSONDecodeError" in results[0].error
    with FakeOpenAI(lambda body, n: {"unexpected": True}) as fake:
        results, _ = _run(fake, n=2)
    assert [r.error_kind for r in results] == ["server_error"] * 2


def test_nothing_listening_is_a_server_error_quickly():
    from captioner.server import free_port

    config = ServerConfig(f"http://127.0.0.1:{free_port()}/v1", model="m", timeout_s=5, retries=1, backoff_s=0.05)
    start = time.monotonic()
    results = ServerCaptioner(config).caption_batch(requests(3, k=1))
    assert [r.error_kind for r in results] == ["server_error"] * 3 and time.monotonic() - start < 5
