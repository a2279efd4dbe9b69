"""Video probe and decode: one interface over decord (fast path) and PyAV (fallback, and anything
decord cannot open). Frames come out RGB uint8, in display orientation, at the size asked for."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from curation.errors import VideoError

Backend = Literal["auto", "decord", "pyav"]
Size = tuple[int, int]  # (width, height) in display orientation

# Containers FFmpeg opens but that hold a still image, not a video.
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "gif", "tiff_pipe", "mjpeg")
_IMAGE_CODECS = ("png", "mjpeg", "bmp", "tiff", "webp", "gif", "jpeg2000")
# Containers whose frame index decord reads correctly (checked frame-exact against PyAV in the tests).
_DECORD_CONTAINERS = ("mov", "matroska", "avi")


@dataclass(frozen=True)
class VideoInfo:
    """What probing a file tells, before any full decode. `width`/`height` are display dimensions
    (after rotation); `frame_count` is the container's count or an estimate from duration x fps."""

    path: str
    size_bytes: int
    container: str
    codec: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    rotation: int  # degrees clockwise applied at display: 0, 90, 180 or 270
    has_audio: bool

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> VideoInfo | None:
        """The probe result a pipeline row already carries (saves probing the file again), or None when
        the row lacks the essentials (e.g. a clips-table row without container facts)."""
        if any(row.get(k) is None for k in ("uri", "width", "height", "fps", "frame_count")):
            return None
        return cls(path=row["uri"].removeprefix("file://"), size_bytes=int(row.get("size_bytes") or 0),
                   container=row.get("container") or "", codec=row.get("codec") or "",
                   width=int(row["width"]), height=int(row["height"]), fps=float(row["fps"]),
                   frame_count=int(row["frame_count"]), duration_s=float(row.get("duration_s") or 0.0),
                   rotation=int(row.get("rotation") or 0), has_audio=bool(row.get("has_audio")))


def _check_file(path: str) -> int:
    if not os.path.exists(path):
        raise VideoError(f"no such file: {path}", kind="not_found")
    if not os.path.isfile(path):
        raise VideoError(f"not a regular file: {path}", kind="not_a_file")
    size = os.path.getsize(path)
    if size == 0:
        raise VideoError(f"empty file (0 bytes): {path}", kind="empty_file")
    return size


