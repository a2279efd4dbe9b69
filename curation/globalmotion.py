"""Global camera motion between two small luma thumbnails: translation plus zoom about the centre, fitted
by inverse-compositional Lucas-Kanade (Baker & Matthews 2004). Cheap enough to run on every frame of the
split's decode (a 64x36 thumbnail, two iterations, ~0.1 ms), and what tells camera motion from a
transition: inside a shot, even in a pan or a zoom, the warped previous frame explains the next one down
to codec noise; during a dissolve, wipe or fade new content appears that no warp explains."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

THUMB_WIDTH = 64
BLUR = 2.0  # Gaussian sigma in thumbnail pixels: hides codec noise and aliasing of fine texture, widens
#            the range of shifts one linearisation covers
MARGIN = 3  # border pixels left out of every comparison (reflected pixels after a warp)


def shrink(gray: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """`gray` resized (area average) to `width`, the frame's aspect kept (at least 16 rows), uint8."""
    h, w = gray.shape[:2]
    return cv2.resize(gray, (width, max(16, int(round(width * h / w)))), interpolation=cv2.INTER_AREA)


def thumbnail(gray: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """A blurred float32 luma thumbnail `width` wide (`gray` may already be that small, see shrink)."""
    small = gray if gray.shape[1] == width else shrink(gray, width)
    return cv2.GaussianBlur(small.astype(np.float32), (0, 0), BLUR)


@dataclass(frozen=True)
class Motion:
    """Content motion from one frame to the next: the picture at x (relative to the centre) moves to
    scale * x + (dx, dy), in thumbnail pixels."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0

    def matrix(self, centre: tuple[float, float]) -> np.ndarray:
        """3x3 homogeneous matrix of the move in image coordinates."""
        cx, cy = centre
        s = self.scale
        return np.array([[s, 0, cx - s * cx + self.dx], [0, s, cy - s * cy + self.dy], [0, 0, 1]], np.float64)

    def path(self, image: np.ndarray, n: int, backward: bool = False) -> np.ndarray:
        """(n, h, w): `image` as it looks after 1, 2 .. n frames of this motion, or (backward) n .. 1
        frames before, borders reflected."""
        h, w = image.shape[:2]
        step = self.matrix(((w - 1) / 2, (h - 1) / 2))
        if backward:
            step = np.linalg.inv(step)
        frames, m = [], np.eye(3)
        for _ in range(n):
            m = step @ m
            frames.append(cv2.warpAffine(image, m[:2].astype(np.float32), (w, h), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REFLECT))
        return np.stack(frames[::-1] if backward else frames)


@functools.lru_cache(maxsize=8)
def _offsets(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the inner pixels relative to the centre, flattened."""
    yy, xx = np.mgrid[MARGIN:h - MARGIN, MARGIN:w - MARGIN].astype(np.float32)
    return (xx - (w - 1) / 2).ravel(), (yy - (h - 1) / 2).ravel()


def _inverse3(m: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 matrix by its adjugate (numpy.linalg's call overhead is most of the cost here)."""
    a, b, c, d, e, f, g, h, i = m.ravel().tolist()
    co = np.array([[e * i - f * h, c * h - b * i, b * f - c * e], [f * g - d * i, a * i - c * g, c * d - a * f],
                   [d * h - e * g, b * g - a * h, a * e - b * d]])
    return co / (a * co[0, 0] + b * co[1, 0] + c * co[2, 0])


class Template:
    """A thumbnail as the reference of an alignment. Its steepest-descent images and the inverse of their
    Gauss-Newton Hessian over the inner pixels are computed on the first Gauss-Newton step: a frame whose
    motion the last frame's predicts needs none."""

    def __init__(self, image: np.ndarray):
        self.image = image
        h, w = image.shape
        self.centre = ((w - 1) / 2, (h - 1) / 2)
        self.inner = (slice(MARGIN, h - MARGIN), slice(MARGIN, w - MARGIN))
        self.values = np.ascontiguousarray(image[self.inner])

    @functools.cached_property
    def _descent(self) -> tuple[np.ndarray, np.ndarray]:
        """(SD^T, H^-1 SD^T), each (3, n)."""
        h, w = self.image.shape
        xx, yy = _offsets(h, w)
        gx = cv2.Sobel(self.image, cv2.CV_32F, 1, 0, ksize=3)[self.inner].ravel() * np.float32(1 / 8)
        gy = cv2.Sobel(self.image, cv2.CV_32F, 0, 1, ksize=3)[self.inner].ravel() * np.float32(1 / 8)
        steepest = np.stack((gx, gy, gx * xx + gy * yy))
        # Gauss-Newton Hessian, damped so that a flat frame (a fade's black) stays at rest
        hess = (steepest @ steepest.T).astype(np.float64) + np.diag([1e-2, 1e-2, 1e2])
        return steepest, _inverse3(hess).astype(np.float32) @ steepest

    def _warped(self, image: np.ndarray, dx: float, dy: float, s: float) -> np.ndarray:
        """`image` sampled where the motion (dx, dy, s) carries each inner template pixel, minus the template."""
        cx, cy = self.centre
        m = np.float32([[s, 0, cx - s * cx + dx], [0, s, cy - s * cy + dy]])
        warped = cv2.warpAffine(image, m, image.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REFLECT)
        return cv2.subtract(warped[self.inner], self.values)

    def residual(self, image: np.ndarray, motion: Motion) -> float:
        """Mean absolute difference (8-bit levels) of the inner pixels once `motion` is applied."""
        r = self._warped(image, motion.dx, motion.dy, motion.scale)
        return cv2.norm(r, cv2.NORM_L1) / max(r.size, 1)

    def align(self, image: np.ndarray, start: Motion = Motion(), iterations: int = 2) -> tuple[Motion, float]:
        """The motion that carries this template onto `image`, refined from `start` by `iterations`
        Gauss-Newton steps, and the mean absolute residual (8-bit levels) of the inner pixels after the
        last step (linearised: one warp a step)."""
        dx, dy, s = start.dx, start.dy, start.scale
        steepest, descent = self._descent
        residual = np.zeros(0, np.float32)
        for _ in range(iterations):
            residual = self._warped(image, dx, dy, s).ravel()
            step = descent @ residual
            residual = residual - step @ steepest  # what the step leaves, to first order
            ddx, ddy, dds = (float(v) for v in step)
            # compose with the inverse of the increment: x -> s * (x - t') / (1 + ds') + t
            s1 = 1.0 + dds
            dx, dy, s = dx - s * ddx / s1, dy - s * ddy / s1, s / s1
            if not (0.5 < s < 2.0 and abs(dx) < image.shape[1] and abs(dy) < image.shape[0]):
                return Motion(), self.residual(image, Motion())
        return Motion(dx, dy, s), cv2.norm(residual, cv2.NORM_L1) / max(residual.size, 1)
