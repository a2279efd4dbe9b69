"""Burned-in text: how much of the frame text covers, where it is, and whether a subtitle band sits
near the bottom (a crop suggestion). Uses RapidOCR's PP-OCR ONNX models, which ship in its wheel: PP-OCRv6
small detection and recognition since rapidocr 3.9 (pyproject.toml asks for it; 3.0-3.8 shipped PP-OCRv4
mobile, ~1.45x faster to detect and ~1.15x to read, but it misses large titles the v6 models find)."""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation.frames import ClipFrames, FrameRequest
from curation.scoring import Scorer
from curation.stage import Count, Fraction, Side, params
from filters.text_gate import text_possible

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width / height
GreyLevels = Annotated[int, Field(ge=1, le=255)]
CLEAR_READ = 0.95  # a recognition score no misread of the test fixtures reached (real lines read at 0.977-0.9999)


def _glibc_x86_64():
    """The C library when this is glibc on x86-64, where `fenv_t` is 32 bytes ending in MXCSR; else None."""
    if sys.platform != "linux" or platform.machine() != "x86_64" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(None)


_LIBC = _glibc_x86_64()


@contextmanager
def no_denormals() -> Iterator[None]:
    """Run the block with sub-normal floats flushed to zero on this thread (MXCSR FTZ + DAZ), restoring
    the floating-point environment after. Without it, two 1x1 convolutions at the end of the detector's
    backbone (768 -> 384 channels at 1/32 scale, 35 MFLOP each) took 70 % of a 480 px detection, ~100 ms
    CPU: the microcode assists of sub-normal operands. Flushed, a detection costs ~28 ms and its
    probability map is bit-identical on every test fixture and footage frame tried. ONNX Runtime's
    `session.set_denormal_as_zero` covers only its pool threads, not the calling thread, which runs
    everything at intra_op_num_threads=1. A no-op off glibc/x86-64."""
    if _LIBC is None:
        yield
        return
    saved, env = (ctypes.c_byte * 32)(), (ctypes.c_byte * 32)()
    _LIBC.fegetenv(saved)
    ctypes.memmove(env, saved, 32)
    ctypes.c_uint32.from_buffer(env, 28).value |= 0x8040  # FTZ (bit 15) + DAZ (bit 6)
    _LIBC.fesetenv(env)
    try:
        yield
    finally:
        _LIBC.fesetenv(saved)


OTHER_ENGINES = ("openvino", "paddle", "torch", "mnn")  # model-list sections of engines this scorer never runs
# sections RapidOCR reads only with .get, [] and iteration (rapidocr.utils.model_resolver: the language
# routes and names), which a Python dict answers alike: kept as one, they cost no OmegaConf nodes
ROUTING_SECTIONS = ("model_routes", "lang_mapping")


class _Plain(dict):
    """A section kept as Python containers inside the OmegaConf config (its `allow_objects` flag stores a
    dict subclass as one value instead of converting it)."""


def model_list(path: str | os.PathLike):
    """RapidOCR's model list (default_models.yaml, 85 KB) as an OmegaConf config without the sections of
    the engines other than ONNX Runtime, parsed by PyYAML's safe loader (libyaml's where it has it), the
    routing sections as Python dicts: what OmegaConf.load gives for every key kept, as containers
    (tests/filters/test_ocr.py), in ~0.03-0.06 instead of ~0.4-0.6 CPU-s (building OmegaConf's nodes is
    most of the cost: the other engines' model entries and the language routes were most of the nodes)."""
    import yaml
    from omegaconf import OmegaConf

    with open(path, encoding="utf-8") as f:
        doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    kept = {k: _Plain(v) if k in ROUTING_SECTIONS and isinstance(v, dict) else v
            for k, v in doc.items() if k not in OTHER_ENGINES}
    return OmegaConf.create(kept, flags={"allow_objects": True})


@contextmanager
def _model_list_parsed_once() -> Iterator[None]:
    """While RapidOCR's modules import, its model list is parsed once, by `model_list`: two of its modules
    parse the same default_models.yaml at import and only read it, which cost ~0.4 of the ~0.6 CPU-s a
    worker spent setting OCR up. Other files load as before, and nothing is shared after the import (a
    config RapidOCR edits, its config.yaml, is parsed after it, per engine)."""
    from omegaconf import OmegaConf

    raw, real, parsed = OmegaConf.__dict__["load"], OmegaConf.load, {}  # raw: the staticmethod itself

    def load(path):
        is_path = isinstance(path, (str, os.PathLike))
        if not is_path or os.path.basename(os.fspath(path)) != "default_models.yaml":
            return real(path)
        key = os.path.realpath(os.fspath(path))
        if key not in parsed:
            parsed[key] = model_list(key)
        return parsed[key]

    OmegaConf.load = staticmethod(load)
    try:
        yield
    finally:
        OmegaConf.load = raw


