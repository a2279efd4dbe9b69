"""The `gradual` split detector: dissolves, fades, wipes and slides found as spans, cheaply, from the
split's single decode, plus the hard cuts a colour-difference detector misses.

Per frame it keeps a 64x36 luma thumbnail and the camera motion from the previous frame (translation and
zoom, curation.globalmotion); `d` is what that motion leaves unexplained (mean absolute residual, 8-bit
levels). Inside a shot d stays near codec noise even in a pan or zoom; during a transition new content
appears that no warp explains. The last frame's motion is tried first; it is refitted only when d comes
near a threshold (~1 frame in 4 on the benchmark edits), which keeps the cost near 0.1 ms a frame.

1. Candidates, by twin comparison: a frame whose d is above `low` (an absolute floor, or `ratio` times the
   shot's recent median d, whichever is larger), or whose camera motion jumps by `jump` (a slide moves
   both pictures rigidly: d is high only where it starts and stops), opens a candidate, which grows while
   d stays above `keep` (gaps of up to `gap` frames bridged, and up to `hold` flat frames: a fade's black
   or white hold). It closes when d has stayed low for longer; a candidate that starts within `join`
   frames of the last one is first tried joined to it (the two ends of a slide, a long dissolve that dips).
2. Verification: the span's frames must be explained by the frame before it (A) and the frame after it
   (B), each carried along its own steady camera motion (the median of a few frames): a dissolve is a
   per-pixel blend (1 - a)A + aB with a rising; a wipe (linear, circle, any shape) a spatial mix, each
   pixel close to A or to B, B's share growing and no pixel turning back; a slide A and B side by side
   moving across the frame (four directions); a fade a pass through a near-uniform frame (black, white,
   any flat colour). The model with the smallest residual, as a share of the A-B difference (of the
   fade's depth for a fade), wins if that share is at most `max_residual` and its progress rises through
   the span without jumps; frames at either end whose progress is within `pure` of 0 or 1 are trimmed.
   A dissolve, wipe or slide needs two different pictures: when some camera motion carries A onto B, the
   candidate is object motion, shake, a lighting change or a flash, and is dropped.
3. A candidate of one or two frames between two pictures no camera motion carries onto each other (at
   least `min_change` levels apart) is a hard cut, at its first frame: two crops of one photo, which a
   colour-difference detector can miss, are caught here; a flash starts and ends on the same picture.

A verified candidate is a Transition: `start`..`end` the mixed frames (inclusive), its cut at end + 1
(the first frame of the new shot), `kind` one of KINDS. curation.fusion merges it with the other
detectors' cuts."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from curation.globalmotion import MARGIN, Motion, Template, thumbnail

KINDS = ("dissolve", "fade", "wipe", "slide")


@dataclass(frozen=True)
class GradualSettings:
    low: float = 0.9  # levels: the absolute floor of the threshold on d that opens a candidate
    keep: float = 0.6  # levels: ... and of the one that keeps it open
    ratio: float = 2.0  # the thresholds are at least this multiple (keep: 3/4 of it) of the recent median d
    min_change: float = 8.0  # levels: A and B must differ at least this much (mean, after motion)
    max_residual: float = 0.35  # a model must explain the span to within this share of the A-B difference
    max_frames: int = 72  # longest transition considered (3 s at 24 fps)
    gap: int = 2  # frames of low d bridged inside one candidate
    join: int = 12  # a candidate that starts this close after the last one is also tried joined to it
    flat_std: float = 6.0  # levels: a thumbnail this uniform is a fade's flat frame
    hold: int = 12  # flat frames (a fade's black) that keep a candidate open, at most
    jump: float = 1.5  # thumbnail pixels a frame: a sudden change of camera motion (a slide starting) opens one
    pure: float = 0.02  # progress within this of 0 or 1 at a span's ends: a pure frame, trimmed off


@dataclass(frozen=True)
class Transition:
    start: int
    end: int
    kind: str

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "kind": self.kind}


class GradualDetector:
    """Feed analysis frames (8-bit luma) in order with `process`; `finish()` returns the transitions.
    Memory is bounded: only the last `max_frames` + `join` + a few thumbnails are kept."""

    def __init__(self, settings: GradualSettings = GradualSettings()):
        self.s = settings
        keep = settings.max_frames + settings.join + settings.gap + 8
        self.thumbs: deque[np.ndarray] = deque(maxlen=keep)  # thumbnail of frame n - len .. n - 1
        self.motions: deque[Motion] = deque(maxlen=keep)  # motion from the frame before to each frame
        self.quiet: deque[float] = deque(maxlen=24)  # d of recent frames outside candidates
        self.template: Template | None = None
        self.n = 0  # frames seen
        self.run: list[int] | None = None  # [first, last] frame whose d is above the threshold
        self.moved = 0  # the last frame whose d was above it
        self.last: tuple[int, int, bool] | None = None  # the last closed candidate and whether it verified
        self.found: list[Transition] = []
        self.cuts: list[int] = []

    def process(self, gray: np.ndarray) -> None:
        """The next frame: 8-bit luma at the analysis size, or already shrunk (curation.globalmotion.shrink)."""
        thumb = thumbnail(gray)
        t = self.n
        self.n += 1
        motion, d = Motion(), 0.0
        base = sorted(self.quiet)[len(self.quiet) // 2] if self.quiet else 0.0
        if self.run is None:  # d above this opens a candidate, or keeps one open
            threshold = max(self.s.low, self.s.ratio * base)
        else:
            threshold = max(self.s.keep, 0.75 * self.s.ratio * base)
        if self.template is not None:
            motion = self.motions[-1]  # camera motion is smooth: the last frame's predicts this one
            d = self.template.residual(thumb, motion)
            if d > threshold:  # it might count (fitting only lowers d): fit the motion, one Gauss-Newton step
                motion, d = self.template.align(thumb, motion, iterations=1)
                if d < 2 * threshold:  # still close: refine, the decision depends on it
                    motion, d = self.template.align(thumb, motion, iterations=2)
                elif self._jerk(motion, Motion(), thumb.shape[1]) > self.s.jump:
                    # far off and moving: a lost track (after a flash or a cut) must not carry over
                    motion, d = min((motion, d), self.template.align(thumb, iterations=3), key=lambda fit: fit[1])
        jerk = self._jerk(motion, self.motions[-1], thumb.shape[1]) if self.motions else 0.0
        self.template = Template(thumb)
        self.thumbs.append(thumb)
        self.motions.append(motion)
        if t == 0:
            return
        if self.run is None:
            if d > threshold or jerk > self.s.jump:
                self.run = [t, t]
                self.moved = t
            else:
                self.quiet.append(d)
            return
        if d > threshold or jerk > self.s.jump:
            self.run[1] = self.moved = t
        elif t - self.moved <= self.s.hold and float(cv2.meanStdDev(thumb)[1][0, 0]) < self.s.flat_std:
            self.run[1] = t  # a fade's black or white hold
        elif t - self.run[1] > self.s.gap:
            self._close(*self.run)
            self.run = None
        if self.run is not None and self.run[1] - self.run[0] > self.s.max_frames + 1:
            self.run = None  # a long stretch no warp explains: no transition

    @staticmethod
    def _jerk(motion: Motion, prev: Motion, width: int) -> float:
        """How far apart two camera motions are (thumbnail pixels a frame, zoom measured at the edge)."""
        return math.hypot(motion.dx - prev.dx, motion.dy - prev.dy) + abs(motion.scale - prev.scale) * width / 2

    def finish(self) -> tuple[list[Transition], list[int]]:
        """The transitions found, in order (a candidate still open at the end is no transition), and the
        hard cuts: candidates of one or two frames between two different pictures (the first frame of the
        new shot), which catch low-contrast cuts the content detector misses."""
        return list(self.found), list(self.cuts)

    def _close(self, first: int, last: int) -> None:
        """A candidate ended: d rose at `first` (the first mixed frame) and last at `last` (the first frame
        of B). Tried joined to the previous candidate when it is close (a slide moves both pictures
        rigidly, so d is high only where it starts and stops; a long dissolve may dip), else alone."""
        prev = self.last
        if prev is not None and first - prev[1] <= self.s.join:
            joined = self._verify(prev[0], last)
            if joined is not None:
                if prev[2]:
                    self.found.pop()
                self.found.append(joined)
                self.last = (prev[0], last, True)
                return
        alone = self._verify(first, last)
        if alone is not None:
            self.found.append(alone)
        elif last - first <= 1:  # a hard cut at `first`, or after one mixed (or codec-smeared) frame
            cut = next((c for c in (first, last) if self._differ(first - 1, c)), None)
            if cut is not None:
                self.cuts.append(cut)
        self.last = (first, last, alone is not None)

    def _track(self, lo: int, hi: int) -> Motion:
        """The camera's steady motion over frames lo..hi-1 (those still kept and seen): the median of
        each component, so that shake does not carry over into the extrapolation."""
        oldest = self.n - len(self.motions)
        kept = [self.motions[i - oldest] for i in range(max(lo, oldest), min(hi, self.n))]
        if not kept:
            return Motion()
        return Motion(*(float(np.median([getattr(m, k) for m in kept])) for k in ("dx", "dy", "scale")))

    def _differ(self, before: int, after: int) -> bool:
        """A hard cut: no camera motion (the track's or none) carries frame `before` onto frame `after`
        to within `min_change` levels (a flash ends on the picture it started from)."""
        oldest = self.n - len(self.thumbs)
        if before < oldest:
            return False
        a, b = self.thumbs[before - oldest], self.thumbs[after - oldest]
        return not same_picture(a, b, self.motions[before - oldest], after - before, self.s.min_change)

    def _verify(self, first: int, last: int) -> Transition | None:
        start, end = first, last - 1
        oldest = self.n - len(self.thumbs)
        if end - start + 1 < 3 or start - 1 < oldest or end - start + 1 > self.s.max_frames:
            return None
        frame = lambda i: self.thumbs[i - oldest]  # noqa: E731
        before, after = self._track(start - 5, start), self._track(end + 2, end + 6)
        span = np.stack([frame(i) for i in range(start, end + 1)])
        fit = verify(span, frame(start - 1), frame(end + 1), before, after, self.s)
        if fit is None:
            return None
        kind, progress = fit
        mixed = np.flatnonzero((progress > self.s.pure) & (progress < 1 - self.s.pure))
        if len(mixed) < 3:
            return None
        return Transition(start + int(mixed[0]), start + int(mixed[-1]), kind)


def verify(span: np.ndarray, a: np.ndarray, b: np.ndarray, motion_a: Motion, motion_b: Motion,
           s: GradualSettings = GradualSettings()) -> tuple[str, np.ndarray] | None:
    """The kind of transition that explains `span` (n thumbnails) between picture `a` (the frame before)
    and `b` (the frame after), each moving with its own camera motion, and its progress per frame (0:
    all A, 1: all B); None when no model does."""
    n = len(span)
    refs_a, refs_b = motion_a.path(a, n), motion_b.path(b, n, backward=True)
    h, w = a.shape
    inner = (slice(None), slice(MARGIN, h - MARGIN), slice(MARGIN, w - MARGIN))
    change = float(np.abs(refs_a - refs_b)[inner].mean())
    # the same picture on both sides (a flash, a lighting change, motion or shake) is no dissolve, wipe or
    # slide; a fade may still dip to black between two dark pictures, its depth is what it is measured by
    two = change >= s.min_change and not same_picture(a, b, motion_a, n + 1, s.min_change)
    whole = (slice(None), slice(None), slice(None))  # a circle wipe's last A pixels are in the corners
    fits = {"fade": lambda: fade_fit(span, refs_a, refs_b, inner, s.flat_std)}
    if two:
        fits |= {"dissolve": lambda: (*dissolve_fit(span, refs_a, refs_b, inner), change),
                 "wipe": lambda: (*mix_fit(span, refs_a, refs_b, whole), change),
                 "slide": lambda: (*slide_fit(span, refs_a, refs_b), change)}
    best = None
    for kind, fit in fits.items():
        if kind == "slide" and best is not None and best[1] <= s.max_residual / 3:
            break  # already well explained: the costly slide search cannot do much better
        residual, progress, scale = fit()
        ratio = residual / scale if scale >= s.min_change else np.inf
        if ratio <= s.max_residual and rises(progress) and (best is None or ratio < best[1]):
            best = (kind, ratio, progress)
    return (best[0], best[2]) if best else None


def same_picture(a: np.ndarray, b: np.ndarray, motion: Motion, steps: int, tolerance: float) -> bool:
    """Some camera motion (the track's carried over `steps` frames, or one found from rest) carries `a`
    onto `b` to within `tolerance` levels, and to within half of what they differ unaligned (two dim,
    different pictures differ little either way)."""
    template = Template(a)
    guess = Motion(motion.dx * steps, motion.dy * steps, motion.scale ** steps)
    aligned = min(template.align(b, guess, 3)[1], template.align(b, Motion(), 3)[1])
    plain = float(np.abs(a - b)[template.inner].mean())
    return aligned < min(tolerance, max(2.0, 0.5 * plain))


def rises(progress: np.ndarray) -> bool:
    """A transition's progress (0 = all A, 1 = all B per frame) goes from A's side to B's side, mostly
    upward and never by more than half in one frame, through the middle (a hard cut inside a candidate
    jumps from 0 to 1)."""
    if len(progress) < 3 or not np.isfinite(progress).all():
        return False
    steps = np.diff(progress)
    middle = ((progress > 0.1) & (progress < 0.9)).sum()
    return (progress[0] < 0.5 < progress[-1] and (steps >= -0.05).mean() >= 0.75 and steps.max() <= 0.5
            and middle >= max(1, 0.3 * len(progress)))


def dissolve_fit(span, refs_a, refs_b, inner) -> tuple[float, np.ndarray]:
    """Per-frame least-squares a in span ≈ (1 - a) A + a B: the mean residual and the a's."""
    f, ra, rb = span[inner], refs_a[inner], refs_b[inner]
    diff = (rb - ra).reshape(len(span), -1)
    alpha = np.clip(((f - ra).reshape(len(span), -1) * diff).sum(1) / np.maximum((diff * diff).sum(1), 1e-6), 0, 1)
    model = ra + alpha[:, None, None] * (rb - ra)
    return float(np.abs(f - model).mean()), alpha


def mix_fit(span, refs_a, refs_b, inner, informative: float = 12.0) -> tuple[float, np.ndarray]:
    """Each pixel ≈ A or ≈ B (a wipe of any shape): the mean residual of the closer one, and B's share of
    the pixels where A and B differ by more than `informative` levels. A pixel that has turned to B stays
    B: when more than a fifth of them turn back (noise, shake), no wipe (infinite residual)."""
    f, ra, rb = span[inner], refs_a[inner], refs_b[inner]
    ea, eb = np.abs(f - ra), np.abs(f - rb)
    residual = float(np.minimum(ea, eb).mean())
    mask = np.abs(ra - rb) > informative
    is_b = ((eb < ea) & mask).reshape(len(span), -1)
    share = is_b.sum(1) / np.maximum(mask.reshape(len(span), -1).sum(1), 1)
    back = (is_b[:-1] & ~is_b[1:]).sum() / max(int(is_b[:-1].sum()), 1)
    return (residual if back <= 0.2 else np.inf), share.astype(np.float64)


def slide_fit(span, refs_a, refs_b) -> tuple[float, np.ndarray]:
    """A and B side by side, moving together across the frame (B pushing A out) in one of four directions:
    per frame the best offset, the mean residual at it, and the offset as a share of the frame."""
    best = (np.inf, np.full(len(span), np.nan))
    n = len(span)
    for axis in (2, 1):  # horizontal, vertical (axes of the n x h x w stack)
        size = span.shape[axis]
        for flip in (False, True):  # B enters from the right/bottom, or from the left/top
            f, ra, rb = (np.flip(x, axis) if flip else x for x in (span, refs_a, refs_b))
            errors = slide_errors(*(np.moveaxis(x, axis, 1).reshape(n, size, -1) for x in (f, ra, rb)))
            offset = errors.argmin(1)
            residual = float(errors[np.arange(n), offset].mean()) / f[0].size
            if residual < best[0]:
                best = (residual, offset / size)
    return best


def slide_errors(f: np.ndarray, ra: np.ndarray, rb: np.ndarray, coarse: int = 4) -> np.ndarray:
    """(n, size + 1) summed absolute errors of `f` (n x size x rest) against A moved out by o lines with
    B's first o lines after it, for every offset o near the best: searched every `coarse` lines, then
    refined around each frame's best (the others stay inf)."""
    n, size = f.shape[:2]
    errors = np.full((n, size + 1), np.inf)

    def fill(o: int) -> None:
        errors[:, o] = np.abs(f[:, :size - o] - ra[:, o:]).sum((1, 2)) + np.abs(f[:, size - o:] - rb[:, :o]).sum((1, 2))

    for o in range(0, size + 1, coarse):
        fill(o)
    for o in {min(size, max(0, int(c) + k)) for c in errors.argmin(1) for k in range(1 - coarse, coarse)}:
        if not np.isfinite(errors[0, o]):
            fill(o)
    return errors


def fade_fit(span, refs_a, refs_b, inner, flat_std: float) -> tuple[float, np.ndarray, float]:
    """A dissolve from A into a flat frame, then from it into B: the flattest frame of the span must be
    uniform; the mean residual of both halves, the progress (the first half mapped to 0..0.5), and the
    fade's depth (how far A and B are from the flat level, on average)."""
    stds = span[inner].reshape(len(span), -1).std(1)
    m = int(stds.argmin())
    if stds[m] > flat_std:
        return np.inf, np.full(len(span), np.nan), 0.0
    level = float(span[m][inner[1:]].mean())
    flats = np.full_like(span, level)
    r1, p1 = dissolve_fit(span[:m + 1], refs_a[:m + 1], flats[:m + 1], inner)
    r2, p2 = dissolve_fit(span[m + 1:], flats[m + 1:], refs_b[m + 1:], inner) if m + 1 < len(span) else (0.0, [])
    residual = (r1 * (m + 1) + r2 * (len(span) - m - 1)) / len(span)
    depth = float(np.abs(refs_a[0] - level)[inner[1:]].mean() + np.abs(refs_b[-1] - level)[inner[1:]].mean()) / 2
    return residual, np.concatenate([0.5 * p1, 0.5 + 0.5 * np.asarray(p2)]), depth
