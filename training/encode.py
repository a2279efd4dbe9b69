"""`videocurate encode`: bring a tier's latent cache (`latents/<tier>`, `training.latents`) up to date for a
curriculum's bucket shapes and a VAE.

Incremental and resumable: stale rows (another VAE, a clip that changed or left the tier) are dropped, only
the missing (clip, bucket) windows are decoded (`training.data.TierDataset` in DataLoader worker processes,
exactly as the trainer would) and encoded (VAE batches of one bucket), and rows are committed to Lance every
`chunk` rows under the lake's lock, minus any a concurrent encode committed meanwhile: a killed run loses at
most the chunk in flight and a rerun encodes what is still missing. The tier's table version and the VAE's
hash are recorded last, so a cache is complete only once an encode has finished."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from curation.errors import ConfigError
from curation.lake import Lake
from curation.writer import quoted
from training.data import Bucket, BucketConfig, ClipRef, SampleKey, TierDataset, assign_bucket, make_loader, read_tier
from training.latents import (
    CACHE_KEY,
    DTYPE,
    INDEX_COLUMNS,
    CacheIndex,
    Key,
    cache_table,
    item_key,
    source_key,
    state_dict_hash,
    tier_version,
)
from training.vae import CausalVAE, TileConfig


@dataclass
class EncodeReport:
    table: str
    tier_version: int
    vae: str
    needed: int = 0  # (clip, bucket, stride) items the curriculum's phases on this tier train on
    cached: int = 0  # of those, already valid in the cache
    encoded: int = 0
    removed: int = 0  # stale rows dropped (another VAE, a changed or removed clip)
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.table}: {self.needed} clip-buckets, {self.cached} cached, {self.encoded} encoded, "
                f"{self.removed} stale rows removed; tier version {self.tier_version}, VAE {self.vae[:12]} "
                f"({self.seconds:.1f} s)")


@dataclass(frozen=True)
class _Item:
    ref: int  # index into the tier's refs
    bucket: Bucket
    stride: int
    batch: int  # the most clips of this bucket per VAE batch


def plan_items(refs: list[ClipRef], configs: Sequence[BucketConfig], batch: int) -> dict[Key, _Item]:
    """Every (clip, bucket, stride) the phases with bucket configs `configs` draw from these refs."""
    items: dict[Key, _Item] = {}
    for cfg in configs:
        for i, r in enumerate(refs):
            bucket = assign_bucket(r.crop[2] - r.crop[0], r.crop[3] - r.crop[1], r.end - r.start, cfg)
            items.setdefault(item_key(r, bucket, cfg.frame_stride),
                             _Item(i, bucket, cfg.frame_stride, max(1, min(batch, bucket.batch_size(cfg)))))
    return items


def _stale_rows(index: CacheIndex, refs: list[ClipRef], vae: str) -> tuple[int, list[str]]:
    """(count of rows encoded with another VAE, clip ids whose rows are stale: the clip left the tier or changed)."""
    sources = {r.clip_id: source_key(r) for r in refs}
    other_vae = sum(row.vae != vae for row in index.rows.values())
    changed = sorted({k[0] for k, row in index.rows.items() if row.vae == vae and sources.get(k[0]) != row.source})
    return other_vae, changed


def _batches(todo: list[tuple[Key, _Item]]) -> list[list[tuple[Key, _Item]]]:
    """VAE batches of one bucket each (in tier order within a bucket; `todo` is of one stride)."""
    groups: dict[Bucket, list[tuple[Key, _Item]]] = {}
    for entry in todo:
        groups.setdefault(entry[1].bucket, []).append(entry)
    out = []
    for bucket in sorted(groups, key=lambda b: (b.frames, b.height, b.width)):
        group, size = groups[bucket], groups[bucket][0][1].batch
        out += [group[i:i + size] for i in range(0, len(group), size)]
    return out


def _rows(keys: list[Key], sources: list[str], vae: str, mean: torch.Tensor, std: torch.Tensor) -> pa.Table:
    m, s = mean.cpu().numpy().astype(DTYPE), std.cpu().numpy().astype(DTYPE)
    bad = [k[0] for k, a, b in zip(keys, m, s) if not (np.isfinite(a).all() and np.isfinite(b).all())]
    if bad:
        raise RuntimeError(f"encode: the latents of clip(s) {bad[:5]} do not fit float16 (|value| > 65504)")
    return pa.table({
        "clip_id": [k[0] for k in keys],
        **{c: pa.array([k[j] for k in keys], pa.int32()) for j, c in enumerate(INDEX_COLUMNS[1:5], 1)},
        "source": sources, "vae": [vae] * len(keys),
        "shape": pa.array([list(a.shape) for a in m], pa.list_(pa.int32(), 4)),
        "mean": pa.array([a.tobytes() for a in m], pa.large_binary()),
        "std": pa.array([b.tobytes() for b in s], pa.large_binary()),
    })


def _commit(lake: Lake, table: str, parts: list[pa.Table]) -> int:
    """Append `parts` under the lake's lock, minus rows a concurrent encode committed meanwhile."""
    data = pa.concat_tables(parts)
    with lake.lock():
        ds = lake.dataset(table)
        if ds is not None:
            have = ds.to_table(columns=INDEX_COLUMNS[:5],
                               filter=f"clip_id IN ({quoted(sorted(set(data.column('clip_id').to_pylist())))})")
            done = set(zip(*(have.column(c).to_pylist() for c in INDEX_COLUMNS[:5])))
            keep = [tuple(r) not in done for r in zip(*(data.column(c).to_pylist() for c in INDEX_COLUMNS[:5]))]
            data = data.filter(pa.array(keep))
        lake.append(table, data)
    return data.num_rows


