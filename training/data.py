"""Training data from curated tiers: the clips of a `tiers/<name>` Lance table grouped into HunyuanVideo's
duration × aspect buckets (equal-area sizes for one base resolution, frame counts 4n+1, 1 = an image),
drawn one bucket per step with a per-bucket batch size, weighted by the curation's `sample_weight`, and
decoded to (B, 3, T, H, W) tensors in [-1, 1] from each clip's crop suggestion.

The pieces are PyTorch's: `BucketBatchSampler` (a `torch.utils.data.Sampler` of batches: one bucket per
batch, deterministic from seed + epoch + batch index, sharded by rank, resumable from any position),
`TierDataset` (decodes one clip in `__getitem__`, so DataLoader worker processes decode ahead of the
training step) and `make_loader` (the `DataLoader`: workers, prefetch, persistent workers, pinned memory).
`TierLoader` wraps them for a quick look at the batches of a tier."""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from captioner.synth import synthesize
from curation.lake import Lake
from curation.video import VideoInfo, VideoReader, probe
from curation.writer import quoted

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
    rows = table.to_pylist()
    if "caption" not in names:  # a tier made before its clips were captioned: take the captions from clips
        captions = _captions_from_clips(lake, [r["clip_id"] for r in rows])
        for r in rows:
            r["caption"], r["caption_status"] = captions.get(r["clip_id"], (None, None))
    refs = []
    for r in rows:
        crop = (r.get("crop_x0") or 0, r.get("crop_y0") or 0, r.get("crop_x1") or r["width"],
                r.get("crop_y1") or r["height"])
        ref = ClipRef(r["clip_id"], r["uri"], r["start_frame"], r["end_frame"], crop,
                      float(r["sample_weight"]) if r.get("sample_weight") is not None else 1.0,
                      fallback_prompt(r), r.get("caption") if r.get("caption_status") == "ok" else None)
        ref.bucket = assign_bucket(crop[2] - crop[0], crop[3] - crop[1], ref.end - ref.start, cfg)
        refs.append(ref)
    return refs


def _captions_from_clips(lake: Lake, clip_ids: list[str], chunk: int = 512) -> dict[str, tuple[str, str]]:
    """clip_id → (caption, "ok") for the given clips' ok captions in `clips` (none when it has no captions)."""
    clips = lake.dataset("clips")
    if clips is None or not {"caption", "caption_status"} <= set(clips.schema.names) or not clip_ids:
        return {}
    found: dict[str, tuple[str, str]] = {}
    for i in range(0, len(clip_ids), chunk):
        part = clips.to_table(columns=["clip_id", "caption"],
                              filter=f"caption_status = 'ok' AND clip_id IN ({quoted(clip_ids[i:i + chunk])})"
                              ).to_pylist()
        found.update({r["clip_id"]: (r["caption"], "ok") for r in part if r["caption"]})
    return found


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


class SampleKey(NamedTuple):
    """What the batch sampler hands the dataset for one sample: the clip (index into the refs), its bucket,
    the prompt-synthesis seed, and its place in the data stream — epoch, batch index within the epoch, slot
    within the batch's global order (all ranks together) and that batch's global size. The trainer keys
    each sample's noise on (seed, phase, epoch, batch, slot), and resumes at (epoch, batch + 1)."""

    index: int
    bucket: Bucket
    prompt_seed: int
    epoch: int
    batch: int
    slot: int
    size: int


