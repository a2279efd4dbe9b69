"""The captioning prompt: K frames of a clip plus the measurements the curation pipeline already made,
stated as measurements, and the caption fields to fill.

Frames are RGB uint8 arrays, already cropped and resized by the caller. They go into the chat as PIL
images for the offline engine (`image_format="pil"`) or as base64 data URLs ("png" or "jpeg") for an
OpenAI-compatible server. `prompt_hash()` identifies the instructions, the hint wording and the engine
schema (not a clip's hints), so every caption records which prompt produced it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json

import numpy as np
from PIL import Image

from captioner.schema import CAMERA_CLASSES, LIMITS, SCHEMA_VERSION, SHOT_TYPES, TAG_CHARS, TAG_ITEMS, engine_schema

PROMPT_VERSION = "1"

INSTRUCTIONS = (
    "You caption video clips for training a text-to-video model. The images are {k} frames sampled in order "
    "from one clip{where}. Describe what is visible; do not invent what is not. Reply with one JSON object "
    "and nothing else."
)

MEASURED = (
    "Measurements made on this clip by the curation pipeline (computed from the pixels, not guesses; trust "
    "them unless the frames clearly contradict them):"
)


def _fields_text() -> str:
    lines = [f'- "{name}": {what} (at most {n} characters)' for name, (n, what) in LIMITS.items()]
    lines.insert(4, f'- "shot_type": one of {", ".join(SHOT_TYPES)}')
    lines.insert(7, f'- "camera_movement": one of {", ".join(CAMERA_CLASSES)}')
    lines.insert(8, f'- "tags": {{"source": [...], "quality": [...], "other": [...]}}, at most '
                    f'{TAG_ITEMS["source"]}, {TAG_ITEMS["quality"]} and {TAG_ITEMS["other"]} short tags '
                    f"(at most {TAG_CHARS} characters each)")
    return "Fields (strings use no double quotes or backslashes):\n" + "\n".join(lines)


def speed_word(speed: float) -> str:
    return "static" if speed < 0.01 else "slow" if speed < 0.03 else "moderate" if speed < 0.1 else "fast"


def hints_text(hints: dict) -> str:
    """The measurements as prompt lines; "" when there are none. Known keys: camera_motion,
    camera_motion_confidence, ocr_text, text_area, motion (fraction of the frame diagonal per second);
    any other key with a value is listed as `key: value`."""
    h = {k: v for k, v in hints.items() if v is not None}
    lines = []
    if "camera_motion" in h:
        conf = h.get("camera_motion_confidence")
        conf = f" (confidence {conf:.2f})" if conf is not None else ""
        lines.append(f"- camera movement: {h['camera_motion']}{conf}")
    elif "camera_motion_confidence" in h:
        lines.append(f"- camera movement: unclear (confidence {h['camera_motion_confidence']:.2f})")
    if h.get("ocr_text"):
        area = f", covering {100 * h['text_area']:.1f} % of the frame" if "text_area" in h else ""
        lines.append(f"- on-screen text read by OCR: {json.dumps(str(h['ocr_text'])[:200])}{area}")
    elif "text_area" in h:
        lines.append("- on-screen text: none detected" if h["text_area"] <= 0
                     else f"- on-screen text covers {100 * h['text_area']:.1f} % of the frame")
    if "motion" in h:
        lines.append(f"- motion speed: {h['motion']:.3f} of the frame diagonal per second ({speed_word(h['motion'])})")
    known = {"camera_motion", "camera_motion_confidence", "ocr_text", "text_area", "motion"}
    lines += [f"- {k}: {v}" for k, v in sorted(h.items()) if k not in known]
    return MEASURED + "\n" + "\n".join(lines) if lines else ""


def prompt_text(n_frames: int, hints: dict, frame_indices: list[int] | None = None) -> str:
    where = f" (frame indices {', '.join(map(str, frame_indices))})" if frame_indices else ""
    parts = [INSTRUCTIONS.format(k=n_frames, where=where), hints_text(hints), _fields_text()]
    return "\n\n".join(p for p in parts if p)


def encode_image(frame: np.ndarray, image_format: str):
    """A frame as a chat content part: PIL image ("pil") or base64 data URL ("png", "jpeg")."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be RGB uint8 arrays (H, W, 3), got {frame.dtype} {frame.shape}")
    image = Image.fromarray(frame)
    if image_format == "pil":
        return {"type": "image_pil", "image_pil": image}
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be pil, png or jpeg, not {image_format!r}")
    buf = io.BytesIO()
    image.save(buf, format=image_format.upper(), **({"quality": 90} if image_format == "jpeg" else {}))
    url = f"data:image/{image_format};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}


def build_messages(frames: list[np.ndarray], hints: dict | None = None, image_format: str = "pil",
                   frame_indices: list[int] | None = None) -> list[dict]:
    """One user turn: the frames, then the instructions with the measurements."""
    if not frames:
        raise ValueError("a caption request needs at least one frame")
    content = [encode_image(f, image_format) for f in frames]
    content.append({"type": "text", "text": prompt_text(len(frames), hints or {}, frame_indices)})
    return [{"role": "user", "content": content}]


def repair_messages(messages: list[dict], raw: str | None, error: str) -> list[dict]:
    """The conversation again, with the rejected answer and the validation error, asking once more."""
    ask = (f"That answer was rejected: {error}\nReply again with one complete JSON object that fixes this, "
           "and nothing else.")
    turns = [{"role": "assistant", "content": raw}] if raw else []
    return [*messages, *turns, {"role": "user", "content": [{"type": "text", "text": ask}]}]


def prompt_hash() -> str:
    """Stable id of the prompt (instructions, hint wording, field list, engine schema, versions)."""
    probe = {"camera_motion": "pan left", "camera_motion_confidence": 0.9, "ocr_text": "T", "text_area": 0.1,
             "motion": 0.05, "other": 1}
    parts = [PROMPT_VERSION, SCHEMA_VERSION, prompt_text(4, probe, [0, 1, 2, 3]), repair_messages([], "x", "e"),
             engine_schema()]
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
