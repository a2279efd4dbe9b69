"""One optimisation step of the video DiT on VAE latents with the flow-matching loss.

The tier data loader and the staged-resolution schedule call ``train_step`` per batch; everything here is
stateless apart from the model, optimiser and scheduler passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.flow import FlowMatching
from training.text_encoder import TextCondition
from training.vae import CausalVAE, TileConfig


@dataclass(frozen=True)
class TrainConfig:
    """HunyuanVideo's proxy optimiser settings: AdamW 1e-4, 500 warmup steps, clip 1.0, text drop 0.1."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 500
    grad_clip: float = 1.0
    text_dropout: float = 0.1
    bf16: bool = False  # autocast the DiT forward to bfloat16 (GPUs); weights stay fp32


def build_optimizer(
    model: nn.Module, cfg: TrainConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over trainable parameters and a linear warmup to ``cfg.lr`` (constant afterwards)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
    return opt, sched


@torch.no_grad()
def encode_videos(
    vae: CausalVAE,
    videos: torch.Tensor,
    generator: torch.Generator | None = None,
    tile: TileConfig | None = None,
) -> torch.Tensor:
    """Videos [B, 3, 1+4n, H, W] in [-1, 1] -> scaled latents for the DiT (posterior sample if seeded)."""
    return vae.to_latents(videos, generator=generator, tile=tile)


def drop_text(
    cond: TextCondition,
    p: float,
    generator: torch.Generator | None = None,
    uncond: TextCondition | None = None,
) -> TextCondition:
    """Replace each sample's condition by ``uncond`` (default ``cond.null()``) with probability p, so the
    model also learns the unconditional velocity that classifier-free guidance needs."""
    if p <= 0:
        return cond
    keep = torch.rand(cond.tokens.shape[0], generator=generator) >= p
    null = uncond if uncond is not None else cond.null()
    if null.tokens.shape[0] != cond.tokens.shape[0]:
        null = TextCondition(
            null.tokens.expand_as(cond.tokens),
            null.mask.expand_as(cond.mask),
            null.pooled.expand_as(cond.pooled),
        )
    return cond.select(keep, null)


def train_step(
    model: nn.Module,
    flow: FlowMatching,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    latents: torch.Tensor,
    cond: TextCondition,
    cfg: TrainConfig,
    generator: torch.Generator | None = None,
    uncond: TextCondition | None = None,
) -> dict[str, float]:
    """Text dropout, flow loss, backward, gradient clipping, optimiser and scheduler step.

    Returns the loss, the gradient norm before clipping and the learning rate used.
    """
    model.train()
    cond = drop_text(cond, cfg.text_dropout, generator, uncond)
    with torch.autocast(latents.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
        loss = flow.loss(model, latents, cond, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "lr": float(lr)}
