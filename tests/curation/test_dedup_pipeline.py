"""Dedup end to end: real re-encodes of one video collapse to one kept clip per shot, the sharpest,
highest-resolution copy kept, with the offline default pipeline."""

from __future__ import annotations

import pytest

import media
from curation import synth
from curation.lake import Lake
from curation.query import query
from curation.runner import run_pipeline

pytestmark = pytest.mark.usefixtures("ray_local")


def test_reencodes_collapse_to_one_kept_clip_per_shot(tmp_path):
    shots = [synth.Shot("chelsea", 60, pan=(1.5, 0)), synth.Shot("rocket", 60, zoom=1.004),
             synth.Shot("hubble_deep_field", 60, pan=(0, -1))]
    src = synth.make_video(tmp_path / "original.mp4", shots, size=(384, 216), fps=24, crf=16)
    # the same footage as another site would serve it: smaller, harder compressed, another container
    media._run("-i", src.path, "-vf", "scale=256:144", "-c:v", "libx264", "-crf", "32", str(tmp_path / "small.mkv"))
    media._run("-i", src.path, "-vf", "scale=320:180", "-c:v", "libvpx", "-b:v", "300k", str(tmp_path / "web.webm"))
    # and something else entirely, which must stay unique
    synth.make_video(tmp_path / "other.mp4", [synth.Shot("coffee", 60), synth.Shot("astronaut", 60)],
                     size=(384, 216))
    lake = Lake(tmp_path / "lake")
    run_pipeline("default", [str(tmp_path)], lake, progress=False)

    rows = query(lake, "select clip_id, uri, shot_index, width, is_duplicate, dup_of, dup_group "
                       "from clips").to_pylist()
    by_id = {r["clip_id"]: r for r in rows}
    copies = [r for r in rows if not r["uri"].endswith("other.mp4")]
    assert len(copies) == 9  # 3 shots x 3 files
    kept = [r for r in copies if not r["is_duplicate"]]
    assert sorted(r["shot_index"] for r in kept) == [0, 1, 2]  # one kept clip per shot
    assert all(r["uri"].endswith("original.mp4") for r in kept)  # the highest resolution wins
    for r in copies:
        if r["is_duplicate"]:
            keeper = by_id[r["dup_of"]]
            assert keeper["shot_index"] == r["shot_index"] and r["dup_group"] == keeper["dup_group"]
    others = [r for r in rows if r["uri"].endswith("other.mp4")]
    assert len(others) == 2 and not any(r["is_duplicate"] for r in others)

    # a rerun over the same lake changes nothing
    before = query(lake, "select clip_id, is_duplicate, dup_of from clips order by clip_id").to_pylist()
    run_pipeline("default", [str(tmp_path)], lake, progress=False)
    assert query(lake, "select clip_id, is_duplicate, dup_of from clips order by clip_id").to_pylist() == before
    assert lake.count("failures") == 0  # the lake inside the input folder is not taken for input
