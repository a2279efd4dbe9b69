"""Tiers: nested SQL selections over clips with known scores, a funnel of drops, crop suggestions."""

from __future__ import annotations

import pyarrow as pa
import pytest
import yaml

from curation.errors import ConfigError
from curation.lake import Lake
from curation.query import query
from curation.tiers import TierStep, load_specs

SPEC = {"tiers": [
    {"name": "low", "filters": {"unique": "not is_duplicate", "res": "least(width, height) >= 256",
                                "sharp": "clarity >= 10"}},
    {"name": "high", "parent": "low", "filters": {"res": "least(width, height) >= 720",
                                                  "text": "coalesce(text_area, 0) <= 0.02"}},
    {"name": "sft", "parent": "high", "requires": ["aesthetic"], "filters": {"pretty": "aesthetic >= 5"}},
]}

CLIPS = [  # clip_id, width, height, clarity, text_area, is_duplicate, content_box, subtitle_box
    ("a", 1920, 1080, 50.0, 0.0, False, [0, 140, 1920, 940], None),  # letterboxed: high
    ("b", 1280, 720, 30.0, 0.10, False, None, [0.2, 0.85, 0.8, 0.95]),  # too much text for high; subtitles
    ("c", 640, 360, 5.0, 0.0, False, None, None),  # blurry: dropped from low
    ("d", 1920, 1080, 60.0, None, True, None, None),  # duplicate: dropped from low
    ("e", 320, 240, 40.0, 0.0, False, None, None),  # too small for low
    ("f", 1280, 720, None, 0.0, False, None, None),  # clarity failed (NULL): dropped
    ("g", 1080, 1920, 45.0, 0.01, False, None, None),  # portrait 1080x1920: high
]


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(tmp_path / "lake")
    cols = list(zip(*CLIPS))
    lake.append("clips", pa.table({
        "clip_id": pa.array(cols[0]), "uri": pa.array([f"/v/{c}.mp4" for c in cols[0]]),
        "width": pa.array(cols[1], pa.int32()), "height": pa.array(cols[2], pa.int32()),
        "clarity": pa.array(cols[3], pa.float32()), "text_area": pa.array(cols[4], pa.float32()),
        "is_duplicate": pa.array(cols[5]), "content_box": pa.array(cols[6], pa.list_(pa.int32(), 4)),
        "subtitle_box": pa.array(cols[7], pa.list_(pa.float32(), 4)),
        "embedding": pa.array([[0.0, 1.0]] * len(CLIPS), pa.list_(pa.float32(), 2)),
    }))
    return lake


@pytest.fixture
def spec(tmp_path) -> str:
    path = tmp_path / "tiers.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return str(path)


def _ids(lake: Lake, tier: str) -> list[str]:
    return [r["clip_id"] for r in query(lake, f'select clip_id from "tiers/{tier}" order by 1').to_pylist()]


def test_tiers_nest_and_report_the_funnel(lake, spec):
    result = TierStep({"spec": spec}).run(lake)
    assert _ids(lake, "low") == ["a", "b", "g"]
    assert _ids(lake, "high") == ["a", "g"]
    assert not lake.exists("tiers/sft")
    t = result["tiers"]
    assert t["low"] == {"from": 7, "clips": 3, "dropped_by": {"unique": 1, "res": 1, "sharp": 2}}
    assert t["high"] == {"from": 3, "clips": 2, "dropped_by": {"res": 0, "text": 1}}
    assert "aesthetic" in t["sft"]["skipped"]
    assert "embedding" not in lake.dataset("tiers/low").schema.names  # join clips for it
    assert query(lake, "select count(*) as n from tiers_high").to_pylist() == [{"n": 2}]  # alias view


def test_crop_suggestion_leaves_bars_and_subtitles_out(lake, spec):
    TierStep({"spec": spec}).run(lake)
    crops = {r["clip_id"]: (r["crop_x0"], r["crop_y0"], r["crop_x1"], r["crop_y1"]) for r in query(
        lake, 'select clip_id, crop_x0, crop_y0, crop_x1, crop_y1 from "tiers/low"').to_pylist()}
    assert crops["a"] == (0, 140, 1920, 940)  # inside the letterbox
    assert crops["b"] == (0, 0, 1280, 612)  # above the subtitle band (0.85 * 720)
    assert crops["g"] == (0, 0, 1080, 1920)


def test_retiering_with_new_thresholds_recomputes_nothing_and_replaces(lake, spec, tmp_path):
    TierStep({"spec": spec}).run(lake)
    clips_version = lake.dataset("clips").version
    stricter = yaml.safe_load(open(spec))
    stricter["tiers"][0]["filters"]["sharp"] = "clarity >= 35"
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(stricter))
    TierStep({"spec": str(path)}).run(lake)
    assert _ids(lake, "low") == ["a", "g"]
    assert lake.dataset("clips").version == clips_version  # scores untouched


def test_requires_and_bad_specs(lake, spec, tmp_path):
    lake.merge_columns("clips", pa.table({"clip_id": ["a", "g"], "aesthetic": pa.array([6.0, 4.0], pa.float32())}),
                       on="clip_id")
    TierStep({"spec": spec}).run(lake)
    assert _ids(lake, "sft") == ["a"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tiers": [{"name": "x", "filters": {"f": "no_such_column > 1"}}]}))
    with pytest.raises(ConfigError, match="tier 'x'"):
        TierStep({"spec": str(bad)}).run(lake)
    bad.write_text(yaml.safe_dump({"tiers": [{"name": "x", "parent": "y", "filters": {"f": "true"}}]}))
    with pytest.raises(ConfigError, match="parent 'y'"):
        TierStep({"spec": str(bad)})


def test_bundled_spec_is_valid():
    names = [s.name for s in load_specs("tiers")]
    assert names == ["256p", "360p", "540p", "720p", "sft"]
