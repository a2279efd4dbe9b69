"""Camera motion on pans, tilts, zooms, roll, static and handheld shots over real photographs with
known pixels per frame, and the motion speed's independence of resolution and frame rate."""

import pytest

from curation.synth import Shot
from filter_media import frames_for
from filters.motion import CAMERA_CLASSES, MotionParams, MotionScorer

MOVES = [  # (Shot kwargs, expected label)
    ({"pan": (2.0, 0.0)}, "pan right"),
    ({"pan": (-3.0, 0.0)}, "pan left"),
    ({"pan": (0.0, 1.5)}, "tilt down"),
    ({"pan": (0.0, -2.0)}, "tilt up"),
    ({"zoom": 1.01}, "zoom in"),
    ({"zoom": 0.99}, "zoom out"),
    ({"rotate": 0.5}, "tilt left"),  # content turns clockwise: the camera rolls counter-clockwise
    ({"rotate": -0.5}, "tilt right"),
    ({}, "static shot"),
    ({"jitter": 2.0, "seed": 1}, "handheld shot"),
]


@pytest.mark.parametrize("photo", ["astronaut", "coffee"])
@pytest.mark.parametrize(("move", "label"), MOVES, ids=[m[1] + str(i) for i, m in enumerate(MOVES)])
def test_camera_motion_label_and_size(vids, photo, move, label):
    assert label in CAMERA_CLASSES
    truth = vids(f"{photo}_{label}_{sorted(move.items())}.mp4", [Shot(photo, 40, **move)])
    out = MotionScorer().score(frames_for(MotionScorer(), truth))
    assert out["camera_motion"] == label, out
    assert out["camera_motion_confidence"] >= 0.6, out
    dx, dy = move.get("pan", (0.0, 0.0))
    if dx or dy:  # measured camera move within 20 % of the known pixels per frame
        assert abs(out["camera_dx"] - dx) <= 0.2 * abs(dx) + 0.05, out
        assert abs(out["camera_dy"] - dy) <= 0.2 * abs(dy) + 0.05, out
    if "zoom" in move:
        assert abs((out["camera_zoom"] - 1) / (move["zoom"] - 1) - 1) < 0.2, out
    if "rotate" in move:
        assert abs(-out["camera_rotation"] / move["rotate"] - 1) < 0.2, out
    if label == "static shot":
        assert out["motion"] < 0.005
    if label == "handheld shot":
        assert 1.0 < out["camera_jitter"] < 3.0, out


def test_low_confidence_leaves_label_null(vids):
    """A diagonal move is neither clearly horizontal nor vertical: no label, confidence recorded."""
    truth = vids("diag.mp4", [Shot("chelsea", 40, pan=(2.0, 2.0))])
    out = MotionScorer().score(frames_for(MotionScorer(), truth))
    assert out["camera_motion"] is None and 0 < out["camera_motion_confidence"] < 0.6, out
    assert abs(out["camera_dx"] - 2) < 0.4 and abs(out["camera_dy"] - 2) < 0.4
    lenient = MotionScorer(MotionParams(min_confidence=0.2))
    assert lenient.score(frames_for(lenient, truth))["camera_motion"] in ("pan right", "tilt down")


def test_vertical_as_pan(vids):
    truth = vids("coffee_pan_up.mp4", [Shot("coffee", 40, pan=(0.0, -2.0))])
    scorer = MotionScorer(MotionParams(vertical_as="pan"))
    assert scorer.score(frames_for(scorer, truth))["camera_motion"] == "pan up"


def test_motion_speed_free_of_resolution_and_frame_rate(vids):
    """One camera speed in diagonals per second: 2 px/frame at 320 px and 24 fps equals 4 px/frame at
    640 px and 24 fps, and 1 px/frame at 320 px and 48 fps. (Dense flow has content-dependent errors:
    on the "rocket" photo at 48 fps, with large flat sky, the mean magnitude reads ~30 % high.)"""
    speeds = []
    for size, fps, pan in [((320, 180), 24, 2.0), ((640, 360), 24, 4.0), ((320, 180), 48, 1.0)]:
        truth = vids(f"speed_{size[0]}_{fps}.mp4", [Shot("coffee", 40, pan=(pan, 0))], size=size, fps=fps)
        speeds.append(MotionScorer().score(frames_for(MotionScorer(), truth))["motion"])
    assert max(speeds) / min(speeds) < 1.1, speeds
    assert abs(speeds[0] - 2.0 / (320**2 + 180**2) ** 0.5 * 24) < 0.1 * speeds[0]
