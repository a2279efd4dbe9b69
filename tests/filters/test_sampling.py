"""The shared sampler and ScoreGroup: one read per video per batch, all scorers' columns with their
provenance, and a failing scorer or clip recorded without losing the other columns."""

import json

import numpy as np
import pyarrow as pa

from curation.frames import ClipFrames, FrameRequest, decode_clips, merge_requests, sample_indices
from curation.scoring import ScoreGroup
from curation.synth import Shot
from curation.video import VideoReader
from filter_media import clip_row, table
from filters.borders import BorderScorer
from filters.clarity import ClarityScorer
from filters.embedding import PerceptualEmbeddingScorer
from filters.motion import MotionScorer


def test_sample_indices_stay_inside_the_clip():
    idx, nxt = sample_indices(10, 50, 8, pairs=True)
    assert len(idx) == 8 and idx.min() >= 10 and (nxt == idx + 1).all() and nxt.max() <= 49
    idx, nxt = sample_indices(0, 3, 8, pairs=False)
    assert idx.tolist() == [0, 1, 2] and nxt is None
    merged = merge_requests([FrameRequest(4, 256), FrameRequest(8, None, pairs=True)])
    assert merged == FrameRequest(8, None, True)


def test_decoded_frames_are_the_requested_ones(vids):
    """Pairs really are consecutive frames: the camera moved exactly one frame's pan between them."""
    truth = vids("pairs.mp4", [Shot("coffee", 30, pan=(3.0, 0))])
    clip = decode_clips([clip_row(truth, 5, 25)], FrameRequest(4, None, pairs=True))[0]
    assert isinstance(clip, ClipFrames) and clip.frames.shape == (4, 180, 320, 3)
    assert clip.indices.min() >= 5 and clip.indices.max() < 24
    out = MotionScorer().score(clip)
    assert abs(out["camera_dx"] - 3.0) < 0.3


def _group():
    return ScoreGroup([ClarityScorer(), MotionScorer(), BorderScorer(), PerceptualEmbeddingScorer()])


def test_grey_comes_from_the_decoded_luma_when_there_is_one(vids):
    """Decoded clips carry their luma (the Y plane): `gray` scales it instead of converting the RGB, for
    the samples and their next frames, through subset, fit and a hand-over to another worker."""
    truth = vids("luma.mp4", [Shot("coffee", 30, pan=(3.0, 0))])
    clip = decode_clips([clip_row(truth, 0, 30)], FrameRequest(4, None, pairs=True))[0]
    assert clip.luma.shape == clip.frames.shape[:3] and clip.next_luma.shape == clip.next_frames.shape[:3]
    marked = ClipFrames(clip.frames, clip.indices, clip.fps, clip.width, clip.height, clip.next_frames,
                        luma=np.full_like(clip.luma, 7), next_luma=np.full_like(clip.next_luma, 9))
    handed = ClipFrames.from_bytes(marked.to_bytes())
    for c in (marked, marked.subset(2), marked.fit(FrameRequest(2, 64, pairs=True)), handed):
        assert (c.gray(None) == 7).all() and (c.gray(32) == 7).all() and (c.gray(32, next=True) == 9).all()
    assert marked.gray(32).shape[1:] == (18, 32) and marked.scale(32) == clip.width / 32
    plain = ClipFrames(clip.frames, clip.indices, clip.fps, clip.width, clip.height)
    assert abs(float(plain.gray(None).mean()) - float(clip.gray(None).mean())) < 1  # the RGB's grey alike


def test_group_one_read_per_video_and_all_columns(vids, monkeypatch):
    a = vids("group_a.mp4", [Shot("astronaut", 24, pan=(2, 0)), Shot("coffee", 24, letterbox=(0, 20))])
    b = vids("group_b.mp4", [Shot("rocket", 30, zoom=1.01)])
    rows = [clip_row(a, 0, 24), clip_row(a, 24, 48), clip_row(b), {**clip_row(b), "clip_id": None}]
    reads = []
    original = VideoReader.read_i420
    monkeypatch.setattr(VideoReader, "read_i420", lambda self, idx, size: reads.append(self.path)
                        or original(self, idx, size))
    group = _group()
    out = group(table(rows))
    assert sorted(reads) == sorted([a.path, b.path])  # one decode per video, shared by 4 scorers
    names = [f.name for f in group.output_fields()]
    for name in ["clarity", "motion", "camera_motion", "content_box", "border_fraction", "embedding"]:
        assert name in names and name in out.column_names
    got = out.to_pylist()
    assert [r["camera_motion"] for r in got[:3]] == ["pan right", "static shot", "zoom in"]
    assert got[1]["content_box"] == [0, 20, 320, 160] and got[0]["content_box"] == [0, 0, 320, 180]
    assert got[3]["clarity"] is None and got[3]["embedding"] is None  # no clip: passes through
    assert all(not r["failures"] for r in got)
    meta = json.loads(out.schema.field("clarity").metadata[b"videocurate.producer"])
    assert meta["stage"] == "clarity" and meta["params"]["analysis_side"] == 256
    assert isinstance(out.column("embedding").chunk(0), pa.FixedSizeListArray)
    assert set(group.timings) >= {"decode", "clarity", "motion", "borders", "embedding"}


class Flaky(ClarityScorer):
    """Fails on one clip only."""

    name = "flaky"

    def output_fields(self):
        return [pa.field("flaky", pa.float32())]

    def score(self, clip):
        if clip.indices.min() >= 24:
            raise ValueError("cannot score the second shot")
        return {"flaky": 1.0}


def test_failing_scorer_fails_only_its_columns(vids):
    a = vids("group_a.mp4", [Shot("astronaut", 24, pan=(2, 0)), Shot("coffee", 24, letterbox=(0, 20))])
    rows = [clip_row(a, 0, 24), clip_row(a, 24, 48),
            {**clip_row(a), "uri": "/no/such/video.mp4", "width": None}]
    out = ScoreGroup([ClarityScorer(), Flaky()])(table(rows)).to_pylist()
    assert out[0]["flaky"] == 1.0 and not out[0]["failures"]
    assert out[1]["flaky"] is None and out[1]["clarity"] > 0
    [fail] = out[1]["failures"]
    assert fail["stage"] == "flaky" and fail["kind"] == "internal:ValueError"
    assert fail["clip_id"] == rows[1]["clip_id"]
    [fail] = out[2]["failures"]  # the file is missing: the clip fails for the whole group
    assert fail["stage"] == "score" and fail["kind"] == "not_found" and out[2]["clarity"] is None


def test_scorer_alone_is_a_stage(vids):
    truth = vids("alone.mp4", [Shot("chelsea", 20, pan=(0, 1.0))])
    stage = MotionScorer()
    out = stage(table([clip_row(truth)]))
    assert out.column("camera_motion").to_pylist() == ["tilt down"]
    assert b"videocurate.producer" in out.schema.field("motion").metadata
    assert np.isfinite(out.column("motion").to_pylist()[0])
