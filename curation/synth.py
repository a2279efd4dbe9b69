"""Videos with exact ground truth, made from real photographs bundled in scikit-image: hard cuts at
known frames, camera moves of a known number of pixels per frame, blur, burned-in text and letterbox
bars, and edits with every kind of transition (dissolves, fades through black and white, linear and
circle wipes, slides, low-contrast cuts) and camera flashes (`make_edit`, `transition_edit`). Used by
`videocurate demo`, the tests and the benchmarks."""

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
    grain: float = 0.0  # sensor noise: Gaussian, this many grey levels, new every frame (not on bars or text)


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
        if shot.grain:
            noise = rng.normal(0.0, shot.grain, frame.shape).astype(np.float32)
            frame = np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)
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
            # one thread: x264's threaded encode gave 2-3 different bitstreams for the same frames across runs
            # (decoded pixels up to 7 levels apart), so fixtures built on it were not reproducible
            stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
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


# --- Edits with every kind of transition -------------------------------------------------------------
# A transition of n frames overlaps the outgoing and incoming shots, as an editor's (or ffmpeg xfade's)
# does: the outgoing shot's last n frames (still moving) mix with the incoming shot's first n frames. All n
# frames are mixed, none pure: the span is [first, first + n - 1] and the cut (the first frame of the new
# shot) is first + n. A hard cut has n = 0.
JOINS = ("cut", "dissolve", "fade_black", "fade_white", "wipe", "circle", "slide")


@dataclass(frozen=True)
class Join:
    """How one shot passes to the next: `kind` (one of JOINS) over `frames` mixed frames (0 for a cut)."""

    kind: str
    frames: int = 0

    def __post_init__(self):
        if self.kind not in JOINS:
            raise ValueError(f"unknown join '{self.kind}'; choose from {JOINS}")
        if (self.kind == "cut") != (self.frames == 0) or self.frames < 0:
            raise ValueError(f"join '{self.kind}' with {self.frames} frames: a cut has 0, a transition >= 1")


@dataclass
class EditTruth:
    """Ground truth of an edit: `cuts` (first frame of each new shot), `transitions` (first, last, kind)
    of every mixed span, `flashes` (first, last) frames of each flash inside a shot, `kinds` the join
    kind of each cut (CROP_CUT for the cut between two crops of one photo)."""

    path: str
    fps: float
    frames: int
    cuts: list[int]
    transitions: list[tuple[int, int, str]]
    flashes: list[tuple[int, int]]
    kinds: list[str] = field(default_factory=list)


def mix_frames(a: list[np.ndarray], b: list[np.ndarray], kind: str) -> list[np.ndarray]:
    """The mixed frames of a transition from `a` (the outgoing shot's last n frames) to `b` (the incoming
    shot's first n frames): progress p = (k + 1) / (n + 1) at frame k, so no frame is pure A or pure B.
    A fade spends its first n // 2 frames going to the flat colour (the last of them flat), the rest
    coming out of it."""
    n = len(a)
    h, w = a[0].shape[:2]
    out = []
    for k in range(n):
        p = (k + 1) / (n + 1)
        fa, fb = a[k].astype(np.float32), b[k].astype(np.float32)
        if kind == "dissolve":
            f = (1 - p) * fa + p * fb
        elif kind in ("fade_black", "fade_white"):
            level = 0.0 if kind == "fade_black" else 255.0
            half = n // 2
            if k < half:
                q = (k + 1) / half
                f = (1 - q) * fa + q * level
            else:
                q = (k - half + 1) / (n - half + 1)
                f = (1 - q) * level + q * fb
        elif kind == "wipe":  # left to right: B shows left of a vertical edge that moves right
            f = fa.copy()
            edge = int(round(p * w))
            f[:, :edge] = fb[:, :edge]
        elif kind == "circle":  # B inside a circle that opens from the centre
            yy, xx = np.mgrid[0:h, 0:w]
            inside = np.hypot(xx - w / 2, yy - h / 2) < p * np.hypot(w / 2, h / 2)
            f = np.where(inside[..., None], fb, fa)
        elif kind == "slide":  # both pictures move left together: B pushes A out of the frame
            off = int(round(p * w))
            f = np.concatenate([fa[:, off:], fb[:, :off]], axis=1)
        else:
            raise ValueError(f"mix_frames: unknown kind '{kind}'")
        out.append(np.clip(f + 0.5, 0, 255).astype(np.uint8))
    return out


def flash(frame: np.ndarray, gain: float = 1.6, lift: float = 90.0) -> np.ndarray:
    """A camera flash: the frame brightened (×`gain` + `lift`, clipped)."""
    return np.clip(frame.astype(np.float32) * gain + lift, 0, 255).astype(np.uint8)


