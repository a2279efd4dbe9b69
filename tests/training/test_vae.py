"""Causal 3D VAE: causality, 4n+1 shapes, tiling, posterior and a tiny overfit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.vae import CausalConv3d, CausalVAE, DiagonalGaussian, TileConfig, VAEConfig, _tiled_apply

TINY = VAEConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)


def _vae(config: VAEConfig = TINY) -> CausalVAE:
    torch.manual_seed(0)
    return CausalVAE(config).eval()


def _video(frames: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, size, size, generator=g) * 2 - 1


def test_causal_conv_never_looks_ahead():
    torch.manual_seed(0)
    conv = CausalConv3d(3, 4, 3)
    x = torch.randn(1, 3, 7, 8, 8)
    base = conv(x)
    assert base.shape == (1, 4, 7, 8, 8)  # same-size output: front-only temporal padding
    for k in range(7):
        changed = x.clone()
        changed[:, :, k] += 1.0
        out = conv(changed)
        assert torch.equal(out[:, :, :k], base[:, :, :k]), f"frame {k} leaked into earlier outputs"
        assert not torch.allclose(out[:, :, k], base[:, :, k])


def test_causal_conv_first_frame_is_replicate_padded():
    torch.manual_seed(0)
    conv = CausalConv3d(2, 2, 3)
    still = torch.randn(1, 2, 1, 6, 6)
    # A single frame padded with copies of itself = the same frame repeated 3 times, first output.
    assert torch.allclose(conv(still)[:, :, 0], conv(still.repeat(1, 1, 3, 1, 1))[:, :, 0], atol=1e-6)


@torch.no_grad()
def test_encoder_is_causal_in_time():
    vae = _vae()
    x = _video(9, 32)
    base = vae.encode(x).mean  # latent frame j covers video frames up to 4j
    for k in range(1, 9):
        changed = x.clone()
        changed[:, :, k] = -changed[:, :, k]
        mean = vae.encode(changed).mean
        first_affected = math.ceil(k / 4)
        assert torch.equal(mean[:, :, :first_affected], base[:, :, :first_affected]), k
        assert not torch.allclose(mean[:, :, first_affected], base[:, :, first_affected])


@pytest.mark.parametrize("frames", [1, 5, 9, 17])
@torch.no_grad()
def test_shapes_for_4n_plus_1_frames(frames):
    vae = _vae()
    x = _video(frames, 32)
    posterior = vae.encode(x)
    latent_frames = (frames - 1) // 4 + 1
    assert posterior.mean.shape == (1, 16, latent_frames, 4, 4)
    assert vae.decode(posterior.mode()).shape == x.shape


def test_bad_shapes_are_clear_errors():
    vae = _vae()
    with pytest.raises(ValueError, match="1 \\+ 4n"):
        vae.encode(_video(8, 32))
    with pytest.raises(ValueError, match="divisible by 8"):
        vae.encode(_video(5, 36))


@torch.no_grad()
def test_still_image_encodes_like_first_frame_of_video():
    vae = _vae()
    x = _video(5, 32)
    assert torch.allclose(vae.encode(x[:, :, :1]).mean[:, :, 0], vae.encode(x).mean[:, :, 0], atol=1e-5)


def test_tile_stitching_is_exact_for_local_maps():
    # With a map that has no spatial context, blending identical overlaps must reproduce the input exactly,
    # which checks the tile offsets, the ramps and the crops for both directions.
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 2, 20, 28, generator=g)

    def up(t):
        return F.interpolate(t, scale_factor=(1, 8, 8), mode="nearest") * 3 - 1

    assert torch.allclose(_tiled_apply(up, z, 8, 0.25, 8), up(z), atol=1e-5)
    x = torch.randn(1, 3, 5, 160, 224, generator=g)

    def down(t):
        return F.avg_pool3d(t, (1, 8, 8))

    assert torch.allclose(_tiled_apply(down, x, 64, 0.25, 1 / 8), down(x), atol=1e-5)


@torch.no_grad()
def test_tiled_decode_and_encode_match_untiled():
    # Tiles see less context (borders, per-tile GroupNorm statistics, clip-wide attention), so tiling is an
    # approximation; it must be close and get closer as tiles grow.
    vae = _vae(VAEConfig(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 16, 1, 32, 32, generator=g)
    x = torch.rand(1, 3, 1, 256, 256, generator=g) * 2 - 1

    def rel_rms(a, b):
        return float((a - b).pow(2).mean().sqrt() / b.std())

    full_dec, full_enc = vae.decode(z), vae.encode(x).mean
    err_dec = {s: rel_rms(vae.decode(z, TileConfig(s)), full_dec) for s in (128, 192)}
    err_enc = {s: rel_rms(vae.encode(x, TileConfig(s)).mean, full_enc) for s in (128, 192)}
    assert vae.decode(z, TileConfig(192)).shape == full_dec.shape
    assert err_dec[192] < 0.35 and err_enc[192] < 0.2, (err_dec, err_enc)
    assert err_dec[192] < err_dec[128] and err_enc[192] < err_enc[128]
    # A tile as large as the frame is the untiled path.
    assert torch.equal(vae.decode(z, TileConfig(256)), full_dec)


def test_posterior_kl_and_sampling():
    params = torch.zeros(2, 8, 1, 2, 2)
    post = DiagonalGaussian(params)
    assert torch.allclose(post.kl(), torch.zeros(2))  # N(0, I) against N(0, I)
    params[:, :4] = 1.0  # mean 1, logvar 0 -> KL = 0.5 per dim
    assert torch.allclose(DiagonalGaussian(params).kl(), torch.full((2,), 0.5 * 16))
    a = post.sample(torch.Generator().manual_seed(3))
    b = post.sample(torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.std() > 0.5


def test_hunyuan_config_shapes_without_allocating():
    with torch.device("meta"):
        vae = CausalVAE(VAEConfig())
        out = vae.encoder(torch.empty(1, 3, 33, 64, 64))
    assert out.shape == (1, 32, 9, 8, 8)
    assert vae.config.scaling_factor == pytest.approx(0.476986)


def test_vae_overfits_a_tiny_clip():
    torch.manual_seed(0)
    vae = CausalVAE(TINY)
    g = torch.Generator().manual_seed(0)
    image = F.interpolate(torch.rand(1, 3, 1, 8, 8, generator=g), size=(1, 32, 32), mode="trilinear") * 2 - 1
    clip = torch.cat([torch.roll(image, shifts=i, dims=4) for i in range(5)], dim=2)  # 1 px/frame pan

    def psnr() -> float:
        with torch.no_grad():
            rec = vae(clip, sample=False)[0]
        return 10 * math.log10(4.0 / float((rec - clip).pow(2).mean()))

    before = psnr()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    noise = torch.Generator().manual_seed(1)
    for _ in range(150):
        rec, post = vae(clip, sample=True, generator=noise)
        loss = (rec - clip).abs().mean() + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = psnr()
    assert after - before >= 6.0, (before, after)
