"""Named model size presets (VAE + DiT) from CPU-test tiny to the HunyuanVideo 13B configuration."""

from __future__ import annotations

from dataclasses import dataclass

from curation.errors import ConfigError
from training.dit import DiTConfig
from training.vae import VAEConfig


@dataclass(frozen=True)
class ModelPreset:
    """A VAE and a DiT that fit together (DiT in_channels = VAE latent channels)."""

    name: str
    vae: VAEConfig
    dit: DiTConfig


def _tiny() -> ModelPreset:
    vae = VAEConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)
    dit = DiTConfig(hidden_size=64, num_heads=4, depth_double=1, depth_single=1, text_dim=32, pooled_dim=32)
    return ModelPreset("tiny", vae, dit)


def _small() -> ModelPreset:
    vae = VAEConfig(block_out_channels=(32, 64, 128, 128), layers_per_block=1, norm_num_groups=16)
    dit = DiTConfig(
        hidden_size=384, num_heads=6, depth_double=2, depth_single=4, text_dim=384, pooled_dim=384
    )
    return ModelPreset("small", vae, dit)


def _hunyuan_13b() -> ModelPreset:
    # Report: 20 dual + 40 single blocks, 3072 wide, 24 heads x 128, MLLM text 4096, CLIP-L pooled 768.
    return ModelPreset("hunyuan-13b", VAEConfig(), DiTConfig())


PRESETS = {"tiny": _tiny, "small": _small, "hunyuan-13b": _hunyuan_13b}


def get_preset(name: str) -> ModelPreset:
    """Preset by name; the error lists the known names."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