def container_signature(path: str) -> str | None:
    """The container family a file's first bytes announce, if any (to tell a damaged video from a file
    that never was one)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):
        return "mp4/mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska/webm"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "mpeg-ps"
    if head[:1] == b"\x47" and len(head) > 0:
        return "mpeg-ts"
    if head.startswith(b"FLV"):
        return "flv"
    return None


MAX_BAD_PACKETS = 64  # consecutive undecodable packets after which the rest of a stream is taken as lost


def decoded_frames(container, stream) -> Iterator:
    """The stream's frames in decode order, packet by packet, the way the ffmpeg CLI reads them:
    - a zero-size packet inside the stream (Theora's "the previous frame again", common in Ogg files of
      still scenes) yields None, meaning a repeat of the previous picture, placed by its timestamp among
      the decoded frames (a threaded decoder hands frames out a few packets late). Handed to the decoder
      it would be taken as end of stream (PyAV sends it as a flush) and every later frame lost;
    - a packet that fails to decode is skipped, as ffmpeg does, so one damaged packet does not end the
      video; after MAX_BAD_PACKETS failures in a row the rest is taken as a truncated tail;
    - the last, empty packet of the demuxer drains the decoder (delayed frames)."""
    import av

    bad, repeats = 0, []  # timestamps of repeats not yet placed
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except (StopIteration, av.error.FFmpegError):  # the end, or the container breaks off
            break
        stamp = packet.pts if packet.pts is not None else packet.dts
        if packet.size == 0 and stamp is not None:
            repeats.append(stamp)
            continue
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            bad += 1
            if bad >= MAX_BAD_PACKETS:
                break
            continue
        bad = 0 if frames else bad
        for frame in frames:
            while repeats and (frame.pts is None or repeats[0] < frame.pts):
                repeats.pop(0)
                yield None
            yield frame
    yield from (None for _ in repeats)


def _open_container(path: str):
    import av

    av.logging.set_level(av.logging.PANIC)  # errors reach the user as typed exceptions instead
    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        family = container_signature(path)
        if family:
            raise VideoError(f"damaged {family} file, FFmpeg cannot read its index ({exc.strerror or exc}; "
                             f"e.g. a missing moov atom or a cut-off download): {path}", kind="corrupt") from exc
        raise VideoError(f"not a video FFmpeg can read ({exc.strerror or exc}): {path}", kind="not_a_video") from exc
    except av.error.FFmpegError as exc:
        raise VideoError(f"cannot open ({exc.strerror or exc}): {path}", kind="unreadable") from exc


def _rotation_of(frame) -> int:
    """Clockwise display rotation from FFmpeg's display matrix (which states it counter-clockwise)."""
    return int(round(-float(getattr(frame, "rotation", 0) or 0))) % 360


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read container metadata and decode the first frame (proving the stream is decodable)."""
    import av

    path = os.fspath(path)
    size = _check_file(path)
    with _open_container(path) as container:
        if not container.streams.video:
            kind = "audio_only" if container.streams.audio else "no_video_stream"
            raise VideoError(f"no video stream ({len(container.streams.audio)} audio): {path}", kind=kind)
        stream = container.streams.video[0]
        fmt = container.format.name
        codec = stream.codec_context.name
        if fmt.split(",")[0] in _IMAGE_FORMATS and codec in _IMAGE_CODECS:
            raise VideoError(f"a still image ({fmt}/{codec}), not a video: {path}", kind="not_a_video")
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise VideoError(f"first frame does not decode ({exc}): {path}", kind="decode_error") from exc
        if first is None:
            raise VideoError(f"video stream has no decodable frame: {path}", kind="decode_error")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if not fps or not np.isfinite(fps) or fps > 1000:
            raise VideoError(f"no usable frame rate ({rate}): {path}", kind="unreadable")
        duration = _duration_s(container, stream)
        frames = int(stream.frames or 0) or int(round(duration * fps))
        rotation = _rotation_of(first)
        w, h = first.width, first.height
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(
            path=path, size_bytes=size, container=fmt, codec=codec, width=w, height=h, fps=fps,
            frame_count=frames, duration_s=duration, rotation=rotation,
            has_audio=bool(container.streams.audio),
        )


def _duration_s(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return 0.0


def _counts_agree(info: VideoInfo) -> bool:
    """Whether the container's frame count matches its presented duration (no trimming edit list)."""
    if info.duration_s <= 0 or info.frame_count <= 0:
        return True
    expected = info.duration_s * info.fps
    return abs(info.frame_count - expected) <= max(1.5, 0.01 * expected)


def fit_size(width: int, height: int, target_width: int | None = None, max_side: int | None = None) -> Size:
    """An even-sized (w, h) with the same aspect: scaled to `target_width`, or so the longer side is at
    most `max_side`. Never upscales."""
    scale = 1.0
    if target_width:
        scale = min(1.0, target_width / width)
    if max_side:
        scale = min(scale, max_side / max(width, height))
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def _stored(size: Size | None, rotation: int) -> Size | None:
    if size is None or rotation not in (90, 270):
        return size
    return size[1], size[0]


