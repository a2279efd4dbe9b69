"""3D rotary position embedding for video tokens (time, height, width axes share one head).

The head dimension is split across the three axes (HunyuanVideo: 16/56/56 of 128, theta 256); each axis
rotates its own channel pairs by angle ``position * theta^(-2i/d)``. Because a rotation by a then by -b
is a rotation by a - b, q·k depends only on the relative position of the two tokens.
"""

from __future__ import annotations

import torch


def rope_axes_dim(head_dim: int) -> tuple[int, int, int]:
    """Split ``head_dim`` into (t, h, w) channel counts in HunyuanVideo's 16:56:56 proportion.

    Every part is even (channels rotate in pairs) and the parts sum to ``head_dim``.
    """
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"head_dim must be even and >= 6 for 3D RoPE, got {head_dim}")
    t = max(2, 2 * round(head_dim * 16 / 128 / 2))
    h = 2 * ((head_dim - t) // 4)
    return t, h, head_dim - t - h


def video_positions(frames: int, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Integer (t, h, w) positions of a frames x height x width token grid, row-major, shape [N, 3]."""
    grids = torch.meshgrid(
        torch.arange(frames, device=device),
        torch.arange(height, device=device),
        torch.arange(width, device=device),
        indexing="ij",
    )
    return torch.stack([g.reshape(-1) for g in grids], dim=-1)


def rope_freqs(
    positions: torch.Tensor, axes_dim: tuple[int, int, int], theta: float = 256.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [N, sum(axes_dim)] for positions [N, 3]; channel pairs are adjacent (2i, 2i+1)."""
    cos_parts, sin_parts = [], []
    for axis, dim in enumerate(axes_dim):
        inv = 1.0 / theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim)
        angles = positions[:, axis].to(torch.float64)[:, None] * inv[None, :]
        cos_parts.append(angles.cos().repeat_interleave(2, dim=-1))
        sin_parts.append(angles.sin().repeat_interleave(2, dim=-1))
    return torch.cat(cos_parts, -1).float(), torch.cat(sin_parts, -1).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [..., N, D] by the tables [N, D]; computed in float32 for stability under bf16."""
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (xf * cos + rotated * sin).to(x.dtype)