class BucketBatchSampler(Sampler):
    """Batches of same-bucket clips for a DataLoader's `batch_sampler`, yielded as lists of `SampleKey`.

    Each batch draws one bucket (probability ∝ the summed sample weight of its clips), then the batch's
    clips from it ∝ sample_weight, without replacement within the batch. A batch's global size is the
    bucket's per-rank batch size (`BucketConfig.pixel_budget` / `max_batch`: what fits one worker) × `world`,
    at most the bucket's clip count but at least `world` (then drawn with replacement); rank r takes the
    r-th contiguous share, so every rank reads its own shard of every batch and all ranks train on the same
    bucket in a step. Batch b of epoch e comes from its own generator seeded by (seed, e, b): the order is
    deterministic, identical on every rank and for any world size with the same global batch, and a
    resumed sampler (`set_position`) starts at any batch without replaying the ones before.

    An epoch is as many batches as it takes to draw every clip once on average. `endless=True` (the
    trainer's) runs on into the next epochs; `endless=False` yields the rest of the current epoch only.
    """

    def __init__(self, refs: list[ClipRef], cfg: BucketConfig, seed: int = 0, rank: int = 0, world: int = 1,
                 endless: bool = True):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        self.cfg, self.seed, self.rank, self.world, self.endless = cfg, seed, rank, world, endless
        self.groups: dict[Bucket, list[int]] = {}
        for i, r in enumerate(refs):
            if r.weight > 0:
                self.groups.setdefault(r.bucket, []).append(i)
        if not self.groups:
            raise ValueError("no clip with a positive sample weight in this tier")
        self.buckets = sorted(self.groups, key=lambda b: (b.frames, b.height, b.width))
        weights = [np.array([refs[i].weight for i in self.groups[b]], np.float64) for b in self.buckets]
        self.cdfs = [np.cumsum(w) for w in weights]
        mass = np.array([w.sum() for w in weights])
        self.bucket_p = mass / mass.sum()
        self.sizes = [self.global_batch(k) for k in range(len(self.buckets))]
        self.batches_per_epoch = max(1, math.ceil(sum(len(self.groups[b]) / n
                                                      for b, n in zip(self.buckets, self.sizes))))
        self.epoch, self.start = 0, 0

    def global_batch(self, k: int) -> int:
        b = self.buckets[k]
        return max(self.world, min(b.batch_size(self.cfg) * self.world, len(self.groups[b])))

    def set_epoch(self, epoch: int) -> None:
        self.set_position(epoch, 0)

    def set_position(self, epoch: int, batch: int) -> None:
        """Start the next iteration at batch `batch` of epoch `epoch` (normalised past an epoch's end)."""
        epoch += batch // self.batches_per_epoch
        self.epoch, self.start = epoch, batch % self.batches_per_epoch

    def position_after(self, key: SampleKey) -> tuple[int, int]:
        """The (epoch, batch) that follows the batch `key` came from: where a resumed run starts."""
        nxt = key.batch + 1
        return (key.epoch + 1, 0) if nxt >= self.batches_per_epoch else (key.epoch, nxt)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "batch": self.start, "world": self.world,
                "batches_per_epoch": self.batches_per_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.set_position(int(state["epoch"]), int(state["batch"]))

    def draw(self, epoch: int, batch: int) -> tuple[Bucket, list[int]]:
        """Batch `batch` of epoch `epoch`, all ranks together: its bucket and clip indices in slot order."""
        rng = np.random.default_rng([self.seed, epoch, batch])
        k = int(rng.choice(len(self.buckets), p=self.bucket_p))
        bucket, members, cdf, n = self.buckets[k], self.groups[self.buckets[k]], self.cdfs[k], self.sizes[k]
        return bucket, [members[i] for i in _weighted_sample(rng, cdf, n)]

    def __len__(self) -> int:
        """Batches left in the current epoch (the endless sampler runs on past them)."""
        return self.batches_per_epoch - self.start

    def __iter__(self) -> Iterator[list[SampleKey]]:
        epoch, start = self.epoch, self.start
        while True:
            for b in range(start, self.batches_per_epoch):
                bucket, members = self.draw(epoch, b)
                prompt_seed = self.seed * 1_000_003 + epoch * self.batches_per_epoch + b
                share = np.array_split(np.arange(len(members)), self.world)[self.rank]
                yield [SampleKey(members[j], bucket, prompt_seed, epoch, b, int(j), len(members)) for j in share]
            if not self.endless:
                return
            epoch, start = epoch + 1, 0


def _weighted_sample(rng: np.random.Generator, cdf: np.ndarray, n: int) -> list[int]:
    """n indices ∝ the weights whose cumulative sum is `cdf`, without replacement when n ≤ len(cdf) (draws
    with replacement, duplicates rejected: the same law as successive sampling, O(n log m) per batch
    instead of numpy's O(m) `choice(p=...)`), with replacement beyond."""
    m, total = len(cdf), float(cdf[-1])
    if n > m:
        return np.searchsorted(cdf, rng.random(n) * total, side="right").clip(max=m - 1).tolist()
    if n == m:
        return rng.permutation(m).tolist()
    picked: list[int] = []
    seen: set[int] = set()
    for _ in range(64):
        for i in np.searchsorted(cdf, rng.random(2 * (n - len(picked))) * total, side="right").tolist():
            i = min(i, m - 1)
            if i not in seen:
                seen.add(i)
                picked.append(i)
                if len(picked) == n:
                    return picked
    weights = np.diff(cdf, prepend=0.0)  # very skewed weights: finish with numpy's exact sampler
    weights[picked] = 0.0
    rest = rng.choice(m, size=n - len(picked), replace=False, p=weights / weights.sum())
    return picked + rest.tolist()


def decode_clip(ref: ClipRef, bucket: Bucket, stride: int = 1) -> torch.Tensor:
    """(3, T, H, W) float in [-1, 1]: T frames from the clip's start at `stride`, cropped to the crop
    suggestion, scaled to cover the bucket size and centre-cropped to it."""
    idx = [min(ref.start + i * stride, ref.end - 1) for i in range(bucket.frames)]
    frames = read_frames(ref.uri, idx)
    x0, y0, x1, y1 = ref.crop
    out = np.empty((bucket.frames, bucket.height, bucket.width, 3), np.uint8)
    for i, f in enumerate(frames):
        out[i] = cover_resize(f[y0:y1, x0:x1], bucket.height, bucket.width)
    return video_tensor(out)