def _orient(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate decoded frames (..., H, W, C) clockwise into display orientation."""
    if rotation == 0:
        return frames
    return np.ascontiguousarray(np.rot90(frames, k=-(rotation // 90), axes=(-3, -2)))


class VideoReader:
    """Decode one file. `iter_frames` streams every frame with bounded memory; `read` fetches a list of
    frame indices. `backend='auto'` uses decord and falls back to PyAV where decord cannot open the
    file; a decord failure mid-stream falls back to PyAV from the frame where it stopped."""

    def __init__(self, path: str | os.PathLike, backend: Backend = "auto", info: VideoInfo | None = None):
        self.path = os.fspath(path)
        self.info = info or probe(self.path)
        self.backend = backend
        self._decord = None
        # decord applies display rotation itself at native size but mangles rotated frames when asked
        # for another size (4 channels, wrong shape), and its index-based reads land on the wrong frames
        # in containers without a frame index (MPEG-TS: 12 frames off in tests): those go through PyAV.
        # An MP4 whose edit list trims frames (e.g. cut with `ffmpeg -ss ... -c copy`) holds more samples
        # than it presents: decord counts them all and pads its tail with copies of the last frame.
        trusted = self.info.container.split(",")[0] in _DECORD_CONTAINERS and _counts_agree(self.info)
        if backend == "decord" or (backend == "auto" and self.info.rotation == 0 and trusted):
            self._decord = self._open_decord(required=backend == "decord")

    def _open_decord(self, required: bool):
        try:
            import decord

            decord.bridge.set_bridge("native")
            return decord
        except ImportError:
            if required:
                raise
            return None

    # ---- streaming -------------------------------------------------------------------------------
    def iter_frames(self, size: Size | None = None, chunk: int = 32, bgr: bool = False) -> Iterator[np.ndarray]:
        """Every frame in order, uint8 (H, W, 3) RGB (or BGR for OpenCV code), at `size` (display w, h)
        or native size."""
        done = 0
        if self._decord is not None:
            try:
                for frame in self._iter_decord(size, chunk):
                    yield np.ascontiguousarray(frame[..., ::-1]) if bgr else frame
                    done += 1
                return
            except VideoError:
                raise
            except Exception:
                if self.backend == "decord":
                    raise
        yield from self._iter_pyav(size, skip=done, fmt="bgr24" if bgr else "rgb24")

    def _decord_reader(self, size: Size | None):
        if self.info.rotation:
            raise VideoError(f"decord cannot resize rotated video; use backend pyav: {self.path}",
                             kind="unsupported")
        kwargs = {"width": size[0], "height": size[1]} if size else {}
        return self._decord.VideoReader(self.path, ctx=self._decord.cpu(0), num_threads=0, **kwargs)

    def _iter_decord(self, size: Size | None, chunk: int) -> Iterator[np.ndarray]:
        vr = self._decord_reader(size)
        n = len(vr)
        for start in range(0, n, chunk):
            yield from vr.get_batch(list(range(start, min(n, start + chunk)))).asnumpy()

    def _iter_pyav(self, size: Size | None, skip: int = 0, fmt: str = "rgb24") -> Iterator[np.ndarray]:
        stored = _stored(size, self.info.rotation)
        kwargs = {"width": stored[0], "height": stored[1]} if stored else {}
        with _open_container(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            index, last = 0, None  # last: the previous picture (a frame, converted when first needed)
            for frame in decoded_frames(container, stream):
                if frame is not None:
                    last = frame
                elif last is None:
                    continue  # a repeat before any picture shows nothing
                if index >= skip:
                    if not isinstance(last, np.ndarray):
                        last = _orient(last.to_ndarray(format=fmt, **kwargs), self.info.rotation)
                    yield last
                index += 1
            if index == 0:
                raise VideoError(f"no frame decodes: {self.path}", kind="decode_error")

    # ---- random access ---------------------------------------------------------------------------
    def read(self, indices: Sequence[int], size: Size | None = None) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed) as (N, H, W, 3) RGB uint8."""
        indices = [int(i) for i in indices]
        if not indices:
            w, h = size or (self.info.width, self.info.height)
            return np.zeros((0, h, w, 3), np.uint8)
        if self._decord is not None:
            try:
                vr = self._decord_reader(size)
                n = len(vr)
                safe = [min(max(i, 0), n - 1) for i in indices]
                return vr.get_batch(safe).asnumpy()
            except Exception:
                if self.backend == "decord":
                    raise
        return self._read_pyav(indices, size)

    def _read_pyav(self, indices: list[int], size: Size | None) -> np.ndarray:
        """Decode forward, seeking only across long gaps; frame index = position in decode order."""

        wanted = sorted(set(indices))
        stored = _stored(size, self.info.rotation)
        kwargs = {"width": stored[0], "height": stored[1]} if stored else {}
        got: dict[int, np.ndarray] = {}
        with _open_container(self.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = Fraction(self.info.fps).limit_denominator(100000)
            start_pts = stream.start_time or 0
            pos = -1  # index of the last decoded frame
            last = None  # the last picture, for repeats
            frames = decoded_frames(container, stream)
            for target in wanted:
                if target - pos > 250 and stream.time_base:
                    ts = start_pts + int((Fraction(target) / fps) / stream.time_base)
                    container.seek(max(ts - 1, start_pts), stream=stream, backward=True)
                    frames = decoded_frames(container, stream)
                    pos, last = None, None
                for frame in frames:
                    if frame is None:  # a repeat of the previous picture (see decoded_frames)
                        if pos is None or last is None:
                            continue
                        frame = last
                    last = frame
                    if pos is None:  # after a seek, recover the index from the timestamp
                        t = float((frame.pts - start_pts) * stream.time_base) if frame.pts is not None else 0.0
                        pos = int(round(t * float(fps)))
                    else:
                        pos += 1
                    if pos >= target:
                        got[target] = frame.to_ndarray(format="rgb24", **kwargs)
                        break
                if target not in got:
                    break
        if not got:
            raise VideoError(f"none of the requested frames decode: {self.path}", kind="decode_error")
        last = got[max(got)]
        out = np.stack([got.get(i, got.get(min(got, key=lambda k: abs(k - i)), last)) for i in indices])
        return _orient(out, self.info.rotation)
