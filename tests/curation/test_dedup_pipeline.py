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


def test_barred_squeezed_and_resampled_copies_are_duplicates(tmp_path):
    """One clip in five variants (letterboxed 3GP/H.263 at 352x288, letterboxed FLV at 320x240, squeezed
    to 4:3, 15 fps, 320 px) lands in one dup group with the original, because the embedding looks at the
    picture inside content_box; the keeper is chosen by the picture's area, not the frame's; a shot of the
    same photo that zooms in elsewhere stays apart."""
    src = synth.make_video(tmp_path / "original.mp4", [synth.Shot("chelsea", 96, pan=(1.0, 0))], size=(384, 216),
                           crf=16)
    for name, args in [("barred.3gp", ["-vf", "scale=352:198,pad=352:288:0:45", "-c:v", "h263"]),
                       ("barred.flv", ["-vf", "scale=320:180,pad=320:240:0:30", "-c:v", "flv"]),
                       ("squeezed.mp4", ["-vf", "scale=288:216", "-c:v", "libx264"]),
                       ("fps15.mp4", ["-r", "15", "-c:v", "libx264"]),
                       ("small.mp4", ["-vf", "scale=320:180", "-c:v", "libx264", "-crf", "30"])]:
        media._run("-i", src.path, *args, str(tmp_path / name))
    synth.make_video(tmp_path / "other.mp4", [synth.Shot("chelsea", 96, zoom=1.012, pan=(-1.0, 0.5))],
                     size=(384, 216))
    stages = [{"stage": "probe"}, {"stage": "split"}, {"stage": "borders"}, {"stage": "embedding"}, {"step": "dedup"}]
    lake = Lake(tmp_path / "lake")
    run_pipeline({"name": "dedup", "stages": stages}, [str(tmp_path)], lake, progress=False)
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in query(
        lake, "select uri, content_box, dup_group, is_duplicate from clips").to_pylist()}
    assert sorted(rows) == ["barred.3gp", "barred.flv", "fps15.mp4", "original.mp4", "other.mp4", "small.mp4",
                            "squeezed.mp4"]
    assert abs(rows["barred.3gp"]["content_box"][1] - 45) <= 2 and abs(rows["barred.flv"]["content_box"][3] - 210) <= 2
    copies = [r for n, r in rows.items() if n != "other.mp4"]
    assert len({r["dup_group"] for r in copies}) == 1 and sum(not r["is_duplicate"] for r in copies) == 1
    kept = next(n for n, r in rows.items() if n != "other.mp4" and not r["is_duplicate"])
    assert kept in ("original.mp4", "fps15.mp4")  # the largest picture (384x216), not the barred 352x288 frame
    assert rows["other.mp4"]["dup_group"] != copies[0]["dup_group"] and not rows["other.mp4"]["is_duplicate"]
