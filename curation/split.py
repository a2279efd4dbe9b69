"""Scene splitting: decode each video once at a small analysis size, feed the boundary detectors
(PySceneDetect's, the gradual-transition detector, TransNetV2) frame by frame, fuse what they find
(curation.fusion), then turn the detected shots into clips (drop short shots, window long ones, start
each clip on its sharpest early frame — HunyuanVideo's "clear start frame")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, Protocol

import cv2
import numpy as np
import pyarrow as pa
from pydantic import Field

from curation.errors import ConfigError, VideoError
from curation.fusion import fuse
from curation.globalmotion import shrink
from curation.schema import CLIP_FIELDS, CLIP_VIDEO_COLUMNS
from curation.stage import Resources, Stage, failure, params
from curation.timeline import Timeline
from curation.transitions import GradualDetector, Transition
from curation.video import VideoInfo, VideoReader, fit_size

DETECTORS = ("content", "adaptive", "threshold", "histogram", "gradual", "transnetv2")
Detector = Literal["content", "adaptive", "threshold", "histogram", "gradual", "transnetv2"]
OWN_DETECTORS = ("gradual", "transnetv2")  # not PySceneDetect's: detect() feeds them


@params
class SplitParams:
    """Scene-split settings. Thresholds left as None take PySceneDetect's defaults
    (content 27, adaptive 3.0, threshold 12, histogram 0.2) and apply to the first of them. `gradual`
    (curation.transitions: dissolves, fades, wipes and slides as verified spans, and low-contrast hard
    cuts, from motion-compensated 64x36 thumbnails) and `transnetv2` (the learned detector,
    curation.transnet) run on the same decode; curation.fusion fuses them all with one rule (spans
    first, the gradual detector's before TransNetV2's; point cuts inside or next to a span dropped).
    The default, [content, gradual], scores best on the transition benchmark at 1.17x the content-only
    split's CPU time (benchmarks/RESULTS.md); TransNetV2 costs ~35x on a CPU and is opt-in."""

    detectors: Annotated[list[Detector], Field(min_length=1)] = field(
        default_factory=lambda: ["content", "gradual"])
    threshold: Annotated[float, Field(gt=0)] | None = None  # for the first PySceneDetect detector
    min_scene_len: Annotated[int, Field(ge=1)] = 15  # frames between two cuts, at least
    analysis_width: Annotated[int, Field(ge=16)] = 256  # decode width for detection
    min_clip_s: Annotated[float, Field(gt=0)] = 2.0  # shots shorter than this are dropped
    max_clip_s: Annotated[float, Field(gt=0)] = 10.0  # shots longer than this are cut into windows of this length
    sharp_start_frames: Annotated[int, Field(ge=0)] = 5  # choose each clip's first frame among this many (0/1 = off)
    transnet_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5  # TransNetV2: a frame above it is in a transition
    backend: Literal["auto", "decord", "pyav"] = "auto"


@dataclass(frozen=True)
class ClipSpan:
    start: int  # inclusive
    end: int  # exclusive
    shot_index: int
    shot_start: int
    shot_end: int
    sharpness: float


def mean_pixel_distance(left: np.ndarray, right: np.ndarray) -> float:
    """PySceneDetect's `_mean_pixel_distance` (mean |left - right| of two 8-bit planes) through OpenCV:
    the same float (the sum of absolute differences is exact either way) in ~2 instead of ~25 us at
    256x144, three times a frame for the content detector."""
    return cv2.norm(left, right, cv2.NORM_L1) / float(left.shape[0] * left.shape[1])


def _fast_content_scores() -> None:
    """Have PySceneDetect's content and adaptive detectors use `mean_pixel_distance` (a module function
    they look up at each call; left alone if a later PySceneDetect has no such function)."""
    from scenedetect.detectors import content_detector

    if hasattr(content_detector, "_mean_pixel_distance"):
        content_detector._mean_pixel_distance = mean_pixel_distance


