"""Videos with exact ground truth, made from real photographs bundled in scikit-image: hard cuts at
known frames, camera moves of a known number of pixels per frame, blur, burned-in text and letterbox
bars. Used by `videocurate demo`, the tests and the benchmarks."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

# Photos that ship inside the scikit-image wheel (no download at run time).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "hubble_deep_field", "camera",
          "immunohistochemistry", "retina", "cat", "page", "text", "clock", "coins", "colorwheel", "horse",
          "moon", "brick", "grass", "gravel", "cell")


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as RGB uint8."""
    from skimage import data

    img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


@dataclass
class Shot:
    """One shot: a virtual camera over `image`.

    `pan` is the camera's move in output pixels per frame (dx, dy): the camera moving right makes the
    content move left. `zoom` is the per-frame scale factor (>1 zooms in). `rotate` is degrees per
    frame (positive: the content turns clockwise on screen, i.e. the camera rolls counter-clockwise).
    `jitter` adds random shake of that many pixels (a handheld camera)."""

    image: str | np.ndarray
    frames: int
    pan: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0
    rotate: float = 0.0
    jitter: float = 0.0
    blur: float = 0.0  # Gaussian sigma in output pixels
    text: str | None = None
    text_box: tuple[int, int, int, int] | None = None  # filled in when rendered: x0, y0, x1, y1
    letterbox: tuple[int, int] = (0, 0)  # black bars: (left/right px, top/bottom px)
    seed: int = 0


@dataclass
class Truth:
    """Ground truth of a synthetic video."""

    path: str
    fps: float
    size: tuple[int, int]
    frame_count: int
    cuts: list[int]  # first frame of every shot after the first
    shots: list[tuple[int, int]] = field(default_factory=list)  # [start, end) per shot
    text_boxes: list[tuple[int, int, int, int] | None] = field(default_factory=list)


def _source(image: str | np.ndarray) -> np.ndarray:
    return photo(image) if isinstance(image, str) else image


