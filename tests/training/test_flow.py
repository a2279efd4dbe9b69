"""Flow matching: path convention, timestep distribution and shift, deterministic CFG sampling."""

from __future__ import annotations

import torch

from training.dit import DiTConfig, VideoDiT
from training.flow import FlowConfig, FlowMatching, default_sampling_shift, shift_sigma
from training.text_encoder import TextCondition


def test_path_endpoints_and_velocity():
    x0, x1 = torch.zeros(2, 3), torch.ones(2, 3)
    fm = FlowMatching()
    assert torch.equal(fm.interpolate(x0, x1, torch.tensor([0.0, 0.0])), x0)  # t = 0 is noise
    assert torch.equal(fm.interpolate(x0, x1, torch.tensor([1.0, 1.0])), x1)  # t = 1 is data
    # The exact velocity x1 - x0 gives zero loss.
    x1 = torch.randn(2, 4, 1, 2, 2)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(0))

    def oracle(xt, t, cond, guidance):
        return x1 - x0

    assert fm.loss(oracle, x1, None, g) < 1e-10


def test_logit_normal_and_shift():
    g = torch.Generator().manual_seed(0)
    t = FlowMatching().sample_t(20000, g)
    assert 0 < t.min() and t.max() < 1 and abs(float(t.median()) - 0.5) < 0.02
    shifted = FlowMatching(FlowConfig(train_shift=3.0)).sample_t(20000, torch.Generator().manual_seed(0))
    assert shifted.median() < 0.35  # shift > 1 puts more samples at high noise (small t)
    sigma = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(shift_sigma(sigma, 7.0), torch.tensor([0.0, 3.5 / 4.0, 1.0]))


def test_sampling_schedule_uses_report_shift():
    assert default_sampling_shift(50) == 7.0 and default_sampling_shift(10) == 17.0
    ts = FlowMatching.timesteps(50)
    assert ts[0] == 0 and ts[-1] == 1 and bool((ts[1:] > ts[:-1]).all())
    assert ts[25] < 0.2  # with shift 7, half the steps are spent below t = 0.2 (high noise)


def test_euler_solves_a_linear_field_exactly():
    # For a field whose velocity is constant along straight paths, Euler is exact.
    target = torch.full((1, 2, 1, 2, 2), 3.0)

    def field(x, t, cond, guidance):
        return (target - x) / (1 - t).clamp_min(1e-6).reshape(-1, 1, 1, 1, 1)

    out = FlowMatching().sample(
        field, (1, 2, 1, 2, 2), None, steps=10, generator=torch.Generator().manual_seed(0)
    )
    assert torch.allclose(out, target, atol=1e-4)


def test_seeded_cfg_sampling_is_deterministic():
    torch.manual_seed(0)
    cfg = DiTConfig(hidden_size=32, num_heads=2, depth_double=1, depth_single=1, text_dim=8, pooled_dim=8)
    model = VideoDiT(cfg).eval()
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    g = torch.Generator().manual_seed(0)
    cond = TextCondition(
        torch.randn(1, 4, 8, generator=g), torch.ones(1, 4, dtype=torch.bool), torch.randn(1, 8)
    )
    fm = FlowMatching()

    def run(seed, scale):
        return fm.sample(
            model,
            (1, 16, 1, 4, 4),
            cond,
            steps=4,
            guidance_scale=scale,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b = run(7, 5.0), run(7, 5.0)
    assert torch.equal(a, b)
    assert not torch.allclose(a, run(8, 5.0))
    assert not torch.allclose(a, run(7, 1.0))  # guidance changes the result