def make_detectors(params: SplitParams, fps: float) -> list[tuple[object, bool]]:
    """(detector, gray_only) pairs. Content and adaptive detectors get a luma-only twin whose cuts count
    only between two grey frames: on black-and-white footage hue and saturation are flat, so the full
    score is a third of what the same change scores in colour and real cuts fall under the threshold."""
    import scenedetect as sd

    _fast_content_scores()

    dets: list[tuple[object, bool]] = []
    first = next((i for i, name in enumerate(params.detectors) if name not in OWN_DETECTORS), None)
    for i, name in enumerate(params.detectors):
        thr = {"threshold": params.threshold} if (i == first and params.threshold is not None) else {}
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
        elif name in OWN_DETECTORS:
            continue  # not PySceneDetect detectors: detect() feeds them
        else:
            raise ConfigError(f"split: unknown detector '{name}'; choose from {DETECTORS}")
    return dets


def _is_gray(bgr: np.ndarray, limit: float = 3.0) -> bool:
    """No colour to speak of: mean |B-G| + |G-R| on a subsample, in 8-bit levels."""
    s = bgr[::4, ::4].astype(np.int16)
    return float(np.abs(s[..., 0] - s[..., 1]).mean() + np.abs(s[..., 1] - s[..., 2]).mean()) < limit


@dataclass
class Boundaries:
    """What the detectors found in one video: `cuts` (the first frame of each new shot), per-frame
    Laplacian variance, and `transitions`: the gradual ones (dissolve, fade, wipe, slide from the gradual
    detector; fade or gradual from TransNetV2) as {start, end, kind} spans, inclusive, whose frames belong
    to no shot."""

    cuts: list[int]
    sharpness: np.ndarray
    transitions: list[dict] = field(default_factory=list)

    def shots(self) -> list[tuple[int, int]]:
        """[start, end) of each shot; a shot before a gradual transition ends where the transition starts."""
        starts = {t["end"] + 1: t["start"] for t in self.transitions}
        bounds = [0, *self.cuts, len(self.sharpness)]
        return [(a, starts.get(b, b)) for a, b in zip(bounds[:-1], bounds[1:]) if starts.get(b, b) > a]