def make_edit(path: str | os.PathLike, shots: list[Shot], joins: list[Join],
              flashes: Iterable[tuple[int, int, int]] = (), size: tuple[int, int] = (320, 180),
              fps: float = 24.0, **encode) -> EditTruth:
    """Render `shots` joined by `joins` (len(shots) - 1 of them) into one file. `flashes`: (shot index,
    frame offset inside the shot's own frames, 1 or 2 frames). Each shot must be longer than the
    transitions at both of its ends plus its flashes."""
    if len(joins) != len(shots) - 1:
        raise ValueError(f"make_edit: {len(shots)} shots need {len(shots) - 1} joins, got {len(joins)}")
    rendered = [list(render_shot(s, size)) for s in shots]
    lead = [0] + [j.frames for j in joins]  # frames of each shot that its incoming transition consumes
    tail = [j.frames for j in joins] + [0]
    for i, (r, a, b) in enumerate(zip(rendered, lead, tail)):
        if len(r) <= a + b:
            raise ValueError(f"make_edit: shot {i} has {len(r)} frames, its transitions take {a + b}")
    wanted: set[tuple[int, int]] = set()
    for si, offset, length in flashes:
        if not (lead[si] < offset and offset + length <= len(rendered[si]) - tail[si]):
            raise ValueError(f"make_edit: flash at frame {offset} of shot {si} is not inside its pure part")
        wanted.update((si, offset + k) for k in range(length))
    frames: list[np.ndarray] = []
    cuts, spans, flash_spans = [], [], []
    for i, r in enumerate(rendered):
        if i:
            join = joins[i - 1]
            if join.frames:
                spans.append((len(frames), len(frames) + join.frames - 1, join.kind))
                frames += mix_frames(rendered[i - 1][-join.frames:], r[:join.frames], join.kind)
            cuts.append(len(frames))
        for k in range(lead[i], len(r) - tail[i]):
            if (i, k) in wanted:
                if (i, k - 1) not in wanted:
                    flash_spans.append((len(frames), len(frames)))
                flash_spans[-1] = (flash_spans[-1][0], len(frames))
            frames.append(flash(r[k]) if (i, k) in wanted else r[k])
    n = write_video(path, frames, fps=fps, **encode)
    return EditTruth(os.fspath(path), fps, n, cuts, spans, flash_spans, [j.kind for j in joins])


# The transitions each edit of `transition_set` holds once (in an order that depends on the seed):
# dissolves of 0.33, 0.67 and 1.2 s, fades through black and white, a linear wipe, a circle wipe, a
# slide, two hard cuts and a low-difference hard cut between two crops of one picture.
EDIT_JOINS = (Join("dissolve", 8), Join("dissolve", 16), Join("dissolve", 29), Join("fade_black", 16),
              Join("fade_white", 16), Join("wipe", 12), Join("circle", 14), Join("slide", 12), Join("cut"),
              Join("cut"), Join("cut"))
EDIT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "hubble_deep_field", "retina",
               "immunohistochemistry", "colorwheel", "camera", "cat", "page")
CROP_CUT = "crop_cut"  # the low-difference cut: marks the join between two crops of one photo


def crops(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping crops of one photo (the second shifted by a fifth of the picture and a little
    tighter): a hard cut between them changes little of the colour and brightness."""
    img = photo(name)
    h, w = img.shape[:2]
    ch, cw = int(h * 0.7), int(w * 0.7)
    dy, dx = h // 5, w // 5
    return img[:ch, :cw], img[dy:dy + int(ch * 0.85), dx:dx + int(cw * 0.85)]


def transition_edit(path: str | os.PathLike, seed: int = 0, size: tuple[int, int] = (320, 180),
                    fps: float = 24.0) -> EditTruth:
    """A ~30 s edit of real photos with exact truth: every join of EDIT_JOINS once (the last cut between
    two crops of one photo), a 1-frame and a 2-frame flash inside shots, and camera motion in every
    shot (pans up to 3 px a frame, zooms in and out). `seed` shuffles the joins, photos and moves."""
    rng = np.random.default_rng(seed)
    joins = [EDIT_JOINS[i] for i in rng.permutation(len(EDIT_JOINS))]
    names = [EDIT_PHOTOS[i] for i in rng.permutation(len(EDIT_PHOTOS))]
    low_cut = next(i for i, j in enumerate(joins) if j.kind == "cut")  # this cut joins two crops
    moves = [dict(pan=(3.0, 0.0)), dict(pan=(-2.0, 1.0)), dict(zoom=1.008), dict(zoom=0.994),
             dict(pan=(0.0, -1.5)), dict(pan=(1.0, 0.5), zoom=1.004), dict(jitter=1.5)]
    shots, k = [], 0
    for i in range(len(joins) + 1):
        move = moves[int(rng.integers(len(moves)))]
        ends = (joins[i - 1].frames if i else 0) + (joins[i].frames if i < len(joins) else 0)
        frames = int(rng.integers(48, 66)) + ends
        if i == low_cut:
            first, second = crops(names[k % len(names)])
            shots.append(Shot(first, frames, seed=seed * 100 + i, **move))
        elif i == low_cut + 1:
            shots.append(Shot(second, frames, seed=seed * 100 + i, **move))
            k += 1
        else:
            shots.append(Shot(names[k % len(names)], frames, seed=seed * 100 + i, **move))
            k += 1
    flash_shots = rng.choice(np.arange(1, len(shots) - 1), 2, replace=False)
    flashes = [(int(s), (joins[s - 1].frames + 20), n) for s, n in zip(flash_shots, (1, 2))]
    truth = make_edit(path, shots, joins, flashes, size=size, fps=fps)
    truth.kinds[low_cut] = CROP_CUT
    return truth
