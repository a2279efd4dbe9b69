"""`videocurate redrive`: retry the recorded failures (after fixing a codec, bringing a caption server
back) and mark the ones that now succeed as resolved. Failure rows are history: nothing is deleted, a
success sets `resolved_at`, a new failure adds a row with `attempt` + 1.

- A failure of a whole input (no clip_id: probe, split, a lost worker) reruns that input through the
  pipeline; it is resolved when the input is no longer `failed`.
- A failure of one clip in a streaming stage (a scorer) rescores those clips with that stage; in a step
  (e.g. `caption`) reruns the step, which retries the clips it has no good result for. Resolved when the
  retry adds no new failure row for that clip and stage.

The pipeline is the one the lake's last run recorded (or `--pipeline`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pyarrow as pa

from curation.errors import ConfigError
from curation.lake import Lake
from curation.pipeline import Pipeline, load_pipeline
from curation.query import connect, to_arrow
from curation.runner import PIPELINE_KEY, rescore_existing, run_pipeline
from curation.stage import Stage, Step
from curation.writer import quoted


@dataclass
class RedriveSummary:
    selected: int = 0  # unresolved failure rows that matched
    inputs: int = 0  # inputs rerun
    clips: dict[str, int] = field(default_factory=dict)  # stage → clips retried
    resolved: int = 0
    still_failing: int = 0
    skipped: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"redrive: {self.selected} unresolved failure row(s) selected; reran {self.inputs} input(s)"
               + "".join(f", {n} clip(s) of {s}" for s, n in self.clips.items()),
               f"resolved {self.resolved}, still failing {self.still_failing}"]
        return out + [f"skipped: {s}" for s in self.skipped]


def _pipeline(lake: Lake, pipeline: str | None, overrides: list[str]) -> Pipeline:
    if pipeline:
        return load_pipeline(pipeline, overrides)
    doc = lake.meta("videos", PIPELINE_KEY)
    if doc is None:
        raise ConfigError("this lake records no pipeline (written before redrive existed): pass --pipeline")
    return load_pipeline(doc, overrides)


def redrive(lake: Lake | str, stage: str | None = None, kind: str | None = None, pipeline: str | None = None,
            overrides: list[str] = (), address: str | None = None, num_cpus: int | None = None,
            progress: bool = True, executor: str = "auto") -> RedriveSummary:
    lake = lake if isinstance(lake, Lake) else Lake(lake, create=False)
    summary = RedriveSummary()
    if not lake.exists("failures"):
        return summary
    cond = ["resolved_at is null"] if "resolved_at" in lake.dataset("failures").schema.names else []
    cond += [f"stage = {quoted([stage])}"] if stage else []
    cond += [f"kind = {quoted([kind])}"] if kind else []
    where = " and ".join(cond) or "true"
    rows = to_arrow(connect(lake).sql(f"select uri, clip_id, stage from failures where {where}")).to_pylist()
    summary.selected = len(rows)
    if not rows:
        return summary
    pipe = _pipeline(lake, pipeline, list(overrides))
    start = dt.datetime.now(dt.timezone.utc)
    uris = sorted({r["uri"] for r in rows if r["clip_id"] is None})
    if uris:
        run_pipeline(pipe, uris, lake, address=address, num_cpus=num_cpus, progress=progress, retry_failed=True,
                     executor=executor)
        summary.inputs = len(uris)
    by_stage: dict[str, set[str]] = {}
    for r in rows:
        if r["clip_id"] is not None:
            by_stage.setdefault(r["stage"], set()).add(r["clip_id"])
    if by_stage:
        _retry_clips(lake, pipe, by_stage, summary, progress, address, num_cpus, executor)
    _resolve(lake, where, start, summary)
    return summary


def _retry_clips(lake: Lake, pipe: Pipeline, by_stage: dict[str, set[str]], summary: RedriveSummary,
                 progress: bool, address: str | None, num_cpus: int | None, executor: str) -> None:
    built = {b.name: b for b in pipe.build(available=lake.dataset("clips").schema.names)}
    for name, ids in sorted(by_stage.items()):
        entry = built.get(name)
        if entry is None:
            summary.skipped.append(f"stage '{name}' is not in pipeline '{pipe.name}' ({len(ids)} clip(s))")
            continue
        entry.validate()
        if isinstance(entry, Step):
            entry.run(lake)
        elif isinstance(entry, Stage):
            ordered = sorted(ids)
            for i in range(0, len(ordered), 500):
                rescore_existing(lake, [entry], set(), progress, where=f"clip_id IN ({quoted(ordered[i:i + 500])})",
                                 executor=executor, address=address, num_cpus=num_cpus)
        summary.clips[name] = len(ids)


def _resolve(lake: Lake, where: str, start: dt.datetime, summary: RedriveSummary) -> None:
    """Set resolved_at on the selected rows whose retry succeeded: the input is no longer failed / no
    failure row for the same clip and stage arrived since `start`."""
    con = connect(lake)
    ts = start.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    old = f"({where}) and \"at\" < '{ts}'"
    inputs = [r[0] for r in con.execute(
        f"select distinct f.uri from failures f where {old} and f.clip_id is null and exists (select 1 from videos v "
        "where v.uri = f.uri and v.status <> 'failed') and not exists (select 1 from failures g where g.uri = f.uri "
        f"and g.clip_id is null and g.stage = f.stage and g.kind = f.kind and g.\"at\" >= '{ts}')").fetchall()]
    clips = con.execute(
        f"select distinct f.stage, f.clip_id from failures f where {old} and f.clip_id is not null and not exists "
        "(select 1 from failures g where g.clip_id = f.clip_id and g.stage = f.stage "
        f"and g.\"at\" >= '{ts}')").fetchall()
    total = con.execute(f"select count(*) from failures where {old}").fetchall()[0][0]
    ds = lake.dataset("failures")
    if "resolved_at" not in ds.schema.names:  # a lake older than redrive
        ds.add_columns([pa.field("resolved_at", pa.timestamp("us", tz="UTC"))])
    now = f"timestamp '{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S.%f}'"
    lance_old = f"({where}) and `at` < timestamp '{start:%Y-%m-%d %H:%M:%S.%f}'"
    groups = [("clip_id is null", "uri", inputs)]
    for stage in sorted({s for s, _ in clips}):
        groups.append((f"stage = {quoted([stage])}", "clip_id", [c for s, c in clips if s == stage]))
    resolved = 0
    for cond, column, keys in groups:
        for i in range(0, len(keys), 500):
            res = lake.dataset("failures").update(
                {"resolved_at": now},
                where=f"{lance_old} and resolved_at is null and {cond} and {column} IN ({quoted(keys[i:i + 500])})")
            resolved += int(res.get("num_rows_updated", 0))
    summary.resolved = resolved
    summary.still_failing = int(total) - resolved
