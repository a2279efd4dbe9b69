"""The structured caption: one pydantic model, the single source of the JSON Schema the engine decodes
against and of the validation every backend applies to what comes back.

Fields follow HunyuanVideo's caption JSON (short and dense description, background, style, shot type,
lighting, atmosphere, camera movement in its 14 classes) plus metadata tags (source, quality, other)
and `text_in_frame`: the legible on-screen text, transcribed (at most 80 characters), "" when the
frames hold none. A transcription is more useful to a caption than a yes/no, and "" keeps the "no
text" answer explicit.

Every field may be null in the model so that one model also carries partial captions (the `signals`
backend fills only what measurements support). A VLM caption must be complete: the engine schema
requires every field non-null, and `parse_caption(..., complete=True)` (the default) refuses nulls.

Strings are bounded twice. Each carries a `pattern` `^[^"\\\\\\x00-\\x1f]{0,N}$` (no control characters,
no quote or backslash, at most N characters): it is what bounds them in the engine schema, because
xgrammar 0.2.8 lets raw control characters through when a string carries maxLength/minLength, and an
unbounded string can run past max_tokens. Our own validation also checks `max_length` (engines silently
ignore some length keywords). Excluding `"` and `\\` means a string never needs a JSON escape, so the
pattern means the same on the JSON text and on the decoded value.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

SCHEMA_VERSION = "1"

CAMERA_CLASSES = ("zoom in", "zoom out", "pan up", "pan down", "pan left", "pan right", "tilt up", "tilt down",
                  "tilt left", "tilt right", "around left", "around right", "static shot", "handheld shot")
SHOT_TYPES = ("aerial shot", "close-up shot", "medium shot", "long shot")

CameraMovement = Literal["zoom in", "zoom out", "pan up", "pan down", "pan left", "pan right", "tilt up",
                         "tilt down", "tilt left", "tilt right", "around left", "around right", "static shot",
                         "handheld shot"]
ShotType = Literal["aerial shot", "close-up shot", "medium shot", "long shot"]

# field name -> (max characters, what the VLM is asked for); the prompt lists these descriptions
LIMITS = {
    "short_description": (160, "one sentence: the main subject and action"),
    "dense_description": (480, "the scene in detail, including transitions and camera motion"),
    "background": (200, "the setting behind the subject"),
    "style": (48, "e.g. documentary, cinematic, realistic, sci-fi, animation"),
    "lighting": (96, "e.g. natural daylight, low key, neon, backlit"),
    "atmosphere": (48, "e.g. cozy, tense, mysterious, calm"),
    "text_in_frame": (80, "legible on-screen text transcribed, or an empty string when there is none"),
}
TAG_CHARS = 32
TAG_ITEMS = {"source": 2, "quality": 4, "other": 6}
REPEAT_MAX = 128  # the largest repetition bound xgrammar 0.2.8 compiles


def text_pattern(max_chars: int, min_chars: int = 0) -> str:
    """A full-match regex for a safe string of `min_chars` to `max_chars` characters.

    xgrammar 0.2.8 fails to compile a repetition bound above 128, so a longer bound is written as up to
    p-1 runs of at most 128 characters and a last run of at most r, with 128 (p-1) + r = max_chars:
    exactly the same strings."""
    safe = '[^"\\\\\\x00-\\x1f]'
    if max_chars <= REPEAT_MAX:
        return f"^{safe}{{{min_chars},{max_chars}}}$"
    if min_chars:
        raise ValueError("a minimum length is only supported on strings of at most 128 characters")
    runs = -(-max_chars // REPEAT_MAX) - 1
    return f"^({safe}{{0,{REPEAT_MAX}}}){{0,{runs}}}{safe}{{0,{max_chars - REPEAT_MAX * runs}}}$"


def clean_text(text: str, max_chars: int) -> str:
    """`text` made to fit the string pattern: control characters become spaces, quotes and backslashes
    are dropped, runs of spaces collapse, at most `max_chars` characters."""
    text = re.sub(r"[\x00-\x1f]", " ", str(text)).replace('"', "").replace("\\", "")
    return re.sub(r" +", " ", text).strip()[:max_chars].strip()


def _text(name: str):
    n, what = LIMITS[name]
    field = Field(default=None, max_length=n, pattern=text_pattern(n), description=what)
    return Annotated[str | None, field]


Tag = Annotated[str, StringConstraints(min_length=1, max_length=TAG_CHARS, pattern=text_pattern(TAG_CHARS, 1))]


class Tags(BaseModel):
    """Metadata tags: where the clip comes from, its quality, anything else worth filtering on."""

    model_config = ConfigDict(extra="forbid")
    source: list[Tag] = Field(default_factory=list, max_length=TAG_ITEMS["source"])
    quality: list[Tag] = Field(default_factory=list, max_length=TAG_ITEMS["quality"])
    other: list[Tag] = Field(default_factory=list, max_length=TAG_ITEMS["other"])


class Caption(BaseModel):
    """A clip's structured caption (schema version `SCHEMA_VERSION`); null = not filled."""

    model_config = ConfigDict(extra="forbid")
    short_description: _text("short_description")
    dense_description: _text("dense_description")
    background: _text("background")
    style: _text("style")
    shot_type: ShotType | None = None
    lighting: _text("lighting")
    atmosphere: _text("atmosphere")
    camera_movement: CameraMovement | None = None
    tags: Tags = Field(default_factory=Tags)
    text_in_frame: _text("text_in_frame")

    def missing(self) -> list[str]:
        """Fields left null (a complete caption has none)."""
        return [k for k, v in self if v is None]


class CaptionError(ValueError):
    """A caption text that is not a valid caption: `kind` is "not_json", "schema" or "incomplete";
    the message says which fields are wrong and why, readable enough to send back to the model."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _resolve(node, defs: dict):
    """Inline $refs, drop titles, defaults and length keywords (the pattern carries the bound), make
    every property required and non-null."""
    if isinstance(node, list):
        return [_resolve(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _resolve(defs[node["$ref"].split("/")[-1]], defs)
    if "anyOf" in node:  # `X | None` -> X
        kept = [x for x in node["anyOf"] if x.get("type") != "null"]
        if len(kept) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _resolve({**kept[0], **rest}, defs)
    out = {}
    for key, value in node.items():
        if key in ("title", "default", "maxLength", "minLength", "$defs", "description"):
            continue
        out[key] = {k: _resolve(v, defs) for k, v in value.items()} if key == "properties" else _resolve(value, defs)
    if out.get("type") == "object":
        out["required"] = list(out.get("properties", {}))
        out["additionalProperties"] = False
    return out


def engine_schema() -> dict:
    """The JSON Schema sent to the engine: Caption's schema, self-contained, every field required and
    non-null, strings bounded by pattern only."""
    full = Caption.model_json_schema()
    return _resolve(copy.deepcopy(full), full.get("$defs", {}))


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors()[:8]:
        where = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"{where}: {e['msg']}")
    return "; ".join(lines)


def parse_caption(text: str, complete: bool = True) -> Caption:
    """Parse and validate caption JSON text; raises CaptionError with a readable message."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as e:
        raise CaptionError("not_json", f"not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CaptionError("not_json", f"expected a JSON object, got {type(data).__name__}")
    try:
        caption = Caption.model_validate(data)
    except ValidationError as e:
        raise CaptionError("schema", f"caption does not match the schema: {_describe(e)}") from None
    if complete and caption.missing():
        raise CaptionError("incomplete", f"caption leaves required fields null: {', '.join(caption.missing())}")
    return caption
