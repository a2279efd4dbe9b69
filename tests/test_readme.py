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
    from curation import registry
    from curation.pipeline import bundled_names, load_pipeline

    text = open(README, encoding="utf-8").read()
    for name in re.findall(r"^\| `(\w+)` \|", text, re.M):
        assert name in registry.names() or name.startswith("bench"), name
    for name in bundled_names():
        load_pipeline(name).build()  # every bundled pipeline parses and its parameters are valid


def test_example_scorer_registers_and_scores_known_brightness(ray_local, tmp_path, monkeypatch):
    """The README's complete scorer, registered without touching curation/, scores two flat-grey shots
    of known luma through a real pipeline run."""
    import importlib

    import numpy as np
    import ray

    from curation import registry, synth
    from curation.query import query
    from curation.runner import run_pipeline

    (block,) = [b for b in _blocks("python") if "class BrightnessScorer" in b]
    (tmp_path / "readme_brightness.py").write_text(block)  # the scorer is one file of the user's own
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("readme_brightness")
    ray.cloudpickle.register_pickle_by_value(module)  # Ray workers do not have the user's folder on sys.path
    monkeypatch.setitem(registry._extra, "brightness", module.BrightnessScorer)
    grey = [np.full((96, 160, 3), v, np.uint8) for v in (30, 180) for _ in range(72)]  # a hard cut at 72
    synth.write_video(tmp_path / "grey.mp4", grey)
    stages = [{"stage": "probe"}, {"stage": "split"},
              {"stage": "brightness", "params": {"dark_below": 0.3}}]
    run_pipeline({"name": "b", "stages": stages}, [str(tmp_path / "grey.mp4")], tmp_path / "lake", progress=False)
    rows = query(str(tmp_path / "lake"), "select brightness, is_dark from clips order by start_frame").to_pylist()
    assert [r["is_dark"] for r in rows] == [True, False]
    assert abs(rows[0]["brightness"] - 30 / 255) < 0.02 and abs(rows[1]["brightness"] - 180 / 255) < 0.02
