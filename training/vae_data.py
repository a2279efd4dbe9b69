"""VAE training data from a tier: random square crops of its clips, images and videos mixed per batch.

HunyuanVideo trains its causal VAE on videos and images together (video:image 4:1; an image is a 1-frame
video, which the causal encoder handles as the first frame of a clip) with a random frame interval of 1-8
between the frames of a video crop. Here every batch is either all images or all videos (one tensor shape
per batch): `CropBatchSampler` draws batch b's kind (image with probability `image_ratio`), its clips
(∝ `sample_weight`), each clip's start frame, interval and crop position from a generator seeded by
(seed, b), so the stream is deterministic, the same in any DataLoader worker, and a resumed run starts at
any batch without replaying the ones before. `CropDataset` decodes one crop per item (in the DataLoader's
worker processes, through `training.data.make_loader`). A fixed, seeded share of the tier is held out for
evaluation (`split_holdout`) and decoded whole, at an equal-area bucket size, by `eval_videos`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from curation.errors import ConfigError
from training.data import (
    Bucket,
    BucketConfig,
    ClipRef,
    assign_bucket,
    cover_resize,
    decode_clip,
    read_frames,
    video_tensor,
)

HOLDOUT_KEY = 2**31 - 2  # the RNG key of the held-out split (no batch index reaches it)


@dataclass(frozen=True)
class CropConfig:
    """size: the side of the square crops; frames: a video crop's frame count (4n+1); image_ratio: the share
    of image batches (report: video:image 4:1 = 0.2); max_frame_interval: frames between a video crop's
    frames are drawn from 1 ... this (report: 8), capped by the clip's length; batch_size: crops per batch."""

    size: int = 256
    frames: int = 17
    image_ratio: float = 0.2
    max_frame_interval: int = 8
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.size < 1 or self.frames < 1 or self.batch_size < 1 or self.max_frame_interval < 1:
            raise ConfigError("train-vae: size, frames, batch_size and max_frame_interval must be >= 1")
        if not 0.0 <= self.image_ratio <= 1.0:
            raise ConfigError(f"train-vae: image_ratio must be in [0, 1], got {self.image_ratio}")


class CropKey(NamedTuple):
    """One crop, as the sampler hands it to the dataset: the clip (index into the refs), the batch's shape
    as a `Bucket` (frames, size, size), the first frame (absolute index in the source) and the frame
    interval, the crop position as fractions of the free room (0 = top/left, 1 = bottom/right), and its
    place in the stream (batch index, slot within the batch)."""

    index: int
    bucket: Bucket
    start: int
    interval: int
    u_y: float
    u_x: float
    batch: int
    slot: int


def split_holdout(refs: list[ClipRef], n: int, seed: int) -> tuple[list[ClipRef], list[ClipRef]]:
    """(training clips, `n` held-out clips): a fixed subset drawn from `seed`, in the tier's order."""
    if n < 0 or n >= len(refs):
        raise ConfigError(f"train-vae: eval_clips={n} must be >= 0 and leave at least one of the tier's "
                          f"{len(refs)} clips for training")
    held = set(np.random.default_rng([seed, HOLDOUT_KEY]).permutation(len(refs))[:n].tolist())
    return [r for i, r in enumerate(refs) if i not in held], [r for i, r in enumerate(refs) if i in held]


