"""Progressive training from curated tiers (HunyuanVideo: images at 256 → low-res short video → low-res
long → high-res long, images mixed in at every stage): a YAML list of stages, each a tier, a number of
steps and a bucket configuration, run in order with one DiT, a frozen VAE and a frozen text encoder."""

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
class TrainStage:
    name: str
    tier: str
    steps: int
    buckets: BucketConfig = field(default_factory=BucketConfig)
    lr: float | None = None  # None: TrainConfig's


@dataclass
class StagePlan:
    model: str  # preset name
    stages: list[TrainStage]


def load_stages(spec: str = "train_stages") -> StagePlan:
    path = find_yaml(spec)
    if path is None:
        raise ConfigError(f"no training stage spec '{spec}' (a YAML path or a bundled name: train_stages)")
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    stages = []
    for s in doc.get("stages") or []:
        b = dict(s.get("buckets") or {})
        if "frame_counts" in b:
            b["frame_counts"] = tuple(b["frame_counts"])
        try:
            stages.append(TrainStage(s["name"], s["tier"], int(s["steps"]), BucketConfig(**b), s.get("lr")))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"training stage {s.get('name', '?')} in {path}: {exc}") from exc
    if not stages:
        raise ConfigError(f"{path} defines no training stages")
    return StagePlan(doc.get("model", "tiny"), stages)


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


def train_from_tiers(lake: Lake | str, plan: StagePlan, vae: str, out: str, text_encoder: str = "tiny",
                     max_steps: int | None = None, device: str = "cpu", seed: int = 0,
                     log: Callable[[str], None] = print) -> dict:
    """Run every stage in order on one DiT; a checkpoint `<out>/<stage>.pt` after each. A stage whose tier
    is missing or empty is skipped with the reason. `max_steps` caps each stage (smoke runs)."""
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
    for stage in plan.stages:
        steps = min(stage.steps, max_steps) if max_steps else stage.steps
        try:
            loader = iter(TierLoader(lake, stage.tier, stage.buckets, seed))
        except (FileNotFoundError, ValueError) as exc:
            summary[stage.name] = {"skipped": str(exc)}
            log(f"stage {stage.name}: skipped ({exc})")
            continue
        cfg = TrainConfig(lr=stage.lr or TrainConfig.lr, warmup_steps=min(TrainConfig.warmup_steps, steps))
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
                log(f"stage {stage.name} step {step + 1}/{steps} bucket {bucket.frames}x{bucket.height}x"
                    f"{bucket.width} loss {stats['loss']:.4f}")
        path = os.path.join(out, f"{stage.name}.pt")
        torch.save({"stage": stage.name, "model": plan.model, "dit_config": dataclasses.asdict(dit_cfg),
                    "dit": dit.state_dict()}, path)
        summary[stage.name] = {"steps": steps, "first_loss": losses[0], "last_loss": losses[-1],
                               "seconds": round(time.monotonic() - t0, 1), "checkpoint": path}
    return summary
