"""Video DiT: adaLN-Zero identity, shapes, padding mask, 13B config, and a tiny flow-loss overfit."""

from __future__ import annotations

import torch

from training.config import get_preset
from training.dit import DiTConfig, DualStreamBlock, SingleStreamBlock, VideoDiT
from training.flow import FlowMatching
from training.rope import rope_freqs, video_positions
from training.text_encoder import TextCondition

TINY = DiTConfig(hidden_size=64, num_heads=4, depth_double=1, depth_single=1, text_dim=32, pooled_dim=32)


def _cond(batch: int = 2, length: int = 8, dim: int = 32, seed: int = 0) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[-1, length // 2 :] = False  # the last prompt is padded
    return TextCondition(
        torch.randn(batch, length, dim, generator=g), mask, torch.randn(batch, dim, generator=g)
    )


def test_fresh_blocks_are_identity():
    torch.manual_seed(0)
    img, txt, vec = torch.randn(2, 12, 64), torch.randn(2, 5, 64), torch.randn(2, 64)
    rope = rope_freqs(video_positions(1, 3, 4), TINY.axes)
    dual = DualStreamBlock(TINY)
    out_img, out_txt = dual(img, txt, vec, rope, None)
    assert torch.equal(out_img, img) and torch.equal(out_txt, txt)
    seq = torch.cat([img, txt], 1)
    assert torch.equal(SingleStreamBlock(TINY)(seq, vec, rope, None, 12), seq)


def test_fresh_dit_predicts_zero_but_has_gradients():
    torch.manual_seed(0)
    model = VideoDiT(TINY)
    x = torch.randn(2, 16, 3, 8, 8)
    out = model(x, torch.rand(2), _cond())
    assert out.shape == x.shape and torch.count_nonzero(out) == 0
    out.sum().backward()  # zero-init layers still receive gradient, so training can start
    assert model.final.linear.weight.grad.abs().sum() > 0


def test_padded_text_tokens_do_not_matter():
    torch.manual_seed(0)
    model = VideoDiT(TINY)
    for p in model.parameters():  # move off the adaLN-Zero point so text reaches the output
        p.data.add_(torch.randn_like(p) * 0.05)
    cond = _cond()
    x, t = torch.randn(2, 16, 1, 4, 4), torch.rand(2)
    noisy = cond.tokens.clone()
    noisy[-1, 4:] = 100.0  # only padded positions change
    a = model(x, t, cond)
    b = model(x, t, TextCondition(noisy, cond.mask, cond.pooled))
    assert torch.allclose(a, b, atol=1e-5)
    noisy[-1, 0] = 100.0  # a real token changes the answer
    assert not torch.allclose(a, model(x, t, TextCondition(noisy, cond.mask, cond.pooled)), atol=1e-3)


def test_hunyuan_13b_is_a_config():
    preset = get_preset("hunyuan-13b")
    assert preset.dit.axes == (16, 56, 56) and preset.dit.head_dim == 128
    with torch.device("meta"):  # shapes only: no memory is allocated
        model = VideoDiT(preset.dit)
    assert 12.5e9 < model.num_params() < 13.2e9


def test_flow_loss_falls_on_fixed_latents():
    torch.manual_seed(0)
    model = VideoDiT(TINY)
    flow = FlowMatching()
    g = torch.Generator().manual_seed(0)
    latents, cond = torch.randn(2, 16, 2, 4, 4, generator=g), _cond()

    def eval_loss() -> float:  # same noise and timesteps before and after, averaged over 8 draws
        with torch.no_grad():
            return (
                sum(
                    float(flow.loss(model, latents, cond, torch.Generator().manual_seed(s))) for s in range(8)
                )
                / 8
            )

    before = eval_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(250):
        loss = flow.loss(model, latents, cond, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after <= 0.5 * before, (before, after)
