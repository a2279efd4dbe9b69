"""Training data from curated tiers: the clips of a `tiers/<name>` Lance table grouped into HunyuanVideo's
duration × aspect buckets (equal-area sizes for one base resolution, frame counts 4n+1, 1 = an image),
drawn one bucket per step with a per-bucket batch size, weighted by the curation's `sample_weight`, and
decoded to (B, 3, T, H, W) tensors in [-1, 1] from each clip's crop suggestion."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from captioner.synth import synthesize
from curation.lake import Lake
from curation.video import VideoInfo, VideoReader, probe

TIER_COLUMNS = ("clip_id", "uri", "start_frame", "end_frame", "fps", "width", "height")
OPTIONAL_COLUMNS = ("crop_x0", "crop_y0", "crop_x1", "crop_y1", "sample_weight", "caption", "caption_status",
                    "camera_motion")


@dataclass(frozen=True)
class BucketConfig:
    """base_size: sizes hold about base_size² pixels (256, 360, 540, 720 ...). frame_counts: the clip
    lengths trained on (4n+1 for the causal VAE; 1 trains on single frames, as the report mixes images
    in at every stage). multiple: side lengths divisible by it (VAE ×8 then patch ×2 = 16). max_ratio:
    the widest/tallest aspect kept (report: 4). pixel_budget: T·H·W per batch, which sets each bucket's
    batch size (at most max_batch)."""

    base_size: int = 256
    frame_counts: tuple[int, ...] = (1, 17, 33, 65, 129)
    multiple: int = 16
    max_ratio: float = 4.0
    frame_stride: int = 1
    pixel_budget: int = 256 * 256 * 33 * 4
    max_batch: int = 32


@dataclass(frozen=True)
class Bucket:
    frames: int
    height: int
    width: int

    def batch_size(self, cfg: BucketConfig) -> int:
        return max(1, min(cfg.max_batch, cfg.pixel_budget // (self.frames * self.height * self.width)))


@dataclass
class ClipRef:
    clip_id: str
    uri: str
    start: int
    end: int
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 in native pixels
    weight: float = 1.0
    prompt: str = ""  # the fallback prompt, from the clip's tags
    caption: str | None = None  # the structured caption JSON, when the captioner wrote an ok one
    bucket: Bucket | None = field(default=None, repr=False)


def aspect_sizes(base: int, multiple: int = 16, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """(height, width) pairs of about base² pixels, sides divisible by `multiple`, aspect within
    max_ratio: the equal-area crop-size list of the report's multi-aspect buckets."""
    area = base * base
    sizes = set()
    for h in range(multiple, int(base * math.sqrt(max_ratio)) + multiple, multiple):
        w = max(multiple, int(round(area / h / multiple)) * multiple)
        if max(w / h, h / w) <= max_ratio:
            sizes.add((h, w))
    return sorted(sizes)


def assign_bucket(crop_w: int, crop_h: int, frames: int, cfg: BucketConfig) -> Bucket:
    """The size whose aspect is closest (in log ratio) to the crop's, and the longest frame count the
    clip holds at the configured stride (1 — a single frame — always fits)."""
    ratio = math.log(crop_w / crop_h)
    h, w = min(aspect_sizes(cfg.base_size, cfg.multiple, cfg.max_ratio),
               key=lambda s: abs(math.log(s[1] / s[0]) - ratio))
    usable = (frames - 1) // cfg.frame_stride + 1
    t = max([f for f in cfg.frame_counts if f <= usable] or [1])
    return Bucket(t, h, w)


def read_tier(lake: Lake | str, tier: str, cfg: BucketConfig) -> list[ClipRef]:
    """Clip references of a tier with their buckets (the tier table is small: metadata only)."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    ds = lake.dataset(f"tiers/{tier}")
    if ds is None:
        raise FileNotFoundError(f"no tier '{tier}' in {lake.root} (have: {lake.tables()}); run "
                                f"`videocurate tier --lake {lake.root}` first")
    names = ds.schema.names
    table = ds.to_table(columns=[*TIER_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in names)])
    refs = []
    for r in table.to_pylist():
        crop = (r.get("crop_x0") or 0, r.get("crop_y0") or 0, r.get("crop_x1") or r["width"],
                r.get("crop_y1") or r["height"])
        ref = ClipRef(r["clip_id"], r["uri"], r["start_frame"], r["end_frame"], crop,
                      float(r["sample_weight"]) if r.get("sample_weight") is not None else 1.0,
                      fallback_prompt(r), r.get("caption") if r.get("caption_status") == "ok" else None)
        ref.bucket = assign_bucket(crop[2] - crop[0], crop[3] - crop[1], ref.end - ref.start, cfg)
        refs.append(ref)
    return refs


def fallback_prompt(row: dict) -> str:
    """A plain description from the clip's tags, for clips without a caption."""
    return f"a video clip, {row['camera_motion']}" if row.get("camera_motion") else "a video clip"


