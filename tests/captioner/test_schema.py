"""The caption model is the one source of the engine schema and of validation, and the two agree."""

from __future__ import annotations

import json
import random
import re

import pytest
from caption_helpers import valid_caption

from captioner.schema import (
    CAMERA_CLASSES,
    LIMITS,
    SCHEMA_VERSION,
    Caption,
    CaptionError,
    clean_text,
    engine_schema,
    parse_caption,
    text_pattern,
)


def _strings(node, path=""):
    if isinstance(node, dict):
        if node.get("type") == "string" and "enum" not in node:
            yield path, node
        for k, v in node.items():
            yield from _strings(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{path}/{i}")


def test_engine_schema_bounds_every_string_with_a_pattern_only():
    schema = engine_schema()
    text = json.dumps(schema)
    assert "maxLength" not in text and "minLength" not in text and "$ref" not in text and "null" not in text
    strings = list(_strings(schema))
    assert len(strings) == len(LIMITS) + 3  # the text fields and the three tag lists' items
    for path, node in strings:
        assert re.search(r"\{\d+,\d+\}\$$", node["pattern"]), path
    assert set(schema["required"]) == set(Caption.model_fields) and schema["additionalProperties"] is False
    tags = schema["properties"]["tags"]
    assert set(tags["required"]) == {"source", "quality", "other"} and all(
        p["maxItems"] > 0 for p in tags["properties"].values())
    assert schema["properties"]["camera_movement"]["enum"] == list(CAMERA_CLASSES)


def test_camera_classes_are_the_motion_scorers():
    from filters.motion import CAMERA_CLASSES as SCORER_CLASSES

    assert CAMERA_CLASSES == SCORER_CLASSES and len(CAMERA_CLASSES) == 14


@pytest.mark.parametrize("n", [32, 128, 129, 160, 200, 480])
def test_pattern_accepts_exactly_the_strings_of_the_bound(n):
    rx = re.compile(text_pattern(n))
    assert all(rx.fullmatch("é" * length) for length in range(n + 1))
    assert not rx.fullmatch("a" * (n + 1)) and not rx.fullmatch("a" * (n + 40))
    for bad in ('say "hi"', "back\\slash", "new\nline", "tab\t", "nul\x00"):
        assert not rx.fullmatch(bad)
    # xgrammar 0.2.8 compiles no repetition bound above 128
    assert max(int(b) for b in re.findall(r"\{\d+,(\d+)\}", text_pattern(n))) <= 128


def test_validation_and_pattern_agree_on_random_strings():
    rng = random.Random(0)
    alphabet = 'ab é"\\\n\t\x01/{}'
    limit = LIMITS["style"][0]
    rx = re.compile(text_pattern(limit))
    base = json.loads(valid_caption())
    for _ in range(300):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, limit + 8)))
        ok = True
        try:
            parse_caption(json.dumps({**base, "style": s}))
        except CaptionError:
            ok = False
        assert ok == bool(rx.fullmatch(s)), repr(s)


def test_parse_caption_errors_are_typed_and_readable():
    good = valid_caption()
    assert parse_caption(good).camera_movement == "static shot"
    with pytest.raises(CaptionError) as e:
        parse_caption('{"short_description": "a')
    assert e.value.kind == "not_json"
    with pytest.raises(CaptionError) as e:
        parse_caption("[1, 2]")
    assert e.value.kind == "not_json"
    too_long = {**json.loads(good), "short_description": "x" * 161}
    with pytest.raises(CaptionError) as e:
        parse_caption(json.dumps(too_long))
    assert e.value.kind == "schema" and "short_description" in str(e.value) and "160" in str(e.value)
    bad_enum = {**json.loads(good), "camera_movement": "dolly zoom"}
    with pytest.raises(CaptionError, match="camera_movement"):
        parse_caption(json.dumps(bad_enum))
    extra = {**json.loads(good), "mood": "happy"}
    with pytest.raises(CaptionError, match="mood"):
        parse_caption(json.dumps(extra))
    partial = Caption(camera_movement="pan left").model_dump_json()
    with pytest.raises(CaptionError) as e:
        parse_caption(partial)
    assert e.value.kind == "incomplete" and "short_description" in str(e.value)
    assert parse_caption(partial, complete=False).camera_movement == "pan left"


def test_clean_text_fits_the_pattern():
    s = clean_text('He said "stop"\n\tthen\\left' + "x" * 200, 80)
    assert re.fullmatch(text_pattern(80), s) and s.startswith("He said stop then")
    assert SCHEMA_VERSION
