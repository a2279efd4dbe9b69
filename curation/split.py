"""Scene splitting: decode each video once at a small analysis size, feed PySceneDetect detectors frame
by frame, then turn the detected shots into clips (drop short shots, window long ones, start each clip
on its sharpest early frame — HunyuanVideo's "clear start frame")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import cv2
import numpy as np
import pyarrow as pa
from pydantic import Field

from curation.errors import ConfigError, VideoError
from curation.schema import CLIP_FIELDS, CLIP_VIDEO_COLUMNS
from curation.stage import Resources, Stage, failure, params
from curation.video import VideoInfo, VideoReader, fit_size

DETECTORS = ("content", "adaptive", "threshold", "histogram")
Detector = Literal["content", "adaptive", "threshold", "histogram"]


@params
class SplitParams:
    """Scene-split settings. Thresholds left as None take PySceneDetect's defaults
    (content 27, adaptive 3.0, threshold 12, histogram 0.2)."""

    detectors: Annotated[list[Detector], Field(min_length=1)] = field(default_factory=lambda: ["content"])
    threshold: Annotated[float, Field(gt=0)] | None = None  # for the first detector
    min_scene_len: Annotated[int, Field(ge=1)] = 15  # frames between two cuts, at least
    analysis_width: Annotated[int, Field(ge=16)] = 256  # decode width for detection
    min_clip_s: Annotated[float, Field(gt=0)] = 2.0  # shots shorter than this are dropped
    max_clip_s: Annotated[float, Field(gt=0)] = 10.0  # shots longer than this are cut into windows of this length
    sharp_start_frames: Annotated[int, Field(ge=0)] = 5  # choose each clip's first frame among this many (0/1 = off)
    backend: Literal["auto", "decord", "pyav"] = "auto"


@dataclass(frozen=True)
class ClipSpan:
    start: int  # inclusive
    end: int  # exclusive
    shot_index: int
    shot_start: int
    shot_end: int
    sharpness: float


def make_detectors(params: SplitParams, fps: float) -> list[tuple[object, bool]]:
    """(detector, gray_only) pairs. Content and adaptive detectors get a luma-only twin whose cuts count
    only between two grey frames: on black-and-white footage hue and saturation are flat, so the full
    score is a third of what the same change scores in colour and real cuts fall under the threshold."""
    import scenedetect as sd

    dets: list[tuple[object, bool]] = []
    for i, name in enumerate(params.detectors):
        thr = {"threshold": params.threshold} if (i == 0 and params.threshold is not None) else {}
        common = {"min_scene_len": params.min_scene_len}
        if name == "content":
            dets += [(sd.ContentDetector(**thr, **common, luma_only=luma), luma) for luma in (False, True)]
        elif name == "adaptive":
            kw = {"adaptive_threshold": params.threshold} if thr else {}
            dets += [(sd.AdaptiveDetector(**kw, **common, luma_only=luma), luma) for luma in (False, True)]
        elif name == "threshold":
            dets.append((sd.ThresholdDetector(**thr, **common, add_final_scene=False), False))
        elif name == "histogram":
            dets.append((sd.HistogramDetector(**thr, **common), False))
        else:
            raise ConfigError(f"split: unknown detector '{name}'; choose from {DETECTORS}")
    return dets


def _is_gray(bgr: np.ndarray, limit: float = 3.0) -> bool:
    """No colour to speak of: mean |B-G| + |G-R| on a subsample, in 8-bit levels."""
    s = bgr[::4, ::4].astype(np.int16)
    return float(np.abs(s[..., 0] - s[..., 1]).mean() + np.abs(s[..., 1] - s[..., 2]).mean()) < limit


def detect(frames: Iterable[np.ndarray], fps: float, params: SplitParams) -> tuple[list[int], np.ndarray]:
    """Run the detectors over BGR analysis frames. Returns (cut frames, per-frame Laplacian variance).
    Cuts from several detectors are merged; cuts closer than `min_scene_len` keep the earlier one."""
    from scenedetect import FrameTimecode

    fps = float(fps)  # FrameTimecode refuses an int rate
    dets = make_detectors(params, fps)
    sharp: list[float] = []
    gray_frames: list[bool] = []
    found: list[int] = []
    gray_found: list[int] = []
    n = 0
    for n, bgr in enumerate(frames):
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        sharp.append(float(cv2.Laplacian(gray, cv2.CV_32F).var()))
        gray_frames.append(_is_gray(bgr))
        tc = FrameTimecode(n, fps)
        for det, gray_only in dets:
            if gray_only and not gray_frames[-1]:
                continue  # the twin sees grey frames only (free on colour footage); its cuts need two
            (gray_found if gray_only else found).extend(c.frame_num for c in det.process_frame(tc, bgr))
    else:
        if sharp:
            end = FrameTimecode(n, fps)
            for det, gray_only in dets:
                (gray_found if gray_only else found).extend(c.frame_num for c in det.post_process(end))
    found += [c for c in gray_found if 0 < c < len(gray_frames) and gray_frames[c] and gray_frames[c - 1]]
    return _merge_cuts(found, len(sharp), params.min_scene_len), np.asarray(sharp, np.float32)


def _merge_cuts(cuts: Sequence[int], n_frames: int, min_gap: int) -> list[int]:
    merged: list[int] = []
    for c in sorted(set(int(c) for c in cuts)):
        if 0 < c < n_frames and (not merged or c - merged[-1] >= min_gap):
            merged.append(c)
    return merged


def shots_from_cuts(cuts: Sequence[int], n_frames: int) -> list[tuple[int, int]]:
    bounds = [0, *cuts, n_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def make_clips(shots: Sequence[tuple[int, int]], fps: float, sharpness: np.ndarray,
               params: SplitParams) -> list[ClipSpan]:
    """Clips from shots: drop short shots, cut long ones into windows of `max_clip_s`, and move each
    window's start to its sharpest frame among the first `sharp_start_frames`."""
    min_len = max(1, int(round(params.min_clip_s * fps)))
    max_len = max(min_len, int(round(params.max_clip_s * fps)))
    clips: list[ClipSpan] = []
    for si, (s0, s1) in enumerate(shots):
        start = s0
        while s1 - start >= min_len:
            end = min(s1, start + max_len)
            look = max(1, min(params.sharp_start_frames, end - start - min_len + 1))
            best = _sharp_start(sharpness[start:start + look], start)
            if end - best >= min_len:
                sharp = float(sharpness[best]) if best < len(sharpness) else 0.0
                clips.append(ClipSpan(best, end, si, s0, s1, sharp))
            start = end
    return clips


