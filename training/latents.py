"""The latent cache: VAE posteriors of a tier's clips, one row per clip and bucket, in the Lance table
`latents/<tier>` of the lake, so DiT training reads latents instead of decoding video and running the VAE.

A row holds the posterior of exactly the window the tier loader would feed the DiT for that bucket
(`training.data.decode_clip`: the clip's frames from its start at the phase's stride, cropped to its crop
suggestion, cover-resized to the bucket): `mean` and `std`, float16 bytes of a fixed shape `shape`
(C, T', h, w), unscaled (the trainer multiplies by its VAE's scaling factor). Each row records the VAE it
came from (`vae`: BLAKE2b-128 of the state dict — names, dtypes, shapes and bytes, so the same weights in
any file format hash alike) and the clip's `source` (a hash of uri, frame span and crop); the table's
schema metadata (`videocurate.latents`) records the tier's table version and the VAE of the last complete
`videocurate encode`.

A cache is used for a phase only when it is valid for every clip of the phase: the tier's current table
version and the training VAE's hash equal the recorded ones and every (clip, bucket) has a row with that
VAE and the clip's current source. Otherwise the phase decodes video, and says why. `encode_tier` is
written by `videocurate encode` (`training.encode`).

Training may draw z = mean + std·eps (`TrainerConfig.latent_sample`): eps comes from a generator keyed by
the sample's place in the data stream (as the flow noise), so resume and data parallelism stay exact; by
default z is the posterior mean, as the decode path always used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from curation.lake import Lake
from training.data import Bucket, ClipRef, SampleKey, TierDataset, training_prompt
from training.train import key_seed
from training.vae import CausalVAE, TileConfig

CACHE_KEY = "videocurate.latents"
LATENT_SALT = 0x1A7E47  # appended to a sample's stream key: its latent eps is a stream apart from its flow noise
INDEX_COLUMNS = ["clip_id", "frames", "height", "width", "stride", "source", "vae"]
DTYPE = np.float16

Key = tuple[str, int, int, int, int]  # clip_id, frames, height, width, stride


def cache_table(tier: str) -> str:
    """The Lance table of a tier's latents (`latents/256p`, a DuckDB view `latents_256p`)."""
    return f"latents/{tier}"


def state_dict_hash(model: nn.Module | dict[str, torch.Tensor]) -> str:
    """BLAKE2b-128 (hex) of a state dict: every tensor's name, dtype, shape and bytes, in name order."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def source_key(ref: ClipRef) -> str:
    """What a clip's window depends on besides its bucket and stride: source uri, frame span and crop."""
    doc = json.dumps([ref.uri, ref.start, ref.end, list(ref.crop)])
    return hashlib.blake2b(doc.encode(), digest_size=16).hexdigest()


def item_key(ref: ClipRef, bucket: Bucket, stride: int) -> Key:
    return ref.clip_id, bucket.frames, bucket.height, bucket.width, stride


def tier_version(lake: Lake, tier: str) -> int:
    ds = lake.dataset(f"tiers/{tier}")
    if ds is None:
        raise FileNotFoundError(f"no tier '{tier}' in {lake.root}")
    return ds.version


# ---- the posterior and the latents the DiT sees ------------------------------------------------------------


def batch_posterior(vae: CausalVAE, batch: dict, device: torch.device, need_std: bool,
                    tile: TileConfig | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mean, std or None) of a loader batch, float32 on `device`: the cached posterior when the batch carries
    one (`latent_mean`/`latent_std`, from `LatentDataset`), else the VAE's encode of its decoded `videos`."""
    if "latent_mean" in batch:
        mean = batch["latent_mean"].to(device, non_blocking=True).float()
        return mean, batch["latent_std"].to(device, non_blocking=True).float() if need_std else None
    posterior = vae.encode(batch["videos"].to(device, non_blocking=True), tile)
    return posterior.mean.float(), posterior.std.float() if need_std else None


def draw_latents(mean: torch.Tensor, std: torch.Tensor | None, keys: Sequence[Sequence[int]] | None,
                 scaling: float) -> torch.Tensor:
    """Scaled latents for the DiT: mean·scaling, or (mean + std·eps)·scaling with sample i's eps drawn from a
    generator seeded by its stream key `keys[i]` (salted), whatever batch, micro-batch or rank it is in."""
    if keys is None or std is None:
        return mean * scaling
    eps = torch.stack([torch.randn(tuple(mean.shape[1:]), device=mean.device, dtype=mean.dtype,
                                   generator=torch.Generator(device=mean.device).manual_seed(
                                       key_seed((*key, LATENT_SALT))))
                       for key in keys])
    return (mean + std * eps) * scaling


# ---- the cache's index -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    position: int  # row offset in the pinned table version
    source: str
    vae: str


