"""Video probe and decode: one interface over decord (fast path) and PyAV (fallback, and anything
decord cannot open). Frames come out RGB uint8, in display orientation, at the size asked for."""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from curation.errors import VideoError
from curation.timeline import Timeline, is_variable, scan

Backend = Literal["auto", "decord", "pyav"]
Size = tuple[int, int]  # (width, height) in display orientation

# Containers FFmpeg opens but that hold a still image, not a video.
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "gif", "tiff_pipe", "mjpeg")
_IMAGE_CODECS = ("png", "mjpeg", "bmp", "tiff", "webp", "gif", "jpeg2000")

# The largest frame accepted, checked on the size the stream declares before any frame is decoded, and on
# every decoded frame: 16384 px a side and 2^27 pixels (16384 x 8192; 8K UHD is 2^25), so one RGB frame
# stays under 400 MB. FFmpeg's own limit (2^28 pixels, a 768 MB RGB frame) lets a 16000 x 16000 header by.
MAX_SIDE = 16384
MAX_PIXELS = 1 << 27


@dataclass(frozen=True)
class VideoInfo:
    """What probing a file tells, before any full decode. `width`/`height` are display dimensions
    (after rotation); `frame_count` is the container's count or an estimate from duration x fps, 0 when
    unknown (a claim the file cannot hold is dropped: see `notes`). `size_bytes`/`mtime_ns`: the file when
    probed; a reader refuses the file once either differs (it changed while being read). `vfr`: the frames'
    timestamps step at more than one rate (then `fps` is the average, frames / duration, and frame numbers
    map to times through the timestamps: `VideoReader.timeline`); None when not known (taken as constant)."""

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
    mtime_ns: int | None = None
    vfr: bool | None = None
    # (kind, message) for what the probe found wrong but worked around, e.g. a frame count the file cannot hold
    notes: tuple[tuple[str, str], ...] = ()

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
                   rotation=int(row.get("rotation") or 0), has_audio=bool(row.get("has_audio")),
                   mtime_ns=row.get("mtime_ns"), vfr=row.get("vfr"))


def _real_name(uri: str) -> bytes | None:
    """The name on disk behind the stand-in uri of a file whose name is not UTF-8 (`curation.inputs.uri_of`
    writes each undecodable byte as `\\xNN`), when such a file exists."""
    if "\\x" not in uri:
        return None
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), uri.encode("utf-8"))
    return raw if os.path.lexists(raw) else None


def os_error(path: str, exc: OSError) -> VideoError:
    """A typed error for an OSError met on `path`. Kinds: not_found, broken_symlink, symlink_loop,
    bad_file_name, permission_denied, unreadable."""
    code = exc.errno
    if code in (errno.ENOENT, errno.ENOTDIR):
        if os.path.islink(path):
            return VideoError(f"broken symlink (its target {os.readlink(path)!r} does not exist): {path}",
                              kind="broken_symlink")
        raw = _real_name(path)
        if raw is not None:
            return VideoError(f"the file name is not valid UTF-8 ({os.path.basename(raw)!r}): the lake keeps uris as "
                              f"UTF-8 text, so the file is listed under a stand-in name with \\x escapes and not "
                              f"read; rename it (e.g. `convmv -f latin1 -t utf8`): {path}", kind="bad_file_name")
        return VideoError(f"no such file: {path}", kind="not_found")
    if code == errno.ELOOP:
        target = f" ({os.readlink(path)!r} never reaches a file)" if os.path.islink(path) else ""
        return VideoError(f"symlink loop{target}: {path}", kind="symlink_loop")
    if code in (errno.EACCES, errno.EPERM):
        return VideoError(f"permission denied: the user running the pipeline may not read {path}",
                          kind="permission_denied")
    return VideoError(f"cannot read ({exc.strerror or exc}): {path}", kind="unreadable")


