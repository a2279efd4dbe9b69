"""Letterbox / pillarbox bars: the content box is found to ±2 native pixels."""

import pytest

from curation.synth import Shot
from filter_media import frames_for
from filters.borders import BorderScorer


@pytest.mark.parametrize(("photo", "bars", "size"), [
    ("astronaut", (0, 20), (320, 180)),  # letterbox
    ("coffee", (40, 0), (320, 180)),  # pillarbox
    ("rocket", (30, 12), (256, 144)),  # both
    ("hubble_deep_field", (0, 24), (640, 360)),  # a mostly dark picture
    ("motorcycle", (0, 45), (1280, 720)),  # above the analysis size: box scaled back to native pixels
])
def test_content_box_within_two_pixels(vids, photo, bars, size):
    lx, ly = bars
    truth = vids(f"bars_{photo}_{lx}_{ly}.mp4", [Shot(photo, 16, pan=(1.0, 0), letterbox=bars)], size=size)
    scorer = BorderScorer()
    out = scorer.score(frames_for(scorer, truth))
    want = (lx, ly, size[0] - lx, size[1] - ly)
    assert all(abs(a - b) <= 2 for a, b in zip(out["content_box"], want)), (out, want)
    area = (size[0] - 2 * lx) * (size[1] - 2 * ly)
    assert abs(out["border_fraction"] - (1 - area / (size[0] * size[1]))) < 0.02


def test_no_bars_gives_full_frame(vids):
    truth = vids("nobars.mp4", [Shot("camera", 16, pan=(1.0, 0))])
    out = BorderScorer().score(frames_for(BorderScorer(), truth))
    assert out["content_box"] == [0, 0, 320, 180] and out["border_fraction"] == 0.0
