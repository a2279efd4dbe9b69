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
    BucketBatchSampler,
    BucketConfig,
    ClipRef,
    SampleKey,
    TierDataset,
    TierLoader,
    aspect_sizes,
    assign_bucket,
    cover_resize,
    decode_clip,
    make_loader,
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


def _two_bucket_refs():
    a, b = Bucket(17, 64, 64), Bucket(1, 64, 64)
    refs = [ClipRef(f"a{i}", "", 0, 17, (0, 0, 64, 64), 1.0, bucket=a) for i in range(6)]
    refs += [ClipRef(f"b{i}", "", 0, 1, (0, 0, 64, 64), 0.5, bucket=b) for i in range(4)]
    refs.append(ClipRef("zero", "", 0, 17, (0, 0, 64, 64), 0.0, bucket=a))
    return refs, a, b


def _batches(sampler, n):
    return [batch for _, batch in zip(range(n), sampler)]


def test_sampler_draws_buckets_by_weight_and_respects_budget():
    cfg = BucketConfig(base_size=64, pixel_budget=64 * 64 * 17 * 2, max_batch=8)
    refs, a, b = _two_bucket_refs()
    sampler = BucketBatchSampler(refs, cfg, seed=1)
    draws = _batches(sampler, 2000)
    share_a = sum(batch[0].bucket == a for batch in draws) / len(draws)
    assert share_a == pytest.approx(6 / 8, abs=0.03)  # weight mass 6 vs 2
    for batch in draws:
        bk, members = batch[0].bucket, [k.index for k in batch]
        assert len(members) == min(bk.batch_size(cfg), 6 if bk == a else 4) and len(set(members)) == len(members)
        assert all(refs[i].bucket == bk and refs[i].clip_id != "zero" for i in members)
        assert [k.slot for k in batch] == list(range(len(batch))) and {k.size for k in batch} == {len(batch)}
    assert a.batch_size(cfg) == 2 and b.batch_size(cfg) == 8
    # sample weights within a bucket: a clip of weight 3 is drawn about 3x as often as one of weight 1
    heavy = [ClipRef(f"h{i}", "", 0, 17, (0, 0, 64, 64), 3.0 if i == 0 else 1.0, bucket=a) for i in range(6)]
    counts = Counter(k.index for batch in _batches(BucketBatchSampler(heavy, cfg, seed=2), 3000) for k in batch)
    assert counts[0] / np.mean([counts[i] for i in range(1, 6)]) == pytest.approx(2.3, abs=0.3)  # 2 of 6 picked


def test_sampler_epochs_are_deterministic_resumable_and_sharded():
    """Batch b of epoch e depends on (seed, e, b) only: the same on every run, resumable at any position
    without replaying, and two ranks together read exactly the one-rank batch (their own halves)."""
    cfg = BucketConfig(base_size=64, pixel_budget=64 * 64 * 17 * 2, max_batch=2)
    refs, a, _ = _two_bucket_refs()
    one = BucketBatchSampler(refs, cfg, seed=3, world=1)
    assert one.batches_per_epoch == 5  # 6 clips of a / 2 + 4 of b / 2
    stream = _batches(one, 12)  # runs on across epochs
    assert [(k[0].epoch, k[0].batch) for k in stream] == [(e, b) for e in range(3) for b in range(5)][:12]
    assert stream == _batches(BucketBatchSampler(refs, cfg, seed=3), 12)
    assert stream != _batches(BucketBatchSampler(refs, cfg, seed=4), 12)
    resumed = BucketBatchSampler(refs, cfg, seed=3)
    resumed.set_position(*one.position_after(stream[6][0]))  # after epoch 1, batch 1
    assert _batches(resumed, 5) == stream[7:12]
    assert one.position_after(stream[4][0]) == (1, 0)  # the last batch of an epoch: the next epoch

    # 2 ranks with half the per-rank batch: the same global batches, split in contiguous halves
    cfg_half = BucketConfig(base_size=64, pixel_budget=64 * 64 * 17, max_batch=1)
    ranks = [_batches(BucketBatchSampler(refs, cfg_half, seed=3, rank=r, world=2), 12) for r in range(2)]
    for whole, r0, r1 in zip(stream, *ranks):
        assert r0 + r1 == whole and r0 and r1

    one_epoch = BucketBatchSampler(refs, cfg, seed=3, endless=False)
    one_epoch.set_position(0, 3)
    assert len(one_epoch) == 2 and list(one_epoch) == stream[3:5]


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

    # the DataLoader with 2 decode processes yields exactly the in-process batches
    inline = [b for _, b in zip(range(3), make_loader(loader.dataset, loader.sampler, workers=0))]
    forked = make_loader(loader.dataset, BucketBatchSampler(loader.refs, loader.cfg), workers=2, prefetch_factor=1)
    for want, got in zip(inline, forked):
        assert got["keys"] == want["keys"] and got["prompts"] == want["prompts"]
        assert torch.equal(got["videos"], want["videos"])
    del forked
    key = SampleKey(0, Bucket(1, 32, 32), 0, 0, 0, 0, 1)
    broken = TierDataset([ClipRef("gone", str(tmp_path / "missing.mp4"), 0, 10, (0, 0, 192, 108))])
    with pytest.raises(RuntimeError, match="clip gone .* did not decode"):
        broken[key]


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


def test_a_tier_made_before_captioning_takes_the_captions_from_clips(tmp_path):
    """Captions written to `clips` after the tier was materialised still reach the prompts."""
    from captioner.schema import Caption
    from captioner.synth import synthesize

    truth = synth.make_video(tmp_path / "v.mp4", [synth.Shot("coffee", 20)], size=(64, 64))
    caption = Caption(short_description="A cup of coffee", dense_description="Steam rises.", background="a table",
                      style="realistic", shot_type="close-up shot", lighting="daylight", atmosphere="cozy",
                      camera_movement="static shot", text_in_frame="").model_dump_json()
    base = {"clip_id": ["a", "b"], "uri": [truth.path] * 2, "start_frame": [0, 10], "end_frame": [10, 20],
            "fps": [24.0] * 2, "width": pa.array([64] * 2, pa.int32()), "height": pa.array([64] * 2, pa.int32())}
    lake = Lake(tmp_path / "lake")
    lake.append("tiers/t", pa.table(base))
    lake.append("clips", pa.table({**base, "caption": [caption, caption], "caption_status": ["ok", "failed"]}))
    loader = TierLoader(lake, "t", BucketConfig(base_size=32, frame_counts=(1,), max_batch=2))
    assert [r.caption for r in loader.refs] == [caption, None]
    _, prompts, _ = next(iter(loader))
    assert sorted(prompts) == sorted([synthesize(caption, 0), "a video clip"])
