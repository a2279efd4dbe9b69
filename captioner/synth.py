"""Caption synthesis (HunyuanVideo): one structured caption becomes training prompts of varied length
and pattern by field dropout and by permuting and combining the fields.

`synthesize(caption, seed)` picks, from a random stream seeded by (seed, the caption's canonical JSON):
- a pattern: "short" (the short description), "dense" (the dense description), "mixed" (one
  description plus other fields as sentences), or "keywords" (comma-separated attributes);
- which of the other fields survive (each dropped with probability `dropout`), their order, and for
  each field one of its phrasings.
The same (caption, seed) always gives the same text, whatever the process or platform.
"""

from __future__ import annotations

import hashlib
import json
import random

from captioner.schema import Caption

PATTERNS = ("short", "dense", "mixed", "keywords")

CAMERA_SENTENCE = {
    "zoom in": "The camera zooms in.", "zoom out": "The camera zooms out.",
    "pan up": "The camera pans up.", "pan down": "The camera pans down.",
    "pan left": "The camera pans left.", "pan right": "The camera pans right.",
    "tilt up": "The camera tilts up.", "tilt down": "The camera tilts down.",
    "tilt left": "The camera rolls to the left.", "tilt right": "The camera rolls to the right.",
    "around left": "The camera circles around to the left.", "around right": "The camera circles around to the right.",
    "static shot": "The camera is static.", "handheld shot": "The shot is handheld.",
}


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _phrasings(c: Caption) -> dict[str, list[str]]:
    """Each filled attribute field with its alternative phrasings."""
    out = {}
    if c.background:
        out["background"] = [_sentence(f"Background: {c.background}"), _sentence(f"In the background, {c.background}")]
    if c.style:
        out["style"] = [_sentence(f"Style: {c.style}"), _sentence(f"The video has a {c.style} style")]
    if c.shot_type:
        out["shot_type"] = [_sentence(f"Shot type: {c.shot_type}"), _sentence(f"A {c.shot_type}")]
    if c.lighting:
        out["lighting"] = [_sentence(f"Lighting: {c.lighting}"), _sentence(f"The lighting is {c.lighting}")]
    if c.atmosphere:
        out["atmosphere"] = [_sentence(f"Atmosphere: {c.atmosphere}"), _sentence(f"The atmosphere is {c.atmosphere}")]
    if c.camera_movement:
        out["camera_movement"] = [CAMERA_SENTENCE[c.camera_movement], _sentence(f"Camera: {c.camera_movement}")]
    if c.text_in_frame:
        out["text_in_frame"] = [f'The text "{c.text_in_frame}" appears on screen.',
                                _sentence(f"On-screen text: {c.text_in_frame}")]
    tags = [*c.tags.quality, *c.tags.other]
    if tags:
        out["tags"] = [_sentence(", ".join(tags)), _sentence(f"Tags: {', '.join(tags)}")]
    return out


def _keywords(c: Caption) -> list[str]:
    words = [c.style, c.shot_type, c.camera_movement, c.lighting, c.atmosphere, *c.tags.quality, *c.tags.other]
    return [w for w in words if w]


def synthesize(caption: str | dict | Caption, seed: int, dropout: float = 0.3) -> str:
    """One training prompt from a structured caption; deterministic for a given (caption, seed)."""
    c = caption if isinstance(caption, Caption) else Caption.model_validate(
        json.loads(caption) if isinstance(caption, str) else caption)
    key = f"{seed}:{c.model_dump_json()}".encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    descriptions = {k: v for k, v in (("short", c.short_description), ("dense", c.dense_description)) if v}
    pattern = rng.choice([p for p in PATTERNS if p in descriptions or p in ("mixed", "keywords")])
    if pattern in ("short", "dense"):
        return _sentence(descriptions[pattern])
    if pattern == "keywords":
        words = [w for w in _keywords(c) if rng.random() >= dropout]
        rng.shuffle(words)
        lead = [descriptions["short"].rstrip(".")] if "short" in descriptions and rng.random() < 0.5 else []
        return ", ".join(lead + words) or _sentence(next(iter(descriptions.values()), ""))
    fields = [(name, rng.choice(options)) for name, options in _phrasings(c).items() if rng.random() >= dropout]
    rng.shuffle(fields)
    lead = [_sentence(descriptions[rng.choice(sorted(descriptions))])] if descriptions else []
    return " ".join(lead + [text for _, text in fields])
