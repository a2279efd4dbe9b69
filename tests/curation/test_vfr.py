"""Variable frame rate: frames shown at 30, then 10, then 60 fps (tests/media.py: vfr_video), cuts at known
frames. The probe says so; the split, random access, clip times and export share one frame numbering
(a frame's position among the presented frames), whatever the rate."""

from __future__ import annotations

import glob
import io
import os
from fractions import Fraction

import av
import numpy as np
import pyarrow as pa
import pytest

from curation import synth
from curation.export import export_tier
from curation.lake import Lake
from curation.split import SplitStage
from curation.timeline import Timeline, is_variable
from curation.video import VideoReader, probe

N = 420  # frames of the fixture (media.VFR_RUNS)
SIZE = (80, 48)


@pytest.fixture(scope="module", params=["mp4", "mkv"])
def vfr(request, tmp_path_factory):
    import media

    return media.vfr_video(str(tmp_path_factory.mktemp("vfr") / f"vfr.{request.param}"))


def probed_row(path: str) -> dict:
    info = probe(path)
    keys = ("size_bytes", "mtime_ns", "container", "codec", "width", "height", "fps", "frame_count",
            "duration_s", "rotation", "has_audio", "vfr")
    return {"uri": path, "video_id": "v", "status": "ok", "failures": [], **{k: getattr(info, k) for k in keys}}


def decoded_times(path: str) -> list[float]:
    """Every frame's presentation time as FFmpeg decodes it, from the first frame."""
    with av.open(path) as c:
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    return [t - times[0] for t in times]


def test_probe_detects_vfr_and_counts_the_frames(vfr):
    info = probe(vfr.path)
    assert info.vfr is True
    assert info.frame_count == N  # Matroska states no count: from the timestamps (duration x 30 fps said 760)
    assert info.duration_s == pytest.approx(vfr.times[-1], abs=1 / 30)
    assert info.fps == pytest.approx(N / info.duration_s)  # the average, not one of the three rates


@pytest.mark.parametrize("name,rate", [("cfr.mp4", "24"), ("ntsc.mkv", "30000/1001"), ("pal.ts", "25")])
def test_constant_rate_is_not_vfr(tmp_path, name, rate):
    import media

    path = str(tmp_path / name)  # Matroska rounds 29.97 fps to 33/34 ms ticks: still one rate
    media._run("-f", "lavfi", "-i", f"testsrc2=size=160x96:rate={rate}:duration=2", "-c:v", "libx264", path)
    info = probe(path)
    assert info.vfr is False
    assert info.fps == pytest.approx(float(Fraction(rate)), rel=1e-3)


def test_rate_tolerance():  # timestamps in ticks (ms, or 1/90000 s)
    assert not is_variable(np.array([0, 33, 67, 100, 133, 167, 200]))  # 29.97 fps in whole milliseconds
    assert not is_variable(np.arange(0, 30030, 3003))
    assert is_variable(np.array([0, 33, 67, 133, 167, 200]))  # one frame missing: the numbering shifts
    assert is_variable(np.array([0, 40, 80, 100, 120, 140]))  # 25 fps, then 50


def test_constant_timeline_is_frame_over_fps():
    fps = 30000 / 1001
    tl = Timeline.constant(fps, Fraction(1, 30000), start_pts=1001)
    assert not tl.variable and tl.frames is None
    for i in (0, 1, 37, 999, 10**6):
        assert tl.seconds(i) == i / fps and tl.span_s(i, i + 48) == 48 / fps
        assert tl.index_of(tl.pts_of(i)) == i
    assert tl.frames_in(500, 2.0) == round(2.0 * fps) and tl.index_of(None) == 0


def test_timeline_gives_each_frame_its_timestamp(vfr):
    timeline = VideoReader(vfr.path).timeline()
    got = [timeline.seconds(i) for i in range(N)]
    assert got == pytest.approx(vfr.times[:N], abs=1.5e-3)  # Matroska keeps whole milliseconds
    assert got == pytest.approx(decoded_times(vfr.path), abs=1e-6)
    assert all(timeline.index_of(timeline.pts_of(i)) == i for i in range(N))
    assert timeline.seconds(N) == pytest.approx(vfr.times[N], abs=1 / 30)  # the end of the last frame
    assert timeline.frames_in(0, 2.0) == 60 and timeline.frames_in(100, 2.0) == 20  # 30 fps, then 10
    assert timeline.frames_in(300, 1.0) == 60 and timeline.frames_in(90, 2.0) == 27  # 60 fps; 10 + 17 across


def test_split_finds_the_cuts_at_their_frames(vfr):
    rows = SplitStage().split_row(probed_row(vfr.path))
    assert rows[0]["status"] == "ok" and rows[0]["frame_count"] == N
    assert rows[0]["failures"] == []  # no `truncated` (an MKV at 30 fps x its duration would claim 760 frames)
    assert rows[0]["cuts"] == vfr.cuts == [130, 350]
    for r in rows:  # every clip inside one shot
        assert any(a <= r["start_frame"] < r["end_frame"] <= b for a, b in zip([0, 130, 350], [130, 350, N]))