@dataclass
class CacheIndex:
    """The index columns of `latents/<tier>` at one version (no tensors read)."""

    path: str
    version: int
    meta: dict | None
    rows: dict[Key, Row]

    @classmethod
    def read(cls, lake: Lake, tier: str) -> CacheIndex | None:
        ds = lake.dataset(cache_table(tier))
        if ds is None:
            return None
        table = ds.to_table(columns=INDEX_COLUMNS)
        cols = [table.column(c).to_pylist() for c in INDEX_COLUMNS]
        rows = {(c, f, h, w, s): Row(i, src, v)
                for i, (c, f, h, w, s, src, v) in enumerate(zip(*cols))}
        return cls(ds.uri, ds.version, lake.meta(cache_table(tier), CACHE_KEY), rows)

    def valid(self, key: Key, source: str, vae: str) -> bool:
        row = self.rows.get(key)
        return row is not None and row.source == source and row.vae == vae


def _no_cache(lake: Lake, tier: str) -> str:
    return f"no latent cache {cache_table(tier)} (videocurate encode --lake {lake.root} --tier {tier} --vae PATH)"


def usable_cache(lake: Lake, tier: str, refs: list[ClipRef], stride: int, vae: str
                 ) -> tuple[CacheIndex | None, str]:
    """The cache index when `latents/<tier>` is valid for every clip of `refs` (at its bucket, `stride`) with
    the VAE of hash `vae`, else None; and the reason, for the log."""
    table = cache_table(tier)
    index = CacheIndex.read(lake, tier)
    if index is None:
        return None, _no_cache(lake, tier)
    meta = index.meta or {}
    if "tier_version" not in meta:
        return None, f"latent cache {table} is incomplete (an encode did not finish): rerun videocurate encode"
    now = tier_version(lake, tier)
    if meta["tier_version"] != now:
        return None, (f"latent cache {table} is stale: encoded from version {meta['tier_version']} of "
                      f"tiers/{tier}, which is now at version {now} (re-materialised); rerun videocurate encode")
    if meta.get("vae") != vae:
        return None, (f"latent cache {table} is stale: encoded with VAE {str(meta.get('vae'))[:12]}, this run's VAE "
                      f"is {vae[:12]}; rerun videocurate encode with this VAE")
    missing = sum(not index.valid(item_key(r, r.bucket, stride), source_key(r), vae) for r in refs)
    if missing:
        return None, (f"latent cache {table} lacks {missing} of {len(refs)} clips at this phase's buckets "
                      f"(stride {stride}); rerun videocurate encode with this curriculum")
    return index, (f"latents from the cache {table} (version {index.version}, {len(refs)} clips, VAE {vae[:12]}); "
                   f"no video is decoded")


# ---- the latent-backed dataset and the switch ---------------------------------------------------------------


class LatentDataset(Dataset):
    """`TierDataset`'s twin over the cache: item `SampleKey` → {"latent_mean", "latent_std" (float16 tensors
    (C, T', h, w)), "prompt", "key"}. Reads one pinned table version; a batch is one Lance `take`
    (`__getitems__`). The Lance dataset is opened lazily, in each DataLoader worker."""

    def __init__(self, path: str, version: int, refs: list[ClipRef], positions: list[int]):
        self.path, self.version, self.refs, self.positions = path, version, refs, positions
        self._ds = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_ds": None}

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, key: SampleKey) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[SampleKey]) -> list[dict]:
        import lance

        if self._ds is None:
            self._ds = lance.dataset(self.path, version=self.version)
        wrong = [k for k in keys if k.bucket != self.refs[k.index].bucket]
        if wrong:
            raise ValueError(f"latent cache: clip {self.refs[wrong[0].index].clip_id} is cached at bucket "
                             f"{self.refs[wrong[0].index].bucket}, asked for {wrong[0].bucket}")
        rows = self._ds.take([self.positions[k.index] for k in keys], columns=["shape", "mean", "std"])
        shapes, means, stds = (rows.column(c).to_pylist() for c in ("shape", "mean", "std"))
        return [{"latent_mean": _tensor(m, s), "latent_std": _tensor(d, s),
                 "prompt": training_prompt(self.refs[k.index], k.prompt_seed), "key": k}
                for k, s, m, d in zip(keys, shapes, means, stds)]


def _tensor(raw: bytes, shape: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(raw, DTYPE).reshape(shape).copy())


def phase_dataset(lake: Lake | str, tier: str, refs: list[ClipRef], stride: int, vae: CausalVAE,
                  log: Callable[[str], None] = print) -> Dataset:
    """The dataset a training phase reads: `LatentDataset` when the tier's latent cache is valid for these
    clips and this VAE, else `TierDataset` (decodes video); logs which, and why."""
    lake = lake if isinstance(lake, Lake) else Lake(lake, create=False)
    if lake.exists(cache_table(tier)):  # hash the VAE only when there is a cache to check it against
        index, why = usable_cache(lake, tier, refs, stride, state_dict_hash(vae))
    else:
        index, why = None, _no_cache(lake, tier)
    if index is None:
        log(f"tier {tier}: decoding video ({why})")
        return TierDataset(refs, stride)
    log(f"tier {tier}: {why}")
    positions = [index.rows[item_key(r, r.bucket, stride)].position for r in refs]
    return LatentDataset(index.path, index.version, refs, positions)
