"""Flow matching for the DiT: training loss and an Euler sampler with classifier-free guidance.

Convention (the HunyuanVideo report's): x0 ~ N(0, I) is noise, x1 is data, and the path is the straight
line x_t = (1 - t) x0 + t x1 for t in [0, 1], so t = 0 is pure noise and t = 1 is data. The model
predicts the velocity dx_t/dt = x1 - x0 and sampling integrates from t = 0 to t = 1.

Timestep shift: the report's t' = s t / (1 + (s - 1) t) acts on the noise level sigma = 1 - t (its
public code runs sigmas from 1 down to 0), so with s > 1 more of the schedule is spent at high noise,
which high resolutions and long videos need. ``shift_sigma`` implements exactly that formula.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.text_encoder import TextCondition

# model(x_t, t, cond, guidance) -> velocity; VideoDiT satisfies it.
VelocityModel = Callable[..., torch.Tensor]


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """sigma' = s sigma / (1 + (s - 1) sigma); identity at s = 1, keeps 0 and 1 fixed."""
    if shift == 1.0:
        return sigma
    return shift * sigma / (1 + (shift - 1) * sigma)


def default_sampling_shift(steps: int) -> float:
    """The report's inference shift: 7 for ~50 steps, 17 when fewer than 20 steps are taken."""
    return 17.0 if steps < 20 else 7.0


@dataclass(frozen=True)
class FlowConfig:
    """Training-time timestep distribution: t = 1 - shift(sigmoid(N(mean, std)))."""

    logit_mean: float = 0.0
    logit_std: float = 1.0
    train_shift: float = 1.0


class FlowMatching:
    """Rectified-flow objective and sampler (see the module docstring for the t convention)."""

    def __init__(self, config: FlowConfig | None = None) -> None:
        self.config = config or FlowConfig()

    def sample_t(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"):
        """n timesteps in (0, 1) from the logit-normal distribution, with the noise level shifted."""
        c = self.config
        z = torch.randn(n, generator=generator, device=device) * c.logit_std + c.logit_mean
        sigma = shift_sigma(torch.sigmoid(z), c.train_shift)
        return 1.0 - sigma

    @staticmethod
    def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) x0 + t x1, with t [B] broadcast over the other dims."""
        tb = t.reshape(-1, *([1] * (x1.ndim - 1))).to(x1.dtype)
        return (1 - tb) * x0 + tb * x1

    def loss(
        self,
        model: VelocityModel,
        x1: torch.Tensor,
        cond: TextCondition,
        generator: torch.Generator | None = None,
        guidance: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """Velocity MSE on data latents ``x1`` [B, C, T, H, W]: || model(x_t, t) - (x1 - x0) ||^2.

        Noise ``x0`` and times ``t`` [B] are drawn from ``generator`` unless given (the trainer draws them
        per sample, so a sample's noise does not depend on how the batch is split). ``reduction="none"``
        returns one mean squared error per sample [B] (their mean is the "mean" loss).
        """
        if x0 is None:
            x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        if t is None:
            t = self.sample_t(x1.shape[0], generator, x1.device)
        v = model(self.interpolate(x0, x1, t), t, cond, guidance)
        if reduction == "none":
            return (v.float() - (x1 - x0).float()).pow(2).flatten(1).mean(1)
        return F.mse_loss(v.float(), (x1 - x0).float())

    @staticmethod
    def timesteps(steps: int, shift: float | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """steps + 1 increasing times from 0 (noise) to 1 (data), uniform in shifted noise level."""
        s = default_sampling_shift(steps) if shift is None else shift
        sigma = shift_sigma(torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float64), s)
        return (1.0 - sigma).float()

    @torch.no_grad()
    def sample(
        self,
        model: VelocityModel,
        shape: tuple[int, ...],
        cond: TextCondition,
        steps: int = 50,
        guidance_scale: float = 1.0,
        uncond: TextCondition | None = None,
        shift: float | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        embedded_guidance: float | None = None,
    ) -> torch.Tensor:
        """Euler integration of the velocity field from seeded noise.

        With ``guidance_scale`` > 1, classifier-free guidance mixes conditional and unconditional
        velocities v_u + g (v_c - v_u); ``uncond`` defaults to ``cond.null()``. The two passes run as one
        batch. ``embedded_guidance`` feeds a guidance-distilled model's guidance input instead.
        """
        x = torch.randn(shape, generator=generator, device=device)
        ts = self.timesteps(steps, shift, device)
        use_cfg = guidance_scale != 1.0
        if use_cfg:
            both = _cat_conditions(uncond if uncond is not None else cond.null(), cond)
        b = shape[0]
        g = None if embedded_guidance is None else torch.full((b,), embedded_guidance, device=device)
        for i in range(steps):
            t = ts[i].expand(b)
            if use_cfg:
                g2 = None if g is None else torch.cat([g, g])
                v_u, v_c = model(torch.cat([x, x]), torch.cat([t, t]), both, g2).chunk(2)
                v = v_u + guidance_scale * (v_c - v_u)
            else:
                v = model(x, t, cond, g)
            x = x + (ts[i + 1] - ts[i]) * v.float()
        return x


def _cat_conditions(a: TextCondition, b: TextCondition) -> TextCondition:
    return TextCondition(
        torch.cat([a.tokens, b.tokens]), torch.cat([a.mask, b.mask]), torch.cat([a.pooled, b.pooled])
    )
