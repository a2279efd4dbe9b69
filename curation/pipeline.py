"""Pipeline descriptions: a YAML list of streaming stages and global steps, resolved to stage objects
through a registry of names, with `--set STAGE.PARAM=VALUE` overrides."""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from curation.errors import ConfigError
from curation.stage import Resources, Stage

# name → "module:Class". Streaming stages work row by row; steps work on whole committed tables.
STAGES = {
    "probe": "curation.probe:ProbeStage",
    "split": "curation.split:SplitStage",
    "clarity": "filters.clarity:ClarityScorer",
    "motion": "filters.motion:MotionScorer",
    "ocr": "filters.ocr:OcrScorer",
    "borders": "filters.borders:BorderScorer",
    "aesthetic": "filters.aesthetic:AestheticScorer",
    "embedding": "filters.embedding:PerceptualEmbeddingScorer",
    "clip_embedding": "filters.embedding:ClipEmbeddingScorer",
}
STEPS = {
    "dedup": "curation.dedup:DedupStep",
    "concepts": "curation.concepts:ConceptStep",
    "tiers": "curation.tiers:TierStep",
}

PIPELINES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines")


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class StageSpec:
    """One entry of a pipeline: a streaming `stage` or a global `step`, with params and resources."""

    name: str
    kind: str  # "stage" | "step"
    params: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)

    def build(self):
        registry = STAGES if self.kind == "stage" else STEPS
        if self.name not in registry:
            raise ConfigError(f"unknown {self.kind} '{self.name}'; known: {sorted(registry)}")
        cls = _load(registry[self.name])
        if self.kind == "step":
            return cls(self.params)
        res = dataclasses.replace(cls.resources, **self.resources) if self.resources else None
        return cls(self.params, res)


@dataclass
class Pipeline:
    name: str
    stages: list[StageSpec]
    description: str = ""
    commit_every: int = 16  # videos per Lance commit

    def spec(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"--set names '{name}', which is not in pipeline '{self.name}' "
                          f"(its entries: {[s.name for s in self.stages]})")

    def override(self, assignments: list[str]) -> Pipeline:
        """Apply `STAGE.PARAM=VALUE` strings (VALUE parsed as YAML: numbers, lists, booleans)."""
        for item in assignments:
            key, eq, raw = item.partition("=")
            stage, dot, param = key.partition(".")
            if not eq or not dot or not param:
                raise ConfigError(f"--set expects STAGE.PARAM=VALUE, got '{item}'")
            value = yaml.safe_load(raw)
            spec = self.spec(stage.strip())
            if param.startswith("resources."):
                spec.resources[param.split(".", 1)[1]] = value
            else:
                spec.params[param.strip()] = value
        return self

    def build(self) -> list[Stage | Any]:
        return [s.build() for s in self.stages]


def find_yaml(path_or_name: str) -> str | None:
    """A YAML file path as given, or the bundled `pipelines/<name>.yaml`; None when neither exists.
    Pipelines, tier specs and training plans are all looked up this way."""
    if os.path.exists(path_or_name):
        return path_or_name
    bundled = os.path.join(PIPELINES_DIR, f"{path_or_name.removesuffix('.yaml')}.yaml")
    return bundled if os.path.exists(bundled) else None


def resolve_path(path_or_name: str) -> str:
    """A pipeline file path, or the name of a bundled one (`default`, `hunyuan`)."""
    path = find_yaml(path_or_name)
    if path is None:
        raise ConfigError(f"no pipeline file '{path_or_name}' (bundled ones: {bundled_names()})")
    return path


def bundled_names() -> list[str]:
    """Bundled pipelines (YAML files whose `stages:` are stages and steps; tier specs and training plans
    live beside them)."""
    if not os.path.isdir(PIPELINES_DIR):
        return []
    names = []
    for f in sorted(os.listdir(PIPELINES_DIR)):
        if f.endswith(".yaml"):
            with open(os.path.join(PIPELINES_DIR, f)) as fh:
                entries = (yaml.safe_load(fh) or {}).get("stages") or []
                if entries and all("stage" in e or "step" in e for e in entries):  # not a training plan
                    names.append(f[:-5])
    return names


def load_pipeline(source: str | dict, overrides: list[str] = ()) -> Pipeline:
    if isinstance(source, dict):
        doc = source
    else:
        with open(resolve_path(source)) as f:
            doc = yaml.safe_load(f) or {}
    specs = []
    for i, entry in enumerate(doc.get("stages") or []):
        kind = "stage" if "stage" in entry else "step" if "step" in entry else None
        if kind is None:
            raise ConfigError(f"pipeline entry {i} needs a 'stage:' or 'step:' key: {entry}")
        unknown = set(entry) - {kind, "params", "resources"}
        if unknown:
            raise ConfigError(f"pipeline entry '{entry[kind]}' has unknown keys {sorted(unknown)}")
        specs.append(StageSpec(entry[kind], kind, dict(entry.get("params") or {}),
                               dict(entry.get("resources") or {})))
    if not specs:
        raise ConfigError("pipeline has no stages")
    pipe = Pipeline(doc.get("name", "pipeline"), specs, doc.get("description", ""),
                    int(doc.get("commit_every", 16)))
    return pipe.override(list(overrides))


__all__ = ["Pipeline", "StageSpec", "load_pipeline", "resolve_path", "Resources"]