class ShotDetector:
    """The split's detectors over one video's BGR analysis frames, fed in order (`process`). `finish()`
    fuses what they found (curation.fusion) into Boundaries: gradual transitions as spans,
    PySceneDetect's cuts as points; a point cut across a flash (the same picture just before and just
    after it) is dropped. `settle()` says which clips are already decided while frames still come (what
    lets the scorers take their samples from this decode, curation.splitscore)."""

    def __init__(self, fps: float, params: SplitParams, device: str = "cpu"):
        from scenedetect import FrameTimecode

        self.timecode = FrameTimecode
        self.fps = float(fps)  # FrameTimecode refuses an int rate
        self.params = params
        self.dets = make_detectors(params, self.fps)
        self.learned = None
        if "transnetv2" in params.detectors:
            from curation.transnet import TransNetDetector

            self.learned = TransNetDetector(device)
        self.gradual = GradualDetector() if "gradual" in params.detectors else None
        self._sharp = np.zeros(1024, np.float32)  # Laplacian variance per frame (grown by doubling)
        # 32x18 int16 thumbnails (1152 bytes a frame) for the flash check, in blocks of THUMB_BLOCK frames:
        # one small array a frame, kept for the whole video, pins the heap between the decoder's large
        # per-frame buffers (measured: ~7 KB of RSS a frame, +100 MB per 10 minutes at 24 fps)
        self.blocks: list[np.ndarray] = []
        self.gray_frames: list[bool] = []
        self.found: list[int] = []
        self.gray_found: list[int] = []
        self.n = 0  # frames seen
        self._flash: dict[int, bool] = {}

    @property
    def sharpness(self) -> np.ndarray:
        return self._sharp[:self.n]

    def process(self, bgr: np.ndarray) -> None:
        n = self.n
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if n == len(self._sharp):
            self._sharp = np.concatenate([self._sharp, np.zeros_like(self._sharp)])
        self._sharp[n] = float(cv2.Laplacian(gray, cv2.CV_32F).var())
        small = shrink(gray) if self.gradual is not None else gray  # one area resize serves both thumbnails
        if n % THUMB_BLOCK == 0:
            self.blocks.append(np.empty((THUMB_BLOCK, *THUMB_SHAPE), np.int16))
        self.blocks[-1][n % THUMB_BLOCK] = thumb(small)
        self.gray_frames.append(_is_gray(bgr))
        if self.learned is not None:
            self.learned.process(bgr)
        if self.gradual is not None:
            self.gradual.process(small)
        tc = self.timecode(n, self.fps)
        for det, gray_only in self.dets:
            if gray_only and not self.gray_frames[-1]:
                continue  # the twin sees grey frames only (free on colour footage); its cuts need two
            (self.gray_found if gray_only else self.found).extend(c.frame_num for c in det.process_frame(tc, bgr))
        self.n += 1

    def _thumbs(self, a: int, b: int) -> np.ndarray:
        """Thumbnails of frames [a, b) (clamped to those seen)."""
        a, b = max(0, a), min(b, self.n)
        if b <= a:
            return np.zeros((0, *THUMB_SHAPE), np.int16)
        parts = []
        for k in range(a // THUMB_BLOCK, (b - 1) // THUMB_BLOCK + 1):
            first = k * THUMB_BLOCK
            parts.append(self.blocks[k][max(a, first) - first:min(b, first + THUMB_BLOCK) - first])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _is_flash(self, cut: int, reach: int = 3) -> bool:
        if cut not in self._flash:
            window = self._thumbs(cut - reach, cut + reach + 1)
            self._flash[cut] = is_flash(window, min(cut, reach), reach)
        return self._flash[cut]

    def _points(self, since: int = 0) -> list[int]:
        """Point cuts from frame `since` on: PySceneDetect's, the luma twin's between two grey frames,
        the gradual detector's hard cuts."""
        gray = self.gray_frames
        found = [c for c in self.found if c >= since]
        found += [c for c in self.gray_found if since <= c < len(gray) and c > 0 and gray[c] and gray[c - 1]]
        if self.gradual is not None:
            found += [c for c in self.gradual.cuts if c >= since]
        return found

    def finish(self) -> Boundaries:
        if self.n:
            end = self.timecode(self.n - 1, self.fps)
            for det, gray_only in self.dets:
                (self.gray_found if gray_only else self.found).extend(c.frame_num for c in det.post_process(end))
        found = self._points()
        spans: list[Transition] = []
        if self.learned is not None:
            from curation.transnet import transitions

            for a, b in transitions(self.learned.finish(), self.params.transnet_threshold):
                if b - a + 1 >= 3:
                    spans.append(Transition(a, b, _kind(self._thumbs(a, b + 1))))
                else:
                    found.append(b + 1)
        verified = self.gradual.finish()[0] if self.gradual is not None else []
        found = [c for c in found if not self._is_flash(c)]
        cuts, kept = fuse(found, verified, spans, self.n, self.params.min_scene_len)
        return Boundaries(cuts, self.sharpness.copy(), [t.as_dict() for t in kept])

    def lag(self) -> int:
        """Frames behind the newest within which a detection can still change: the gradual detector's
        longest candidate, its join, gap and hold, the spacing rule and the flash check's reach (121 at
        the defaults)."""
        g = self.gradual.s if self.gradual is not None else None
        return (g.max_frames + g.join + g.gap + g.hold if g else 0) + self.params.min_scene_len + 8

    def settle(self, base: int, times: Timeline) -> tuple[list[ClipSpan], int]:
        """Clips decided so far, from frame `base` (where the first undecided shot or window starts) up to
        `lag()` frames before the newest frame, as the detections stand now; and the new base. A guess
        (a later detection may still move a cut), so callers check it against `finish()`; it is right
        whenever nothing changes more than `lag()` frames back. None with TransNetV2 (it decides at the end)."""
        last = self.n - self.lag()
        if self.learned is not None or last <= base:
            return [], base
        margin = 2 * self.params.min_scene_len + 4
        points = [c for c in self._points(base - margin) if c < self.n - 4 and not self._is_flash(c)]
        spans = [t for t in self.gradual.found if t.end >= base - margin] if self.gradual is not None else []
        cuts, kept = fuse(points, spans, [], self.n, self.params.min_scene_len)
        starts = {t.end + 1: t.start for t in kept}
        bounds = [base, *(c for c in cuts if c > base), self.n]
        clips: list[ClipSpan] = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            b = starts.get(b, b)
            if b <= a:
                continue
            if b <= last:  # a shot that ended in the settled part
                clips += make_clips([(a, b)], self.fps, self.sharpness, self.params, times)
                base = b
                continue
            done = [c for c in make_clips([(a, last)], self.fps, self.sharpness, self.params, times) if c.end < last]
            # the open shot's next window starts where the last decided one ended (windows follow on)
            return clips + done, done[-1].end if done else a
        return clips, base


def detect(frames: Iterable[np.ndarray], fps: float, params: SplitParams, device: str = "cpu") -> Boundaries:
    """Run the detectors over BGR analysis frames and fuse what they find (see ShotDetector)."""
    det = ShotDetector(fps, params, device)
    for bgr in frames:
        det.process(bgr)
    return det.finish()


def _kind(thumbs: Sequence[np.ndarray]) -> str:
    """For a TransNetV2 span: 'fade' when it passes through a (near) black or white frame, else 'gradual'
    (a dissolve, a wipe, a slide: the `gradual` detector tells them apart)."""
    levels = [float(t.mean()) for t in thumbs]
    return "fade" if levels and (min(levels) < 24 or max(levels) > 232) else "gradual"


THUMB_SHAPE = (18, 32)
THUMB_BLOCK = 4096  # frames of thumbnails allocated at once (4.7 MB)


def thumb(gray: np.ndarray) -> np.ndarray:
    """A 32x18 blurred luma thumbnail: what stays the same across a flash or codec noise."""
    return cv2.GaussianBlur(cv2.resize(gray, (32, 18), interpolation=cv2.INTER_AREA), (3, 3), 0).astype(np.int16)


def is_flash(thumbs: Sequence[np.ndarray], cut: int, reach: int = 3, same: float = 8.0) -> bool:
    """A cut that is a brief brightness spike inside one shot (a camera flash, a lightning strike): some
    frame just before it and some frame just after it, up to `reach` frames away, show the same picture
    (mean luma difference below `same` levels). At a real cut no frame before matches one after."""
    before = thumbs[max(0, cut - reach):cut]
    after = thumbs[cut:cut + reach + 1]
    return any(float(np.abs(a - b).mean()) < same for a in before for b in after)


def make_clips(shots: Sequence[tuple[int, int]], fps: float, sharpness: np.ndarray,
               params: SplitParams, times: Timeline | None = None) -> list[ClipSpan]:
    """Clips from shots: drop short shots, cut long ones into windows of `max_clip_s`, and move each
    window's start to its sharpest frame among the first `sharp_start_frames`."""
    times = times or Timeline.constant(fps)  # variable frame rate: windows measured in time, from each start
    clips: list[ClipSpan] = []
    for si, (s0, s1) in enumerate(shots):
        start = s0
        while s1 - start >= (min_len := max(1, times.frames_in(start, params.min_clip_s))):
            max_len = max(min_len, times.frames_in(start, params.max_clip_s))
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


SETTLE_EVERY = 16  # frames between two SplitWatch.settle calls
# The split scales each frame to 640 px (longer side) as YUV 4:2:0 first and to `analysis_width` from
# there: the first is the size the default scorers sample at (borders' 640 px), so when they share the
# split's decode (curation.splitscore) their frames cost no second scaling of the native frame. Measured
# (benchmarks/RESULTS.md "Decode once"): 0-5 % of a default run's CPU saved, ~0.1-0.2 CPU-s more for a
# split-only run over the 144 s workload. Always on, so a video's cuts do not depend on what follows.
VIA_SIDE = 640
# The analysis frame is area-averaged (swscale's "area") from the 640 px one: ~0.3 instead of ~0.42 ms a
# frame for its bilinear (benchmarks/RESULTS.md, issue 11 fourth pass), an antialiased downscale all the same
ANALYSIS_INTERPOLATION = "AREA"


class SplitWatch(Protocol):
    """What follows a split's decode of one video (curation.splitscore): `start(info)` returns the
    callback that sees every decoded frame and its 640 px version (VideoReader.iter_frames' on_frame;
    None: not watching), and `settle(detector, times)` runs every SETTLE_EVERY frames with the
    detections so far."""

    def start(self, info: VideoInfo) -> Callable[[int, object, object], None] | None: ...

    def settle(self, det: ShotDetector, times: Timeline) -> None: ...


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
        return ["cuts", "transitions", "n_clips", *CLIP_VIDEO_COLUMNS, *(f.name for f in CLIP_FIELDS)]

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: list[dict] = []
        for row in batch.to_pylist():
            out.extend(self.split_row(row))
        return pa.Table.from_pylist(out, schema=batch.schema)

    def split_row(self, row: dict, watch: SplitWatch | None = None) -> list[dict]:
        """The clip rows of one probed video row. `watch` sees the decode as it goes (see SplitWatch)."""
        if row.get("status") != "ok":
            return [row]
        try:
            reader = VideoReader(row["uri"], backend=self.params.backend, info=VideoInfo.from_row(row),
                                 threads=self.resources.threads)
            info = reader.info
            size = fit_size(info.width, info.height, target_width=self.params.analysis_width)
            via = fit_size(info.width, info.height, max_side=VIA_SIDE)
            via = via if via[0] > size[0] and self.params.backend != "decord" else None
            det = ShotDetector(info.fps, self.params, self.resources.device)
            on_frame = watch.start(info) if watch is not None else None
            times = reader.timeline()
            frames = reader.iter_frames(size, bgr=True, on_frame=on_frame, via=via,
                                        interpolation=ANALYSIS_INTERPOLATION)
            for n, bgr in enumerate(frames):
                det.process(bgr)
                if on_frame is not None and n % SETTLE_EVERY == SETTLE_EVERY - 1:
                    watch.settle(det, times)
            found = det.finish()
        except Exception as exc:  # noqa: BLE001 - becomes a failure row
            return [{**row, "status": "failed", "error": str(exc), "n_clips": 0,
                     "failures": [*(row["failures"] or []), failure(self.name, exc)]}]
        n, cuts = len(found.sharpness), found.cuts
        fps = info.fps  # times: frame number <-> time (a table on VFR video)
        video = {**row, "frame_count": n, "duration_s": times.seconds(n), "cuts": cuts,
                 "transitions": found.transitions}
        warnings = list(row["failures"] or [])
        if info.frame_count and n < 0.9 * info.frame_count:
            warnings.append(failure(self.name, VideoError(
                f"only {n} of {info.frame_count} frames decode: the file is truncated; clips use what decodes",
                kind="truncated")))
        video["failures"] = warnings
        spans = make_clips(found.shots(), fps, found.sharpness, self.params, times)
        if not spans:
            why = VideoError(f"no shot of at least min_clip_s={self.params.min_clip_s}s "
                             f"({n} frames, {video['duration_s']:.2f}s, {len(cuts)} cuts)", kind="too_short")
            return [{**video, "status": "no_clips", "error": str(why), "n_clips": 0,
                     "failures": [*warnings, failure(self.name, why)]}]
        # Video-level failures travel on the first clip row only, so they are written once.
        return [{**video, "n_clips": len(spans), **clip_columns(row["video_id"], sp, times),
                 "failures": warnings if i == 0 else []} for i, sp in enumerate(spans)]


def clip_columns(video_id: str, sp: ClipSpan, times: Timeline) -> dict:
    """A clip's columns; its times are its frames' timestamps (`times`: the video's timeline)."""
    return {
        "clip_id": f"{video_id}_{sp.start}_{sp.end}",
        "start_frame": sp.start, "end_frame": sp.end,
        "start_s": times.seconds(sp.start), "end_s": times.seconds(sp.end),
        "duration_clip_s": times.span_s(sp.start, sp.end),
        "shot_index": sp.shot_index, "shot_start_frame": sp.shot_start, "shot_end_frame": sp.shot_end,
        "start_sharpness": sp.sharpness,
    }
