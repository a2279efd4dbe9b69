"""Clip embeddings for near-duplicate search and concept balancing: an open_clip image embedding
(real weights) or, offline by default, a classical perceptual embedding that needs no weights."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Annotated

import cv2
import numpy as np
import pyarrow as pa
from pydantic import Field

from curation.frames import ClipFrames, FrameRequest
from curation.scoring import Scorer
from curation.stage import Count, NonNegative, Side, params
from filters.clip_model import check_weights, clip_embed_dim, embed_clips, load_open_clip


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


@params
class ClipEmbeddingParams:
    """model: open_clip architecture. pretrained: tag in the local cache or checkpoint path (required).
    frames: samples per clip. decode_side: decode size (longer side). The device comes from the stage's
    resources (num_gpus > 0: cuda)."""

    model: str = "ViT-L-14"
    pretrained: str | None = None
    frames: Count = 4
    decode_side: Side = 448


class ClipEmbeddingScorer(Scorer):
    """`embedding` (fixed_size_list<float32>[d]): mean of the frames' normalised CLIP embeddings,
    L2-normalised, of the picture inside `content_box` when `borders` runs before it;
    `embedding_model`: "open_clip:<model>:<pretrained>"."""

    name = "clip_embedding"
    version = "2"  # 2: embeds the picture inside content_box (bars cut away)
    Params = ClipEmbeddingParams
    stateful = True

    def output_fields(self) -> list[pa.Field]:
        dim = clip_embed_dim(self.name, self.params.model)
        return [pa.field("embedding", pa.list_(pa.float32(), dim)), pa.field("embedding_model", pa.string())]

    def output_columns(self) -> list[str]:
        return ["embedding", "embedding_model"]  # known without importing open_clip

    def request(self) -> FrameRequest:
        return FrameRequest(frames=self.params.frames, max_side=self.params.decode_side)

    def validate(self) -> None:
        check_weights(self.name, self.params.model, self.params.pretrained)

    def setup(self) -> None:
        p = self.params
        self.model, self.preprocess = load_open_clip(self.name, p.model, p.pretrained, self.device)
        tag = os.path.basename(p.pretrained) if p.pretrained else "none"
        self.model_id = f"open_clip:{p.model}:{tag}"

    def score_batch(self, clips: Sequence[ClipFrames]) -> list[dict]:
        embs = embed_clips(self.model, self.preprocess, [c.picture(self.params.decode_side) for c in clips],
                           self.device)
        return [{"embedding": _unit(e.mean(axis=0)).astype(np.float32), "embedding_model": self.model_id}
                for e in embs]


@params
class PerceptualParams:
    """frames: samples per clip. dct_size: low-frequency DCT block kept (dct_size² − 1 values, DC
    dropped) of a 32×32 luma thumbnail. layout_grid: colour layout grid (grid² × 3 values, YCrCb).
    hue_bins / sat_bins: hue-saturation histogram. The three parts are each centred and unit-norm,
    then weighted by w_dct / w_layout / w_hist."""

    frames: Count = 8
    dct_size: Annotated[int, Field(ge=2, le=32)] = 9
    layout_grid: Count = 4
    hue_bins: Count = 8
    sat_bins: Count = 4
    w_dct: NonNegative = 1.0
    w_layout: NonNegative = 0.7
    w_hist: NonNegative = 0.5


def perceptual_features(rgb: np.ndarray, p: PerceptualParams) -> np.ndarray:
    """One frame's feature: structure (low DCT of luma), colour layout and colour histogram. All are
    low-pass views of the picture, so re-encoding, rescaling and small crops barely move them."""
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(luma, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    dct = cv2.dct(thumb)[: p.dct_size, : p.dct_size].ravel()[1:]  # DC = brightness, carried by layout
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    layout = cv2.resize(ycc, (p.layout_grid, p.layout_grid), interpolation=cv2.INTER_AREA).astype(np.float32)
    layout = (layout - layout.reshape(-1, 3).mean(0)).ravel() / 255.0
    small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [p.hue_bins, p.sat_bins], [0, 180, 0, 256]).ravel()
    hist = np.sqrt(hist / max(1.0, float(hist.sum())))  # Hellinger: tames dominant colours
    hist = hist - hist.mean()
    return np.concatenate([p.w_dct * _unit(dct), p.w_layout * _unit(layout), p.w_hist * _unit(hist)])


class PerceptualEmbeddingScorer(Scorer):
    """`embedding` (fixed_size_list<float32>[d], d = dct_size² − 1 + 3·layout_grid² + hue_bins·sat_bins,
    160 by default): the mean of per-frame perceptual features of the picture inside `content_box` (when
    `borders` runs before it: bars and aspect changes do not move it), L2-normalised; compare with cosine.
    `embedding_model`: "perceptual-v<version>:<d>". Needs no weights (the offline default)."""

    name = "embedding"
    version = "2"  # 2: the picture inside content_box (bars cut away)
    Params = PerceptualParams

    @property
    def dim(self) -> int:
        p = self.params
        return p.dct_size**2 - 1 + 3 * p.layout_grid**2 + p.hue_bins * p.sat_bins

    def output_fields(self) -> list[pa.Field]:
        return [pa.field("embedding", pa.list_(pa.float32(), self.dim)),
                pa.field("embedding_model", pa.string())]

    def request(self) -> FrameRequest:
        return FrameRequest(frames=self.params.frames, max_side=128)

    def score(self, clip: ClipFrames) -> dict:
        feats = np.stack([perceptual_features(f, self.params) for f in clip.picture(128)])
        return {"embedding": _unit(feats.mean(axis=0)).astype(np.float32),
                "embedding_model": f"perceptual-v{self.version}:{self.dim}"}
