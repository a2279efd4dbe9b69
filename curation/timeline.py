"""Frame numbers and presentation times of one video stream. A frame's number is its position among the
frames the decoder presents (what the split streams); its time comes from the stream's timestamps. On
constant-frame-rate video number and time are tied by the rate; on variable-frame-rate video (phone
footage, screen recordings) they are not, and a table of the frames' timestamps, read by demuxing the
packets without decoding them, ties them instead."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

# Two frame intervals are the same rate when they differ by at most this share of the typical interval,
# or by one tick of the time base plus a little (a 29.97 fps stream in Matroska's 1 ms ticks is 33, 34, 33 ms).
RATE_TOLERANCE = 0.02


@dataclass(frozen=True)
class Timeline:
    """Frame number <-> time of one stream. `pts` (None: constant rate `fps`) holds the presentation
    timestamp of every frame in time_base ticks, ascending, followed by the end of the last frame: 8 bytes
    a frame (2.9 MB for two hours at 50 fps), held by the reader and a small per-process cache
    (curation.video), never stored (the lake keeps each clip's start_s/end_s)."""

    fps: float
    time_base: Fraction = Fraction(1, 90000)
    start_pts: int = 0  # the stream's start time, in ticks (what a seek is relative to)
    pts: np.ndarray | None = None

    @classmethod
    def constant(cls, fps: float, time_base: Fraction | None = None, start_pts: int = 0) -> Timeline:
        return cls(float(fps), Fraction(time_base) if time_base else Fraction(1, 90000), int(start_pts or 0))

    @property
    def variable(self) -> bool:
        return self.pts is not None

    @property
    def frames(self) -> int | None:
        """How many frames the table holds (None on a constant-rate timeline)."""
        return None if self.pts is None else len(self.pts) - 1

    def seconds(self, index: int) -> float:
        """When frame `index` is presented, in seconds after the first frame; `index` = the frame count
        gives the end of the last frame (a clip's exclusive end frame gives its end time)."""
        if self.pts is None:
            return index / self.fps
        n = len(self.pts) - 1
        if index <= n:
            return float((int(self.pts[max(0, index)]) - int(self.pts[0])) * self.time_base)
        step = int(self.pts[n]) - int(self.pts[n - 1]) if n >= 1 else 0
        return float((int(self.pts[n]) + (index - n) * step - int(self.pts[0])) * self.time_base)

    def span_s(self, start: int, end: int) -> float:
        """How long frames [start, end) are shown (on constant rate exactly (end - start) / fps)."""
        if self.pts is None:
            return (end - start) / self.fps
        return self.seconds(end) - self.seconds(start)

    def frames_in(self, start: int, seconds: float) -> int:
        """How many frames from `start` on are shown for the nearest to `seconds` (constant rate:
        round(seconds x fps)), e.g. the frames of a `max_clip_s` window that begins at `start`."""
        if self.pts is None:
            return int(round(seconds * self.fps))
        n = len(self.pts) - 1
        start = min(max(0, start), n)
        target = int(self.pts[start]) + seconds / float(self.time_base)
        if target >= self.pts[n]:  # past the last frame: at the average rate
            return n - start + int(round((target - int(self.pts[n])) * float(self.time_base) * self.fps))
        i = int(np.searchsorted(self.pts, target))  # pts[i - 1] < target <= pts[i]
        if i <= start:
            return 0
        return (i if self.pts[i] - target <= target - self.pts[i - 1] else i - 1) - start

    def pts_of(self, index: int) -> int:
        """The timestamp (ticks) of frame `index`, to seek to."""
        if self.pts is None:
            return self.start_pts + int((Fraction(index) / Fraction(self.fps).limit_denominator(100000))
                                        / self.time_base)
        return int(self.pts[min(max(0, index), len(self.pts) - 2)])

    def index_of(self, pts: int | None) -> int:
        """The number of the frame presented at timestamp `pts` (the nearest frame's, when no frame has
        exactly that stamp); a frame without a stamp is taken as the first."""
        if pts is None:
            return 0
        if self.pts is None:
            fps = float(Fraction(self.fps).limit_denominator(100000))
            return int(round(float((pts - self.start_pts) * self.time_base) * fps))
        table = self.pts[:-1]
        i = int(np.searchsorted(table, pts))
        if i >= len(table):
            return len(table) - 1
        return i - 1 if i > 0 and pts - table[i - 1] < table[i] - pts else i

    def duration_s(self) -> float:
        """From the first frame to the end of the last (0 on a constant-rate timeline: length unknown)."""
        return 0.0 if self.pts is None else self.seconds(len(self.pts) - 1)


def is_variable(pts: np.ndarray, tolerance: float = RATE_TOLERANCE) -> bool:
    """Whether ascending frame timestamps `pts` (ticks) step at more than one rate: some interval differs
    from the typical one by more than `tolerance` of it and more than a tick of rounding."""
    if len(pts) < 3:
        return False
    steps = np.diff(np.asarray(pts, np.int64))
    typical = float(np.median(steps))
    allowed = max(tolerance * typical, 1.0 + 1e-9)
    return bool(np.any(np.abs(steps - typical) > allowed))


def frame_stamps(container, stream) -> tuple[np.ndarray, int] | None:
    """(ascending timestamps of every frame the stream presents, end of the last frame) read from its
    packets without decoding them, or None when some packet has no timestamp (e.g. raw elementary streams).
    Left out, as the decoder leaves them: packets an edit list discards and the demuxer's closing empty
    packet; kept, as `curation.video.decoded_frames` keeps them: empty packets with a stamp (Theora's
    "the previous frame again")."""
    import av

    stamps = array("q")  # 8 bytes a packet (a list of ints takes about 40)
    end = None
    try:
        for packet in container.demux(stream):
            if packet.is_discard:
                continue
            stamp = packet.pts
            if stamp is None:
                if packet.size == 0 and packet.dts is None:
                    continue  # the demuxer's flush packet at the end
                return None
            stamps.append(stamp)
            if packet.duration:
                end = stamp + packet.duration if end is None else max(end, stamp + packet.duration)
    except av.error.FFmpegError:
        pass  # a damaged tail: the frames before it are what decodes
    if not stamps:
        return None
    table = np.sort(np.frombuffer(stamps, np.int64))
    if end is None or end <= table[-1]:
        end = int(table[-1] + max(1, table[-1] - table[-2] if len(table) > 1 else 1))
    return table, int(end)


def scan(container, stream) -> Timeline | None:
    """The timeline of `stream` from its packets' timestamps (a table, even when the rate is constant;
    its `fps` the average, frames / duration), or None when the timestamps cannot tell (see `frame_stamps`)."""
    found = frame_stamps(container, stream)
    if found is None or stream.time_base is None:
        return None
    table, end = found
    time_base = Fraction(stream.time_base)
    fps = len(table) / float((end - int(table[0])) * time_base)
    return Timeline(fps, time_base, int(stream.start_time or 0), np.append(table, np.int64(end)))
