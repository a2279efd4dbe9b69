"""The README's examples run as written."""

from __future__ import annotations

import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", open(README, encoding="utf-8").read(), re.S)


def test_training_example_runs():
    (block,) = [b for b in _blocks("python") if "from training" in b]
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert tuple(scope["latents"].shape) == (1, 16, 3, 8, 8)
    assert scope["sample"].shape == scope["latents"].shape


def test_documented_pipelines_and_stages_exist():
    from curation.pipeline import STAGES, STEPS, bundled_names, load_pipeline

    text = open(README, encoding="utf-8").read()
    for name in re.findall(r"^\| `(\w+)` \|", text, re.M):
        assert name in STAGES or name in STEPS or name.startswith("bench"), name
    for name in bundled_names():
        load_pipeline(name).build()  # every bundled pipeline parses and its parameters are valid
