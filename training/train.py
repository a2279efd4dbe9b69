"""One optimisation step of the video DiT on VAE latents with the flow-matching loss.

``train_step`` takes one batch and draws noise from one generator. ``accumulated_step`` is what the trainer
(training.trainer) runs: micro-batches (gradient accumulation), data-parallel ranks, and per-sample random
draws keyed by each sample's place in the data stream (``sample_draws``), so an optimiser step does not
depend on how its samples were split over micro-batches or ranks. Everything here is stateless apart from
the model, optimiser and scheduler passed in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
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
    return cond.select(keep, _null_like(cond, uncond))


def _null_like(cond: TextCondition, uncond: TextCondition | None) -> TextCondition:
    """``uncond`` (default ``cond.null()``) expanded to ``cond``'s batch."""
    null = uncond if uncond is not None else cond.null()
    if null.tokens.shape[0] != cond.tokens.shape[0]:
        null = TextCondition(null.tokens.expand_as(cond.tokens), null.mask.expand_as(cond.mask),
                             null.pooled.expand_as(cond.pooled))
    return null


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


def key_seed(key: Sequence[int]) -> int:
    """A 64-bit seed from a tuple of non-negative ints (numpy's SeedSequence hash: well mixed, stable)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0])


def sample_draws(
    flow: FlowMatching,
    keys: Sequence[Sequence[int]],
    latent_shape: Sequence[int],
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random draws for the flow loss: (u [B] for text dropout, t [B], noise x0 [B, *shape]).

    Sample i's draws come from its own generator seeded by ``keys[i]`` (the trainer's key: run seed, phase,
    epoch, batch, slot in the batch), so they are the same whichever micro-batch or rank the sample lands
    on, and a resumed run redraws exactly what the interrupted one would have drawn.
    """
    us, ts, noise = [], [], []
    for key in keys:
        g = torch.Generator(device=device).manual_seed(key_seed(key))
        us.append(torch.rand(1, generator=g, device=device))
        ts.append(flow.sample_t(1, g, device))
        noise.append(torch.randn(tuple(latent_shape), generator=g, device=device, dtype=dtype))
    return torch.cat(us), torch.cat(ts), torch.stack(noise)


@dataclass
class MicroBatch:
    """One rank's share of one sampler batch: latents [b, C, T, H, W], their text, one RNG key per sample."""

    latents: torch.Tensor
    cond: TextCondition
    keys: list[tuple[int, ...]]


def accumulated_step(
    model: nn.Module,
    flow: FlowMatching,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    micro_batches: Sequence[MicroBatch],
    cfg: TrainConfig,
    total: int,
    world: int = 1,
    uncond: TextCondition | None = None,
) -> dict[str, float]:
    """One optimiser step over ``micro_batches`` (gradient accumulation) on this rank.

    ``total`` is the number of samples in the step over all micro-batches and all ``world`` ranks. Each
    micro-batch backpropagates sum(per-sample loss) * world / total, so after DDP averages gradients over
    the ranks the update is that of the mean loss over all ``total`` samples — whatever the split, even
    uneven. Gradients are synchronised once, on the last micro-batch (DDP ``no_sync`` before it, FSDP2
    ``set_requires_gradient_sync(False)``).

    Returns the step's mean loss over all ranks, the gradient norm before clipping and the learning rate.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss_sum = None
    for i, mb in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter once, on the last micro-batch
            model.set_requires_gradient_sync(last)
        with sync:
            device = mb.latents.device
            u, t, x0 = sample_draws(flow, mb.keys, mb.latents.shape[1:], device, mb.latents.dtype)
            cond = mb.cond
            if cfg.text_dropout > 0:
                cond = cond.select(u >= cfg.text_dropout, _null_like(cond, uncond))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                per_sample = flow.loss(model, mb.latents, cond, x0=x0, t=t, reduction="none")
            (per_sample.sum() * (world / total)).backward()
            part = per_sample.detach().sum()
            loss_sum = part if loss_sum is None else loss_sum + part
    if world > 1 and dist.is_available() and dist.is_initialized():
        dist.all_reduce(loss_sum)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return {"loss": float(loss_sum) / total, "grad_norm": float(grad_norm), "lr": float(lr)}