def _sharp_start(window: np.ndarray, offset: int, tolerance: float = 0.9) -> int:
    """The earliest frame whose sharpness is within `tolerance` of the window's best: a blurry start
    moves forward, while codec noise on an already sharp start costs no frames."""
    if len(window) == 0:
        return offset
    good = np.nonzero(window >= tolerance * float(window.max()))[0]
    return offset + int(good[0])


class SplitStage(Stage):
    """One row per probed video in, one row per clip out (a video with no clip keeps one row with a
    null clip_id and status `no_clips`, plus a failure item saying why)."""

    name = "split"
    version = "1"
    Params = SplitParams
    resources = Resources(num_cpus=1, batch_size=1)

    def __init__(self, params=None, resources: Resources | None = None):
        super().__init__(params, resources)
        if self.params.max_clip_s < self.params.min_clip_s:
            raise ConfigError(f"stage 'split': max_clip_s ({self.params.max_clip_s}) is below min_clip_s "
                              f"({self.params.min_clip_s})")

    def input_columns(self) -> list[str]:
        return ["uri", "video_id", "status", "width", "height", "fps", "frame_count"]

    def output_columns(self) -> list[str]:
        return ["cuts", "n_clips", *CLIP_VIDEO_COLUMNS, *(f.name for f in CLIP_FIELDS)]

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: list[dict] = []
        for row in batch.to_pylist():
            out.extend(self.split_row(row))
        return pa.Table.from_pylist(out, schema=batch.schema)

    def split_row(self, row: dict) -> list[dict]:
        if row.get("status") != "ok":
            return [row]
        try:
            reader = VideoReader(row["uri"], backend=self.params.backend, info=VideoInfo.from_row(row))
            info = reader.info
            size = fit_size(info.width, info.height, target_width=self.params.analysis_width)
            cuts, sharp = detect(reader.iter_frames(size, bgr=True), info.fps, self.params)
        except Exception as exc:  # noqa: BLE001 - becomes a failure row
            return [{**row, "status": "failed", "error": str(exc), "n_clips": 0,
                     "failures": [*(row["failures"] or []), failure(self.name, exc)]}]
        n = len(sharp)
        fps = info.fps
        video = {**row, "frame_count": n, "duration_s": n / fps, "cuts": cuts}
        warnings = list(row["failures"] or [])
        if info.frame_count and n < 0.9 * info.frame_count:
            warnings.append(failure(self.name, VideoError(
                f"only {n} of {info.frame_count} frames decode: the file is truncated; clips use what decodes",
                kind="truncated")))
        video["failures"] = warnings
        spans = make_clips(shots_from_cuts(cuts, n), fps, sharp, self.params)
        if not spans:
            why = VideoError(f"no shot of at least min_clip_s={self.params.min_clip_s}s "
                             f"({n} frames, {n / fps:.2f}s, {len(cuts)} cuts)", kind="too_short")
            return [{**video, "status": "no_clips", "error": str(why), "n_clips": 0,
                     "failures": [*warnings, failure(self.name, why)]}]
        # Video-level failures travel on the first clip row only, so they are written once.
        return [{**video, "n_clips": len(spans), **clip_columns(row["video_id"], sp, fps),
                 "failures": warnings if i == 0 else []} for i, sp in enumerate(spans)]


def clip_columns(video_id: str, sp: ClipSpan, fps: float) -> dict:
    return {
        "clip_id": f"{video_id}_{sp.start}_{sp.end}",
        "start_frame": sp.start, "end_frame": sp.end,
        "start_s": sp.start / fps, "end_s": sp.end / fps, "duration_clip_s": (sp.end - sp.start) / fps,
        "shot_index": sp.shot_index, "shot_start_frame": sp.shot_start, "shot_end_frame": sp.shot_end,
        "start_sharpness": sp.sharpness,
    }
