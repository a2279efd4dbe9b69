"""The file format of a trained VAE: `model.safetensors` with a `config.json` beside it that records its shape
(`VAEConfig`, scaling factor included), as `videocurate train-vae` exports it to `OUT/vae/`, and the loader
behind `videocurate train --vae PATH` (`training.curriculum.load_vae`): a train-vae run folder, an export or
checkpoint folder, a `.safetensors` file, or a legacy `torch.save(vae.state_dict())` file."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from curation.errors import ConfigError
from training import checkpoint as ckpt
from training.vae import CausalVAE, VAEConfig

EXPORT = "vae"  # the export folder inside a train-vae run folder
KIND = "causal-vae"  # config.json's "kind" of VAE weights


def vae_config_from(doc: dict) -> VAEConfig:
    """A VAEConfig from a mapping (JSON/YAML lists become tuples); unknown keys and bad shapes are errors."""
    known = {f.name for f in dataclasses.fields(VAEConfig)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ConfigError(f"VAE config: unknown key(s) {unknown}; known: {sorted(known)}")
    cfg = dict(doc)
    if cfg.get("block_out_channels") is not None:
        cfg["block_out_channels"] = tuple(cfg["block_out_channels"])
    try:
        return VAEConfig(**cfg)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"VAE config: {exc}") from exc


def config_doc(vae_cfg: VAEConfig, **extra) -> dict:
    """config.json of VAE weights: the kind, the VAEConfig and `extra` facts (step, tier ...)."""
    return {"kind": KIND, "vae_config": dataclasses.asdict(vae_cfg), **extra}


def export_vae(folder: str | os.PathLike, vae: CausalVAE, scaling_factor: float | None = None, **extra) -> Path:
    """`folder/model.safetensors` and `folder/config.json` (the VAEConfig, with `scaling_factor` when given):
    what `read_vae` loads."""
    config = vae.config if scaling_factor is None else dataclasses.replace(vae.config, scaling_factor=scaling_factor)
    ckpt.save_weights(folder, vae.state_dict(), None, config_doc(config, **extra))
    return Path(folder)


def _weights_file(path: Path) -> Path:
    """The weights a `--vae` path names: a file, an export or checkpoint folder, or a train-vae run folder
    (its final export, else its latest checkpoint)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ConfigError(f"--vae {str(path)!r}: no such file or folder")
    for folder in (path, path / EXPORT):
        if (folder / "model.safetensors").is_file():
            return folder / "model.safetensors"
    latest = ckpt.latest_checkpoint(path)
    if latest is not None and (latest / "model.safetensors").is_file():
        return latest / "model.safetensors"
    raise ConfigError(f"--vae {str(path)!r}: a folder without VAE weights (expected model.safetensors, "
                      f"{EXPORT}/model.safetensors or checkpoints/ of a train-vae run)")


def read_vae(path: str | os.PathLike) -> tuple[VAEConfig | None, dict[str, torch.Tensor]]:
    """(the VAE's config, or None when none is saved with it; its state dict) from a `.safetensors` file with
    an optional `config.json` beside it, an export/checkpoint folder, a train-vae run folder, or a
    `torch.save(vae.state_dict())` file. Anything else is a ConfigError naming the path."""
    weights = _weights_file(Path(path))
    try:
        if weights.suffix == ".safetensors":
            state = load_file(str(weights))
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load fails in many ways on a file that is not weights
        raise ConfigError(f"--vae {str(path)!r}: {weights} is not a VAE weights file ({exc})") from exc
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"--vae {str(path)!r}: {weights} holds no state dict of tensors")
    meta = weights.parent / "config.json"
    if not meta.is_file():
        return None, state
    try:
        doc = json.loads(meta.read_text())
    except ValueError as exc:
        raise ConfigError(f"--vae {str(path)!r}: {meta} is not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        if isinstance(doc, dict) and "dit_config" in doc:
            raise ConfigError(f"--vae {str(path)!r}: {weights} holds DiT weights (a `videocurate train` "
                              "checkpoint), not a VAE")
        return None, state
    return vae_config_from(doc["vae_config"]), state