def _pool_session(path: str, threads: int):
    """An ONNX Runtime CPU session as RapidOCR builds it (all graph optimisations, no memory arena) whose
    pool threads also flush sub-normals and sleep rather than spin between kernels (a spinning thread
    burns CPU that another worker of the stage could use)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.enable_cpu_mem_arena = False
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


@params
class OcrParams:
    """frames: samples per clip (detection costs ~30 ms CPU a 480 px frame, each recognition read to
    verify a tall detection ~18 ms: OCR is the costliest offline scorer). max_side: the detector's
    input size (longer side; text lines under ~10 px at this size are missed). box_thresh: detector box score.
    max_line_height: a detected "line" taller than this share of the frame is a title or a texture
    (the detector fires on some large structures: a cup, windows); it counts as text only when OCR run
    again on its crop reads lines there with a recognition score of at least `title_min_score` and at
    least two letters or digits (then `text_title` is set). subtitle_top: boxes whose centre
    lies below this share of the height may be subtitles; subtitle_persistence: share of sampled
    frames that must hold one for `subtitle_box` to be set. recognize: also read the text into
    `ocr_text` (several times slower). threads: ONNX Runtime threads (None: the stage's num_cpus).
    gate_contrast: the detector runs only on frames that hold a structure of edges at least this strong
    (grey levels of a 3x3 morphological gradient) and a few pixels high (filters.text_gate, ~2 ms a
    frame); smooth, dark and blurred frames then cost no detection. None: detect on every frame."""

    frames: Count = 3
    max_side: Side = 480
    box_thresh: Fraction = 0.5
    max_line_height: Fraction = 0.3
    title_min_score: Fraction = 0.8
    subtitle_top: Fraction = 0.6
    subtitle_persistence: Fraction = 0.5
    recognize: bool = False
    threads: Count | None = None
    gate_contrast: GreyLevels | None = 30


@dataclass(frozen=True)
class FrameText:
    boxes: list[Box]
    texts: list[str]
    area: float  # share of the frame inside the union of the boxes
    title: bool = False  # some box came from a tall detection verified as text


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
    null), `text_title` (a large title: a detection taller than `max_line_height` that reads as text),
    and with `recognize` `ocr_text` (distinct lines read, joined by " | ")."""

    name = "ocr"
    # 2: tall detections verified by recognition count as text (titles); 3: the text gate (gate_contrast)
    # skips the detector on frames without strong edges: the same results on every test fixture. The
    # sub-normal flush (no_denormals) left the detector's output bit-identical: no new version; 4: a tall
    # detection's bandings are read until one reads clearly, not only until one reads (_verify_tall)
    version = "4"
    Params = OcrParams
    stateful = True

    def output_fields(self) -> list[pa.Field]:
        box = pa.list_(pa.float32(), 4)
        fields = [pa.field("text_area", pa.float32()), pa.field("text_boxes", pa.list_(box)),
                  pa.field("subtitle_box", box), pa.field("text_title", pa.bool_())]
        return [*fields, pa.field("ocr_text", pa.string())] if self.params.recognize else fields

    def request(self) -> FrameRequest:
        return FrameRequest(frames=self.params.frames, max_side=self.params.max_side)

    def setup(self) -> None:
        with _model_list_parsed_once():
            from rapidocr import RapidOCR

        threads = self.params.threads or max(1, int(self.resources.num_cpus))
        self.engine = RapidOCR(params={
            # the recognizer is loaded always: it verifies tall detections (titles) even without `recognize`
            "Global.log_level": "error", "Global.use_cls": False, "Global.use_rec": True,
            # "max" bounds the detector input (the default "min" 736 upscales small frames: slow).
            "Det.limit_type": "max", "Det.limit_side_len": self.params.max_side,
            "Det.box_thresh": self.params.box_thresh,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })
        if threads > 1:  # RapidOCR sets no session config entries: rebuild its sessions with ours
            for model in (self.engine._load_det_model(), self.engine._load_rec_model()):
                model.session.session = _pool_session(model.session.session._model_path, threads)

    def _detect(self, rgb: np.ndarray, recognize: bool) -> list[tuple[Box, str | None, float | None]]:
        """(normalised box, text, recognition score) of every detected line of an RGB image."""
        h, w = rgb.shape[:2]
        with no_denormals():
            res = self.engine(np.ascontiguousarray(rgb[..., ::-1]), use_det=True, use_cls=False, use_rec=recognize)
        quads = getattr(res, "boxes", None)
        texts = list(getattr(res, "txts", None) or [])
        scores = list(getattr(res, "scores", None) or [])
        out = []
        for j, quad in enumerate([] if quads is None else quads):
            q = np.asarray(quad, np.float64)
            box = (max(0.0, float(q[:, 0].min()) / w), max(0.0, float(q[:, 1].min()) / h),
                   min(1.0, float(q[:, 0].max()) / w), min(1.0, float(q[:, 1].max()) / h))
            out.append((box, texts[j] if j < len(texts) else None, scores[j] if j < len(scores) else None))
        return out

    def _read(self, crop: np.ndarray) -> tuple[str, float]:
        """The recognizer's text and score for one crop holding a single line."""
        with no_denormals():
            res = self.engine(np.ascontiguousarray(crop[..., ::-1]), use_det=False, use_cls=False, use_rec=True)
        texts, scores = list(getattr(res, "txts", None) or []), list(getattr(res, "scores", None) or [])
        return (texts[0], float(scores[0])) if texts and scores else ("", 0.0)

    def _verify_tall(self, rgb: np.ndarray, box: Box, read: tuple[str, float] | None = None) -> list[tuple[Box, str]]:
        """The text lines read with confidence inside a tall detection: the whole box as one line (a big
        title; `read` is its reading when the detection pass already recognised it), its halves or its
        thirds (a block of two or three lines); none for a texture the detector mistook for text. The
        bandings are read in that order until one reads clearly (every band at CLEAR_READ or more); else
        the banding with lines whose bands read best on average wins. Taking the first banding that reads
        at all took garbage: a two-line block read as one line scores 0.85 on some CPUs ("THE LAST" over
        "HARBOUR" as "THRLOUT"), its halves 0.9995 and 0.9999."""
        h, w = rgb.shape[:2]
        x0, x1 = int(box[0] * w), int(np.ceil(box[2] * w))
        best: tuple[float, list[tuple[Box, str]]] = (-1.0, [])
        for bands in (1, 2, 3):
            edges = np.linspace(box[1], box[3], bands + 1)
            lines, scores = [], []
            for top, bottom in zip(edges[:-1], edges[1:]):
                whole = bands == 1 and read is not None
                text, score = read if whole else self._read(rgb[int(top * h):int(np.ceil(bottom * h)), x0:x1])
                scores.append(score)
                if score >= self.params.title_min_score and sum(c.isalnum() for c in text) >= 2:
                    lines.append(((box[0], float(top), box[2], float(bottom)), text))
            if lines and (mean := float(np.mean(scores))) > best[0]:
                best = (mean, lines)
            if lines and min(scores) >= CLEAR_READ:
                break
        return best[1]

    def read_frame(self, rgb: np.ndarray) -> FrameText:
        """Text boxes (and, with `recognize`, their text) of one RGB frame."""
        boxes, kept, title = [], [], False
        if self.params.gate_contrast is not None and not text_possible(rgb, self.params.gate_contrast):
            return FrameText(boxes=boxes, texts=kept, area=0.0)
        for box, text, score in self._detect(rgb, recognize=self.params.recognize):
            if box[3] - box[1] <= self.params.max_line_height:
                boxes.append(box)
                kept += [text] if text else []
                continue
            # with `recognize` the detection pass has read the box already (without it, scores are the
            # detector's box scores, not readings)
            read = (text or "", float(score)) if self.params.recognize and score is not None else None
            verified = self._verify_tall(rgb, box, read)
            title = title or bool(verified)
            boxes += [b for b, _ in verified]
            kept += [t for _, t in verified] if self.params.recognize else []
        return FrameText(boxes=boxes, texts=kept, area=_coverage(boxes), title=title)

    def score(self, clip: ClipFrames) -> dict:
        frames = [self.read_frame(f) for f in clip.at(self.params.max_side)]
        best = max(frames, key=lambda f: f.area)
        out = {"text_area": best.area, "text_boxes": [list(b) for b in best.boxes],
               "subtitle_box": self._subtitle(frames), "text_title": any(f.title for f in frames)}
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
