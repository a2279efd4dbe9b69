"""Exponential moving average of the DiT's weights: ``shadow ← decay · shadow + (1 − decay) · weights`` after
every optimiser step, kept in fp32 beside the model. The EMA weights are what a checkpoint's
``ema.safetensors`` holds and what sampling and evaluation use (``EMA.applied``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """fp32 shadow copies of a model's floating-point state (parameters and buffers)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()
                       if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        state = model.state_dict()
        names = list(self.shadow)
        current = [state[k].detach().float() for k in names]
        torch._foreach_lerp_([self.shadow[k] for k in names], current, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f"EMA state lacks {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with the EMA weights inside the block, its own weights back after it."""
        state = model.state_dict()
        backup = {k: state[k].detach().clone() for k in self.shadow}
        with torch.no_grad():
            for k, v in self.shadow.items():
                state[k].copy_(v)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, v in backup.items():
                    state[k].copy_(v)
