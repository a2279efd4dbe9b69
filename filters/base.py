"""What a scorer is: the frames it asks for (`FrameRequest`), the decoded frames it gets (`ClipFrames`,
shared by every scorer of a clip), and the `Scorer` stage base class that turns them into columns."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

import cv2
import numpy as np
import pyarrow as pa

from curation.stage import Stage


@dataclass(frozen=True)
class FrameRequest:
    """The frames a scorer needs from each clip: `frames` evenly spaced samples, decoded so the longer
    side is at most `max_side` (None: native size), and with `pairs` also the frame right after each
    sample (for optical flow)."""

    frames: int = 8
    max_side: int | None = 256
    pairs: bool = False


def merge_requests(requests: list[FrameRequest]) -> FrameRequest:
    """One decode that satisfies every request: the most frames, the largest size, pairs if any."""
    if not requests:
        return FrameRequest()
    sides = [r.max_side for r in requests]
    return FrameRequest(frames=max(r.frames for r in requests),
                        max_side=None if None in sides else max(s for s in sides if s is not None),
                        pairs=any(r.pairs for r in requests))


def resize_to(frames: np.ndarray, max_side: int | None) -> np.ndarray:
    """(K,H,W,C) or (K,H,W) frames scaled down so the longer side is at most `max_side` (never up)."""
    if max_side is None or len(frames) == 0:
        return frames
    h, w = frames.shape[1:3]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return frames
    size = (max(2, round(w * scale / 2) * 2), max(2, round(h * scale / 2) * 2))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def even_positions(n: int, k: int) -> np.ndarray:
    """`k` evenly spaced positions in range(n), each the middle of its share (all of them if k >= n)."""
    if k >= n:
        return np.arange(n)
    return np.floor((np.arange(k) + 0.5) * n / k).astype(np.int64)


@dataclass
class ClipFrames:
    """The decoded samples of one clip. `frames` is (K,H,W,3) RGB uint8 at the largest size any scorer
    asked for; `next_frames` the frame after each sample (when a scorer asked for pairs); `indices` the
    sampled frame numbers in the video; `width`/`height` the clip's native display size. `at` and
    `gray` cache resized/grayscale copies so scorers that want the same size share the work."""

    frames: np.ndarray
    indices: np.ndarray
    fps: float
    width: int
    height: int
    next_frames: np.ndarray | None = None
    clip_id: str | None = None
    uri: str | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def at(self, max_side: int | None, next: bool = False) -> np.ndarray:
        """The samples (or their next frames) with the longer side at most `max_side`."""
        key = ("rgb", max_side, next)
        if key not in self._cache:
            src = self.next_frames if next else self.frames
            if src is None:
                raise ValueError("no next frames decoded: the scorer must request pairs=True")
            self._cache[key] = resize_to(src, max_side)
        return self._cache[key]

    def gray(self, max_side: int | None, next: bool = False) -> np.ndarray:
        """(K,H,W) uint8 luma of `at(max_side, next)`."""
        key = ("gray", max_side, next)
        if key not in self._cache:
            rgb = self.at(max_side, next)
            self._cache[key] = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb])
        return self._cache[key]

    def scale(self, max_side: int | None) -> float:
        """Native pixels per pixel of `at(max_side)` (horizontal)."""
        return self.width / self.at(max_side).shape[2]

    def subset(self, k: int) -> ClipFrames:
        """`k` evenly spaced samples of these (itself when it has no more than k), for costly scorers."""
        if k >= len(self.frames):
            return self
        key = ("subset", k)
        if key not in self._cache:
            pos = even_positions(len(self.frames), k)
            self._cache[key] = ClipFrames(
                frames=self.frames[pos], indices=self.indices[pos], fps=self.fps, width=self.width,
                height=self.height, next_frames=None if self.next_frames is None else self.next_frames[pos],
                clip_id=self.clip_id, uri=self.uri)
        return self._cache[key]


class Scorer(Stage):
    """A stage that adds score columns to clip rows. Subclasses set `name`, `version`, `Params` and
    implement `output_fields()`, `request()` and `score(clip) -> dict` (optionally `setup()`). Used
    alone, a scorer samples and decodes frames itself; in a `ScoreGroup` it shares one decode."""

    @abstractmethod
    def request(self) -> FrameRequest:
        """The frames this scorer needs from each clip."""

    @abstractmethod
    def score(self, clip: ClipFrames) -> dict:
        """Output columns for one clip, keyed by field name."""

    @abstractmethod
    def output_fields(self) -> list[pa.Field]: ...

    def __call__(self, batch: pa.Table) -> pa.Table:
        from filters.sampling import run_scorers

        self.ensure_setup()
        return run_scorers(batch, [self], group_name=self.name)