_FILE_TYPES = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
               stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def check_file(path: str, since: tuple[int, int] | None = None) -> os.stat_result:
    """The file's stat (through symlinks), once it is known to be a non-empty regular file this process may
    open. `since`: the (size_bytes, mtime_ns) it had at discovery, which it must still have. Nothing is
    opened before its type is known (opening a FIFO would block). Kinds: those of `os_error`, not_a_file,
    empty_file, changed_during_read."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise os_error(path, exc) from exc
    if not stat.S_ISREG(st.st_mode):
        what = _FILE_TYPES.get(stat.S_IFMT(st.st_mode), "of another type")
        raise VideoError(f"not a regular file ({what}): {path}", kind="not_a_file")
    if since is not None:
        _same(path, since, st, "at discovery", "when probed")
    if st.st_size == 0:
        raise VideoError(f"empty file (0 bytes): {path}", kind="empty_file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise os_error(path, exc) from exc
    return st


def _same(path: str, before: tuple[int, int], st: os.stat_result, then: str, now: str) -> None:
    if (st.st_size, st.st_mtime_ns) != tuple(before):
        raise VideoError(f"the file changed while being read (still being written, or replaced?): {then} "
                         f"size_bytes={before[0]} mtime_ns={before[1]}, {now} size_bytes={st.st_size} "
                         f"mtime_ns={st.st_mtime_ns}; the next run reads it again: {path}",
                         kind="changed_during_read")


def check_unchanged(path: str, before: tuple[int, int], then: str = "when probed", now: str = "after reading") -> None:
    """Raise `changed_during_read` unless the file still has the (size_bytes, mtime_ns) it had `then`."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise VideoError(f"the file went away while being read ({exc.strerror}): {path}",
                         kind="changed_during_read") from exc
    _same(path, before, st, then, now)


def check_frame_size(width: int, height: int, path: str, what: str = "declared") -> None:
    """Refuse a frame above MAX_SIDE px a side or MAX_PIXELS pixels (kind too_large)."""
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise VideoError(f"frame size {width}x{height} ({what}) is above the limit of {MAX_SIDE} px a side and "
                         f"{MAX_PIXELS} pixels (curation.video.MAX_SIDE, MAX_PIXELS); not decoded: {path}",
                         kind="too_large")


def _refused_size(exc: BaseException) -> tuple[int, int] | None:
    """The frame size FFmpeg itself refused (it logs "Picture size WxH is invalid"), when that is the error."""
    log = getattr(exc, "log", None)
    m = re.search(r"Picture size (\d+)x(\d+) is invalid", str(log[2]) if log and len(log) > 2 else "")
    return (int(m[1]), int(m[2])) if m else None


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
            check_frame_size(frame.width, frame.height, container.name, "a decoded frame")
            while repeats and (frame.pts is None or repeats[0] < frame.pts):
                repeats.pop(0)
                yield None
            yield frame
    yield from (None for _ in repeats)


def _open_container(path: str):
    import av

    # While opening, FFmpeg's log is kept on the exception (a refused frame size is only said there); the
    # Python log callback goes again before any decode: with frame-threaded decoders it can deadlock the
    # process (a decoder thread logging waits for the GIL that avcodec_free_context holds; PyAV #751/#909,
    # seen as a hung report over a damaged H.264 file)
    av.logging.set_level(av.logging.PANIC)
    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        refused = _refused_size(exc)
        if refused:
            check_frame_size(*refused, path, "declared; FFmpeg refuses it too")
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise os_error(path, PermissionError(exc.errno, exc.strerror)) from exc
        if not isinstance(exc, av.error.InvalidDataError):
            raise VideoError(f"cannot open ({exc.strerror or exc}): {path}", kind="unreadable") from exc
        family = container_signature(path)
        if family:
            raise VideoError(f"damaged {family} file, FFmpeg cannot read its index ({exc.strerror or exc}; "
                             f"e.g. a missing moov atom or a cut-off download): {path}", kind="corrupt") from exc
        raise VideoError(f"not a video FFmpeg can read ({exc.strerror or exc}): {path}", kind="not_a_video") from exc
    finally:
        av.logging.set_level(None)


def _rotation_of(frame) -> int:
    """Clockwise display rotation from FFmpeg's display matrix (which states it counter-clockwise)."""
    return int(round(-float(getattr(frame, "rotation", 0) or 0))) % 360


