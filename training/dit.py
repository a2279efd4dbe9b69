"""Video DiT in the HunyuanVideo layout: dual-stream blocks (separate video/text weights, joint attention)
followed by single-stream blocks over the concatenated [video; text] sequence, 3D RoPE on video tokens,
adaLN-Zero modulation from timestep + pooled text. Predicts a velocity with the latent's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from training.rope import apply_rope, rope_axes_dim, rope_freqs, video_positions
from training.text_encoder import TextCondition


@dataclass(frozen=True)
class DiTConfig:
    """Shape of the DiT. Defaults are HunyuanVideo 13B (20 dual + 40 single blocks, 3072 wide)."""

    in_channels: int = 16
    out_channels: int = 16
    hidden_size: int = 3072
    num_heads: int = 24
    depth_double: int = 20
    depth_single: int = 40
    mlp_ratio: float = 4.0
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_axes: tuple[int, int, int] | None = None  # None: 16:56:56 split of the head dim
    rope_theta: float = 256.0
    text_dim: int = 4096
    pooled_dim: int = 768
    refiner_depth: int = 2
    guidance_embed: bool = False
    qkv_bias: bool = True
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError("DiTConfig: hidden_size must be divisible by num_heads")
        if sum(self.axes) != self.head_dim:
            raise ValueError(f"DiTConfig: rope_axes {self.axes} must sum to head_dim {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def axes(self) -> tuple[int, int, int]:
        return self.rope_axes if self.rope_axes is not None else rope_axes_dim(self.head_dim)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of (already scaled) timesteps [B]; cos first, like HunyuanVideo."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLPEmbedder(nn.Sequential):
    """Linear -> SiLU -> Linear, for timesteps, guidance and pooled text."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))


class Modulation(nn.Module):
    """adaLN-Zero: SiLU(vec) -> Linear -> n chunks [B, 1, H]; zero-initialised so gates start at 0."""

    def __init__(self, hidden: int, n: int) -> None:
        super().__init__()
        self.n = n
        self.lin = nn.Linear(hidden, n * hidden)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, vec: torch.Tensor) -> list[torch.Tensor]:
        return [m.unsqueeze(1) for m in self.lin(F.silu(vec)).chunk(self.n, dim=-1)]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def gelu_mlp(hidden: int, ratio: float) -> nn.Sequential:
    inner = int(hidden * ratio)
    return nn.Sequential(nn.Linear(hidden, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden))


def _layer_norm(hidden: int) -> nn.LayerNorm:
    return nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """SDPA over [B, L, H, D] inputs; ``key_mask`` [B, L] (True = attend) or None for flash kernels."""
    mask = key_mask[:, None, None, :] if key_mask is not None else None
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2).flatten(2)


class QKV(nn.Module):
    """Fused q, k, v projection with per-head RMSNorm on q and k (QK-norm keeps logits bounded)."""

    def __init__(self, hidden: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=bias)
        self.q_norm = nn.RMSNorm(hidden // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(hidden // heads, eps=1e-6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).unbind(2)
        return self.q_norm(q), self.k_norm(k), v


def _rope_video(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], n_video: int) -> torch.Tensor:
    """Apply RoPE to the first ``n_video`` tokens of [B, L, H, D]; text tokens carry no position."""
    cos, sin = rope
    video = apply_rope(x[:, :n_video].transpose(1, 2), cos, sin).transpose(1, 2)
    return torch.cat([video, x[:, n_video:]], dim=1)