def encode_tier(lake: Lake | str, tier: str, configs: Sequence[BucketConfig], vae: CausalVAE, vae_path: str = "",
                device: str | torch.device = "cpu", workers: int = 2, batch: int = 4, chunk: int = 64,
                tile: TileConfig | None = None, log: Callable[[str], None] = print) -> EncodeReport:
    """Bring `latents/<tier>` up to date for the bucket configs `configs` (the curriculum's phases on this tier)
    and `vae`: drop stale rows, encode the missing (clip, bucket) windows (`workers` DataLoader decode
    processes, VAE batches of at most `batch` same-bucket clips, a Lance commit every `chunk` rows), then
    record the tier version and the VAE in the table's metadata."""
    if not configs:
        raise ConfigError(f"encode: no bucket configuration for tier '{tier}'")
    if batch < 1 or chunk < 1 or workers < 0:
        raise ConfigError("encode: --batch and --chunk must be >= 1 and --workers >= 0")
    lake = lake if isinstance(lake, Lake) else Lake(lake, create=False)
    t0 = time.monotonic()
    device = torch.device(device)
    vae = vae.to(device).eval().requires_grad_(False)
    digest = state_dict_hash(vae)
    table = cache_table(tier)
    if not lake.exists(f"tiers/{tier}"):
        have = [t.removeprefix("tiers/") for t in lake.tables() if t.startswith("tiers/")]
        raise ConfigError(f"encode: no tier '{tier}' in {lake.root} (tiers: {have}); run videocurate tier first")
    with lake.lock(shared=True):
        version = tier_version(lake, tier)
        refs = read_tier(lake, tier, configs[0])
    report = EncodeReport(table, version, digest)
    items = plan_items(refs, configs, batch)
    report.needed = len(items)
    index = CacheIndex.read(lake, tier)
    if index is not None:
        other_vae, changed = _stale_rows(index, refs, digest)
        if other_vae:
            lake.delete(table, f"vae != '{digest}'")
        for i in range(0, len(changed), 512):
            lake.delete(table, f"clip_id IN ({quoted(changed[i:i + 512])})")
        gone = set(changed)
        report.removed = other_vae + sum(row.vae == digest and k[0] in gone for k, row in index.rows.items())
        index = CacheIndex.read(lake, tier)
    sources = [source_key(r) for r in refs]
    todo = [(k, it) for k, it in items.items()
            if index is None or not index.valid(k, sources[it.ref], digest)]
    report.cached = report.needed - len(todo)
    log(f"encode {table}: {len(todo)} of {report.needed} clip-buckets to encode ({len(refs)} clips, "
        f"{len({it.bucket for it in items.values()})} buckets) with VAE {digest[:12]} on {device}")
    pending: list[pa.Table] = []
    for stride in sorted({it.stride for _, it in todo}):
        groups = _batches([e for e in todo if e[1].stride == stride])
        keys_of = [[SampleKey(it.ref, it.bucket, 0, 0, b, j, len(g)) for j, (_, it) in enumerate(g)]
                   for b, g in enumerate(groups)]
        loader = make_loader(TierDataset(refs, stride), keys_of, workers, persistent_workers=False)
        for group, decoded in zip(groups, loader):
            with torch.no_grad():
                posterior = vae.encode(decoded["videos"].to(device), tile)
            keys = [k for k, _ in group]
            pending.append(_rows(keys, [sources[it.ref] for _, it in group], digest, posterior.mean, posterior.std))
            if sum(p.num_rows for p in pending) >= chunk:
                report.encoded += _commit(lake, table, pending)
                pending = []
                log(f"encode {table}: {report.cached + report.encoded}/{report.needed} committed")
    if pending:
        report.encoded += _commit(lake, table, pending)
    meta = index.meta if index is not None else None
    unchanged = not todo and not report.removed and meta and (meta.get("tier_version"), meta.get("vae")) == (
        version, digest)
    if lake.exists(table) and not unchanged:  # a rerun with nothing to do writes nothing
        lake.set_meta(table, CACHE_KEY, {"tier": tier, "tier_version": version, "vae": digest, "vae_path": vae_path,
                                         "dtype": "float16", "scaling_factor": vae.config.scaling_factor,
                                         "latent_channels": vae.config.latent_channels,
                                         "tile": None if tile is None else [tile.sample_size, tile.overlap],
                                         "encoded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    report.seconds = time.monotonic() - t0
    log(report.line())
    return report


def tier_configs(plan, tier: str) -> list[BucketConfig]:
    """The bucket configs of a curriculum's phases that train on `tier` (distinct, in phase order)."""
    configs: list[BucketConfig] = []
    for phase in plan.phases:
        if phase.tier == tier and phase.buckets not in configs:
            configs.append(phase.buckets)
    if not configs:
        tiers = sorted({p.tier for p in plan.phases})
        raise ConfigError(f"encode: no phase of the curriculum trains on tier '{tier}' (its tiers: {tiers}); "
                          f"pass the --curriculum that does, so the bucket shapes are known")
    return configs


def cmd_encode(args: argparse.Namespace) -> int:
    """`videocurate encode`: the VAE of `--vae` (shape from `--preset` or the curriculum's model), the bucket
    shapes of the curriculum's phases on `--tier`."""
    import os

    from training.config import get_preset
    from training.curriculum import load_curriculum, load_vae
    from training.trainer import _resolve_device

    plan = load_curriculum(args.curriculum)
    preset = get_preset(args.preset or plan.model)
    if args.vae == "random":
        raise ConfigError("encode: --vae must be a trained VAE (a state-dict or .safetensors file, or a train-vae "
                          "run folder); latents of a random VAE would match no training run")
    configs = tier_configs(plan, args.tier)
    vae = load_vae(preset.vae, args.vae)
    device = _resolve_device(args.device)
    encode_tier(Lake(args.lake, create=False), args.tier, configs, vae, os.path.abspath(args.vae), device,
                args.workers, args.batch, args.chunk, TileConfig(args.tile) if args.tile else None)
    return 0