def probe(path: str | os.PathLike, since: tuple[int, int] | None = None) -> VideoInfo:
    """Read container metadata and decode the first frame (proving the stream is decodable). `since`: the
    (size_bytes, mtime_ns) the file had at discovery; a file that differs then, or changes while probed,
    raises `changed_during_read`. A declared frame size above MAX_SIDE/MAX_PIXELS raises `too_large` before
    any frame is decoded; a frame count (or duration) the file cannot hold is dropped, with a note."""
    import av

    path = os.fspath(path)
    st = check_file(path, since)
    size = st.st_size
    with _open_container(path) as container:
        if not container.streams.video:
            kind = "audio_only" if container.streams.audio else "no_video_stream"
            raise VideoError(f"no video stream ({len(container.streams.audio)} audio): {path}", kind=kind)
        stream = container.streams.video[0]
        fmt = container.format.name
        codec = stream.codec_context.name
        if fmt.split(",")[0] in _IMAGE_FORMATS and codec in _IMAGE_CODECS:
            raise VideoError(f"a still image ({fmt}/{codec}), not a video: {path}", kind="not_a_video")
        check_frame_size(stream.codec_context.width, stream.codec_context.height, path, "declared by the stream")
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            refused = _refused_size(exc)
            if refused:
                check_frame_size(*refused, path, "of the first frame; FFmpeg refuses it too")
            raise VideoError(f"first frame does not decode ({exc}): {path}", kind="decode_error") from exc
        if first is None:
            raise VideoError(f"video stream has no decodable frame: {path}", kind="decode_error")
        check_frame_size(first.width, first.height, path, "of the first frame")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if not fps or not np.isfinite(fps) or fps > 1000:
            raise VideoError(f"no usable frame rate ({rate}): {path}", kind="unreadable")
        duration, frames = _duration_s(container, stream), int(stream.frames or 0)
        timeline = _scan(path, st.st_size, st.st_mtime_ns)
        vfr = timeline is not None and is_variable(timeline.pts[:-1])
        if vfr:  # the container's rate is one of several (Matroska states none): the frames tell
            frames, duration, fps = timeline.frames, timeline.duration_s(), timeline.fps
        frames, duration, notes = _plausible_length(frames, duration, fps, size)
        rotation = _rotation_of(first)
        w, h = first.width, first.height
        if rotation in (90, 270):
            w, h = h, w
        info = VideoInfo(
            path=path, size_bytes=size, container=fmt, codec=codec, width=w, height=h, fps=fps,
            frame_count=frames, duration_s=duration, rotation=rotation,
            has_audio=bool(container.streams.audio), mtime_ns=st.st_mtime_ns, vfr=vfr, notes=notes,
        )
    check_unchanged(path, (st.st_size, st.st_mtime_ns), "when probing began", "after probing")
    return info