class DualStreamBlock(nn.Module):
    """Video and text keep separate weights and modulation; they meet in one joint attention."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.img_mod, self.txt_mod = Modulation(h, 6), Modulation(h, 6)
        self.img_norm1, self.txt_norm1 = _layer_norm(h), _layer_norm(h)
        self.img_qkv = QKV(h, cfg.num_heads, cfg.qkv_bias)
        self.txt_qkv = QKV(h, cfg.num_heads, cfg.qkv_bias)
        self.img_proj, self.txt_proj = nn.Linear(h, h), nn.Linear(h, h)
        self.img_norm2, self.txt_norm2 = _layer_norm(h), _layer_norm(h)
        self.img_mlp, self.txt_mlp = gelu_mlp(h, cfg.mlp_ratio), gelu_mlp(h, cfg.mlp_ratio)

    def forward(
        self,
        img: torch.Tensor,
        txt: torch.Tensor,
        vec: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i_shift1, i_scale1, i_gate1, i_shift2, i_scale2, i_gate2 = self.img_mod(vec)
        t_shift1, t_scale1, t_gate1, t_shift2, t_scale2, t_gate2 = self.txt_mod(vec)
        iq, ik, iv = self.img_qkv(modulate(self.img_norm1(img), i_shift1, i_scale1))
        tq, tk, tv = self.txt_qkv(modulate(self.txt_norm1(txt), t_shift1, t_scale1))
        cos, sin = rope
        iq = apply_rope(iq.transpose(1, 2), cos, sin).transpose(1, 2)
        ik = apply_rope(ik.transpose(1, 2), cos, sin).transpose(1, 2)
        out = attention(torch.cat([iq, tq], 1), torch.cat([ik, tk], 1), torch.cat([iv, tv], 1), key_mask)
        n = img.shape[1]
        img = img + i_gate1 * self.img_proj(out[:, :n])
        txt = txt + t_gate1 * self.txt_proj(out[:, n:])
        img = img + i_gate2 * self.img_mlp(modulate(self.img_norm2(img), i_shift2, i_scale2))
        txt = txt + t_gate2 * self.txt_mlp(modulate(self.txt_norm2(txt), t_shift2, t_scale2))
        return img, txt


class SingleStreamBlock(nn.Module):
    """One stream over [video; text]: linear1 gives qkv and the MLP input in parallel, linear2 merges."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.heads = cfg.num_heads
        self.mlp_hidden = int(h * cfg.mlp_ratio)
        self.mod = Modulation(h, 3)
        self.norm = _layer_norm(h)
        self.linear1 = nn.Linear(h, 3 * h + self.mlp_hidden, bias=cfg.qkv_bias)
        self.q_norm = nn.RMSNorm(cfg.head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(cfg.head_dim, eps=1e-6)
        self.linear2 = nn.Linear(h + self.mlp_hidden, h)

    def forward(
        self,
        x: torch.Tensor,
        vec: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        n_video: int,
    ) -> torch.Tensor:
        shift, scale, gate = self.mod(vec)
        qkv, mlp = self.linear1(modulate(self.norm(x), shift, scale)).split(
            [3 * x.shape[-1], self.mlp_hidden], dim=-1
        )
        q, k, v = qkv.unflatten(-1, (3, self.heads, -1)).unbind(2)
        q = _rope_video(self.q_norm(q), rope, n_video)
        k = _rope_video(self.k_norm(k), rope, n_video)
        out = attention(q, k, v, key_mask)
        return x + gate * self.linear2(torch.cat([out, F.gelu(mlp, approximate="tanh")], dim=-1))


class RefinerBlock(nn.Module):
    """Bidirectional self-attention block over text tokens, gated by the refiner's conditioning."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.heads = heads
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, inner), nn.SiLU(), nn.Linear(inner, hidden))
        self.gates = Modulation(hidden, 2)

    def forward(self, x: torch.Tensor, c: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        gate_attn, gate_mlp = self.gates(c)
        q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (3, self.heads, -1)).unbind(2)
        x = x + gate_attn * self.proj(attention(q, k, v, key_mask))
        return x + gate_mlp * self.mlp(self.norm2(x))


class TokenRefiner(nn.Module):
    """Projects frozen text states to the DiT width and refines them with 2 bidirectional blocks.

    Conditioned on the timestep and the mean of the text states, so a frozen encoder's features can adapt
    to the denoising stage.
    """

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.proj_in = nn.Linear(cfg.text_dim, h)
        self.t_embed = MLPEmbedder(256, h)
        self.c_embed = MLPEmbedder(cfg.text_dim, h)
        self.blocks = nn.ModuleList(
            RefinerBlock(h, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.refiner_depth)
        )

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w = mask.unsqueeze(-1).to(tokens.dtype)
        mean = (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)
        c = self.t_embed(timestep_embedding(t * 1000).to(tokens.dtype)) + self.c_embed(mean)
        key_mask = None if bool(mask.all()) else mask
        x = self.proj_in(tokens)
        for block in self.blocks:
            x = block(x, c, key_mask)
        return x


class FinalLayer(nn.Module):
    """adaLN (shift, scale) then a zero-initialised projection to patch values: the DiT starts at 0."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.norm = _layer_norm(h)
        self.mod = Modulation(h, 2)
        self.linear = nn.Linear(h, math.prod(cfg.patch_size) * cfg.out_channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mod(vec)
        return self.linear(modulate(self.norm(x), shift, scale))


class VideoDiT(nn.Module):
    """Latents [B, C, T, H, W] + timestep t in [0, 1] + text -> velocity [B, C_out, T, H, W].

    T, H, W must be divisible by the patch size. ``guidance`` (scale, [B]) is only used when the config has
    ``guidance_embed`` (a guidance-distilled model).
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = cfg = config
        h = cfg.hidden_size
        self.patch_embed = nn.Conv3d(cfg.in_channels, h, cfg.patch_size, stride=cfg.patch_size)
        self.txt_in = TokenRefiner(cfg)
        self.time_in = MLPEmbedder(256, h)
        self.vector_in = MLPEmbedder(cfg.pooled_dim, h)
        self.guidance_in = MLPEmbedder(256, h) if cfg.guidance_embed else None
        self.double_blocks = nn.ModuleList(DualStreamBlock(cfg) for _ in range(cfg.depth_double))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(cfg) for _ in range(cfg.depth_single))
        self.final = FinalLayer(cfg)

    def condition_vector(
        self, t: torch.Tensor, pooled: torch.Tensor, guidance: torch.Tensor | None = None
    ) -> torch.Tensor:
        """vec = MLP(sinusoid(t * 1000)) + MLP(pooled text) [+ MLP(sinusoid(guidance * 1000))]."""
        vec = self.time_in(timestep_embedding(t * 1000).to(pooled.dtype)) + self.vector_in(pooled)
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("this DiT was built with guidance_embed=True: pass guidance=")
            vec = vec + self.guidance_in(timestep_embedding(guidance * 1000).to(pooled.dtype))
        return vec

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: TextCondition,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cfg = self.config
        b, _, frames, height, width = x.shape
        pt, ph, pw = cfg.patch_size
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"latent {tuple(x.shape[2:])} is not divisible by patch {cfg.patch_size}")
        grid = (frames // pt, height // ph, width // pw)
        t = t.expand(b) if t.ndim == 0 or t.shape[0] == 1 else t

        img = self.patch_embed(x).flatten(2).transpose(1, 2)
        txt = self.txt_in(cond.tokens, cond.mask, t)
        vec = self.condition_vector(t, cond.pooled, guidance)
        rope = rope_freqs(video_positions(*grid, device=x.device), cfg.axes, cfg.rope_theta)
        n_video = img.shape[1]
        # Without padding there is no mask, so GPUs can take the flash-attention path.
        key_mask = None
        if not bool(cond.mask.all()):
            key_mask = torch.cat([torch.ones(b, n_video, dtype=torch.bool, device=x.device), cond.mask], 1)

        run = self._checkpointed if cfg.gradient_checkpointing and self.training else _call
        for block in self.double_blocks:
            img, txt = run(block, img, txt, vec, rope, key_mask)
        seq = torch.cat([img, txt], dim=1)
        for block in self.single_blocks:
            seq = run(block, seq, vec, rope, key_mask, n_video)
        out = self.final(seq[:, :n_video], vec)
        return self.unpatchify(out, grid)

    @staticmethod
    def _checkpointed(block: nn.Module, *args: object) -> object:
        return checkpoint(block, *args, use_reentrant=False)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, N, pt*ph*pw*C] -> [B, C, T, H, W]."""
        pt, ph, pw = self.config.patch_size
        gt, gh, gw = grid
        c = self.config.out_channels
        x = x.reshape(x.shape[0], gt, gh, gw, c, pt, ph, pw)
        x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(x.shape[0], c, gt * pt, gh * ph, gw * pw)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _call(block: nn.Module, *args: object) -> object:
    return block(*args)
