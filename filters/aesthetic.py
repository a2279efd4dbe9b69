"""Aesthetic score: an open_clip image encoder plus the LAION "improved aesthetic predictor" MLP head
(the public `sac+logos+ava1-l14-linearMSE.pth` on CLIP ViT-L/14), averaged over sampled frames."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from curation.errors import ConfigError
from curation.frames import ClipFrames, FrameRequest
from curation.scoring import Scorer
from curation.stage import Count, Side, params
from filters.clip_model import check_weights, clip_embed_dim, embed_clips, load_open_clip


@params
class AestheticParams:
    """model: open_clip architecture. pretrained: open_clip tag in the local cache or a checkpoint
    path (required). head: path of the MLP head state dict (`layers.0.weight` ...; required; its input
    width must equal the CLIP embedding width). frames: samples per clip. decode_side: longer side the
    frames are decoded at (the CLIP transform then resizes/crops). The device comes from the stage's
    resources (num_gpus > 0: cuda)."""

    model: str = "ViT-L-14"
    pretrained: str | None = None
    head: str | None = None
    frames: Count = 4
    decode_side: Side = 448


def build_head(dim: int):
    """The LAION aesthetic MLP; layer indices match the public checkpoint's state-dict keys."""
    from torch import nn

    class AestheticHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

        def forward(self, x):
            return self.layers(x)

    return AestheticHead()


def load_head(stage: str, path: str | None, dim: int):
    """The MLP head from a state-dict file, checked against the CLIP embedding width."""
    import torch

    if not path:
        raise ConfigError(f"stage '{stage}' needs the aesthetic MLP head: set parameter 'head' to a local "
                          f"state-dict file such as sac+logos+ava1-l14-linearMSE.pth (LAION improved "
                          f"aesthetic predictor)")
    if not os.path.isfile(path):
        raise ConfigError(f"stage '{stage}': parameter 'head' points to {path!r}, which is not a file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    if "layers.0.weight" not in state:
        raise ConfigError(f"stage '{stage}': {path!r} is not an aesthetic head state dict "
                          f"(no layers.0.weight)")
    width = int(state["layers.0.weight"].shape[1])
    if width != dim:
        raise ConfigError(f"stage '{stage}': head {path!r} takes {width}-d input but the CLIP model "
                          f"embeds to {dim}-d; pair the head with its CLIP model")
    head = build_head(dim)
    head.load_state_dict(state)
    return head.eval()


class AestheticScorer(Scorer):
    """`aesthetic` (float32): mean over sampled frames of the head applied to the L2-normalised CLIP
    image embedding (the LAION predictor's 1-10 scale for its own checkpoint)."""

    name = "aesthetic"
    version = "1"
    Params = AestheticParams
    stateful = True

    def output_fields(self) -> list[pa.Field]:
        return [pa.field("aesthetic", pa.float32())]

    def request(self) -> FrameRequest:
        return FrameRequest(frames=self.params.frames, max_side=self.params.decode_side)

    def validate(self) -> None:
        check_weights(self.name, self.params.model, self.params.pretrained)
        if not self.params.head or not os.path.isfile(self.params.head):
            load_head(self.name, self.params.head, clip_embed_dim(self.name, self.params.model))

    def setup(self) -> None:
        p = self.params
        dim = clip_embed_dim(self.name, p.model)
        head = load_head(self.name, p.head, dim)  # checked first: it fails faster than a CLIP load
        self.model, self.preprocess = load_open_clip(self.name, p.model, p.pretrained, self.device)
        self.head = head.to(self.device)

    def score_batch(self, clips: Sequence[ClipFrames]) -> list[dict]:
        import torch

        embs = embed_clips(self.model, self.preprocess, [c.at(self.params.decode_side) for c in clips], self.device)
        with torch.no_grad():
            scores = self.head(torch.from_numpy(np.concatenate(embs)).to(self.device)).squeeze(-1).cpu().numpy()
        bounds = np.cumsum([0, *(len(e) for e in embs)])
        return [{"aesthetic": float(np.mean(scores[a:b]))} for a, b in zip(bounds[:-1], bounds[1:])]