class CropBatchSampler(Sampler):
    """Endless batches of `CropKey`s for a DataLoader's `batch_sampler`; batch b from a generator seeded by
    (seed, b). Clips shorter than `cfg.frames` serve image batches only."""

    def __init__(self, refs: list[ClipRef], cfg: CropConfig, seed: int = 0):
        self.cfg, self.seed, self.start = cfg, seed, 0
        usable = [i for i, r in enumerate(refs) if r.weight > 0 and r.end > r.start]
        if not usable:
            raise ConfigError("train-vae: no clip with frames and a positive sample weight to train on")
        self.lengths = {i: refs[i].end - refs[i].start for i in usable}
        self.starts = {i: refs[i].start for i in usable}
        self.pools = {1: usable, cfg.frames: [i for i in usable if self.lengths[i] >= cfg.frames]}
        if cfg.image_ratio < 1 and not self.pools[cfg.frames]:
            raise ConfigError(f"train-vae: no clip of the tier holds {cfg.frames} frames; lower `frames` or set "
                              "image_ratio: 1 to train on images only")
        self.cdfs = {t: np.cumsum([refs[i].weight for i in pool]) for t, pool in self.pools.items()}

    def set_position(self, batch: int) -> None:
        """Start the next iteration at batch `batch`."""
        self.start = batch

    def kind(self, rng: np.random.Generator) -> int:
        """The frame count of a batch: 1 (images) with probability image_ratio, else cfg.frames."""
        if self.cfg.frames == 1 or rng.random() < self.cfg.image_ratio:
            return 1
        return self.cfg.frames

    def draw(self, batch: int) -> list[CropKey]:
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, batch])
        frames = self.kind(rng)
        pool, cdf = self.pools[frames], self.cdfs[frames]
        picks = np.searchsorted(cdf, rng.random(cfg.batch_size) * cdf[-1], side="right").clip(max=len(pool) - 1)
        bucket = Bucket(frames, cfg.size, cfg.size)
        keys = []
        for slot, p in enumerate(picks.tolist()):
            i = pool[p]
            longest = (self.lengths[i] - 1) // (frames - 1) if frames > 1 else 1
            interval = int(rng.integers(1, min(cfg.max_frame_interval, longest) + 1))
            span = (frames - 1) * interval + 1
            start = self.starts[i] + int(rng.integers(0, self.lengths[i] - span + 1))
            u_y, u_x = rng.random(2).tolist()
            keys.append(CropKey(i, bucket, start, interval, u_y, u_x, batch, slot))
        return keys

    def __len__(self) -> int:
        return 2**31 - 1  # endless; DataLoader only needs a length for its progress bookkeeping

    def __iter__(self) -> Iterator[list[CropKey]]:
        batch = self.start
        while True:
            yield self.draw(batch)
            batch += 1


def random_crop(frames: list[np.ndarray], crop: tuple[int, int, int, int], size: int, u_y: float,
                u_x: float) -> np.ndarray:
    """(T, size, size, 3): the crop suggestion of each frame, scaled up (aspect kept) when its short side is
    below `size`, then the size × size window at fractions (u_y, u_x) of the free room."""
    x0, y0, x1, y1 = crop
    h, w = y1 - y0, x1 - x0
    scale = max(1.0, size / min(h, w))
    nh, nw = max(size, math.ceil(h * scale)), max(size, math.ceil(w * scale))
    top, left = min(int(u_y * (nh - size + 1)), nh - size), min(int(u_x * (nw - size + 1)), nw - size)
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for k, f in enumerate(frames):
        region = f[y0:y1, x0:x1]
        if scale > 1.0:
            region = cover_resize(region, nh, nw)
        out[k] = region[top:top + size, left:left + size]
    return out


class CropDataset(Dataset):
    """Map-style dataset indexed by `CropKey`: one random crop (3, T, size, size) in [-1, 1]; the item has the
    layout `training.data.collate_batch` stacks (an empty prompt: the VAE has no text)."""

    def __init__(self, refs: list[ClipRef]):
        self.refs = refs

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, key: CropKey) -> dict:
        ref = self.refs[key.index]
        idx = [key.start + k * key.interval for k in range(key.bucket.frames)]
        try:
            frames = read_frames(ref.uri, idx)
        except Exception as exc:
            raise RuntimeError(f"train-vae data: clip {ref.clip_id} ({ref.uri}, frames {idx[0]}-{idx[-1]}) did "
                               f"not decode: {exc}") from exc
        crop = random_crop(list(frames), ref.crop, key.bucket.height, key.u_y, key.u_x)
        return {"video": video_tensor(crop), "prompt": "", "key": key}


def eval_videos(refs: list[ClipRef], size: int, frames: int, multiple: int = 16) -> list[torch.Tensor]:
    """Each held-out clip whole: (1, 3, T, H, W) in [-1, 1], its crop suggestion at the equal-area bucket
    size of about `size`² pixels nearest its aspect, T = `frames` from its start (1 when it is shorter)."""
    cfg = BucketConfig(base_size=size, frame_counts=(1, frames), multiple=multiple)
    out = []
    for ref in refs:
        x0, y0, x1, y1 = ref.crop
        bucket = assign_bucket(x1 - x0, y1 - y0, ref.end - ref.start, cfg)
        out.append(decode_clip(ref, bucket)[None])
    return out