def read_frames(uri: str, idx: list[int]):
    """Frames `idx` of the source `uri` (its probe cached per process)."""
    return VideoReader(uri, info=_probe(uri)).read(idx)


def video_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames as a (3, T, H, W) float tensor in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)


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


class TierDataset(Dataset):
    """Map-style dataset over a tier's clips, indexed by `SampleKey`s from `BucketBatchSampler`: each item
    is one clip decoded to its bucket's (3, T, H, W) in [-1, 1] with its prompt. Decoding happens here, in
    the DataLoader's worker processes, not in the training step."""

    def __init__(self, refs: list[ClipRef], frame_stride: int = 1):
        self.refs, self.frame_stride = refs, frame_stride

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, key: SampleKey) -> dict:
        ref = self.refs[key.index]
        try:
            video = decode_clip(ref, key.bucket, self.frame_stride)
        except Exception as exc:
            raise RuntimeError(f"training data: clip {ref.clip_id} ({ref.uri}, frames {ref.start}-{ref.end}) "
                               f"did not decode: {exc}") from exc
        return {"video": video, "prompt": training_prompt(ref, key.prompt_seed), "key": key}


def collate_batch(items: list[dict]) -> dict:
    """{"videos": (B, 3, T, H, W), "prompts": [B], "bucket": Bucket, "keys": [B SampleKey]}; items from the
    latent cache (training.latents.LatentDataset) carry "latent_mean" and "latent_std" (B, C, T', h, w)
    instead of "videos"."""
    keys = [it["key"] for it in items]
    batch = {"prompts": [it["prompt"] for it in items], "bucket": keys[0].bucket, "keys": keys}
    for name, item in (("videos", "video"), ("latent_mean", "latent_mean"), ("latent_std", "latent_std")):
        if item in items[0]:
            batch[name] = torch.stack([it[item] for it in items])
    return batch


def _worker_init(owner: int, _: int) -> None:
    torch.set_num_threads(1)  # decode workers: one thread each, the training step keeps the cores
    cv2.setNumThreads(1)
    _exit_with(owner)


def _exit_with(owner: int) -> None:
    """End this worker when process `owner` (the one iterating the DataLoader) ends, even by SIGKILL.

    A worker started through the fork server is the server's child: PyTorch's own watchdog sees the server
    alive, and the server lives as long as its children do, so after a killed trainer both would wait
    forever. A daemon thread waits on a pidfd of the owner (polls its pid where pidfds are missing)."""
    import threading

    def watch() -> None:
        try:
            import select

            fd = os.pidfd_open(owner)
            select.select([fd], [], [])
        except (AttributeError, OSError):
            while True:
                try:
                    os.kill(owner, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-trainer", daemon=True).start()


def _context(start_method: str):
    import multiprocessing as mp

    if start_method not in mp.get_all_start_methods():
        start_method = "spawn"
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        # workers fork from a server that has torch and the decoders imported (not Lance: it warns at a fork)
        ctx.set_forkserver_preload(["torch", "cv2", "curation.video"])
    return ctx


def make_loader(dataset: TierDataset, sampler: BucketBatchSampler, workers: int = 2, prefetch_factor: int = 2,
                persistent_workers: bool = True, pin_memory: bool = False,
                start_method: str = "forkserver") -> DataLoader:
    """The DataLoader over `dataset` in `sampler`'s batches; `workers` decode processes (0: in this one),
    each `prefetch_factor` batches ahead; `pin_memory` for fast host-to-GPU copies.

    Workers start through a fork server, not by forking this process: Lance and Arrow run thread pools
    here, and a child forked while one of their threads holds a lock deadlocks (seen: a decode worker
    forked after `read_tier` hung in a futex with one thread). `start_method="fork"` is faster to start
    where nothing of that kind has run."""
    kwargs: dict = {}
    if workers > 0:
        kwargs = dict(prefetch_factor=prefetch_factor, persistent_workers=persistent_workers,
                      worker_init_fn=functools.partial(_worker_init, os.getpid()),
                      multiprocessing_context=_context(start_method))
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch, num_workers=workers,
                      pin_memory=pin_memory, **kwargs)


class TierLoader:
    """Batches for training from one tier: yields (videos (B, 3, T, H, W), prompts, bucket), endlessly,
    through `make_loader` (`workers` decode processes; 0 decodes in this process)."""

    def __init__(self, lake: Lake | str, tier: str, cfg: BucketConfig = BucketConfig(), seed: int = 0,
                 workers: int = 0):
        self.cfg, self.seed, self.workers = cfg, seed, workers
        self.refs = read_tier(lake, tier, cfg)
        if not self.refs:
            raise ValueError(f"tier '{tier}' is empty")
        self.sampler = BucketBatchSampler(self.refs, cfg, seed)
        self.dataset = TierDataset(self.refs, cfg.frame_stride)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str], Bucket]]:
        for batch in make_loader(self.dataset, self.sampler, self.workers):
            yield batch["videos"], batch["prompts"], batch["bucket"]
