"""train_step: VAE latents + DiT + flow loss with warmup, clipping and text dropout."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from training.config import get_preset
from training.dit import VideoDiT
from training.flow import FlowMatching
from training.text_encoder import TextCondition, TinyTextEncoder
from training.train import (
    MicroBatch,
    TrainConfig,
    accumulated_step,
    build_optimizer,
    drop_text,
    encode_videos,
    sample_draws,
    train_step,
)
from training.vae import CausalVAE


def test_train_step_end_to_end_is_deterministic():
    def run() -> list[dict[str, float]]:
        torch.manual_seed(0)
        preset = get_preset("tiny")
        vae, dit, text = CausalVAE(preset.vae).eval(), VideoDiT(preset.dit), TinyTextEncoder(dim=32)
        g = torch.Generator().manual_seed(0)
        videos = torch.rand(2, 3, 5, 32, 32, generator=g) * 2 - 1
        latents = encode_videos(vae, videos, generator=g)
        assert latents.shape == (2, 16, 2, 4, 4)
        with torch.no_grad():
            cond = text.encode(["a cat", "a boat at sea"])
        cfg = TrainConfig(lr=1e-3, warmup_steps=3, text_dropout=0.5)
        opt, sched = build_optimizer(dit, cfg)
        return [train_step(dit, FlowMatching(), opt, sched, latents, cond, cfg, g) for _ in range(4)]

    a, b = run(), run()
    assert a == b
    assert [round(s["lr"], 6) for s in a] == [round(1e-3 / 3, 6), round(2e-3 / 3, 6), 1e-3, 1e-3]
    assert all(s["grad_norm"] > 0 for s in a)


def test_text_dropout_replaces_whole_samples():
    g = torch.Generator().manual_seed(0)
    cond = TextCondition(torch.ones(1000, 3, 4), torch.ones(1000, 3, dtype=torch.bool), torch.ones(1000, 4))
    dropped = drop_text(cond, 0.1, g)
    nulled = dropped.tokens.flatten(1).abs().sum(1) == 0
    assert 60 < int(nulled.sum()) < 140
    assert bool((dropped.mask.sum(1)[nulled] == 1).all()) and bool((dropped.pooled[nulled] == 0).all())
    assert drop_text(cond, 0.0, g) is cond


def _tiny_setup(n: int = 4, checkpointing: bool = False):
    torch.manual_seed(0)
    preset = get_preset("tiny")
    dit = VideoDiT(dataclasses.replace(preset.dit, gradient_checkpointing=checkpointing))
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(n, 16, 2, 4, 4, generator=g)
    with torch.no_grad():
        cond = TinyTextEncoder(dim=32).encode([f"prompt number {i}" for i in range(n)])
    # adaLN-Zero starts every gate at 0; randomise them so every weight gets a gradient
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if "mod" in name or "final" in name or "gates" in name:
                p.normal_(0, 0.02, generator=g)
    keys = [(7, 0, 0, 3, i) for i in range(n)]
    return dit, latents, cond, keys


def _part(cond: TextCondition, idx: slice) -> TextCondition:
    return TextCondition(cond.tokens[idx], cond.mask[idx], cond.pooled[idx])


def _grads(dit, micro, total, world=1):
    cfg = TrainConfig(lr=0.0, warmup_steps=1, grad_clip=1e9, text_dropout=0.3)
    opt, _ = build_optimizer(dit, cfg)
    stats = accumulated_step(dit, FlowMatching(), opt, None, micro, cfg, total, world)
    return stats, [p.grad.clone() for p in dit.parameters()]


def test_gradient_accumulation_equals_the_big_batch():
    """2 micro-batches of b = one batch of 2b: same loss, same gradients, same update (float tolerance);
    uneven splits and a two-rank split (gradients averaged as DDP does) too."""
    dit, latents, cond, keys = _tiny_setup(4)
    whole = [MicroBatch(latents, cond, keys)]
    halves = [MicroBatch(latents[:2], _part(cond, slice(0, 2)), keys[:2]),
              MicroBatch(latents[2:], _part(cond, slice(2, 4)), keys[2:])]
    uneven = [MicroBatch(latents[:1], _part(cond, slice(0, 1)), keys[:1]),
              MicroBatch(latents[1:], _part(cond, slice(1, 4)), keys[1:])]
    ref_stats, ref = _grads(copy.deepcopy(dit), whole, 4)
    assert all(float(g.abs().sum()) > 0 for g in ref)
    for micro in (halves, uneven):
        stats, grads = _grads(copy.deepcopy(dit), micro, 4)
        assert stats["loss"] == pytest.approx(ref_stats["loss"], rel=1e-6)
        assert max(float((a - b).abs().max()) for a, b in zip(grads, ref)) < 1e-6
    # two ranks, 1 + 3 samples: each backpropagates sum * world / total, DDP averages the gradients
    rank_grads = [_grads(copy.deepcopy(dit), [mb], 4, world=2)[1] for mb in uneven]
    ddp = [(a + b) / 2 for a, b in zip(*rank_grads)]
    assert max(float((a - b).abs().max()) for a, b in zip(ddp, ref)) < 1e-6

    # the optimiser update itself: AdamW after one step of each
    cfg = TrainConfig(lr=1e-3, warmup_steps=1, text_dropout=0.3)
    models = [copy.deepcopy(dit), copy.deepcopy(dit)]
    for model, micro in zip(models, (whole, halves)):
        opt, sched = build_optimizer(model, cfg)
        accumulated_step(model, FlowMatching(), opt, sched, micro, cfg, 4)
    with torch.no_grad():
        updates = [[(p - p0).flatten() for p, p0 in zip(m.parameters(), dit.parameters())] for m in models]
        a, b = torch.cat(updates[0]), torch.cat(updates[1])
    # Adam's first step is ~lr * sign(g): weights whose gradient is ~0 amplify float noise, so compare norms
    assert float(a.norm()) > 0 and float((a - b).norm() / a.norm()) < 1e-4


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    plain, latents, cond, keys = _tiny_setup(2)
    ckpt, *_ = _tiny_setup(2, checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    a_stats, a = _grads(plain, [MicroBatch(latents, cond, keys)], 2)
    b_stats, b = _grads(ckpt, [MicroBatch(latents, cond, keys)], 2)
    assert a_stats["loss"] == b_stats["loss"]
    assert max(float((x - y).abs().max()) for x, y in zip(a, b)) < 1e-6


def test_per_sample_draws_do_not_depend_on_the_batch():
    flow = FlowMatching()
    keys = [(0, 0, 0, 0, i) for i in range(4)]
    u, t, x0 = sample_draws(flow, keys, (2, 3), "cpu")
    u2, t2, x2 = sample_draws(flow, keys[2:], (2, 3), "cpu")
    assert torch.equal(u[2:], u2) and torch.equal(t[2:], t2) and torch.equal(x0[2:], x2)
    assert not torch.equal(x0[0], x0[1]) and bool(((t > 0) & (t < 1)).all())
