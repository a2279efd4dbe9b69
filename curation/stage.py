"""The stage contract: a small typed class with a name, a version, parameters, declared output columns
and resources, heavy state loaded once in `setup()`, and a function from an Arrow batch of rows to an
Arrow batch of rows. Errors are recorded on the row (its `failures` list), never raised out of a batch."""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from curation.errors import ConfigError, error_kind


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs. `concurrency` is the number of parallel workers (actors for
    stateful stages); None lets Ray decide. `batch_size` is rows per call."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    concurrency: int | None = None
    batch_size: int | None = None


@dataclass
class NoParams:
    pass


def failure(stage: str, exc: BaseException, clip_id: str | None = None) -> dict:
    """A `failures` list item for an exception raised while `stage` worked on a video (or one clip)."""
    message = str(exc) or type(exc).__name__
    return {"stage": stage, "kind": error_kind(exc), "message": message[:2000], "clip_id": clip_id}


class Stage(ABC):
    """Base of every pipeline stage. Subclasses set `name`, `version`, `Params` (a dataclass) and
    `resources`, and implement `__call__`."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type] = NoParams
    resources: ClassVar[Resources] = Resources()
    stateful: ClassVar[bool] = False  # True: runs in an actor pool, setup() once per actor

    def __init__(self, params: Any = None, resources: Resources | None = None):
        self.params = params if isinstance(params, self.Params) else build_params(self.Params, params or {},
                                                                                   self.name)
        if resources is not None:
            self.resources = resources
        self._ready = False

    def output_fields(self) -> list[pa.Field]:
        """Columns this stage adds to each row (empty for stages that only reshape rows)."""
        return []

    def validate(self) -> None:
        """Cheap checks of settings (e.g. that a checkpoint path is given and exists), run on the driver
        before any work starts, so a misconfigured run fails at once with a clear ConfigError."""

    def setup(self) -> None:
        """Load heavy state (models). Called once per worker before the first batch."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    @abstractmethod
    def __call__(self, batch: pa.Table) -> pa.Table: ...

    def provenance(self) -> dict:
        """Who produced this stage's columns: recorded in the lake beside the columns."""
        return {"stage": self.name, "version": self.version, "params": dataclasses.asdict(self.params)}

    def with_(self, **overrides: Any) -> Stage:
        """A copy with some parameters replaced (the original is unchanged)."""
        return type(self)(dataclasses.replace(self.params, **overrides), self.resources)


def build_params(cls: type, values: dict, stage: str):
    """Make a Params dataclass from a dict, refusing unknown keys with the list of known ones."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"stage '{stage}' has no parameter(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def append_columns(batch: pa.Table, fields: list[pa.Field], values: list[dict]) -> pa.Table:
    """Append (or replace) `fields` on `batch` from one dict per row."""
    for f in fields:
        arr = pa.array([v.get(f.name) for v in values], type=f.type)
        idx = batch.schema.get_field_index(f.name)
        batch = batch.set_column(idx, f, arr) if idx >= 0 else batch.append_column(f, arr)
    return batch


def field_meta(stage: Stage) -> dict[bytes, bytes]:
    """Arrow field metadata recording the producer of a column (provenance, DESIGN principle 5)."""
    return {b"videocurate.producer": json.dumps(stage.provenance(), sort_keys=True, default=str).encode()}
