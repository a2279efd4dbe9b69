"""Tier calibration: thresholds fitted to each tier's keep share on known score distributions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import yaml

from curation.calibrate import calibrate, movable_bounds, write_spec
from curation.cli import main
from curation.lake import Lake
from curation.query import query
from curation.tiers import load_specs

N = 1000


@pytest.fixture
def lake(tmp_path) -> Lake:
    """1000 clips: clarity 0..99.9 in steps of 0.1 (shuffled), text_area 0 for 80 % and 0.01..0.2 for the
    rest, 30 % of clips 1280x720, the rest 320x240; concept_rank an integer cap."""
    rng = np.random.default_rng(0)
    clarity = rng.permutation(np.arange(N) / 10.0)
    text = np.where(np.arange(N) % 5 == 0, np.linspace(0.01, 0.2, N), 0.0)
    big = np.arange(N) % 10 < 3
    lake = Lake(tmp_path / "lake")
    lake.append("clips", pa.table({
        "clip_id": [f"c{i:04d}" for i in range(N)], "uri": [f"/v/{i}.mp4" for i in range(N)],
        "width": pa.array(np.where(big, 1280, 320), pa.int32()),
        "height": pa.array(np.where(big, 720, 240), pa.int32()),
        "duration_clip_s": pa.array(np.full(N, 4.0)),
        "clarity": pa.array(clarity, pa.float32()), "text_area": pa.array(text, pa.float32()),
        "motion": pa.array(rng.uniform(0, 0.2, N), pa.float32()),
        "concept_rank": pa.array(np.arange(N) % 50, pa.int32()),
        "is_duplicate": pa.array(np.zeros(N, bool)),
    }))
    return lake


def _spec(tmp_path, tiers: list[dict]) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"tiers": tiers}))
    return str(path)


def test_which_filters_move():
    scores = {"clarity", "text_area", "motion", "aesthetic"}
    assert [(b.op, b.value) for b in movable_bounds("s", "clarity >= 10", scores)] == [(">=", 10.0)]
    assert [(b.expr, b.op) for b in movable_bounds("t", "coalesce(text_area, 0) <= 0.05", scores)] == \
        [("coalesce(text_area, 0)", "<=")]
    assert [(b.op, b.value) for b in movable_bounds("m", "motion between 0.004 and 0.6", scores)] == \
        [(">=", 0.004), ("<=", 0.6)]
    for fixed in ("least(width, height) >= 256", "duration_clip_s >= 2", "not is_duplicate",
                  "camera_motion <> 'handheld shot'", "clarity >= 10 and motion > 0", "concept_rank < 2000"):
        assert movable_bounds("x", fixed, scores) == [], fixed


def test_one_threshold_lands_on_the_quantile(lake, tmp_path):
    spec = _spec(tmp_path, [{"name": "a", "keep": 0.25, "filters": {
        "unique": "not is_duplicate", "sharp": "clarity >= 10"}}])
    specs, (r,) = calibrate(lake, spec)
    assert r.status == "calibrated" and r.parent_clips == N
    assert specs[0].filters["sharp"] == "clarity >= 75"  # the top quarter of 0..99.9
    assert r.kept == 250 and specs[0].filters["unique"] == "not is_duplicate"
    assert specs[0].calibration["original_filters"]["sharp"] == "clarity >= 10"


def test_fixed_filters_first_then_shared_strictness_nested(lake, tmp_path):
    spec = _spec(tmp_path, [
        {"name": "low", "keep": 0.5, "filters": {"sharp": "clarity >= 1", "text": "coalesce(text_area, 0) <= 0.5"}},
        {"name": "high", "parent": "low", "keep": 0.2, "filters": {
            "res": "least(width, height) >= 720", "sharp": "clarity >= 1", "moving": "motion between 0 and 1"}},
    ])
    specs, (low, high) = calibrate(lake, spec)
    assert low.status == "calibrated" and abs(low.kept - 500) <= 5
    assert high.parent_clips == low.kept
    # resolution is never moved; the share is of the parent's clips, with the fixed filter applied first
    assert specs[1].filters["res"] == "least(width, height) >= 720"
    assert high.status == "calibrated" and abs(high.kept - 0.2 * low.kept) <= 3
    # the calibrated spec selects exactly the clips it reports
    out = tmp_path / "cal.yaml"
    write_spec(specs, str(out), spec)
    assert main(["tier", "--lake", lake.root, "--spec", str(out)]) == 0
    assert query(lake, 'select count(*) as n from "tiers/low"').column("n")[0].as_py() == low.kept
    assert query(lake, 'select count(*) as n from "tiers/high"').column("n")[0].as_py() == high.kept
    assert [s.name for s in load_specs(str(out))] == ["low", "high"]


def test_unreachable_and_untargeted(lake, tmp_path):
    spec = _spec(tmp_path, [
        {"name": "big", "keep": 0.5, "filters": {"res": "least(width, height) >= 720", "sharp": "clarity >= 50"}},
        {"name": "free", "parent": "big", "filters": {"sharp": "clarity >= 60"}},
    ])
    specs, (big, free) = calibrate(lake, spec)
    # 30 % are 720p: the target cannot be reached, so the score bound goes loosest and says so
    assert big.status == "unreachable" and big.kept == 300
    assert specs[0].filters["sharp"] == "clarity >= 0"
    assert free.status == "no target" and specs[1].filters == {"sharp": "clarity >= 60"}


def test_cli_calibrate_writes_spec_and_tiers(lake, tmp_path, capsys):
    spec = _spec(tmp_path, [{"name": "a", "keep": 0.4, "filters": {"sharp": "clarity >= 10"}}])
    assert main(["tier", "--lake", lake.root, "--spec", spec, "--calibrate"]) == 0
    out = capsys.readouterr().out
    assert "clarity >= 10 → clarity >= 60" in out and "calibrated spec:" in out
    cal = load_specs(f"{lake.root}/tiers.calibrated.yaml")
    assert cal[0].filters == {"sharp": "clarity >= 60"} and cal[0].calibration["kept"] == 400
    assert lake.count("tiers/a") == 400
