"""`videocurate check` finds each broken invariant; a run whose inputs all fail completes with exit 0."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from curation.check import check_lake
from curation.cli import main
from curation.lake import Lake
from curation.runner import run_pipeline

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture
def lake(demo_videos, tmp_path) -> Lake:
    lake = Lake(tmp_path / "lake")
    run_pipeline("default", [demo_videos[0].path, demo_videos[2].path], lake, progress=False)
    return lake


def _names(lake: Lake) -> set[str]:
    return {p.check for p in check_lake(lake)}


@pytest.mark.broken_lake
def test_each_broken_invariant_is_named(lake, demo_videos, tmp_path, capsys):
    assert check_lake(lake, [demo_videos[0].path, demo_videos[2].path]) == []
    assert main(["check", "--lake", lake.root]) == 0
    # an input never processed
    assert {p.check for p in check_lake(lake, [demo_videos[1].path])} == {"every input is accounted for"}
    clips = lake.dataset("clips").to_table()
    first = clips.slice(0, 1)
    lake.append("clips", first)  # a duplicated clip: also one clip too many for its video
    assert _names(lake) == {"clip ids are unique", "ok videos have their n_clips clips"}
    lake.delete("clips", f"clip_id = '{first.column('clip_id')[0].as_py()}'")  # both copies: one too few
    in_tier = lake.count("tiers/256p", f"clip_id = '{first.column('clip_id')[0].as_py()}'") > 0
    assert _names(lake) == {"ok videos have their n_clips clips"} | ({"tiers are subsets of their parents"}
                                                                     if in_tier else set())
    lake.append("clips", first)
    assert _names(lake) == set()
    # a clip whose video is not ok, a failed video without its failure row, an unproduced column
    orphan = first.set_column(first.schema.get_field_index("video_id"), "video_id", pa.array(["nope"]))
    orphan = orphan.set_column(orphan.schema.get_field_index("clip_id"), "clip_id", pa.array(["nope_0_1"]))
    lake.append("clips", orphan)
    lake.append("videos", pa.table({"video_id": ["x"], "uri": ["/gone.mp4"], "status": ["failed"]}))
    lake.append("clips", pa.table({"clip_id": ["zz"], "mystery": pa.array([1.0], pa.float32())}))
    assert {"every clip's video is ok", "failed videos have a failure row",
            "score columns have a recorded producer"} <= _names(lake)
    # a tier that is not inside its parent
    lake.overwrite("tiers/360p", pa.table({"clip_id": ["not-a-clip"]}))
    from curation.tiers import TIER_KEY

    lake.set_meta("tiers/360p", TIER_KEY, {"parent": "256p"})
    assert "tiers are subsets of their parents" in _names(lake)
    assert main(["check", "--lake", lake.root]) == 1
    out = capsys.readouterr().out
    assert "invariant(s) broken" in out and "every clip's video is ok: 2" in out and "nope_0_1" in out


def test_a_run_where_nothing_survives_completes(bad_folder, tmp_path, capsys):
    folder, _ = bad_folder
    lake = str(tmp_path / "lake")
    for _ in range(2):  # on a new lake, then on the existing one (still without a clip)
        assert main(["run", "default", "--input", os.path.join(folder, "empty.mp4"), "--lake", lake,
                     "--no-progress", "--retry-failed"]) == 0
        out = capsys.readouterr().out
        assert "videos ok 0, failed 1" in out
        for step in ("dedup", "concepts", "tiers"):
            assert f"step {step}: skipped (no rows in 'clips' yet" in out
    assert Lake(lake).count("failures") == 2 and Lake(lake).count("videos") == 1
