"""Causal 3D VAE: compresses (1 + 4n) RGB frames 4x in time and 8x in space into 16 latent channels.

Mirrors the HunyuanVideo VAE (CausalConv3d, 4 down/up blocks, frame-causal mid attention, diagonal
Gaussian posterior) with tiled encode/decode for inputs too large for memory. Tensors are channels-first:
video ``[B, 3, T, H, W]`` in [-1, 1], latents ``[B, C_latent, 1 + (T - 1) / 4, H / 8, W / 8]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VAEConfig:
    """Shape of the causal VAE. Defaults are the HunyuanVideo sizes."""

    in_channels: int = 3
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    spatial_compression: int = 8
    temporal_compression: int = 4
    mid_attention: bool = True
    scaling_factor: float = 0.476986

    def __post_init__(self) -> None:
        n_spatial = int(math.log2(self.spatial_compression))
        n_temporal = int(math.log2(self.temporal_compression))
        if 2**n_spatial != self.spatial_compression or 2**n_temporal != self.temporal_compression:
            raise ValueError("VAEConfig: spatial_compression and temporal_compression must be powers of 2")
        if len(self.block_out_channels) - 1 < max(n_spatial, n_temporal):
            raise ValueError(
                f"VAEConfig: {len(self.block_out_channels)} blocks cannot downsample "
                f"{self.spatial_compression}x in space and {self.temporal_compression}x in time"
            )
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"VAEConfig: channels {bad} are not divisible by norm_num_groups")

    @property
    def num_spatial_down(self) -> int:
        return int(math.log2(self.spatial_compression))

    @property
    def num_temporal_down(self) -> int:
        return int(math.log2(self.temporal_compression))


def check_video_shape(shape: torch.Size | tuple[int, ...], config: VAEConfig) -> None:
    """Raise a clear error unless ``shape`` is ``[B, C, 1 + k*temporal, H, W]`` with H, W divisible."""
    if len(shape) != 5:
        raise ValueError(f"video must be [B, C, T, H, W], got shape {tuple(shape)}")
    _, c, t, h, w = shape
    if c != config.in_channels:
        raise ValueError(f"video has {c} channels, the VAE expects {config.in_channels}")
    if (t - 1) % config.temporal_compression:
        raise ValueError(f"frame count {t} is not 1 + {config.temporal_compression}n")
    if h % config.spatial_compression or w % config.spatial_compression:
        raise ValueError(f"frame size {h}x{w} is not divisible by {config.spatial_compression}")


class CausalConv3d(nn.Module):
    """Conv3d whose output frame t sees only input frames <= t.

    Spatial padding is symmetric; temporal padding is k_t - 1 frames in front only, in replicate mode, so
    the first frame is processed as if it were a still image (repeated), independent of later frames.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int] = 3,
        stride: int | tuple[int, int, int] = 1,
    ) -> None:
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        # F.pad order is (w_left, w_right, h_top, h_bottom, t_front, t_back).
        self.padding = (kw // 2, kw // 2, kh // 2, kh // 2, kt - 1, 0)
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding, mode="replicate"))


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm computed per frame.

    HunyuanVideo normalises over the whole clip, which lets later frames change the statistics of earlier
    ones; per-frame statistics keep the encoder strictly causal (and a still image encodes the same alone
    or as frame 0 of a video).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


class ResnetBlock3d(nn.Module):
    """Two causal 3x3x3 convs with per-frame GroupNorm + SiLU and a residual (1x1x1 when widths differ)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = FrameGroupNorm(groups, in_channels, eps=1e-6)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.norm2 = FrameGroupNorm(groups, out_channels, eps=1e-6)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.shortcut = (
            nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class CausalFrameAttention(nn.Module):
    """Single-head self-attention over all tokens, where tokens of frame i see frames <= i only.

    Run as one SDPA call per query frame over the key prefix instead of one call with an [N, N] mask: the
    result is the same, and no quadratic mask is materialised for long clips.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = FrameGroupNorm(groups, channels, eps=1e-6)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 4, 1).reshape(b, 1, t * h * w, c)
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        hw = h * w
        out = torch.cat(
            [
                F.scaled_dot_product_attention(
                    q[:, :, i * hw : (i + 1) * hw], k[:, :, : (i + 1) * hw], v[:, :, : (i + 1) * hw]
                )
                for i in range(t)
            ],
            dim=2,
        )
        out = self.proj(out).reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return x + out


