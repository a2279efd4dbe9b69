"""Pipeline descriptions: a YAML list of streaming stages and global steps, resolved to objects through the
registry, with `--set STAGE.PARAM=VALUE` overrides. Everything is checked when the pipeline loads —
keys, parameter types and ranges, resources, and that every column an entry reads is produced by an
entry before it — so a bad pipeline fails before any work starts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from curation import registry
from curation.errors import ConfigError
from curation.schema import INPUT_FIELDS
from curation.stage import Producer, Stage, Step, build_resources

PIPELINES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pipelines")
PIPELINE_KEYS = {"name", "description", "commit_every", "stages"}
ENTRY_KEYS = {"params", "resources"}


@dataclass
class StageSpec:
    """One entry of a pipeline: a streaming `stage` or a global `step`, with params and resources."""

    name: str
    kind: str  # "stage" | "step"
    params: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Producer:
        cls = registry.resolve(self.name)
        actual = "step" if issubclass(cls, Step) else "stage" if issubclass(cls, Stage) else None
        if actual is None:
            raise ConfigError(f"'{self.name}' is registered as {cls!r}, which is neither a Stage nor a Step")
        if actual != self.kind:
            raise ConfigError(f"'{self.name}' is a {actual}: write `- {actual}: {self.name}` in the pipeline")
        if actual == "step":
            if self.resources:
                raise ConfigError(f"step '{self.name}' runs on the driver and takes no resources")
            return cls(self.params)
        stage = cls(self.params)
        stage.resources = build_resources(cls.resources, self.resources, f"stage '{self.name}'")
        return stage


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

    def document(self) -> dict:
        """The pipeline as a YAML/JSON document (overrides applied): `load_pipeline(doc)` rebuilds it."""
        return {"name": self.name, "description": self.description, "commit_every": self.commit_every,
                "stages": [{s.kind: s.name, **({"params": s.params} if s.params else {}),
                            **({"resources": s.resources} if s.resources else {})} for s in self.stages]}

    def override(self, assignments: Iterable[str]) -> Pipeline:
        """Apply `STAGE.PARAM=VALUE` strings (VALUE parsed as YAML: numbers, lists, booleans)."""
        for item in assignments:
            key, eq, raw = item.partition("=")
            stage, dot, param = key.partition(".")
            if not eq or not dot or not param:
                raise ConfigError(f"--set expects STAGE.PARAM=VALUE, got '{item}'")
            value = yaml.safe_load(raw)
            spec = self.spec(stage.strip())
            if param.startswith("resources."):
                spec.resources[param.split(".", 1)[1].strip()] = value
            else:
                spec.params[param.strip()] = value
        return self

    def build(self, available: Iterable[str] = (),
              on_stages: Callable[[list[Producer]], None] | None = None) -> list[Producer]:
        """Every entry as an object, checked: parameters, resources, order (stages before steps) and
        input columns (from earlier entries, the run's input columns, or `available` ones the lake has).
        `on_stages`: called with the streaming stages, built and checked, before the steps are built (the
        default steps' modules — the lake, DuckDB, the captioner — take ~0.7 s to import): the runner
        starts its workers there, so their start-up and those imports overlap."""
        have = {f.name for f in INPUT_FIELDS} | {"failures"} | set(available)
        first_step = next((i for i, s in enumerate(self.stages) if s.kind == "step"), len(self.stages))
        built = [s.build() for s in self.stages[:first_step]]
        check_columns(built, have)
        if on_stages is not None and all(s.kind == "step" for s in self.stages[first_step:]):
            on_stages(built)
        built += [s.build() for s in self.stages[first_step:]]
        check_order(built)
        check_columns(built, have)
        return built


def check_order(built: list[Producer]) -> None:
    """Streaming stages run before global steps (steps work on what the stages committed)."""
    for i, entry in enumerate(built):
        if isinstance(entry, Stage) and any(isinstance(e, Step) for e in built[:i]):
            step = next(e for e in built[:i] if isinstance(e, Step))
            raise ConfigError(f"stage '{entry.name}' comes after step '{step.name}': streaming stages run "
                              f"first and steps after them on the committed tables; move it above")


def check_columns(built: list[Producer], available: set[str]) -> None:
    """Each entry's input columns must be produced by an entry before it (or already exist)."""
    have = set(available)
    for entry in built:
        missing = [c for c in entry.input_columns() if c not in have]
        if missing:
            col = missing[0]
            makers = producers_of(col)
            hint = f"add one that produces it before it: {makers}" if makers else "no registered stage produces it"
            kind = "step" if isinstance(entry, Step) else "stage"
            raise ConfigError(f"{kind} '{entry.name}' reads column '{col}', which no entry before it produces; "
                              f"{hint}")
        have.update(entry.output_columns())


def producers_of(column: str) -> list[str]:
    """Registered stages and steps whose default configuration produces `column` (for error messages)."""
    out = []
    for name in registry.names():
        try:
            if column in registry.resolve(name)().output_columns():
                out.append(name)
        except Exception:  # noqa: BLE001 - an entry that needs settings to build just isn't listed
            continue
    return out


def find_yaml(path_or_name: str) -> str | None:
    """A YAML file path as given, or the bundled `pipelines/<name>.yaml`; None when neither exists.
    Pipelines, tier specs and training curricula are all looked up this way."""
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
    """Bundled pipelines (YAML files whose `stages:` are stages and steps; tier specs and training
    curricula live beside them)."""
    if not os.path.isdir(PIPELINES_DIR):
        return []
    names = []
    for f in sorted(os.listdir(PIPELINES_DIR)):
        if f.endswith(".yaml"):
            with open(os.path.join(PIPELINES_DIR, f)) as fh:
                entries = (yaml.safe_load(fh) or {}).get("stages") or []
                if entries and all("stage" in e or "step" in e for e in entries):
                    names.append(f[:-5])
    return names


def load_pipeline(source: str | dict, overrides: Iterable[str] = ()) -> Pipeline:
    if isinstance(source, dict):
        doc = source
    else:
        with open(resolve_path(source)) as f:
            doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"a pipeline is a mapping with keys {sorted(PIPELINE_KEYS)}, got {type(doc).__name__}")
    unknown = sorted(set(doc) - PIPELINE_KEYS)
    if unknown:
        raise ConfigError(f"pipeline has unknown key(s) {unknown}; known: {sorted(PIPELINE_KEYS)}")
    specs = []
    for i, entry in enumerate(doc.get("stages") or []):
        if not isinstance(entry, dict):
            raise ConfigError(f"pipeline entry {i} must be a mapping with a 'stage:' or 'step:' key, got {entry!r}")
        kind = "stage" if "stage" in entry else "step" if "step" in entry else None
        if kind is None:
            raise ConfigError(f"pipeline entry {i} needs a 'stage:' or 'step:' key: {entry}")
        unknown = set(entry) - {kind} - ENTRY_KEYS
        if unknown:
            raise ConfigError(f"pipeline entry '{entry[kind]}' has unknown keys {sorted(unknown)}; "
                              f"known: {sorted(ENTRY_KEYS)}")
        specs.append(StageSpec(entry[kind], kind, dict(entry.get("params") or {}),
                               dict(entry.get("resources") or {})))
    if not specs:
        raise ConfigError("pipeline has no stages")
    try:
        commit_every = int(doc.get("commit_every", 16))
    except (TypeError, ValueError):
        raise ConfigError(f"pipeline key 'commit_every' expects an integer, got {doc['commit_every']!r}") from None
    if commit_every < 1:
        raise ConfigError(f"pipeline key 'commit_every' must be >= 1, got {commit_every}")
    pipe = Pipeline(str(doc.get("name", "pipeline")), specs, str(doc.get("description", "")), commit_every)
    return pipe.override(overrides)


__all__ = ["Pipeline", "StageSpec", "load_pipeline", "resolve_path", "find_yaml", "bundled_names"]
