"""The training curriculum: progressive training from curated tiers (HunyuanVideo: images at 256 →
low-res short video → low-res long → high-res long, images mixed in at every phase). A YAML list of
phases, each a tier, a number of steps and a bucket configuration, run in order with one DiT, a frozen
VAE and a frozen text encoder."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import yaml

from curation.errors import ConfigError
from curation.lake import Lake
from curation.pipeline import find_yaml
from training.config import get_preset
from training.data import BucketConfig, TierLoader
from training.dit import VideoDiT
from training.flow import FlowMatching
from training.text_encoder import HFTextEncoder, TextEncoderConfig, TinyTextEncoder, minilm_model_path
from training.train import TrainConfig, build_optimizer, train_step
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


def load_curriculum(spec: str = "curriculum") -> Curriculum:
    path = find_yaml(spec)
    if path is None:
        raise ConfigError(f"no training curriculum '{spec}' (a YAML path or a bundled name: curriculum)")
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    unknown = sorted(set(doc) - {"model", "phases"})
    if unknown:
        raise ConfigError(f"curriculum {path}: unknown key(s) {unknown}; known: ['model', 'phases']")
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
    return Curriculum(doc.get("model", "tiny"), phases)


def load_vae(preset_vae, vae: str) -> CausalVAE:
    """The frozen VAE: a state dict saved from `CausalVAE` at `vae`, or — only when asked for by name —
    'random' for smoke tests of the loop (latents of an untrained VAE teach a DiT nothing)."""
    model = CausalVAE(preset_vae)
    if vae != "random":
        if not vae or not os.path.isfile(vae):
            raise ConfigError(f"train: --vae must be a CausalVAE state-dict file (torch.save(vae.state_dict())) "
                              f"or 'random' for a smoke test; got {vae!r}")
        model.load_state_dict(torch.load(vae, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False)


def load_text_encoder(name: str, dim: int):
    if name == "tiny":
        torch.manual_seed(0)  # a fixed random encoder: prompts map to the same conditions every run
        return TinyTextEncoder(dim=dim).eval().requires_grad_(False)
    path = str(minilm_model_path()) if name == "minilm" else name
    return HFTextEncoder(TextEncoderConfig(path=path))


def train_curriculum(lake: Lake | str, plan: Curriculum, vae: str, out: str, text_encoder: str = "tiny",
                     max_steps: int | None = None, device: str = "cpu", seed: int = 0,
                     log: Callable[[str], None] = print) -> dict:
    """Run every phase in order on one DiT; a checkpoint `<out>/<phase>.pt` after each. A phase whose tier
    is missing or empty is skipped with the reason. `max_steps` caps each phase (smoke runs)."""
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    preset = get_preset(plan.model)
    text = load_text_encoder(text_encoder, preset.dit.text_dim)
    dit_cfg = dataclasses.replace(preset.dit, text_dim=text.dim, pooled_dim=text.dim)
    torch.manual_seed(seed)
    dit = VideoDiT(dit_cfg).to(device)
    vae_model = load_vae(preset.vae, vae).to(device)
    flow = FlowMatching()
    gen = torch.Generator().manual_seed(seed)
    os.makedirs(out, exist_ok=True)
    summary: dict[str, dict] = {}
    for phase in plan.phases:
        steps = min(phase.steps, max_steps) if max_steps else phase.steps
        try:
            loader = iter(TierLoader(lake, phase.tier, phase.buckets, seed))
        except (FileNotFoundError, ValueError) as exc:
            summary[phase.name] = {"skipped": str(exc)}
            log(f"phase {phase.name}: skipped ({exc})")
            continue
        cfg = TrainConfig(lr=phase.lr or TrainConfig.lr, warmup_steps=min(TrainConfig.warmup_steps, steps))
        opt, sched = build_optimizer(dit, cfg)
        t0, losses = time.monotonic(), []
        for step in range(steps):
            videos, prompts, bucket = next(loader)
            with torch.no_grad():
                latents = vae_model.to_latents(videos.to(device))
                cond = text.encode(prompts)
            stats = train_step(dit, flow, opt, sched, latents, cond, cfg, gen)
            losses.append(stats["loss"])
            if step % 50 == 0 or step == steps - 1:
                log(f"phase {phase.name} step {step + 1}/{steps} bucket {bucket.frames}x{bucket.height}x"
                    f"{bucket.width} loss {stats['loss']:.4f}")
        path = os.path.join(out, f"{phase.name}.pt")
        torch.save({"phase": phase.name, "model": plan.model, "dit_config": dataclasses.asdict(dit_cfg),
                    "dit": dit.state_dict()}, path)
        summary[phase.name] = {"steps": steps, "first_loss": losses[0], "last_loss": losses[-1],
                               "seconds": round(time.monotonic() - t0, 1), "checkpoint": path}
    return summary