def test_pipeline_records_vfr_in_the_lake(ray_local, vfr, tmp_path):
    from curation.query import query
    from curation.runner import run_pipeline

    stages = [{"stage": "probe"}, {"stage": "split"}, {"stage": "clarity"}]
    run_pipeline({"name": "vfr", "stages": stages}, [vfr.path], str(tmp_path / "lake"), progress=False)
    video = query(str(tmp_path / "lake"), "select vfr, frame_count, cuts, status from videos").to_pylist()
    assert video == [{"vfr": True, "frame_count": N, "cuts": vfr.cuts, "status": "ok"}]
    clips = query(str(tmp_path / "lake"), "select start_frame, end_frame, clarity from clips").to_pylist()
    assert len(clips) >= 3 and all(c["clarity"] > 0 for c in clips)  # the scorer read each clip's frames


def test_clip_times_are_the_frames_timestamps(vfr):
    rows = SplitStage().split_row(probed_row(vfr.path))
    assert len(rows) >= 3
    for r in rows:
        assert r["start_s"] == pytest.approx(vfr.times[r["start_frame"]], abs=1.5e-3)
        assert r["end_s"] == pytest.approx(vfr.times[r["end_frame"]], abs=1 / 30)
        assert r["duration_clip_s"] == pytest.approx(r["end_s"] - r["start_s"])
        assert 2.0 - 0.1 <= r["duration_clip_s"] <= 10.0 + 0.1  # min_clip_s, max_clip_s in time, not frames


# 0 -> 300 and 20 -> 380 jump more than 250 frames: PyAV seeks there (to the timestamp the timeline gives,
# and numbers the frame it lands on by its timestamp); the rest decode forward
PICKS = [0, 300, 301, 380, 419, 270, 129, 130, 349, 350, 20]


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_random_access_returns_the_streamed_frames(vfr, backend):
    streamed = list(VideoReader(vfr.path, backend=backend).iter_frames(SIZE))
    assert len(streamed) == N
    picked = VideoReader(vfr.path, backend=backend).read(PICKS, SIZE)
    assert all(np.array_equal(p, streamed[i]) for p, i in zip(picked, PICKS))  # "auto" is PyAV for both
    assert np.abs(streamed[300].astype(int) - streamed[301]).mean() > 1  # neighbours differ: an off-by-one shows


def test_backends_agree_on_vfr(vfr):
    a = VideoReader(vfr.path, backend="decord").read(PICKS, SIZE).astype(int)
    b = VideoReader(vfr.path, backend="pyav").read(PICKS, SIZE).astype(int)
    assert max(np.abs(x - y).mean() for x, y in zip(a, b)) < 3


def test_constant_rate_seeks_as_before(tmp_path):
    """On constant-rate video the reader needs no table: frames after a seek still match the stream."""
    truth = synth.make_video(tmp_path / "cfr.mkv", [synth.Shot("astronaut", 320, pan=(1, 0))], size=(160, 96),
                             fps=25)
    reader = VideoReader(truth.path, backend="pyav")
    assert reader.info.vfr is False and not reader.timeline().variable
    streamed = list(reader.iter_frames(SIZE))
    picked = VideoReader(truth.path, backend="pyav").read([2, 300, 319], SIZE)
    assert all(np.array_equal(p, streamed[i]) for p, i in zip(picked, [2, 300, 319]))


def test_exported_clips_start_and_end_on_their_frames_with_their_timing(vfr, tmp_path):
    rows = [r for r in SplitStage().split_row(probed_row(vfr.path)) if r.get("clip_id")]
    assert len(rows) >= 3
    keep = ("clip_id", "video_id", "uri", "fps", "width", "height", "rotation", "start_frame", "end_frame")
    table = pa.Table.from_pylist([{k: r[k] for k in keep} for r in rows])
    Lake(str(tmp_path / "lake")).overwrite("tiers/vfr", table)
    summary = export_tier(str(tmp_path / "lake"), "vfr", "webdataset", str(tmp_path / "out"), progress=False)
    assert summary.failures == [] and summary.clips_written == len(rows)
    streamed = np.stack(list(VideoReader(vfr.path, backend="pyav").iter_frames())).astype(int)
    import tarfile

    (shard,) = glob.glob(os.path.join(tmp_path / "out", "shard-*.tar"))
    with tarfile.open(shard) as tar:
        clips = {m.name.removesuffix(".mp4"): tar.extractfile(m).read() for m in tar if m.name.endswith(".mp4")}
    for r in rows:
        with av.open(io.BytesIO(clips[r["clip_id"]])) as c:
            decoded = list(c.decode(video=0))
        frames = np.stack([f.to_ndarray(format="rgb24") for f in decoded]).astype(int)
        s, e = r["start_frame"], r["end_frame"]
        assert len(frames) == e - s
        shown = [float(f.pts * f.time_base) for f in decoded]  # the source's timing, from the clip's start
        assert shown == pytest.approx([t - vfr.times[s] for t in vfr.times[s:e]], abs=1.5e-3)
        for got, at in ((frames[0], s), (frames[-1], e - 1)):
            near = [k for k in (at - 1, at, at + 1) if 0 <= k < N]
            diffs = [np.abs(got - streamed[k]).mean() for k in near]
            assert near[int(np.argmin(diffs))] == at, (r["clip_id"], at, diffs)
