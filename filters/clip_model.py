"""Loading an open_clip image encoder from real weights (a pretrained tag in the local cache or a
checkpoint file) for the model-backed scorers, and embedding RGB frames with it. Never random-init:
a missing or unloadable checkpoint is a ConfigError naming the stage and the setting to fix."""

from __future__ import annotations

import functools
import os

import numpy as np

from curation.errors import ConfigError


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def clip_embed_dim(stage: str, model_name: str) -> int:
    """The image-embedding width of an open_clip architecture, known without loading weights."""
    import open_clip

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ConfigError(f"stage '{stage}': unknown open_clip model '{model_name}' (parameter 'model'); "
                          f"see open_clip.list_models() or register a config with open_clip.add_model_config")
    return int(cfg["embed_dim"])


def check_weights(stage: str, model_name: str, pretrained: str | None) -> None:
    """The cheap part of loading: settings present, file exists, architecture known (run on the driver)."""
    if not pretrained:
        raise ConfigError(
            f"stage '{stage}' needs CLIP weights: set parameter 'pretrained' to an open_clip pretrained tag "
            f"already in the local cache (e.g. 'openai' for ViT-L-14) or to a local checkpoint file "
            f"(e.g. pretrained: /models/ViT-L-14.pt in the pipeline YAML)")
    if _looks_like_path(pretrained) and not os.path.isfile(pretrained):
        raise ConfigError(f"stage '{stage}': parameter 'pretrained' points to {pretrained!r}, "
                          f"which is not a file")
    clip_embed_dim(stage, model_name)


def load_open_clip(stage: str, model_name: str, pretrained: str | None, device: str = "cpu"):
    """(model in eval mode, image preprocess) for `model_name` with weights from `pretrained`. Cached per
    process by (model, weights, device), so scorers sharing one CLIP (embedding and aesthetic) hold one
    copy; `stage` only names the scorer in errors."""
    check_weights(stage, model_name, pretrained)
    try:
        return _open_clip(model_name, pretrained, device)
    except Exception as exc:  # noqa: BLE001 - any loader failure is a configuration problem here
        raise ConfigError(f"stage '{stage}': cannot load open_clip '{model_name}' with pretrained="
                          f"{pretrained!r} ({type(exc).__name__}: {exc}); offline, give a local checkpoint "
                          f"path or a tag that is already cached") from exc


@functools.lru_cache(maxsize=4)
def _open_clip(model_name: str, pretrained: str | None, device: str):
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
    return model.eval(), preprocess


def embed_clips(model, preprocess, clips: list[np.ndarray], device: str = "cpu") -> list[np.ndarray]:
    """Per clip, its frames' (K, d) embeddings: one model batch over the frames of every clip."""
    emb = embed_frames(model, preprocess, np.concatenate(clips), device)
    bounds = np.cumsum([0, *(len(f) for f in clips)])
    return [emb[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def embed_frames(model, preprocess, frames: np.ndarray, device: str = "cpu") -> np.ndarray:
    """(K, d) float32 L2-normalised image embeddings of RGB uint8 frames (K,H,W,3)."""
    import torch
    from PIL import Image

    batch = torch.stack([preprocess(Image.fromarray(f)) for f in frames]).to(device)
    with torch.no_grad():
        emb = model.encode_image(batch).float()
    emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return emb.cpu().numpy().astype(np.float32)