def header_rate(path: str) -> tuple[float, float]:
    """(seconds, pixels a second) of the first video stream as its container's header states them, no
    frame decoded (~0.2-15 ms a file): how much decoding and scaling a file holds, to order work by.
    (0, 0) for a file that does not open or states neither."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block the open
            return 0.0, 0.0
        with _open_container(path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            seconds = _duration_s(container, stream)
            pixels = stream.codec_context.width * stream.codec_context.height * float(rate or 0)
    except Exception:  # noqa: BLE001 - anything unreadable is cheap: it fails at its probe
        return 0.0, 0.0
    ok = np.isfinite([seconds, pixels]) & (np.array([seconds, pixels]) > 0)
    return (float(seconds), float(pixels)) if ok.all() else (float(seconds) if ok[0] else 0.0, 0.0)


@functools.lru_cache(maxsize=4)
def _scan(path: str, size: int, mtime_ns: int | None) -> Timeline | None:
    """The stream's frame timestamps, demuxed without decoding (about 40k packets a second: 20 ms for
    30 s of 1080p), or None when its packets carry none. Kept for the last few files (by size and mtime,
    so a changed file is read again): a worker that probes a file and then reads it scans it once."""
    with _open_container(path) as container:
        return scan(container, container.streams.video[0])


def _plausible_length(frames: int, duration: float, fps: float, size: int) -> tuple[int, float, tuple]:
    """(frame count, duration, notes) from what the container claims, dropping a claim of more frames than
    the file has bytes (a frame takes at least one: a 17 kB file that claims 10^9 frames lies). A dropped
    count leaves 0, unknown, which keeps the file on PyAV (decord sizes its index by that claim); nothing
    else is sized by it, and the split stage counts the frames that decode."""
    estimate = int(round(duration * fps)) if 0 < duration < 1e12 else 0
    bad_count, bad_duration = frames > size, duration >= 1e12 or estimate > size
    if not (bad_count or bad_duration):
        return frames or estimate, duration, ()
    claims = [f"{frames} frames"] if bad_count else []
    if bad_duration:
        claims.append(f"{duration:.6g} s ({duration * fps:.6g} frames at {fps:g} fps)")
    note = (f"the container claims {' and '.join(claims)}, more frames than the file has bytes ({size}): "
            "ignored, the frames that decode are counted")
    frames = 0 if bad_count else frames
    duration = (frames / fps if frames else 0.0) if bad_duration else duration
    return frames, duration, (("implausible_metadata", note),)


def _duration_s(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return 0.0


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


def stored_size(size: Size | None, rotation: int) -> Size | None:
    """(w, h) of a display-orientation size as the frames are stored (swapped for 90/270 rotations)."""
    if size is None or rotation not in (90, 270):
        return size
    return size[1], size[0]


def _threads(stream, threads: int | None) -> None:
    stream.thread_type = "AUTO"
    if threads:
        stream.thread_count = threads


def _converter(size: Size | None, fmt: str, interpolation: str | None = None):
    """frame -> (H, W, 3) uint8 in `fmt` at `size` (stored orientation), through one scaler kept for the
    whole pass: `frame.to_ndarray(width=...)` builds a new one every frame, which cost as much as the
    decode itself at 1080p -> 256 px (bench_pipeline.py's workload: 6.2 vs 4.3 CPU-s with decoding)."""
    scale = _scaler(size, fmt, interpolation)
    return lambda frame: scale(frame).to_ndarray()


def _scaler(size: Size | None, fmt: str, interpolation: str | None = None):
    """frame -> `av.VideoFrame` in `fmt` at `size` (stored orientation), one scaler for the pass;
    `interpolation`: swscale's (PyAV's names: "AREA", ...; None: its default, bilinear). An area-averaged
    YUV 4:2:0 frame of exactly half a YUV 4:2:0 frame's size is made by `_halved` instead."""
    from av.video.reformatter import VideoReformatter

    scaler = VideoReformatter()
    kwargs = {"width": size[0], "height": size[1]} if size else {}
    if interpolation is not None:
        kwargs["interpolation"] = interpolation
    if not (size and fmt == "yuv420p" and interpolation == "AREA"):
        return lambda frame: scaler.reformat(frame, format=fmt, **kwargs)

    def scale(frame):
        if frame.format.name == "yuv420p" and (frame.width, frame.height) == (2 * size[0], 2 * size[1]):
            return _halved(frame)
        return scaler.reformat(frame, format=fmt, **kwargs)

    return scale


def _halved(frame):
    """A YUV 4:2:0 `av.VideoFrame` at half its size, each pixel the mean of 2x2: OpenCV's area resize of
    the planes, 0.2 instead of swscale's 0.6 ms for 1280x720 -> 640x360. The same luma as swscale's area
    averaging, bit for bit; chroma within 2 levels on 720p footage, a few at sharp colour edges (swscale
    places chroma samples its own way)."""
    import av
    import cv2

    w, h = frame.width // 2, frame.height // 2
    out = np.empty((h * 3 // 2, w), np.uint8)
    flat, y, c = out.reshape(-1), h * w, (h // 2) * (w // 2)  # planes packed as to_ndarray packs them
    dst = [out[:h], flat[y:y + c].reshape(h // 2, w // 2), flat[y + c:y + 2 * c].reshape(h // 2, w // 2)]
    for plane, target in zip(frame.planes, dst):
        rows, cols = target.shape[0] * 2, target.shape[1] * 2
        src = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :cols]
        cv2.resize(src, (target.shape[1], target.shape[0]), dst=target, interpolation=cv2.INTER_AREA)
    half = av.VideoFrame.from_ndarray(out, format="yuv420p")
    # the source's colour tags, as swscale keeps them: a BT.709 frame's conversion to RGB uses its matrix
    half.colorspace, half.color_range = frame.colorspace, frame.color_range
    return half


# The scorers' samples are scaled to YUV 4:2:0 with swscale's area averaging, wherever they come from (the
# split's `via` frames, a FrameTap, `read_i420`): for 1080p -> 640 px 1.05 vs 1.36 ms a frame with its
# bilinear default, more for larger sources; clarity +2.5 %, every other score the same on the pipeline
# benchmark's 1080p clips (benchmarks/RESULTS.md, issue 11 fourth pass)
I420_INTERPOLATION = "AREA"


def i420_converter(size: Size, rotation: int = 0):
    """frame -> its YUV 4:2:0 planes at `size` (display w, h; even) as one (H * 3/2, W) uint8 array in
    stored orientation: half the bytes of RGB, and the cheapest conversion a scaler makes (1080p H.264 to
    640 px: 0.8 ms a frame vs 1.8 for RGB). `i420_to_rgb` makes the RGB picture when it is wanted. A frame
    already in YUV 4:2:0 at that size (`iter_frames(via=...)`) converts to the same planes for free."""
    return _converter(stored_size(size, rotation), "yuv420p", I420_INTERPOLATION)


def i420_to_rgb(planes: np.ndarray, rotation: int = 0) -> np.ndarray:
    """(H, W, 3) RGB uint8 in display orientation from `i420_converter`'s planes (OpenCV's BT.601
    conversion)."""
    import cv2

    return _orient(cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420), rotation)


# BT.601 luma from studio swing (16-235) to 0-255: 0.299 R + 0.587 G + 0.114 B of OpenCV's I420 -> RGB is
# 255/219 (Y - 16) exactly but for rounding and the clipping of saturated colours (measured on 1080p
# H.264 frames at 640 px: 83 % of pixels equal, mean difference 0.18 levels)
_FULL_RANGE_LUMA = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


def i420_luma(planes: np.ndarray, rotation: int = 0) -> np.ndarray:
    """(H, W) uint8 luma in display orientation from `i420_converter`'s planes: their Y plane in full
    range, what the grey scorers want, without making RGB and converting it back (a third of the pixels
    to scale)."""
    import cv2

    luma = cv2.LUT(planes[:planes.shape[0] * 2 // 3], _FULL_RANGE_LUMA)
    return _orient(luma[..., None], rotation)[..., 0]


def _orient(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate decoded frames (..., H, W, C) clockwise into display orientation."""
    if rotation == 0:
        return frames
    return np.ascontiguousarray(np.rot90(frames, k=-(rotation // 90), axes=(-3, -2)))


def _get_batches(vr, indices: list[int], chunk: int = 32) -> np.ndarray:
    """decord's `get_batch(indices).asnumpy()`, `chunk` frames at a time into one array: in a single call
    decord's copy and ours of every frame coexist (measured: +350 MB for the 256 frames of a 16-clip batch
    at 640x360)."""
    first = vr.get_batch(indices[:chunk]).asnumpy()
    if len(indices) <= chunk:
        return first
    out = np.empty((len(indices), *first.shape[1:]), first.dtype)
    out[:chunk] = first
    del first
    for start in range(chunk, len(indices), chunk):
        out[start:start + chunk] = vr.get_batch(indices[start:start + chunk]).asnumpy()
    return out


class VideoReader:
    """Decode one file. `iter_frames` streams every frame with bounded memory; `read` fetches a list of
    frame indices. `backend='auto'` (and 'pyav') decode through PyAV; 'decord' streams and reads with decord
    (streams that also feed `on_frame` or scale `via` another size, and I420 reads, still go through PyAV)."""

    def __init__(self, path: str | os.PathLike, backend: Backend = "auto", info: VideoInfo | None = None,
                 threads: int | None = None):
        self.path = os.fspath(path)
        # decoder threads; None: FFmpeg's choice (one per core). Stages pass their CPUs (Resources.threads):
        # with a worker per core one thread each costs 10-15 % less CPU than frame threading (H.264, measured),
        # and a damaged file's frame count no longer depends on the machine (a threaded decoder loses the
        # last frames of a truncated H.264 file: 70 vs 72 decoded)
        self.threads = threads
        self.info = info or probe(self.path)
        self.backend = backend
        self._decord = None
        self._timeline: Timeline | None = None
        # "auto" decodes through PyAV, streaming and reading alike: one decoder and one scaler for every
        # pass, so the split's frames and the scorers' are the same pixels (curation.splitscore hands the
        # first to the second), and as fast as decord at one thread a worker (1080p H.264: 2.4-2.5 ms a
        # frame decoded and scaled to 256 px by both). decord, on request only, has known faults: it
        # mangles rotated frames asked for at another size, lands index reads on wrong frames in containers
        # without a frame index (MPEG-TS), pads an edit-list-trimmed MP4's tail, sizes its index by the
        # container's claim (a Matroska duration of 10^9 frames: std::bad_alloc), and keeps decoded frames
        # in memory that grows with the file (+371/+649 MiB for 128 frames of 1/20-minute 1080p files).
        if backend == "decord":
            import decord

            decord.bridge.set_bridge("native")
            self._decord = decord

    def _unchanged(self, now: str) -> None:
        """The file still is the one probed (size and mtime), when the info knows them: a file rewritten,
        truncated or still growing between probe and decode, or during a decode, raises changed_during_read."""
        if self.info.mtime_ns is not None and self.info.size_bytes:
            check_unchanged(self.path, (self.info.size_bytes, self.info.mtime_ns), "when probed", now)

    def timeline(self) -> Timeline:
        """Frame number <-> time, in the numbering `iter_frames` and `read` share (a frame's position
        among the presented frames): on variable-frame-rate video a table of the frames' timestamps
        (demuxed, no decode; the probe's scan when it ran in this process); otherwise the constant rate."""
        if self._timeline is None:
            info = self.info
            found = _scan(self.path, info.size_bytes, info.mtime_ns) if info.vfr else None
            self._timeline = found or Timeline.constant(self.info.fps)
        return self._timeline

    def _stream_timeline(self, stream) -> Timeline:
        """The timeline a seek in `stream` works with: the table on VFR video, else the constant rate
        counted from the stream's start time."""
        found = self.timeline()
        if found.variable:
            return found
        return Timeline.constant(self.info.fps, stream.time_base, stream.start_time or 0)

    # ---- streaming -------------------------------------------------------------------------------
    def iter_frames(self, size: Size | None = None, chunk: int = 32, bgr: bool = False,
                    on_frame: Callable[[int, object, object], None] | None = None,
                    via: Size | None = None, interpolation: str | None = None) -> Iterator[np.ndarray]:
        """Every frame in order, uint8 (H, W, 3) RGB (or BGR for OpenCV code), at `size` (display w, h)
        or native size (`interpolation`: swscale's for that scaling, see `_scaler`; PyAV only). The file is
        checked against its probe before the first frame and after the last.
        `via`: scale each frame to this size as YUV 4:2:0 first and to `size` from there, so a consumer
        of `via`-sized frames gets them without scaling the native frame a second time.
        `on_frame(index, frame, scaled)` also sees each decoded `av.VideoFrame` (native size, stored
        orientation; a repeated frame is the same object) and its `via` version (or None) before its
        picture is yielded, so a second consumer can keep frames at its own size from the same decode
        (curation.frames.FrameTap). `on_frame` and `via` stream through PyAV whatever the backend."""
        self._unchanged("before decoding")
        yield from self._frames(size, chunk, bgr, on_frame, via, interpolation)
        self._unchanged("after decoding")

    def _frames(self, size: Size | None, chunk: int, bgr: bool, on_frame=None, via=None,
                interpolation: str | None = None) -> Iterator[np.ndarray]:
        if self._decord is None or on_frame is not None or via is not None:
            yield from self._iter_pyav(size, fmt="bgr24" if bgr else "rgb24", on_frame=on_frame, via=via,
                                       interpolation=interpolation)
            return
        import cv2  # a channel swap in OpenCV: ~30x faster than numpy's reversed copy (0.4 s per 3,600 frames)

        for frame in self._iter_decord(size, chunk):
            yield cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if bgr else frame

    def _decord_reader(self, size: Size | None):
        if self.info.rotation:
            raise VideoError(f"decord cannot resize rotated video; use backend pyav: {self.path}",
                             kind="unsupported")
        kwargs = {"width": size[0], "height": size[1]} if size else {}
        return self._decord.VideoReader(self.path, ctx=self._decord.cpu(0), num_threads=self.threads or 0,
                                        **kwargs)

    def _iter_decord(self, size: Size | None, chunk: int) -> Iterator[np.ndarray]:
        vr = self._decord_reader(size)
        n = len(vr)
        for start in range(0, n, chunk):
            yield from vr.get_batch(list(range(start, min(n, start + chunk)))).asnumpy()

    def _iter_pyav(self, size: Size | None, fmt: str = "rgb24", on_frame=None, via: Size | None = None,
                   interpolation: str | None = None) -> Iterator[np.ndarray]:
        rotation = self.info.rotation
        convert = _converter(stored_size(size, rotation), fmt, interpolation)
        shrink = _scaler(stored_size(via, rotation), "yuv420p", I420_INTERPOLATION) if via else None
        with _open_container(self.path) as container:
            stream = container.streams.video[0]
            _threads(stream, self.threads)
            # the previous frame, its `via` version and its picture (each made when first needed)
            index, last, small, picture = 0, None, None, None
            for frame in decoded_frames(container, stream):
                if frame is not None:
                    last, small, picture = frame, None, None
                elif last is None:
                    continue  # a repeat before any picture shows nothing
                if shrink is not None and small is None:
                    small = shrink(last)
                if on_frame is not None:
                    on_frame(index, last, small)
                if picture is None:
                    picture = _orient(convert(last if small is None else small), rotation)
                yield picture
                index += 1
            if index == 0:
                raise VideoError(f"no frame decodes: {self.path}", kind="decode_error")

    # ---- random access ---------------------------------------------------------------------------
    def read(self, indices: Sequence[int], size: Size | None = None) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed) as (N, H, W, 3) RGB uint8."""
        return self._checked_read(indices, size, False)

    def read_i420(self, indices: Sequence[int], size: Size) -> np.ndarray:
        """Frames at `indices` scaled to `size` (display w, h; even) as YUV 4:2:0 planes, (N, H * 3/2, W)
        in stored orientation, as a FrameTap keeps them (`i420_to_rgb`, `i420_luma`): the same pixels the
        split's decode hands the scorers."""
        return self._checked_read(indices, size, True)

    def _checked_read(self, indices: Sequence[int], size: Size | None, i420: bool) -> np.ndarray:
        self._unchanged("before decoding")
        out = self._read(indices, size, i420)
        self._unchanged("after decoding")
        return out

    def _read(self, indices: Sequence[int], size: Size | None, i420: bool = False) -> np.ndarray:
        indices = [int(i) for i in indices]
        if not indices:
            w, h = size or (self.info.width, self.info.height)
            return np.zeros((0, h, w, 3), np.uint8)
        # PyAV's one forward pass over the requested span, seeking only across long gaps, costs less than
        # decord's seek per index (the pipeline benchmark's 36 clips x 16 frames at 640 px: 3.8-4.4 vs 5.5-6.2
        # CPU-s); decord reads only when asked for (backend "decord"), and never the scorers' I420 frames
        if self._decord is not None and not i420:
            vr = self._decord_reader(size)
            return _get_batches(vr, [min(max(i, 0), len(vr) - 1) for i in indices])
        return self._read_pyav(indices, size, i420)

    def _read_pyav(self, indices: list[int], size: Size | None, i420: bool = False) -> np.ndarray:
        """Decode forward, seeking only across long gaps; frame index = position in decode order (after a
        seek, the frame's number comes from its timestamp through the timeline)."""

        wanted = sorted(set(indices))
        size = stored_size(size, self.info.rotation)
        convert = _converter(size, "yuv420p", I420_INTERPOLATION) if i420 else _converter(size, "rgb24")
        got: dict[int, np.ndarray] = {}
        with _open_container(self.path) as container:
            stream = container.streams.video[0]
            _threads(stream, self.threads)
            timeline = self._stream_timeline(stream) if stream.time_base else None
            start_pts = stream.start_time or 0
            pos = -1  # index of the last decoded frame
            last = None  # the last picture, for repeats
            frames = decoded_frames(container, stream)
            for target in wanted:
                if target - pos > 250 and timeline is not None:
                    ts = timeline.pts_of(target)
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
                        pos = timeline.index_of(frame.pts)
                    else:
                        pos += 1
                    if pos >= target:
                        got[target] = convert(frame)
                        break
                if target not in got:
                    break
        if not got:
            raise VideoError(f"none of the requested frames decode: {self.path}", kind="decode_error")
        last = got[max(got)]
        out = [got.get(i, got.get(min(got, key=lambda k: abs(k - i)), last)) for i in indices]
        return np.stack(out) if i420 else _orient(np.stack(out), self.info.rotation)
