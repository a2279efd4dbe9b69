"""The contract every pipeline entry follows. A `Producer` has a name, a version, checked parameters, the
columns it reads and writes, and a provenance record; a changed version or parameter makes its columns
stale (one rule for everything). Two kinds:

- `Stage`: streaming work on Arrow batches of rows inside one Ray Data plan, with declared `Resources`
  (CPU or GPU), heavy state loaded once per worker in `setup()`. Errors go on the row (its `failures`
  list), never out of a batch.
- `Step`: global work on the committed lake tables between streaming segments (dedup, concepts, tiers,
  captions), incremental through the same staleness rule."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import pyarrow as pa
import pydantic
from pydantic import ConfigDict, Field

from curation.errors import ConfigError, error_kind

if TYPE_CHECKING:
    from curation.lake import Lake

PRODUCER_KEY = b"videocurate.producer"


def params(cls: type) -> type:
    """Decorator for a parameter class: a dataclass whose field types and ranges (`Annotated[float,
    Field(gt=0)]`, `Literal[...]`) are checked when it is built, and which refuses unknown keys."""
    return pydantic.dataclasses.dataclass(cls, config=ConfigDict(extra="forbid"))


# Checked parameter types for stage parameter classes.
Count = Annotated[int, Field(ge=1)]  # frames, samples, bins
Side = Annotated[int, Field(ge=16)]  # a frame side in pixels
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]  # a share, a probability, a confidence
Positive = Annotated[float, Field(gt=0.0)]
NonNegative = Annotated[float, Field(ge=0.0)]


@params
class NoParams:
    pass


@pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Resources:
    """What one worker of a stage needs. `num_gpus > 0` makes it a GPU stage (its device is `cuda`).
    `concurrency`: parallel workers (actors for stateful stages); None lets the runner size the pool to
    the cluster. `batch_size`: rows per call (clips per model batch for scorers). `retries`: re-runs of
    a batch whose worker died before its inputs are recorded as `worker_lost`."""

    num_cpus: Annotated[float, Field(ge=0)] = 1.0
    num_gpus: Annotated[float, Field(ge=0)] = 0.0
    concurrency: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1)] | None = None
    retries: Annotated[int, Field(ge=0)] = 2

    @property
    def device(self) -> str:
        return "cuda" if self.num_gpus > 0 else "cpu"

    @property
    def threads(self) -> int:
        """Threads a worker of the stage keeps busy (its decoders'): its whole CPUs, at least one."""
        return max(1, int(self.num_cpus))


def _explain(exc: pydantic.ValidationError, what: str, cls: type) -> str:
    fields = getattr(cls, "__pydantic_fields__", {})
    parts = []
    for err in exc.errors(include_url=False):
        name = ".".join(str(x) for x in err["loc"]) or "?"
        if err["type"] == "unexpected_keyword_argument":
            parts.append(f"no parameter '{name}' (known: {sorted(fields)})")
            continue
        info = fields.get(str(err["loc"][0])) if err["loc"] else None
        expected = _type_name(info.annotation, info.metadata) if info is not None else "another value"
        parts.append(f"parameter '{name}' expects {expected}, got {err.get('input')!r} ({err['msg']})")
    return f"{what}: " + "; ".join(parts)


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _type_name(tp: Any, metadata: list | tuple = ()) -> str:
    """A readable name of a parameter's type with its range: `float > 0`, `int >= 1 or null`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _type_name(args[0], [*metadata, *(m for a in args[1:] for m in getattr(a, "metadata", [a]))])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        real = [a for a in args if a is not type(None)]
        text = " or ".join(_type_name(a, metadata) for a in real)
        return text + " or null" if len(real) < len(args) else text
    if origin in (list, tuple):
        return f"a list of {_type_name(args[0])}" if args else "a list"
    bounds = [f"{sym} {getattr(m, key)}" for m in metadata for key, sym in _BOUNDS.items() if hasattr(m, key)]
    name = getattr(tp, "__name__", str(tp))
    return " ".join([name, " and ".join(bounds)]) if bounds else name


def build_params(cls: type, values: dict | None, owner: str):
    """The parameter object of `owner` (a stage, step or resource spec) from a dict, with a clear
    ConfigError naming the owner, the parameter and the expected type when a value does not fit."""
    try:
        return cls(**(values or {}))
    except pydantic.ValidationError as exc:
        raise ConfigError(_explain(exc, owner, cls)) from None


def build_resources(base: Resources, overrides: dict | None, owner: str) -> Resources:
    if not overrides:
        return base
    return build_params(Resources, {**dataclasses.asdict(base), **overrides}, f"{owner} resources")


def canonical(value: Any) -> Any:
    """JSON-shaped copy (tuples become lists, keys sorted) so recorded and current provenance compare."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


class Producer:
    """Base of stages and steps: name, version, parameters, declared columns and provenance."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type] = NoParams
    # Parameters that change the produced values (None: all of them); others (block sizes, threads) can
    # change without making earlier results stale.
    semantic_params: ClassVar[tuple[str, ...] | None] = None
    table: ClassVar[str] = "clips"  # the table whose columns it produces
    kind: ClassVar[str] = "stage"

    def __init__(self, params: Any = None):
        self.params = params if isinstance(params, self.Params) else build_params(
            self.Params, params, f"{self.kind} '{self.name}'")

    def input_columns(self) -> list[str]:
        """Columns this entry reads; the pipeline checks at load that an earlier entry produces them."""
        return []

    def output_columns(self) -> list[str]:
        """Columns this entry makes available to later entries."""
        return []

    def recorded_columns(self) -> list[str]:
        """Columns whose producer is recorded in the lake (provenance); staleness is judged on these."""
        return self.output_columns()

    def validate(self) -> None:
        """Cheap checks of settings (e.g. that a checkpoint file exists), run on the driver before any
        work starts, so a misconfigured run fails at once with a clear ConfigError."""

    def provenance(self) -> dict:
        """Who produced the columns: stage name, version and the parameters that shape the values."""
        values = dataclasses.asdict(self.params)
        if self.semantic_params is not None:
            values = {k: v for k, v in values.items() if k in self.semantic_params}
        return canonical({"stage": self.name, "version": self.version, "params": values})

    def is_stale(self, lake: Lake) -> bool:
        """True when a recorded column is missing from the lake or was produced by another version or
        other parameters: the entry must (re)compute it over what the lake already holds."""
        recorded = lake.producers(self.table)
        mine = self.provenance()
        return any(recorded.get(c) != mine for c in self.recorded_columns())


class Stage(Producer, ABC):
    """A streaming stage. Subclasses set `name`, `version`, `Params`, `resources`, declare their columns
    and implement `__call__(batch) -> batch`; `setup()` loads heavy state once per worker."""

    resources: ClassVar[Resources] = Resources()
    stateful: ClassVar[bool] = False  # True: runs in an actor pool, setup() once per actor

    def __init__(self, params: Any = None, resources: Resources | None = None):
        super().__init__(params)
        if resources is not None:
            self.resources = resources
        self._ready = False

    def output_fields(self) -> list[pa.Field]:
        """Score columns this stage adds to each clip row, recorded with their producer."""
        return []

    def output_columns(self) -> list[str]:
        return [f.name for f in self.output_fields()]

    def recorded_columns(self) -> list[str]:
        return [f.name for f in self.output_fields()]

    def setup(self) -> None:
        """Load heavy state (models). Called once per worker before the first batch."""

    def teardown(self) -> None:
        """Release what setup() took (called when a worker retires)."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    @abstractmethod
    def __call__(self, batch: pa.Table) -> pa.Table: ...


class Step(Producer, ABC):
    """A global step over the committed lake: `run(lake)` returns a summary dict for the run report."""

    kind: ClassVar[str] = "step"

    @abstractmethod
    def run(self, lake: Lake) -> dict: ...

    def record(self, lake: Lake) -> None:
        """Record this step as the producer of its columns."""
        lake.record_producers(self.table, {c: self.provenance() for c in self.recorded_columns()})


def failure(stage: str, exc: BaseException, clip_id: str | None = None) -> dict:
    """A `failures` list item for an exception raised while `stage` worked on a video (or one clip)."""
    message = str(exc) or type(exc).__name__
    return {"stage": stage, "kind": error_kind(exc), "message": message[:2000], "clip_id": clip_id}


def append_columns(batch: pa.Table, fields: list[pa.Field], values: list[dict]) -> pa.Table:
    """Append (or replace) `fields` on `batch` from one dict per row."""
    for f in fields:
        arr = pa.array([v.get(f.name) for v in values], type=f.type)
        idx = batch.schema.get_field_index(f.name)
        batch = batch.set_column(idx, f, arr) if idx >= 0 else batch.append_column(f, arr)
    return batch


def field_meta(stage: Producer) -> dict[bytes, bytes]:
    """Arrow field metadata recording the producer of a column (provenance, DESIGN principle 5)."""
    return {PRODUCER_KEY: json.dumps(stage.provenance(), sort_keys=True).encode()}
