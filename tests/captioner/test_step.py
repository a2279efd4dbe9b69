"""The `caption` step on a real lake: which clips it selects, the columns and failure rows it writes, how
it resumes, and its cross-checks; the signals backend (the offline default), a scripted loopback server
that misbehaves, and the real vLLM server with the tiny random-init VLM."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from caption_helpers import HANG, FakeOpenAI, completion, valid_caption

from captioner.checks import cross_check
from captioner.schema import Caption, parse_caption
from captioner.step import CaptionStep
from curation.lake import Lake
from curation.query import query
from curation.runner import run_pipeline

TIER_256P = ("not coalesce(is_duplicate, false) and least(width, height) >= 256 and duration_clip_s >= 2 "
             "and clarity >= 10 and motion >= 0.002 and coalesce(text_area, 0) <= 0.10")


@pytest.fixture(scope="module")
def default_lake(ray_local, demo_videos, tmp_path_factory) -> str:
    """The demo videos through the default pipeline (signals captions for tier 256p)."""
    root = str(tmp_path_factory.mktemp("caption") / "lake")
    run_pipeline("default", [os.path.dirname(demo_videos[0].path)], root, progress=False)
    return root


@pytest.fixture
def lake(default_lake, tmp_path) -> Lake:
    shutil.copytree(default_lake, tmp_path / "lake")
    return Lake(str(tmp_path / "lake"))


def _clips(lake, where="true"):
    return query(lake, f"select * from clips where {where} order by clip_id").to_pylist()


def test_default_pipeline_captions_the_256p_clips_from_the_measurements(default_lake):
    rows = _clips(default_lake)
    selected = {r["clip_id"] for r in _clips(default_lake, TIER_256P)}
    assert selected and len(selected) < len(rows)  # some clips are outside the tier: skipped, not captioned
    for r in rows:
        if r["clip_id"] not in selected:
            assert r["caption_status"] == "skipped" and r["caption"] is None
            continue
        assert r["caption_status"] == "ok" and r["caption_flags"] == []
        cap = Caption.model_validate_json(r["caption"])
        confident = r["camera_motion"] is not None and r["camera_motion_confidence"] >= 0.6
        assert cap.camera_movement == (r["camera_motion"] if confident else None)
        assert cap.short_description is None  # no VLM: its fields stay null
        assert json.loads(r["caption_source"])["backend"] == "signals"
    tier = query(default_lake, "select clip_id, caption from tiers_256p order by clip_id").to_pylist()
    assert {t["clip_id"] for t in tier} == selected and all(t["caption"] for t in tier)  # tiers carry captions


def test_a_rerun_captions_nothing_and_a_new_backend_recaptions(lake, monkeypatch):
    again = CaptionStep({"backend": "signals"}).run(lake)
    assert again["captioned"] == 0 and again["up_to_date"] == again["selected"] > 0
    with FakeOpenAI(lambda body, n: completion(valid_caption())) as server:
        out = CaptionStep({"backend": "server", "url": server.base_url, "frames": 3}).run(lake)
        assert out["captioned"] == out["selected"] and out["up_to_date"] == 0  # another backend and model
        sent = server.bodies[0]["messages"][0]["content"]
        assert [p["type"] for p in sent] == ["image_url"] * 3 + ["text"]
        assert "Measurements made on this clip" in sent[-1]["text"]
        assert CaptionStep({"backend": "server", "url": server.base_url, "frames": 3}).run(lake)["captioned"] == 0
    for r in _clips(lake, TIER_256P):
        src = json.loads(r["caption_source"])
        assert src["backend"] == "openai_server" and src["model"] == "fake" and len(src["frame_indices"]) == 3
        assert r["start_frame"] <= min(src["frame_indices"]) and max(src["frame_indices"]) < r["end_frame"]
        assert parse_caption(r["caption"]).short_description  # a complete caption


def test_a_failing_server_leaves_failure_rows_and_a_rerun_finishes(lake):
    """Every other request a 500 (after the retries), one hang past the deadline, one not JSON: each clip
    ends ok or failed with its kind and a failures row; a rerun against a good server finishes them all."""
    def flaky(body, n):
        user = body["messages"][-1]["content"][-1]["text"]
        key = sum(map(ord, user)) % 4  # the same clip misbehaves the same way on every retry
        return {0: completion(valid_caption()), 1: (500, {"error": "down"}), 2: HANG, 3: "{not json"}[key]

    with FakeOpenAI(flaky) as server:
        out = CaptionStep({"backend": "server", "url": server.base_url, "frames": 2, "timeout_s": 1,
                           "retries": 1}).run(lake)
    rows = _clips(lake, TIER_256P)
    assert out["captioned"] + out["failed"] == out["selected"] == len(rows) and out["failed"] > 0
    fails = query(lake, "select clip_id, kind, attempt, message from failures where stage = 'caption'").to_pylist()
    by_clip = {f["clip_id"]: f for f in fails}
    for r in rows:
        if r["caption_status"] == "failed":
            assert r["caption"] is None and by_clip[r["clip_id"]]["kind"] in ("server_error", "timeout")
            assert by_clip[r["clip_id"]]["attempt"] == 1
        else:
            assert r["caption_status"] == "ok" and r["clip_id"] not in by_clip
    with FakeOpenAI(lambda body, n: completion(valid_caption())) as server:
        out = CaptionStep({"backend": "server", "url": server.base_url, "frames": 2}).run(lake)
    assert out["captioned"] == len(by_clip) and out["up_to_date"] == len(rows) - len(by_clip)
    assert all(r["caption_status"] == "ok" for r in _clips(lake, TIER_256P))
    assert query(lake, "select count(*) n from failures where stage = 'caption'").to_pylist()[0]["n"] == len(fails)


def test_an_invalid_answer_is_repaired_once_then_recorded_with_the_raw_text(lake):
    with FakeOpenAI(lambda body, n: completion('{"short_description": "x"')) as server:
        out = CaptionStep({"backend": "server", "url": server.base_url, "frames": 2, "select": "true",
                           "tier": None}).run(lake)
        assert len(server.bodies) == 2 * out["selected"]  # one repair attempt each
    fails = query(lake, "select kind, message from failures where stage = 'caption'").to_pylist()
    assert out["failed"] == out["selected"] == len(fails) == len(_clips(lake))
    assert all(f["kind"] == "invalid_caption" and 'raw answer: {"short_description": "x"' in f["message"]
               for f in fails)


def test_cross_checks_flag_disagreements_with_the_measurements():
    cap = Caption(camera_movement="pan left", text_in_frame="", shot_type="long shot")
    row = {"camera_motion": "pan right", "camera_motion_confidence": 0.9, "text_area": 0.2, "motion": 0.05}
    assert cross_check(cap, row) == ["camera_disagrees", "text_missed"]
    assert cross_check(cap, {**row, "camera_motion_confidence": 0.3, "text_area": 0.0}) == []  # not confident
    assert cross_check(Caption(camera_movement="tilt up"), {**row, "camera_motion": "pan up"}) == []  # same look
    assert cross_check(Caption(camera_movement="static shot"), {"motion": 0.05}) == ["static_disagrees"]
    assert cross_check(Caption(camera_movement="zoom in"), {"motion": 0.0}) == ["static_disagrees"]
    assert cross_check(Caption(text_in_frame="OPEN"), {"text_area": 0.0}) == ["text_invented"]
    assert cross_check(Caption(), row) == []  # null fields raise no flag


def test_the_selection_is_checked_at_load_and_names_the_fix():
    from curation.errors import ConfigError
    from curation.pipeline import load_pipeline

    with pytest.raises(ConfigError, match="backend vllm needs a model"):
        CaptionStep({"backend": "vllm"}).validate()
    with pytest.raises(ConfigError, match="backend server needs params.url"):
        CaptionStep({"backend": "server"}).validate()
    with pytest.raises(ConfigError, match="tier '9000p' is not in tier spec"):
        CaptionStep({"tier": "9000p"}).validate()
    with pytest.raises(ConfigError, match="parameter 'frames' expects int >= 1"):
        load_pipeline("default", ["caption.frames=0"]).build()


def test_real_vllm_server_captions_every_selected_clip_schema_valid(lake, vllm_server):
    out = CaptionStep({"backend": "server", "url": vllm_server.base_url, "frames": 4, "max_side": 64,
                       "timeout_s": 120}).run(lake)
    assert out["captioned"] == out["selected"] > 0 and out["failed"] == 0
    for r in _clips(lake, TIER_256P):
        assert r["caption_status"] == "ok" and not parse_caption(r["caption"]).missing()
        assert json.loads(r["caption_source"])["model"] == vllm_server.model


def test_real_vllm_offline_engine_pool_captions_through_the_step(lake, vllm_python, tiny_model):
    out = CaptionStep({"backend": "vllm", "model": tiny_model, "python": vllm_python, "num_gpus": 0,
                       "frames": 4, "max_side": 64, "dtype": "float32", "enforce_eager": True,
                       "max_model_len": 4096}).run(lake)
    assert out["captioned"] == out["selected"] > 0 and out["failed"] == 0
    sources = {json.loads(r["caption_source"])["backend"] for r in _clips(lake, TIER_256P)}
    assert sources == {"vllm"}


def test_an_unreachable_server_is_a_clear_error_before_any_clip(lake):
    from captioner.server import free_port
    from curation.errors import ConfigError

    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ConfigError, match="cannot list the models of .*is the server up"):
        CaptionStep({"backend": "server", "url": url, "timeout_s": 2, "retries": 0}).run(lake)
    assert query(lake, "select count(*) n from clips where caption_source like '%openai%'").to_pylist()[0]["n"] == 0
