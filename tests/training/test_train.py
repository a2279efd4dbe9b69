"""train_step: VAE latents + DiT + flow loss with warmup, clipping and text dropout."""

from __future__ import annotations

import torch

from training.config import get_preset
from training.dit import VideoDiT
from training.flow import FlowMatching
from training.text_encoder import TextCondition, TinyTextEncoder
from training.train import TrainConfig, build_optimizer, drop_text, encode_videos, train_step
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
