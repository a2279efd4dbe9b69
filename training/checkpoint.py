"""Checkpoints of a training run: weights as safetensors, everything else in a small state file.

Layout of a run folder (`videocurate train --out OUT`)::

    OUT/run.json                      what the run is (model, DiT config, seed, phases, trainer settings)
    OUT/losses.jsonl                  one line per optimiser step: phase, step, loss, grad norm, lr, bucket
    OUT/summary.json                  per phase: steps, first/last loss, EMA eval loss, export folder
    OUT/checkpoints/step-00000012/    every `checkpoint_every` steps and at each phase's end
        model.safetensors             DiT weights
        ema.safetensors               EMA of the DiT weights
        config.json                   DiT config, preset, phase, step (what `load_dit` needs)
        trainer_state.pt              optimiser (full, keyed by parameter name), LR scheduler, sampler
                                      position, step counters
        rng-rank0.pt ...              every RNG state of each rank (python, numpy, torch CPU, CUDA)
        state.json                    the position in words: phase, step, global step, epoch, batch, loss
    OUT/checkpoints/latest            the name of the newest complete checkpoint
    OUT/<phase>/                      a phase's final weights: model.safetensors, ema.safetensors, config.json

A checkpoint is written into `step-N.tmp/` and renamed when complete, and `latest` is replaced atomically
after that, so a kill at any moment leaves the previous checkpoint intact. The layout is the same whatever the
data-parallel strategy (`training.fsdp`: FSDP shards are gathered to full tensors on rank 0 before writing),
so a run resumes under DDP or FSDP and any worker count. Everything loads with
`torch.load(weights_only=True)`: no pickled code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from training.dit import DiTConfig, VideoDiT

CHECKPOINTS = "checkpoints"
LATEST = "latest"


def write_json(path: str | os.PathLike, doc: dict) -> None:
    """Atomic JSON write (temporary file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    os.replace(tmp, path)


def save_weights(folder: str | os.PathLike, model: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None,
                 config: dict) -> None:
    """model.safetensors, ema.safetensors (when given) and config.json into `folder`."""
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.items()}, os.path.join(folder, "model.safetensors"))
    if ema is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in ema.items()}, os.path.join(folder, "ema.safetensors"))
    write_json(os.path.join(folder, "config.json"), config)


def dit_config_from(doc: dict) -> DiTConfig:
    fields = {f.name for f in dataclasses.fields(DiTConfig)}
    cfg = {k: v for k, v in doc.items() if k in fields}
    for k in ("patch_size", "rope_axes"):
        if cfg.get(k) is not None:
            cfg[k] = tuple(cfg[k])
    return DiTConfig(**cfg)


def load_dit(path: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu") -> VideoDiT:
    """A trained DiT in eval mode from a phase folder or a checkpoint folder (EMA weights unless `ema=False`;
    the raw weights when the folder has no EMA), or from a legacy `<phase>.pt` file."""
    path = Path(path)
    if path.is_file():  # legacy: torch.save({"dit_config": ..., "dit": state_dict})
        doc = torch.load(path, map_location="cpu", weights_only=True)
        dit = VideoDiT(dit_config_from(doc["dit_config"]))
        dit.load_state_dict(doc["dit"])
        return dit.to(device).eval()
    cfg = json.loads((path / "config.json").read_text())
    dit = VideoDiT(dit_config_from(cfg["dit_config"]))
    weights = path / "ema.safetensors" if ema and (path / "ema.safetensors").is_file() else path / "model.safetensors"
    dit.load_state_dict(load_file(str(weights)))
    return dit.to(device).eval()


def rng_state() -> dict:
    """Every global RNG state of this process, as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(out: str | os.PathLike, global_step: int) -> Path:
    return Path(out) / CHECKPOINTS / f"step-{global_step:08d}"


def begin_checkpoint(out: str | os.PathLike, global_step: int, rank: int) -> Path:
    """Every rank: create the checkpoint's temporary folder and write this rank's RNG states into it."""
    tmp = checkpoint_dir(out, global_step).with_suffix(".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    return tmp


def finish_checkpoint(out: str | os.PathLike, global_step: int, model: dict, ema: dict | None, config: dict,
                      trainer_state: dict, state: dict, keep: int = 2) -> Path:
    """Rank 0, after every rank's `begin_checkpoint`: weights and state into the temporary folder, rename it,
    point `latest` at it, and delete all but the newest `keep` checkpoints."""
    final = checkpoint_dir(out, global_step)
    tmp = final.with_suffix(".tmp")
    save_weights(tmp, model, ema, config)
    torch.save(trainer_state, tmp / "trainer_state.pt")
    write_json(tmp / "state.json", state)
    if final.exists():  # a rerun of the same step after a resume: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    root = final.parent
    tmp_latest = root / f"{LATEST}.tmp"
    tmp_latest.write_text(final.name)
    os.replace(tmp_latest, root / LATEST)
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[:-max(1, keep)]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    root = Path(out) / CHECKPOINTS
    pointer = root / LATEST
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / "trainer_state.pt").is_file():
            return path
    done = sorted(p for p in root.glob("step-*") if (p / "trainer_state.pt").is_file() and p.suffix != ".tmp")
    return done[-1] if done else None


def load_checkpoint(path: str | os.PathLike, rank: int = 0) -> dict:
    """{"model", "ema" (or None), "config", "trainer" (trainer_state.pt), "state", "rng" (this rank's, or None)}."""
    path = Path(path)
    rng_file = path / f"rng-rank{rank}.pt"
    return {
        "model": load_file(str(path / "model.safetensors")),
        "ema": load_file(str(path / "ema.safetensors")) if (path / "ema.safetensors").is_file() else None,
        "config": json.loads((path / "config.json").read_text()),
        "trainer": torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True),
        "state": json.loads((path / "state.json").read_text()),
        "rng": torch.load(rng_file, weights_only=True) if rng_file.is_file() else None,
    }