class MidBlock(nn.Module):
    """Resnet, frame-causal attention, resnet at the lowest resolution."""

    def __init__(self, channels: int, groups: int, attention: bool) -> None:
        super().__init__()
        self.res1 = ResnetBlock3d(channels, channels, groups)
        self.attn = CausalFrameAttention(channels, groups) if attention else nn.Identity()
        self.res2 = ResnetBlock3d(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x)))


class Upsample3d(nn.Module):
    """Nearest-neighbour upsampling then a causal conv; frame 0 is upsampled in space only.

    Keeping the first frame single is what maps 1 + n latent frames back to 1 + 4n video frames.
    """

    def __init__(self, channels: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = F.interpolate(x[:, :, :1], scale_factor=(1, 2, 2), mode="nearest")
        if x.shape[2] > 1:
            scale = (2 if self.temporal else 1, 2, 2)
            rest = F.interpolate(x[:, :, 1:], scale_factor=scale, mode="nearest")
            first = torch.cat([first, rest], dim=2)
        return self.conv(first)


class Encoder3d(nn.Module):
    """Video -> 2 * latent channels (mean and log-variance)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        chans, groups = config.block_out_channels, config.norm_num_groups
        n_blocks = len(chans)
        self.conv_in = CausalConv3d(config.in_channels, chans[0], 3)
        self.down = nn.ModuleList()
        prev = chans[0]
        for i, ch in enumerate(chans):
            layers: list[nn.Module] = []
            for _ in range(config.layers_per_block):
                layers.append(ResnetBlock3d(prev, ch, groups))
                prev = ch
            spatial = i < config.num_spatial_down
            # Temporal downsampling sits in the last blocks before the final one (blocks 1-2 of 4).
            temporal = n_blocks - 1 - config.num_temporal_down <= i < n_blocks - 1
            if spatial or temporal:
                stride = (2 if temporal else 1, 2 if spatial else 1, 2 if spatial else 1)
                layers.append(CausalConv3d(ch, ch, 3, stride=stride))
            self.down.append(nn.Sequential(*layers))
        self.mid = MidBlock(prev, groups, config.mid_attention)
        self.norm_out = FrameGroupNorm(groups, prev, eps=1e-6)
        self.conv_out = CausalConv3d(prev, 2 * config.latent_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.down:
            h = block(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder3d(nn.Module):
    """Latents -> video."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        chans, groups = tuple(reversed(config.block_out_channels)), config.norm_num_groups
        self.conv_in = CausalConv3d(config.latent_channels, chans[0], 3)
        self.mid = MidBlock(chans[0], groups, config.mid_attention)
        self.up = nn.ModuleList()
        prev = chans[0]
        for i, ch in enumerate(chans):
            layers: list[nn.Module] = []
            for _ in range(config.layers_per_block + 1):
                layers.append(ResnetBlock3d(prev, ch, groups))
                prev = ch
            if i < config.num_spatial_down:
                layers.append(Upsample3d(ch, temporal=i < config.num_temporal_down))
            self.up.append(nn.Sequential(*layers))
        self.norm_out = FrameGroupNorm(groups, prev, eps=1e-6)
        self.conv_out = CausalConv3d(prev, config.in_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for block in self.up:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


@dataclass
class DiagonalGaussian:
    """Posterior q(z|x) = N(mean, exp(logvar)) over latents; ``params`` is [B, 2C, ...]."""

    params: torch.Tensor
    mean: torch.Tensor = field(init=False)
    logvar: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.mean, logvar = self.params.chunk(2, dim=1)
        # Clamp so exp() stays finite early in training.
        self.logvar = logvar.clamp(-30.0, 20.0)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over latent dims, one value per batch item."""
        kl = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(dim=1)


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes in pixels for tiled encode/decode; tiles overlap by ``overlap`` of their size."""

    sample_size: int = 256
    overlap: float = 0.25

    def latent_size(self, spatial_compression: int) -> int:
        return self.sample_size // spatial_compression


def _blend_weights(extent: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Linear ramp 0 -> 1 over ``extent`` positions (weight of the later tile)."""
    return torch.arange(extent, device=device, dtype=dtype) / extent


def _blend(prev: torch.Tensor, cur: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """Cross-fade the first ``extent`` positions of ``cur`` with the last ones of ``prev`` along ``dim``."""
    extent = min(extent, prev.shape[dim], cur.shape[dim])
    if extent <= 0:
        return cur
    w = _blend_weights(extent, cur.device, cur.dtype)
    shape = [1] * cur.ndim
    shape[dim] = extent
    w = w.reshape(shape)
    head = prev.narrow(dim, prev.shape[dim] - extent, extent) * (1 - w) + cur.narrow(dim, 0, extent) * w
    return torch.cat([head, cur.narrow(dim, extent, cur.shape[dim] - extent)], dim=dim)


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Tile offsets along one axis; stops at the first tile that reaches the border."""
    starts = [0]
    while starts[-1] + tile < size:
        starts.append(starts[-1] + stride)
    return starts


def _tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile_in: int,
    overlap: float,
    scale: float,
) -> torch.Tensor:
    """Run ``fn`` on overlapping spatial tiles of ``x`` and stitch the outputs with linear blending.

    ``scale`` is output size / input size (1/8 for encode, 8 for decode). Tiles start every
    ``tile_in * (1 - overlap)`` input pixels; each output tile is cross-faded with its top and left
    neighbours over the overlap, then cropped to the stride (the last tile on an axis is kept whole), so
    every output pixel comes from exactly one stitched region.
    """
    h, w = x.shape[-2:]
    stride_in = max(1, int(tile_in * (1 - overlap)))
    stride_out = int(stride_in * scale)
    blend = int(tile_in * scale) - stride_out
    row_starts, col_starts = _tile_starts(h, tile_in, stride_in), _tile_starts(w, tile_in, stride_in)
    tiles = [[fn(x[..., i : i + tile_in, j : j + tile_in]) for j in col_starts] for i in row_starts]
    out_rows = []
    for r, row in enumerate(tiles):
        stitched = []
        for c, tile in enumerate(row):
            if r > 0:
                tile = _blend(tiles[r - 1][c], tile, blend, dim=-2)
            if c > 0:
                tile = _blend(row[c - 1], tile, blend, dim=-1)
            row[c] = tile
            keep_h = tile.shape[-2] if r == len(tiles) - 1 else stride_out
            keep_w = tile.shape[-1] if c == len(row) - 1 else stride_out
            stitched.append(tile[..., :keep_h, :keep_w])
        out_rows.append(torch.cat(stitched, dim=-1))
    return torch.cat(out_rows, dim=-2)


class CausalVAE(nn.Module):
    """Causal 3D VAE with optional spatial tiling.

    ``encode`` returns the posterior; multiply a sample by ``config.scaling_factor`` (see ``to_latents``)
    before handing it to the DiT, and divide before ``decode``.
    """

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or VAEConfig()
        c = 2 * self.config.latent_channels
        self.encoder = Encoder3d(self.config)
        self.quant_conv = nn.Conv3d(c, c, 1)
        self.post_quant_conv = nn.Conv3d(self.config.latent_channels, self.config.latent_channels, 1)
        self.decoder = Decoder3d(self.config)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def encode(self, x: torch.Tensor, tile: TileConfig | None = None) -> DiagonalGaussian:
        """Video [B, 3, 1+4n, H, W] -> posterior over [B, C, 1+n, H/8, W/8]; tiled when ``tile`` is set
        and the frame is larger than one tile."""
        check_video_shape(x.shape, self.config)
        if tile is not None and max(x.shape[-2:]) > tile.sample_size:
            params = _tiled_apply(
                self._encode, x, tile.sample_size, tile.overlap, 1 / self.config.spatial_compression
            )
        else:
            params = self._encode(x)
        return DiagonalGaussian(params)

    def decode(self, z: torch.Tensor, tile: TileConfig | None = None) -> torch.Tensor:
        """Latents [B, C, 1+n, h, w] -> video [B, 3, 1+4n, 8h, 8w]; tiled like ``encode``."""
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"latents must be [B, {self.config.latent_channels}, T, h, w], got {tuple(z.shape)}"
            )
        latent_tile = tile.latent_size(self.config.spatial_compression) if tile is not None else 0
        if tile is not None and max(z.shape[-2:]) > latent_tile:
            return _tiled_apply(self._decode, z, latent_tile, tile.overlap, self.config.spatial_compression)
        return self._decode(z)

    def forward(
        self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    @torch.no_grad()
    def to_latents(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        tile: TileConfig | None = None,
    ) -> torch.Tensor:
        """Scaled latents for the DiT: a posterior sample times ``scaling_factor`` (mode if no generator)."""
        posterior = self.encode(x, tile)
        z = posterior.sample(generator) if generator is not None else posterior.mode()
        return z * self.config.scaling_factor

    @torch.no_grad()
    def from_latents(self, z: torch.Tensor, tile: TileConfig | None = None) -> torch.Tensor:
        """Inverse of ``to_latents``: undo the scaling and decode."""
        return self.decode(z / self.config.scaling_factor, tile)
