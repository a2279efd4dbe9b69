"""Prompt building: measurements stated as measurements, frames as PIL images or data URLs, a stable hash."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
from caption_helpers import clip_frames
from PIL import Image

from captioner.prompt import build_messages, hints_text, prompt_hash, repair_messages

HINTS = {"camera_motion": "pan right", "camera_motion_confidence": 0.87, "ocr_text": "OPEN 24 H", "text_area": 0.035,
         "motion": 0.042, "fps": 25.0, "ignored": None}


def test_measurements_are_stated_as_measurements():
    text = hints_text(HINTS)
    assert text.startswith("Measurements made on this clip")
    assert "camera movement: pan right (confidence 0.87)" in text
    assert '"OPEN 24 H"' in text and "3.5 % of the frame" in text
    assert "motion speed: 0.042" in text and "(moderate)" in text
    assert "fps: 25.0" in text and "ignored" not in text
    assert hints_text({}) == ""
    assert "on-screen text: none detected" in hints_text({"text_area": 0.0})


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_frames_become_data_urls_that_decode_to_the_frames(fmt):
    frames = clip_frames("astronaut", k=2)
    msgs = build_messages(frames, HINTS, fmt, [0, 12])
    (turn,) = msgs
    parts = turn["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert "frame indices 0, 12" in parts[-1]["text"] and "pan right" in parts[-1]["text"]
    url = parts[0]["image_url"]["url"]
    assert url.startswith(f"data:image/{fmt};base64,")
    back = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert back.shape == frames[0].shape
    err = np.abs(back.astype(int) - frames[0]).mean()
    assert err == 0 if fmt == "png" else err < 8


def test_pil_frames_and_bad_frames():
    frames = clip_frames("coffee", k=3)
    parts = build_messages(frames, {}, "pil")[0]["content"]
    assert all(isinstance(p["image_pil"], Image.Image) for p in parts[:3])
    with pytest.raises(ValueError, match="uint8"):
        build_messages([frames[0].astype(np.float32)], {})
    with pytest.raises(ValueError, match="at least one frame"):
        build_messages([], {})


def test_repair_turn_carries_the_error_and_the_rejected_answer():
    msgs = repair_messages(build_messages(clip_frames("coffee", k=1), {}, "png"), '{"bad": 1', "not valid JSON: x")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == '{"bad": 1' and "not valid JSON: x" in msgs[2]["content"][0]["text"]


def test_prompt_hash_is_stable_across_processes():
    code = "from captioner.prompt import prompt_hash; print(prompt_hash())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=_repo()).stdout.strip()
    assert prompt_hash() == other and len(other) == 16


def _repo() -> str:
    import os

    import captioner

    return os.path.dirname(os.path.dirname(captioner.__file__))
