"""Tier data loader: equal-area aspect buckets, 4n+1 frame buckets, weighted bucket draws, real decodes."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import torch

from curation import synth
from curation.lake import Lake
from curation.video import VideoReader
from training.data import (
    Bucket,
    BucketConfig,
    BucketSampler,
    ClipRef,
    TierLoader,
    aspect_sizes,
    assign_bucket,
    cover_resize,
    decode_clip,
)


def test_aspect_sizes_are_equal_area_and_aligned():
    sizes = aspect_sizes(256)
    assert (256, 256) in sizes
    for h, w in sizes:
        assert h % 16 == 0 and w % 16 == 0
        assert max(h / w, w / h) <= 4
        assert abs(h * w / 256**2 - 1) < 0.15
    assert any(w / h > 3.5 for h, w in sizes) and any(h / w > 3.5 for h, w in sizes)


def test_assign_bucket_follows_aspect_and_length():
    cfg = BucketConfig(base_size=256)
    wide = assign_bucket(1920, 1080, 200, cfg)
    assert wide.frames == 129 and wide.width > wide.height
    assert abs(math.log(wide.width / wide.height) - math.log(16 / 9)) < 0.15
    tall = assign_bucket(1080, 1920, 50, cfg)
    assert tall.frames == 33 and tall.height > tall.width
    assert assign_bucket(640, 640, 10, cfg) == Bucket(1, 256, 256)  # too short for 17 frames: an image
    assert assign_bucket(640, 360, 40, BucketConfig(frame_stride=2)).frames == 17  # 40 frames at stride 2


def test_sampler_draws_buckets_by_weight_and_respects_budget():
    cfg = BucketConfig(base_size=64, pixel_budget=64 * 64 * 17 * 2, max_batch=8)
    a, b = Bucket(17, 64, 64), Bucket(1, 64, 64)
    refs = [ClipRef(f"a{i}", "", 0, 17, (0, 0, 64, 64), 1.0, bucket=a) for i in range(6)]
    refs += [ClipRef(f"b{i}", "", 0, 1, (0, 0, 64, 64), 0.5, bucket=b) for i in range(4)]
    refs.append(ClipRef("zero", "", 0, 17, (0, 0, 64, 64), 0.0, bucket=a))
    draws = [next_ for _, next_ in zip(range(2000), BucketSampler(refs, cfg, seed=1))]
    share_a = sum(bk == a for bk, _ in draws) / len(draws)
    assert share_a == pytest.approx(6 / 8, abs=0.03)  # weight mass 6 vs 2
    for bk, members in draws:
        assert len(members) == min(bk.batch_size(cfg), 6 if bk == a else 4) and len(set(members)) == len(members)
        assert all(refs[i].bucket == bk and refs[i].clip_id != "zero" for i in members)
    assert a.batch_size(cfg) == 2 and b.batch_size(cfg) == 8


def test_decode_clip_crops_and_scales_real_frames(tmp_path):
    truth = synth.make_video(tmp_path / "v.mp4", [synth.Shot("astronaut", 40, pan=(1, 0), letterbox=(0, 20))],
                             size=(320, 180), crf=12)
    ref = ClipRef("c", truth.path, 3, 40, (0, 20, 320, 160))
    bucket = Bucket(17, 96, 208)
    x = decode_clip(ref, bucket, stride=2)
    assert x.shape == (3, 17, 96, 208) and x.min() >= -1 and x.max() <= 1
    raw = VideoReader(truth.path).read([3 + 2 * 16])[0]
    expected = cover_resize(raw[20:160], 96, 208).astype(np.float32) / 127.5 - 1
    assert np.abs(x[:, 16].permute(1, 2, 0).numpy() - expected).mean() < 0.02
    assert float(x[:, :, :2].mean()) > -0.9  # the black letterbox bars were cropped away


def test_tier_loader_end_to_end(tmp_path):
    truth = synth.make_video(tmp_path / "v.mp4", [synth.Shot("coffee", 40), synth.Shot("chelsea", 40)],
                             size=(192, 108))
    lake = Lake(tmp_path / "lake")
    lake.append("tiers/t", pa.table({
        "clip_id": ["c0", "c1"], "uri": [truth.path] * 2, "start_frame": [0, 40], "end_frame": [40, 80],
        "fps": [24.0, 24.0], "width": pa.array([192, 192], pa.int32()), "height": pa.array([108, 108], pa.int32()),
        "sample_weight": pa.array([1.0, 1.0], pa.float32()), "camera_motion": ["static shot", None],
    }))
    loader = TierLoader(lake, "t", BucketConfig(base_size=64, frame_counts=(1, 17, 33), max_batch=2))
    seen = Counter()
    for _, (videos, prompts, bucket) in zip(range(4), loader):
        assert videos.shape[0] == len(prompts) == 2 and videos.shape[1:] == (3, 33, bucket.height, bucket.width)
        assert bucket.width > bucket.height  # 16:9 source
        seen.update(prompts)
        assert torch.isfinite(videos).all()
    assert seen == {"a video clip, static shot": 4, "a video clip": 4}
    with pytest.raises(FileNotFoundError, match="no tier 'nope'"):
        TierLoader(lake, "nope")


def test_prompts_are_synthesised_from_the_structured_caption(tmp_path):
    """A clip with an ok caption trains on prompts synthesised from its fields (varied from draw to draw,
    the same for the same seed); a failed caption or none falls back to the tags."""
    from captioner.schema import Caption
    from captioner.synth import synthesize

    truth = synth.make_video(tmp_path / "v.mp4", [synth.Shot("coffee", 40)], size=(192, 108))
    caption = Caption(short_description="A cup of coffee on a saucer", dense_description="Steam rises from a cup.",
                      background="a wooden table", style="realistic", shot_type="close-up shot",
                      lighting="warm daylight", atmosphere="cozy", camera_movement="static shot",
                      text_in_frame="").model_dump_json()
    lake = Lake(tmp_path / "lake")
    n = 3
    lake.append("tiers/t", pa.table({
        "clip_id": ["ok", "failed", "none"], "uri": [truth.path] * n, "start_frame": [0] * n,
        "end_frame": [40] * n, "fps": [24.0] * n, "width": pa.array([192] * n, pa.int32()),
        "height": pa.array([108] * n, pa.int32()), "camera_motion": ["static shot"] * n,
        "caption": [caption, caption, None], "caption_status": ["ok", "failed", None],
    }))

    def batches(seed):
        loader = TierLoader(lake, "t", BucketConfig(base_size=32, frame_counts=(1,), max_batch=3), seed=seed)
        return [p for _, (_, p, _) in zip(range(6), loader)]

    first, fallback = batches(0), "a video clip, static shot"
    assert first == batches(0)  # reproducible from the seed
    assert all(len(p) == 3 and p.count(fallback) == 2 for p in first)  # the failed and the missing caption
    synthesised = [next(t for t in p if t != fallback) for p in first]
    assert synthesised == [synthesize(caption, step) for step in range(6)]  # one synthesis per draw
    assert len(set(synthesised)) > 1