def render_shot(shot: Shot, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Frames of one shot at `size` (w, h), RGB uint8."""
    w, h = size
    lx, ly = shot.letterbox
    iw, ih = w - 2 * lx, h - 2 * ly
    src = _source(shot.image)
    # Scale the photo so the whole camera path stays inside it (no black edges from the warp).
    travel_x = abs(shot.pan[0]) * shot.frames + 2 * shot.jitter + 4
    travel_y = abs(shot.pan[1]) * shot.frames + 2 * shot.jitter + 4
    need = max((iw + travel_x) / src.shape[1], (ih + travel_y) / src.shape[0]) * 1.05
    if shot.rotate:
        need *= 1.0 + abs(shot.rotate) * shot.frames / 45
    base = cv2.resize(src, None, fx=need, fy=need, interpolation=cv2.INTER_CUBIC) if need > 1 else src
    bh, bw = base.shape[:2]
    rng = np.random.default_rng(shot.seed)
    start = np.array([bw / 2 - shot.pan[0] * shot.frames / 2, bh / 2 - shot.pan[1] * shot.frames / 2])
    for t in range(shot.frames):
        centre = start + np.array(shot.pan) * t
        if shot.jitter:
            centre = centre + rng.uniform(-shot.jitter, shot.jitter, 2)
        scale = shot.zoom**t
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), -shot.rotate * t, scale)
        m[:, 2] += np.array([iw / 2, ih / 2]) - centre
        frame = cv2.warpAffine(base, m, (iw, ih), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if shot.blur:
            frame = cv2.GaussianBlur(frame, (0, 0), shot.blur)
        if lx or ly:
            frame = cv2.copyMakeBorder(frame, ly, ly, lx, lx, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        if shot.text:
            shot.text_box = draw_text(frame, shot.text)
        yield frame


def draw_text(frame: np.ndarray, text: str, scale: float | None = None) -> tuple[int, int, int, int]:
    """Burn white text with a dark outline into the lower part of `frame`; return its box."""
    h, w = frame.shape[:2]
    scale = scale or max(0.5, w / 640)
    thick = max(1, int(round(2 * scale)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x = (w - tw) // 2
    y = int(h * 0.88)
    cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 3, cv2.LINE_AA)
    cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return x, y - th, x + tw, y + base


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 24.0,
                codec: str = "libx264", crf: int = 18, pix_fmt: str = "yuv420p",
                rotation: int = 0, bit_rate: int | None = None) -> int:
    """Encode RGB frames with PyAV. `rotation` stores a display-matrix rotation (clockwise degrees)."""
    from fractions import Fraction

    import av

    path = os.fspath(path)
    n = 0
    with av.open(path, mode="w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.pix_fmt = pix_fmt
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        if bit_rate:
            stream.bit_rate = bit_rate
        for frame in frames:
            if n == 0:
                stream.height, stream.width = frame.shape[:2]
                if rotation:
                    stream.set_display_rotation(-rotation)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                out.mux(packet)
            n += 1
        for packet in stream.encode():
            out.mux(packet)
    return n


def make_video(path: str | os.PathLike, shots: list[Shot], size: tuple[int, int] = (320, 180),
               fps: float = 24.0, **encode) -> Truth:
    """Render `shots` back to back (hard cuts) into one file and return its ground truth."""
    bounds, start = [], 0
    for s in shots:
        bounds.append((start, start + s.frames))
        start += s.frames

    def frames() -> Iterator[np.ndarray]:
        for s in shots:
            yield from render_shot(s, size)

    n = write_video(path, frames(), fps=fps, **encode)
    return Truth(path=os.fspath(path), fps=fps, size=size, frame_count=n, cuts=[b[0] for b in bounds[1:]],
                 shots=bounds, text_boxes=[s.text_box for s in shots])


def demo_set(folder: str | os.PathLike, fps: float = 24.0) -> list[Truth]:
    """A few sample videos with known cuts, camera moves and one blurred shot (for `videocurate demo`)."""
    os.makedirs(folder, exist_ok=True)
    specs = {
        "city_of_cats.mp4": [Shot("chelsea", 60, pan=(2, 0)), Shot("coffee", 72, zoom=1.006),
                             Shot("astronaut", 54), Shot("rocket", 66, pan=(0, -1.5))],
        "space_walk.mp4": [Shot("hubble_deep_field", 80, pan=(-1.5, 0)), Shot("astronaut", 70, blur=3.0),
                           Shot("motorcycle", 64, jitter=2.0, seed=3)],
        "lecture.mp4": [Shot("page", 90, text="Chapter 1: Curating video data"), Shot("camera", 60, zoom=0.995)],
    }
    return [make_video(os.path.join(folder, name), shots, size=(456, 256), fps=fps) for name, shots in specs.items()]


def edit_with_transitions(path: str, size=(320, 180), fps: float = 24.0,
                          photos: tuple[str, str, str, str] = ("coffee", "chelsea", "rocket", "astronaut")) -> dict:
    """An edit of real photos with exact truth: a hard cut at 60, a dissolve over frames 120-135 (the
    next shot pure from 136), a fade through black over 200-215 (the next shot at full brightness from
    215), and a two-frame flash at 260-261 inside the last shot. Returns the truth."""
    def shot(name, n, pan):
        return list(render_shot(Shot(name, n, pan=pan), size))

    a, b, c, d = (shot(photos[0], 100, (1, 0)), shot(photos[1], 100, (-1, 0)), shot(photos[2], 100, (0, 1)),
                  shot(photos[3], 120, (1, 0.5)))
    frames = a[:60] + b[:60]
    frames += [((1 - (i + 1) / 17) * b[60 + i] + (i + 1) / 17 * c[i]).astype(np.uint8) for i in range(16)]
    frames += c[16:80]
    frames += [(c[80 + i] * (1 - (i + 1) / 8)).astype(np.uint8) for i in range(8)]
    frames += [(d[i] * ((i + 1) / 8)).astype(np.uint8) for i in range(8)]
    frames += d[8:100]
    for k in (260, 261):
        frames[k] = np.clip(frames[k].astype(np.int16) + 120, 0, 255).astype(np.uint8)
    write_video(path, frames, fps=fps)
    return {"path": path, "frames": len(frames), "cuts": [60, 136, 215], "flash": (260, 261),
            "transitions": [(120, 135, "gradual"), (200, 214, "fade")]}
