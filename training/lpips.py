"""LPIPS perceptual distance (VGG16 variant) loaded from local checkpoint files, never downloaded.

Accepted formats:
- the full LPIPS state dict used by taming-transformers / many VAE trainers (``scaling_layer.*``,
  ``net.slice1.0.weight`` ..., ``lin0.model.1.weight`` ...), one file;
- the PerceptualSimilarity release ``weights/v0.1/vgg.pth`` (only ``lin0..lin4``) together with
  torchvision's ImageNet VGG16 state dict (``features.N.weight``) for the backbone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# VGG16 `features` indices that end each LPIPS slice (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
_SLICE_ENDS = (4, 9, 16, 23, 30)
_CHANNELS = (64, 128, 256, 512, 512)


class LPIPSWeightsMissing(FileNotFoundError):
    """The LPIPS checkpoint (or its VGG backbone) is not available locally."""


def _vgg16_features() -> nn.Sequential:
    # Only the convolutional trunk: building all of vgg16 would allocate its 124M-parameter classifier.
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs["D"], batch_norm=False)


class _ScalingLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class _VGGSlices(nn.Module):
    """VGG16 features split into 5 slices; submodule names keep the torchvision indices."""

    def __init__(self) -> None:
        super().__init__()
        features = _vgg16_features()
        start = 0
        for i, end in enumerate(_SLICE_ENDS, 1):
            part = nn.Sequential()
            for idx in range(start, end):
                part.add_module(str(idx), features[idx])
            setattr(self, f"slice{i}", part)
            start = end

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, len(_SLICE_ENDS) + 1):
            x = getattr(self, f"slice{i}")(x)
            outs.append(x)
        return outs


class _NetLin(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """d(x, y) per image for inputs [N, 3, H, W] in [-1, 1]; frozen. Build with ``load_lpips``."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = _ScalingLayer()
        self.net = _VGGSlices()
        for i, ch in enumerate(_CHANNELS):
            setattr(self, f"lin{i}", _NetLin(ch))
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # dropout in the linear heads must stay off

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.net(self.scaling_layer(x)), self.net(self.scaling_layer(y))
        total = x.new_zeros(x.shape[0])
        for i, (a, b) in enumerate(zip(fx, fy)):
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{i}").model((a - b).pow(2)).mean(dim=(1, 2, 3))
        return total


def load_lpips(path: str | Path | None, backbone_path: str | Path | None = None) -> LPIPS:
    """LPIPS from local files; see the module docstring for the two accepted layouts."""
    if not path or not Path(path).is_file():
        raise LPIPSWeightsMissing(
            f"LPIPS checkpoint not found at {path!r}: set VAELossConfig.lpips_path to a local LPIPS file "
            "(full LPIPS state dict, or PerceptualSimilarity weights/v0.1/vgg.pth plus "
            "VAELossConfig.lpips_backbone_path = torchvision vgg16 weights), or set perceptual_weight=0"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = LPIPS()
    if "net.slice1.0.weight" not in state:
        if not backbone_path or not Path(backbone_path).is_file():
            raise LPIPSWeightsMissing(
                f"{path} holds only the LPIPS linear heads; set VAELossConfig.lpips_backbone_path to a local "
                f"torchvision VGG16 state dict (got {backbone_path!r})"
            )
        state = {**state, **_backbone_state(torch.load(backbone_path, map_location="cpu", weights_only=True))}
        state.setdefault("scaling_layer.shift", model.scaling_layer.shift)
        state.setdefault("scaling_layer.scale", model.scaling_layer.scale)
    model.load_state_dict(state, strict=True)
    return model


def _backbone_state(vgg: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ``features.N.*`` keys -> ``net.sliceK.N.*`` keys; the classifier is ignored."""
    out = {}
    for key, value in vgg.items():
        if not key.startswith("features."):
            continue
        idx = int(key.split(".")[1])
        slice_no = next(i for i, end in enumerate(_SLICE_ENDS, 1) if idx < end)
        out[f"net.slice{slice_no}.{key[len('features.') :]}"] = value
    return out
