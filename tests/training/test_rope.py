"""3D RoPE: scores depend on relative (t, h, w) offsets only."""

from __future__ import annotations

import pytest
import torch

from training.rope import apply_rope, rope_axes_dim, rope_freqs, video_positions


def _scores(q, k, pos_q, pos_k, axes):
    cq, sq = rope_freqs(pos_q, axes)
    ck, sk = rope_freqs(pos_k, axes)
    return apply_rope(q, cq, sq) @ apply_rope(k, ck, sk).T


def test_scores_depend_only_on_relative_positions():
    g = torch.Generator().manual_seed(0)
    axes = rope_axes_dim(32)
    pos = video_positions(3, 4, 5)
    q = torch.randn(len(pos), 32, generator=g, dtype=torch.float32)
    k = torch.randn(len(pos), 32, generator=g, dtype=torch.float32)
    base = _scores(q, k, pos, pos, axes)
    shifted = pos + torch.tensor([7, -3, 11])
    assert torch.allclose(_scores(q, k, shifted, shifted, axes), base, atol=1e-4)
    # Not trivially invariant: moving only the keys changes the scores.
    moved = _scores(q, k, pos, pos + torch.tensor([0, 1, 0]), axes)
    assert (moved - base).abs().max() > 1e-2


def test_rotation_preserves_norm_and_position_zero_is_identity():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 128, generator=g)
    cos, sin = rope_freqs(video_positions(1, 2, 5), (16, 56, 56))
    y = apply_rope(x, cos, sin)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-4)
    assert torch.allclose(y[0], x[0])  # (0, 0, 0)


@pytest.mark.parametrize("head_dim", [16, 32, 64, 128])
def test_axes_split_follows_report_proportion(head_dim):
    axes = rope_axes_dim(head_dim)
    assert sum(axes) == head_dim and all(a % 2 == 0 and a > 0 for a in axes)
    if head_dim == 128:
        assert axes == (16, 56, 56)
