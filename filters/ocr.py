"""Burned-in text: how much of the frame text covers, where it is, and whether a subtitle band sits
near the bottom (a crop suggestion). Uses RapidOCR's PP-OCR ONNX models, which ship in its wheel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.frames import ClipFrames, FrameRequest
from curation.scoring import Scorer
from curation.stage import Count, Fraction, Side, params

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width / height


@params
class OcrParams:
    """frames: samples per clip (detection costs ~0.2-0.35 s a frame at 480-640 px on one CPU core:
    OCR is by far the costliest offline scorer). max_side: the detector's input size (longer side;
    text lines under ~10 px at this size are missed). box_thresh: detector box score.
    max_line_height: detected "lines" taller than this share of the frame are dropped (the detector
    fires on some large textures; real text lines are far shorter). subtitle_top: boxes whose centre
    lies below this share of the height may be subtitles; subtitle_persistence: share of sampled
    frames that must hold one for `subtitle_box` to be set. recognize: also read the text into
    `ocr_text` (several times slower). threads: ONNX Runtime threads (None: the stage's num_cpus)."""

    frames: Count = 3
    max_side: Side = 480
    box_thresh: Fraction = 0.5
    max_line_height: Fraction = 0.3
    subtitle_top: Fraction = 0.6
    subtitle_persistence: Fraction = 0.5
    recognize: bool = False
    threads: Count | None = None


@dataclass(frozen=True)
class FrameText:
    boxes: list[Box]
    texts: list[str]
    area: float  # share of the frame inside the union of the boxes


def _coverage(boxes: list[Box], grid: int = 200) -> float:
    """Share of the unit square covered by the union of `boxes` (rasterised: overlaps count once)."""
    mask = np.zeros((grid, grid), bool)
    for x0, y0, x1, y1 in boxes:
        mask[int(y0 * grid):int(np.ceil(y1 * grid)), int(x0 * grid):int(np.ceil(x1 * grid))] = True
    return float(mask.mean())


def _union(boxes: list[Box]) -> Box:
    a = np.array(boxes)
    return float(a[:, 0].min()), float(a[:, 1].min()), float(a[:, 2].max()), float(a[:, 3].max())


class OcrScorer(Scorer):
    """Columns: `text_area` (max over sampled frames of the share of the frame covered by text boxes;
    0 when none), `text_boxes` (normalised [x0, y0, x1, y1] boxes of the frame with the most text),
    `subtitle_box` (union of the bottom-band text boxes when text persists there across the clip, else
    null), and with `recognize` `ocr_text` (distinct lines read, joined by " | ")."""

    name = "ocr"
    version = "1"
    Params = OcrParams
    stateful = True

    def output_fields(self) -> list[pa.Field]:
        box = pa.list_(pa.float32(), 4)
        fields = [pa.field("text_area", pa.float32()), pa.field("text_boxes", pa.list_(box)),
                  pa.field("subtitle_box", box)]
        return [*fields, pa.field("ocr_text", pa.string())] if self.params.recognize else fields

    def request(self) -> FrameRequest:
        return FrameRequest(frames=self.params.frames, max_side=self.params.max_side)

    def setup(self) -> None:
        from rapidocr import RapidOCR

        threads = self.params.threads or max(1, int(self.resources.num_cpus))
        self.engine = RapidOCR(params={
            "Global.log_level": "error", "Global.use_cls": False, "Global.use_rec": self.params.recognize,
            # "max" bounds the detector input (the default "min" 736 upscales small frames: slow).
            "Det.limit_type": "max", "Det.limit_side_len": self.params.max_side,
            "Det.box_thresh": self.params.box_thresh,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })

    def read_frame(self, rgb: np.ndarray) -> FrameText:
        """Text boxes (and, with `recognize`, their text) of one RGB frame."""
        h, w = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # RapidOCR takes arrays as OpenCV BGR
        res = self.engine(bgr, use_det=True, use_cls=False, use_rec=self.params.recognize)
        quads = getattr(res, "boxes", None)
        texts = list(getattr(res, "txts", None) or [])
        boxes, kept = [], []
        for j, quad in enumerate([] if quads is None else quads):
            q = np.asarray(quad, np.float64)
            box = (max(0.0, float(q[:, 0].min()) / w), max(0.0, float(q[:, 1].min()) / h),
                   min(1.0, float(q[:, 0].max()) / w), min(1.0, float(q[:, 1].max()) / h))
            if box[3] - box[1] <= self.params.max_line_height:
                boxes.append(box)
                if j < len(texts):
                    kept.append(texts[j])
        return FrameText(boxes=boxes, texts=kept, area=_coverage(boxes))

    def score(self, clip: ClipFrames) -> dict:
        frames = [self.read_frame(f) for f in clip.at(self.params.max_side)]
        best = max(frames, key=lambda f: f.area)
        out = {"text_area": best.area, "text_boxes": [list(b) for b in best.boxes],
               "subtitle_box": self._subtitle(frames)}
        if self.params.recognize:
            lines = list(dict.fromkeys(t.strip() for f in frames for t in f.texts if t.strip()))
            out["ocr_text"] = " | ".join(lines) if lines else None
        return out

    def _subtitle(self, frames: list[FrameText]) -> list[float] | None:
        low = [[b for b in f.boxes if (b[1] + b[3]) / 2 >= self.params.subtitle_top] for f in frames]
        present = [b for b in low if b]
        if not frames or len(present) / len(frames) < self.params.subtitle_persistence:
            return None
        return list(_union([box for boxes in present for box in boxes]))
