"""Caption synthesis: reproducible per (caption, seed), varied across seeds, only the caption's content."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from captioner.schema import Caption
from captioner.synth import synthesize

CAPTION = Caption(
    short_description="A rocket stands on the launch pad",
    dense_description="A white rocket stands on a launch pad under a clear sky while vapour drifts past; the camera "
                      "slowly pans right.",
    background="a flat launch site with service towers", style="documentary", shot_type="long shot",
    lighting="bright midday sun", atmosphere="tense", camera_movement="pan right",
    tags={"source": ["demo"], "quality": ["sharp"], "other": ["vehicle"]}, text_in_frame="NASA")


def test_same_caption_and_seed_give_the_same_text_in_any_process():
    text = CAPTION.model_dump_json()
    mine = [synthesize(text, seed) for seed in range(20)]
    assert mine == [synthesize(json.loads(text), s) for s in range(20)] == [synthesize(CAPTION, s) for s in range(20)]
    code = ("import json, sys; from captioner.synth import synthesize; "
            "print(json.dumps([synthesize(sys.argv[1], s) for s in range(20)]))")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["captioner.synth"].__file__)))
    out = subprocess.run([sys.executable, "-c", code, text], capture_output=True, text=True, check=True, cwd=repo,
                         env={"PYTHONHASHSEED": "7", "PATH": ""}).stdout
    assert json.loads(out) == mine


def test_seeds_vary_length_and_pattern():
    texts = [synthesize(CAPTION, seed) for seed in range(200)]
    assert len(set(texts)) > 60
    lengths = [len(t) for t in texts]
    assert min(lengths) < 40 and max(lengths) > 200
    assert any(t == "A rocket stands on the launch pad." for t in texts)  # short pattern
    assert any(t.startswith("A white rocket") and t.endswith("pans right.") for t in texts)  # dense pattern
    assert any("," in t and "." not in t for t in texts)  # keywords
    mixed = [t for t in texts if "Lighting: bright midday sun." in t or "The lighting is bright midday sun." in t]
    assert mixed and len({t.split(". ")[1] for t in mixed if t.count(". ") > 1}) > 2  # permuted fields
    # dropout: some mixed prompts leave the lighting out
    assert any(t.startswith("A rocket stands") and "lighting" not in t.lower() and len(t) > 40 for t in texts)


def test_only_the_captions_content_and_partial_captions():
    words = set(" ".join(v for v in (CAPTION.style, CAPTION.lighting, CAPTION.atmosphere)).split())
    for seed in range(50):
        t = synthesize(CAPTION, seed)
        assert "None" not in t and "null" not in t
    assert any(w in synthesize(CAPTION, s) for s in range(50) for w in words)
    partial = Caption(camera_movement="zoom in", text_in_frame="")
    outs = {synthesize(partial, s) for s in range(30)}
    assert outs <= {"", "zoom in", "The camera zooms in.", "Camera: zoom in."}
    assert synthesize(Caption(), 0) == ""
