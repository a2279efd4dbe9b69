"""Clarity: blur lowers it clearly; the same picture scores alike at two resolutions."""

import cv2

from curation.synth import Shot
from filter_media import frames_for, reencode
from filters.clarity import ClarityScorer


def test_blur_lowers_clarity(vids):
    scorer = ClarityScorer()
    sharp = scorer.score(frames_for(scorer, vids("sharp.mp4", [Shot("astronaut", 30, pan=(1, 0))])))
    soft = scorer.score(frames_for(scorer, vids("soft.mp4", [Shot("astronaut", 30, pan=(1, 0), blur=2.0)])))
    assert soft["clarity"] < 0.3 * sharp["clarity"], (sharp, soft)


def test_clarity_comparable_across_resolutions(vids, tmp_path):
    """A 640x360 video and its 384x216 rendition score within 25 %; the raw Laplacian variance at the
    native sizes would differ far more (so the fixed analysis size is doing the work)."""
    scorer = ClarityScorer()
    big = vids("coffee_640.mp4", [Shot("coffee", 24, pan=(0.5, 0))], size=(640, 360))
    small = reencode(big, tmp_path / "coffee_384.mp4", size=(384, 216))
    a, b = (frames_for(scorer, t) for t in (big, small))
    ca, cb = scorer.score(a)["clarity"], scorer.score(b)["clarity"]
    assert 0.8 < ca / cb < 1.25, (ca, cb)
    raw = [cv2.Laplacian(c.gray(None)[0], cv2.CV_32F).var() for c in (a, b)]
    assert abs(raw[0] / raw[1] - 1) > 2 * abs(ca / cb - 1), (raw, ca, cb)
