"""Black bars (letterbox / pillarbox): the box of the real picture inside them, in native pixels,
found on a max-projection of the sampled frames so one dark frame cannot fake a bar."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation.frames import ClipFrames, FrameRequest
from curation.scoring import Scorer
from curation.stage import Count, Fraction, Side, params


@params
class BorderParams:
    """frames: samples per clip. max_side: analysis size (at or below it the box is exact to the pixel;
    above it, exact to native/max_side pixels). threshold: luma at or below which a pixel counts as bar
    (black after lossy coding is rarely above 16-24). bright_fraction: a row/column whose share of
    pixels above the threshold is at most this is still bar (tolerates coding speckle)."""

    frames: Count = 8
    max_side: Side | None = 640
    threshold: Annotated[int, Field(ge=0, le=255)] = 24
    bright_fraction: Fraction = 0.01


def _bar_extent(bright: np.ndarray, limit: float) -> tuple[int, int]:
    """First and one-past-last index whose bright share exceeds `limit` (bars touch the edges only)."""
    inside = np.flatnonzero(bright > limit)
    if len(inside) == 0:
        return 0, 0
    return int(inside[0]), int(inside[-1]) + 1


class BorderScorer(Scorer):
    """`content_box` = [x0, y0, x1, y1] (int32, native pixels, x1/y1 exclusive) of the picture inside
    black bars, and `border_fraction` = share of the frame area outside it. A clip that is black
    everywhere gets a null box and border_fraction 1."""

    name = "borders"
    version = "1"
    Params = BorderParams

    def output_fields(self) -> list[pa.Field]:
        return [pa.field("content_box", pa.list_(pa.int32(), 4)), pa.field("border_fraction", pa.float32())]

    def request(self) -> FrameRequest:
        return FrameRequest(frames=self.params.frames, max_side=self.params.max_side)

    def score(self, clip: ClipFrames) -> dict:
        gray = clip.gray(self.params.max_side)
        peak = gray.max(axis=0) > self.params.threshold  # bright anywhere in the clip
        h, w = peak.shape
        y0, y1 = _bar_extent(peak.mean(axis=1), self.params.bright_fraction)
        x0, x1 = _bar_extent(peak.mean(axis=0), self.params.bright_fraction)
        if x1 <= x0 or y1 <= y0:
            return {"content_box": None, "border_fraction": 1.0}
        sx, sy = clip.width / w, clip.height / h
        box = [round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)]
        area = (box[2] - box[0]) * (box[3] - box[1])
        return {"content_box": box, "border_fraction": 1.0 - area / (clip.width * clip.height)}