def training_prompt(ref: ClipRef, seed: int) -> str:
    """The prompt the text encoder sees: synthesised from the structured caption (field dropout and
    permutation, HunyuanVideo), a different but reproducible one per `seed`; the fallback when the clip
    has no caption or the synthesis leaves nothing (a caption holding no filled field)."""
    if ref.caption:
        text = synthesize(ref.caption, seed)
        if text.strip():
            return text
    return ref.prompt


class BucketSampler:
    """Endless batches: each step draws one bucket (probability ∝ the summed sample weight of its clips),
    then `batch_size(bucket)` clips from it ∝ sample_weight, without replacement within a batch."""

    def __init__(self, refs: list[ClipRef], cfg: BucketConfig, seed: int = 0):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.groups: dict[Bucket, list[int]] = {}
        for i, r in enumerate(refs):
            if r.weight > 0:
                self.groups.setdefault(r.bucket, []).append(i)
        if not self.groups:
            raise ValueError("no clip with a positive sample weight in this tier")
        self.buckets = sorted(self.groups, key=lambda b: (b.frames, b.height, b.width))
        self.weights = [np.array([refs[i].weight for i in self.groups[b]]) for b in self.buckets]
        mass = np.array([w.sum() for w in self.weights])
        self.bucket_p = mass / mass.sum()

    def __iter__(self) -> Iterator[tuple[Bucket, list[int]]]:
        while True:
            k = int(self.rng.choice(len(self.buckets), p=self.bucket_p))
            b, members, w = self.buckets[k], self.groups[self.buckets[k]], self.weights[k]
            n = min(b.batch_size(self.cfg), len(members))
            picked = self.rng.choice(len(members), size=n, replace=False, p=w / w.sum())
            yield b, [members[i] for i in picked]


def decode_clip(ref: ClipRef, bucket: Bucket, stride: int = 1) -> torch.Tensor:
    """(3, T, H, W) float in [-1, 1]: T frames from the clip's start at `stride`, cropped to the crop
    suggestion, scaled to cover the bucket size and centre-cropped to it."""
    idx = [min(ref.start + i * stride, ref.end - 1) for i in range(bucket.frames)]
    frames = VideoReader(ref.uri, info=_probe(ref.uri)).read(idx)
    x0, y0, x1, y1 = ref.crop
    out = np.empty((bucket.frames, bucket.height, bucket.width, 3), np.uint8)
    for i, f in enumerate(frames):
        out[i] = cover_resize(f[y0:y1, x0:x1], bucket.height, bucket.width)
    return torch.from_numpy(out).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)


@functools.lru_cache(maxsize=4096)
def _probe(uri: str) -> VideoInfo:
    """Probe each source file once per process, not once per sample (many clips share a video)."""
    return probe(uri)


def cover_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Scale so the image covers (h, w), then centre-crop to it (no distortion)."""
    ih, iw = img.shape[:2]
    s = max(h / ih, w / iw)
    nh, nw = max(h, int(round(ih * s))), max(w, int(round(iw * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    img = cv2.resize(img, (nw, nh), interpolation=interp)
    top, left = (nh - h) // 2, (nw - w) // 2
    return img[top:top + h, left:left + w]


class TierLoader:
    """Batches for training from one tier: yields (videos (B, 3, T, H, W), prompts, bucket)."""

    def __init__(self, lake: Lake | str, tier: str, cfg: BucketConfig = BucketConfig(), seed: int = 0):
        self.cfg, self.seed = cfg, seed
        self.refs = read_tier(lake, tier, cfg)
        if not self.refs:
            raise ValueError(f"tier '{tier}' is empty")
        self.sampler = BucketSampler(self.refs, cfg, seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str], Bucket]]:
        for step, (bucket, members) in enumerate(self.sampler):
            refs = [self.refs[i] for i in members]
            videos = torch.stack([decode_clip(r, bucket, self.cfg.frame_stride) for r in refs])
            yield videos, [training_prompt(r, self.seed * 1_000_003 + step) for r in refs], bucket
