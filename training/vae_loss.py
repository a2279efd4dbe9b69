"""VAE training loss: L1 + KL, with optional perceptual (LPIPS) and adversarial (PatchGAN) terms.

Report weights: L1 + 0.1 LPIPS + 0.05 adversarial + 1e-6 KL. Perceptual and adversarial terms are
pluggable modules, applied per frame; both are off unless supplied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.vae import DiagonalGaussian


@dataclass(frozen=True)
class VAELossConfig:
    kl_weight: float = 1e-6
    perceptual_weight: float = 0.1
    adversarial_weight: float = 0.05
    lpips_path: str | None = None
    lpips_backbone_path: str | None = None


def frames_2d(video: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W] so image losses see every frame."""
    b, c, t, h, w = video.shape
    return video.transpose(1, 2).reshape(b * t, c, h, w)


class PatchDiscriminator(nn.Sequential):
    """PatchGAN (pix2pix NLayer) on single frames: a grid of real/fake logits."""

    def __init__(self, in_channels: int = 3, width: int = 64, layers: int = 3) -> None:
        mods: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for i in range(1, layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(ch, out, 4, stride, 1, bias=False), nn.GroupNorm(1, out), nn.LeakyReLU(0.2)]
            ch = out
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        super().__init__(*mods)


def discriminator_hinge_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss for the discriminator step; ``fake`` is detached here."""
    real_logits = disc(frames_2d(real))
    fake_logits = disc(frames_2d(fake.detach()))
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


class VAELoss(nn.Module):
    """Generator-side loss; returns a dict with ``total`` and each weighted term."""

    def __init__(
        self,
        config: VAELossConfig | None = None,
        perceptual: nn.Module | None = None,
        discriminator: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config or VAELossConfig()
        self.perceptual = perceptual
        self.discriminator = discriminator

    @classmethod
    def from_config(cls, config: VAELossConfig, discriminator: nn.Module | None = None) -> VAELoss:
        """Loads LPIPS from ``config.lpips_path`` when the perceptual weight is non-zero."""
        perceptual = None
        if config.perceptual_weight > 0:
            from training.lpips import load_lpips

            perceptual = load_lpips(config.lpips_path, config.lpips_backbone_path)
        return cls(config, perceptual, discriminator)

    def forward(
        self, recon: torch.Tensor, target: torch.Tensor, posterior: DiagonalGaussian
    ) -> dict[str, torch.Tensor]:
        c = self.config
        terms = {"l1": (recon - target).abs().mean(), "kl": c.kl_weight * posterior.kl().mean()}
        if self.perceptual is not None and c.perceptual_weight > 0:
            terms["perceptual"] = (
                c.perceptual_weight * self.perceptual(frames_2d(recon), frames_2d(target)).mean()
            )
        if self.discriminator is not None and c.adversarial_weight > 0:
            terms["adversarial"] = -c.adversarial_weight * self.discriminator(frames_2d(recon)).mean()
        terms["total"] = sum(terms.values())
        return terms
