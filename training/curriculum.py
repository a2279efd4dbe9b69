"""The training curriculum: progressive training from curated tiers (HunyuanVideo: images at 256 →
low-res short video → low-res long → high-res long, images mixed in at every phase). A YAML list of
phases, each a tier, a number of steps and a bucket configuration, run in order with one DiT, a frozen
VAE and a frozen text encoder, plus an optional `train:` section of trainer settings
(`training.trainer.TrainerConfig`). The run itself — DataLoader, checkpoints, resume, Ray Train — is
`training.trainer`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from curation.errors import ConfigError
from curation.lake import Lake
from curation.pipeline import find_yaml
from training.config import get_preset
from training.data import BucketConfig
from training.vae import CausalVAE


@dataclass
class Phase:
    name: str
    tier: str
    steps: int
    buckets: BucketConfig = field(default_factory=BucketConfig)
    lr: float | None = None  # None: TrainConfig's


@dataclass
class Curriculum:
    model: str  # preset name
    phases: list[Phase]
    train: dict = field(default_factory=dict)  # trainer settings (TrainerConfig fields)


def load_curriculum(spec: str = "curriculum") -> Curriculum:
    path = find_yaml(spec)
    if path is None:
        raise ConfigError(f"no training curriculum '{spec}' (a YAML path or a bundled name: curriculum)")
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    unknown = sorted(set(doc) - {"model", "phases", "train"})
    if unknown:
        raise ConfigError(f"curriculum {path}: unknown key(s) {unknown}; known: ['model', 'phases', 'train']")
    phases = []
    for s in doc.get("phases") or []:
        b = dict(s.get("buckets") or {})
        if "frame_counts" in b:
            b["frame_counts"] = tuple(b["frame_counts"])
        try:
            phases.append(Phase(s["name"], s["tier"], int(s["steps"]), BucketConfig(**b), s.get("lr")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"training phase {s.get('name', '?')} in {path}: {exc}") from exc
    if not phases:
        raise ConfigError(f"{path} defines no training phases")
    get_preset(doc.get("model", "tiny"))  # an unknown preset is an error now, not after the first phase
    train = doc.get("train") or {}
    from training.trainer import trainer_config

    trainer_config(train)  # unknown or bad trainer settings are an error now too
    return Curriculum(doc.get("model", "tiny"), phases, dict(train))


def load_vae(preset_vae, vae: str) -> CausalVAE:
    """The frozen VAE at `vae`: a `videocurate train-vae` run folder (its final export, else its latest
    checkpoint), an export or checkpoint folder, a `.safetensors` file (with the `config.json` saved beside
    it, which sets the VAE's shape), or a `torch.save(vae.state_dict())` file of the preset's shape; or —
    only when asked for by name — 'random' for smoke tests of the loop (latents of an untrained VAE teach a
    DiT nothing). Its latent channels must be the preset's (the DiT's input)."""
    if vae == "random":
        return CausalVAE(preset_vae).eval().requires_grad_(False)
    if not vae or not os.path.exists(vae):
        raise ConfigError(f"train: --vae must be a train-vae run folder, a VAE .safetensors or state-dict file, "
                          f"or 'random' for a smoke test; got {vae!r}")
    from training.vae_export import read_vae

    config, state = read_vae(vae)
    config = config or preset_vae
    if config.latent_channels != preset_vae.latent_channels:
        raise ConfigError(f"--vae {vae!r}: {config.latent_channels} latent channels, the model preset's DiT takes "
                          f"{preset_vae.latent_channels}")
    model = CausalVAE(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"--vae {vae!r}: the weights do not fit a CausalVAE of shape {config}: "
                          f"{str(exc)[:300]}") from exc
    return model.eval().requires_grad_(False)


def train_curriculum(lake: Lake | str, plan: Curriculum, vae: str, out: str, text_encoder: str | dict | None = None,
                     max_steps: int | None = None, device: str = "auto", seed: int = 0,
                     log: Callable[[str], None] = print, config: dict | None = None, resume: bool = False,
                     workers: int = 1, address: str | None = None, num_cpus: int | None = None,
                     stop_after: int | None = None) -> dict:
    """Run every phase in order on one DiT (training.trainer): checkpoints in `<out>/checkpoints/`, each
    phase's final weights in `<out>/<phase>/`. A phase whose tier is missing or empty is skipped with the
    reason. `max_steps` caps each phase (smoke runs); `stop_after` ends the run, checkpointed, after that
    many optimiser steps in all (a later `resume` continues exactly where it stopped). Trainer settings:
    the plan's `train:` section, then `config`, then `text_encoder`. `resume` continues the run in `out` from
    its latest checkpoint; more than one worker, or an `address`, runs under Ray Train."""
    from training.trainer import Job, train, trainer_config

    root = lake.root if isinstance(lake, Lake) else str(lake)
    cfg = trainer_config(plan.train, config, text_encoder=text_encoder)
    job = Job(lake=str(root), plan=plan, vae=vae, out=out, config=cfg, seed=seed, device=device,
              max_steps=max_steps, stop_after=stop_after)
    return train(job, workers=workers, address=address, num_cpus=num_cpus, resume=resume, log=log)
