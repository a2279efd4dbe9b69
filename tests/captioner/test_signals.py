"""The signals backend fills only what the measurements support."""

from __future__ import annotations

from captioner.backend import CaptionRequest
from captioner.schema import parse_caption
from captioner.signals import SignalsCaptioner, SignalsConfig


def _one(hints: dict, **cfg):
    (res,) = SignalsCaptioner(SignalsConfig(**cfg)).caption_batch([CaptionRequest("c", [], [3, 9], hints)])
    assert res.status == "ok" and res.source["backend"] == "signals" and res.source["frame_indices"] == [3, 9]
    return parse_caption(res.caption, complete=False)


def test_camera_only_when_confident():
    assert _one({"camera_motion": "zoom in", "camera_motion_confidence": 0.9}).camera_movement == "zoom in"
    assert _one({"camera_motion": "zoom in", "camera_motion_confidence": 0.4}).camera_movement is None
    assert _one({"camera_motion": "zoom in"}).camera_movement is None  # no confidence, not used
    assert _one({"camera_motion": "dolly", "camera_motion_confidence": 0.99}).camera_movement is None
    assert _one({"camera_motion": "pan up", "camera_motion_confidence": 0.5},
                min_camera_confidence=0.5).camera_movement == "pan up"


def test_text_and_tags_from_measured_columns():
    c = _one({"ocr_text": 'Say "CHEESE"\nnow', "text_area": 0.12, "motion": 0.2, "subtitle_box": [0, 0.8, 1, 0.95],
              "source": "demo set"})
    assert c.text_in_frame == "Say CHEESE now"
    assert c.tags.quality == ["fast motion", "on-screen text", "subtitles"] and c.tags.source == ["demo set"]
    assert _one({"text_area": 0.0}).text_in_frame == ""
    assert _one({"text_area": 0.3}).text_in_frame is None  # text seen but not read
    assert _one({}).text_in_frame is None
    vlm_fields = ("short_description", "dense_description", "background", "style", "shot_type", "lighting",
                  "atmosphere")
    assert all(getattr(c, f) is None for f in vlm_fields)
