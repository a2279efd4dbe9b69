"""Motion and camera movement: dense optical flow between each sampled frame and the next, a robust
global similarity model (translation, scale, rotation) per pair, a resolution- and frame-rate-free
motion speed, and one of HunyuanVideo's 14 camera-movement labels when the evidence is clear.

Label conventions (film usage: the camera moves, the content moves the other way):
- pan left / pan right: horizontal camera move (content flows right / left);
- tilt up / tilt down: vertical camera move (content flows down / up). A camera that pitches and one
  that rises (pedestal) give the same uniform image motion on a distant or flat scene, so vertical
  moves carry one label, chosen by `vertical_as` ("tilt", default, or "pan" for "pan up/down");
- zoom in / zoom out: the picture scales up / down about the centre;
- tilt left / tilt right: the camera rolls counter-clockwise / clockwise about its optical axis
  (the content turns clockwise / counter-clockwise);
- static shot: global motion below `static_speed`; handheld shot: translation that jitters back and
  forth (per-pair spread larger than its mean) above `handheld_speed`;
- around left / around right (orbiting a subject) are never emitted: without depth an orbit cannot be
  told from a pan that follows a moving subject, so such clips get a pan label or none."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import pyarrow as pa

from curation.frames import ClipFrames, FrameRequest
from curation.scoring import Scorer
from curation.stage import Count, Fraction, NonNegative, Side, params

CAMERA_CLASSES = ("zoom in", "zoom out", "pan up", "pan down", "pan left", "pan right", "tilt up",
                  "tilt down", "tilt left", "tilt right", "around left", "around right", "static shot",
                  "handheld shot")


@params
class MotionParams:
    """frames: sampled pairs per clip. flow_side: longer side (px) of the frames the flow runs on.
    static_speed: below this global speed (fraction of the frame diagonal per second) a shot is static.
    handheld_speed: jitter (spread of per-pair camera translation, same unit) above which a shot whose
    mean translation is smaller than its spread is handheld. min_confidence: below it `camera_motion`
    is null (the confidence is still written). vertical_as: "tilt" or "pan" for vertical moves."""

    frames: Count = 8
    flow_side: Side = 256
    static_speed: NonNegative = 0.01
    handheld_speed: NonNegative = 0.02
    min_confidence: Fraction = 0.6
    vertical_as: Literal["tilt", "pan"] = "tilt"


@dataclass(frozen=True)
class PairMotion:
    """Global motion of one frame pair in analysis pixels: content translation (tx, ty), log scale,
    rotation (radians, positive = content turns clockwise on screen), median residual flow and mean
    flow magnitude over the whole frame."""

    tx: float
    ty: float
    log_scale: float
    angle: float
    residual: float
    magnitude: float


def dense_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H,W,2) flow from gray frame a to b. DIS is fast at small sizes and follows large pans well."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(a, b, None)


def fit_similarity(flow: np.ndarray, step: int = 4, margin: float = 0.06) -> PairMotion:
    """Robust least-squares fit of flow = (s·R − I)·p + t over a grid of points p (centred coordinates),
    re-fitted twice on the points within 3× the median residual (moving objects become outliers)."""
    h, w = flow.shape[:2]
    my, mx = int(h * margin), int(w * margin)  # flow at the borders is unreliable (no match outside)
    ys, xs = np.mgrid[my:h - my:step, mx:w - mx:step]
    u = flow[ys, xs, 0].ravel().astype(np.float64)
    v = flow[ys, xs, 1].ravel().astype(np.float64)
    x = xs.ravel() - (w - 1) / 2.0
    y = ys.ravel() - (h - 1) / 2.0
    # Unknowns (a, b, tx, ty): u = a·x − b·y + tx ; v = b·x + a·y + ty, with a = s·cosθ − 1, b = s·sinθ.
    # The least-squares solution from its 4x4 normal equations, whose terms are sums over the kept points
    # (the same answer as lstsq on the 2N x 4 system, to rounding, in a fifth of the time).
    terms = np.stack([x * x + y * y, x, y, np.ones_like(x), x * u + y * v, x * v - y * u, u, v])
    keep = np.ones(len(x), bool)
    for _ in range(3):
        r2, sx, sy, n, xu, xv, su, sv = terms[:, keep].sum(axis=1)
        normal = np.array([[r2, 0, sx, sy], [0, r2, -sy, sx], [sx, -sy, n, 0], [sy, sx, 0, n]])
        a, b, tx, ty = np.linalg.lstsq(normal, [xu, xv, su, sv], rcond=None)[0]
        res = np.hypot(a * x - b * y + tx - u, b * x + a * y + ty - v)
        keep = res <= max(3.0 * float(np.median(res)), 0.25)
    return PairMotion(tx=float(tx), ty=float(ty), log_scale=float(math.log(math.hypot(1 + a, b))),
                      angle=float(math.atan2(b, 1 + a)), residual=float(np.median(res)),
                      magnitude=float(np.mean(np.hypot(flow[..., 0], flow[..., 1]))))


@dataclass(frozen=True)
class CameraCall:
    label: str
    confidence: float


class MotionScorer(Scorer):
    """Columns: `motion` (mean optical-flow magnitude as a fraction of the frame diagonal per second),
    `camera_motion` (label or null), `camera_motion_confidence`, and the fitted global motion:
    `camera_dx`/`camera_dy` (camera move in native px per frame, right/down positive — the content
    moves the other way), `camera_zoom` (scale per frame, > 1 zooms in), `camera_rotation` (camera roll
    in degrees per frame, positive clockwise), `camera_jitter` (spread of per-pair translation, native
    px per frame)."""

    name = "motion"
    version = "1"
    Params = MotionParams

    def output_fields(self) -> list[pa.Field]:
        f32 = pa.float32()
        return [pa.field("motion", f32), pa.field("camera_motion", pa.string()),
                pa.field("camera_motion_confidence", f32), pa.field("camera_dx", f32),
                pa.field("camera_dy", f32), pa.field("camera_zoom", f32), pa.field("camera_rotation", f32),
                pa.field("camera_jitter", f32)]

    def request(self) -> FrameRequest:
        return FrameRequest(frames=self.params.frames, max_side=self.params.flow_side, pairs=True)

    def score(self, clip: ClipFrames) -> dict:
        side = self.params.flow_side
        a, b = clip.gray(side), clip.gray(side, next=True)
        pairs = [fit_similarity(dense_flow(x, y)) for x, y in zip(a, b)]
        h, w = a.shape[1:]
        call = classify(pairs, diag=math.hypot(w, h), fps=clip.fps, p=self.params)
        native = clip.scale(side)
        t = np.array([[p.tx, p.ty] for p in pairs])
        mean_t = np.median(t, axis=0)
        jitter = float(np.sqrt(np.mean(np.sum((t - t.mean(0)) ** 2, axis=1))))
        return {
            "motion": float(np.mean([p.magnitude for p in pairs]) / math.hypot(w, h) * clip.fps),
            "camera_motion": call.label if call.confidence >= self.params.min_confidence else None,
            "camera_motion_confidence": call.confidence,
            "camera_dx": float(-mean_t[0] * native), "camera_dy": float(-mean_t[1] * native),
            "camera_zoom": float(math.exp(np.median([p.log_scale for p in pairs]))),
            "camera_rotation": float(-math.degrees(np.median([p.angle for p in pairs]))),
            "camera_jitter": jitter * native,
        }


def _components(p: PairMotion, radius: float) -> dict[str, float]:
    """Signed strength of each kind of camera move, all in pixels of motion at the frame corner."""
    return {"x": -p.tx, "y": -p.ty, "zoom": p.log_scale * radius, "roll": -p.angle * radius}


def _label(kind: str, sign: float, vertical_as: str) -> str:
    if kind == "x":
        return "pan right" if sign > 0 else "pan left"
    if kind == "y":
        return f"{vertical_as} down" if sign > 0 else f"{vertical_as} up"
    if kind == "zoom":
        return "zoom in" if sign > 0 else "zoom out"
    return "tilt right" if sign > 0 else "tilt left"


def _dominant(comp: dict[str, float]) -> tuple[str, float]:
    kind = max(comp, key=lambda k: abs(comp[k]))
    return kind, abs(comp[kind]) / (sum(abs(v) for v in comp.values()) + 1e-9)


def classify(pairs: list[PairMotion], diag: float, fps: float, p: MotionParams) -> CameraCall:
    """One label for the clip with a 0..1 confidence (heuristic: dominance × agreement × smoothness)."""
    radius = diag / 2
    per_pair = [_components(x, radius) for x in pairs]
    mean = {k: float(np.median([c[k] for c in per_pair])) for k in per_pair[0]}
    to_speed = fps / diag  # analysis px per frame → fraction of diagonal per second
    t = np.array([[c["x"], c["y"]] for c in per_pair])
    spread = float(np.sqrt(np.mean(np.sum((t - t.mean(0)) ** 2, axis=1)))) * to_speed
    drift = float(np.hypot(*t.mean(0))) * to_speed
    speeds = [max(abs(v) for v in c.values()) * to_speed for c in per_pair]
    speed = max(abs(v) for v in mean.values()) * to_speed
    if spread >= p.handheld_speed and drift < spread:
        # Jitter dominates the drift: the more it exceeds the threshold and the drift, the surer. With
        # few pairs the mean of pure jitter is itself noisy (drift/spread ~ 1/sqrt(n)), hence the soft
        # sqrt(1 - r²) rather than a linear fall-off.
        strength = min(1.0, spread / (2 * p.handheld_speed))
        return CameraCall("handheld shot", float(strength * (1 - (drift / spread) ** 2) ** 0.5))
    if speed < p.static_speed and spread < p.handheld_speed:
        agree = float(np.mean([s < p.static_speed for s in speeds]))
        return CameraCall("static shot", agree * (1 - (speed / p.static_speed) ** 2))
    kind, dominance = _dominant(mean)
    label = _label(kind, mean[kind], p.vertical_as)
    agree = float(np.mean([_label(k, c[k], p.vertical_as) == label
                           for c in per_pair for k in [_dominant(c)[0]]]))
    smooth = drift / (drift + spread) if kind in ("x", "y") else 1.0
    return CameraCall(label, float(dominance * agree * smooth))
