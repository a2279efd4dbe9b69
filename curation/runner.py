"""The Ray runner: a pipeline's streaming stages become one Ray Data plan (tasks for stateless stages,
actor pools for stateful ones, each with its declared resources); the driver streams the results into
the lake in chunks; global steps (dedup, concepts) run on the committed tables afterwards.

Runs on an embedded local Ray by default and on a cluster with `address=`."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from curation.errors import ConfigError
from curation.inputs import InputFile, discover
from curation.schema import FAILURES_SCHEMA, row_schema, rows_to_table
from curation.stage import Stage, Step, field_meta
from curation.video import header_rate

# The lake (Lance, pandas), the writer, the pipeline loader and the scorer fusion are imported where they
# are used: every Ray worker that runs a stage unpickles `_call` or an actor class from this module, and
# must not pay for the driver's imports (measured: ~0.2-0.3 s of CPU per worker process).
if TYPE_CHECKING:
    from curation.lake import Lake
    from curation.pipeline import Pipeline
    from curation.writer import LakeWriter, WriteStats

log = logging.getLogger("videocurate")
PIPELINE_KEY = "videocurate.pipeline"  # `videos` metadata: the last run's pipeline (what `redrive` reruns)


@dataclass
class RunSummary:
    pipeline: str
    lake: str
    inputs: int
    skipped: int  # already committed by an earlier run
    stats: WriteStats
    steps: dict[str, dict] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    executor: str = ""  # what ran the stages, e.g. "local executor, up to 2 workers"

    def lines(self) -> list[str]:
        v = self.stats.videos
        out = [f"pipeline {self.pipeline} → {self.lake}" + (f" ({self.executor})" if self.executor else ""),
               f"inputs {self.inputs} (skipped {self.skipped} already in the lake)",
               f"videos ok {v['ok']}, failed {v['failed']}, no clips {v['no_clips']}, "
               f"duplicate {v['duplicate']}; clips {self.stats.clips}; failure rows {self.stats.failures}"
               + (f"; {v['committed by another run']} committed by a concurrent run"
                  if v["committed by another run"] else "")]
        for k, s in self.steps.items():
            if "skipped" in s:
                out.append(f"step {k}: skipped ({s['skipped']})")
            elif k == "tiers":
                from curation.tiers import render_funnel

                out += ["step tiers:", *("  " + line for line in render_funnel(s).splitlines())]
            else:
                out.append(f"step {k}: {s}")
        out += [f"warning: {p}" for p in self.problems]
        out.append(f"done in {self.seconds:.1f}s")
        return out


def init_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start (or join) Ray quietly. Embedded local Ray unless `address` is given; `num_gpus` overrides the
    GPUs the embedded Ray detects."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    import ray

    if ray.is_initialized():
        return
    kwargs = dict(ignore_reinit_error=True, include_dashboard=False, logging_level=logging.WARNING,
                  log_to_driver=True, configure_logging=True)
    address = address or os.environ.get("RAY_ADDRESS")  # `ray job submit` runs us with RAY_ADDRESS set
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local": always an embedded instance. Without it ray.init() joins whatever /tmp/ray/ray_current_cluster
        # names — a `ray start` cluster of someone else's, or a stale file left by one that died, which then
        # refuses num_cpus ("When connecting to an existing cluster, num_cpus ... must not be provided").
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    ctx = ray.data.DataContext.get_current()
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("ray.data")] + ["ray.data"]:
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.max_errored_blocks = -1  # a crashed worker loses its block, not the run (see _finish)


def output_fields(stages: list[Stage]) -> list[pa.Field]:
    fields: list[pa.Field] = []
    for s in stages:
        for f in s.output_fields():
            fields.append(f if f.metadata else f.with_metadata(field_meta(s)))
    return fields


def _actor_class(stage: Stage, ledger=None) -> type:
    """An actor class for a stateful stage: builds the stage's heavy state once, then serves batches.
    The stage travels inside the class (a closure) rather than as constructor arguments, which Ray
    would park in the object store.

    With a `ledger` (see build_plan) each call first records that it started on its batch: a batch
    whose earlier calls started and never returned `resources.retries + 1` times (each one killed its
    worker) is dropped instead of run again, so its videos become `worker_lost` rows. Calls that never
    reached an actor (its node was lost, it was restarting) are not counted."""
    import hashlib

    import ray

    def key(batch: pa.Table) -> str:
        h = hashlib.blake2b(stage.name.encode(), digest_size=16)
        for name in ("uri", "clip_id"):
            if name in batch.column_names:
                for v in batch.column(name).to_pylist():
                    h.update(str(v).encode() + b"\0")
        return h.hexdigest()

    class StageActor:
        def __init__(self):
            from curation.local import limit_threads

            limit_threads(stage.resources.threads)
            self.stage = stage
            self.stage.ensure_setup()

        def __call__(self, batch: pa.Table) -> pa.Table:
            if ledger is None:
                return self.stage(batch)
            k = key(batch)
            if ray.get(ledger.start.remote(k)) > stage.resources.retries:
                return self.stage(batch.slice(0, 0))  # this batch killed its worker every time
            try:
                return self.stage(batch)
            finally:
                ray.get(ledger.finish.remote(k))

        def __del__(self):
            self.stage.teardown()

    StageActor.__name__ = StageActor.__qualname__ = f"{type(stage).__name__}Actor"
    return StageActor


def _call(stage: Stage, batch: pa.Table) -> pa.Table:
    return stage(batch)


EXECUTORS = ("auto", "local", "ray")


def choose_executor(name: str, stages: list[Stage], address: str | None = None) -> str:
    """`auto`: Ray when the run joins a cluster (`address`, RAY_ADDRESS), when this process already runs
    Ray, or when a stage needs a GPU; otherwise the local executor (curation.local), which spares a run
    on one machine Ray's start-up."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor '{name}'; choose from {', '.join(EXECUTORS)}")
    address = address or os.environ.get("RAY_ADDRESS")
    if name == "local" and address:
        raise ConfigError(f"--executor local runs on this machine only; joining the cluster at {address} needs Ray "
                          "(--executor ray or auto)")
    if name != "auto":
        return name
    ray = sys.modules.get("ray")
    if address or (ray is not None and hasattr(ray, "is_initialized") and ray.is_initialized()):
        return "ray"
    return "ray" if any(s.resources.num_gpus for s in stages) else "local"


class RayExecutor:
    """The Ray Data plan of `stages` (build_plan) on the embedded Ray or the cluster at `address`."""

    def __init__(self, stages: list[Stage], address: str | None = None, num_cpus: int | None = None):
        init_ray(address, num_cpus)
        check_cluster(stages)
        self.stages = stages
        self.lost: list = []  # Ray drops a lost block (see build_plan); _finish finds its videos missing
        address = address or os.environ.get("RAY_ADDRESS")
        self.description = f"Ray at {address}" if address else "embedded Ray"

    def map(self, blocks: list[pa.Table], cost=None) -> Iterable[pa.Table]:
        """The plan's results as they complete; `cost` is not used (Ray Data schedules the blocks)."""
        yield from build_plan(self.stages, blocks).iter_batches(batch_format="pyarrow", batch_size=None)

    def close(self) -> None:
        """Nothing to stop: the Ray plan's actors go when its iteration ends."""


def open_executor(stages: list[Stage], name: str = "auto", address: str | None = None,
                  num_cpus: int | None = None):
    """What runs the streaming stages: a RayExecutor or a LocalExecutor (same `map(blocks)` and `lost`)."""
    if choose_executor(name, stages, address) == "ray":
        return RayExecutor(stages, address, num_cpus)
    from curation.local import LocalExecutor

    return LocalExecutor(stages, cpus=num_cpus)


def build_plan(stages: list[Stage], blocks: list[pa.Table]):
    """Ray Data plan: from the input blocks through every stage, with each stage's resources."""
    import ray

    # what is free now, not the cluster's total: actors of other work (a caption engine, another job)
    # hold CPUs this plan cannot have
    fit_pools(stages, ray.available_resources().get("CPU", 0))
    ledger = None
    if any(s.stateful for s in stages):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        class CrashLedger:
            """Per batch key: calls that started on it and have not returned (a call that killed its
            worker never returns)."""

            def __init__(self):
                self.open: dict[str, int] = {}

            def start(self, key: str) -> int:
                n = self.open.get(key, 0)
                self.open[key] = n + 1
                return n

            def finish(self, key: str) -> None:
                n = self.open.pop(key, 1) - 1
                if n > 0:
                    self.open[key] = n

        # on the driver's node, which the run cannot outlive anyway
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        ledger = ray.remote(CrashLedger).options(num_cpus=0, scheduling_strategy=here).remote()
    ds = ray.data.from_arrow(blocks)
    for s in stages:
        r = s.resources
        common = dict(batch_format="pyarrow", batch_size=r.batch_size, num_cpus=r.num_cpus,
                      zero_copy_batch=False)
        if r.num_gpus:
            common["num_gpus"] = r.num_gpus
        if s.stateful:  # an actor pool that grows with the cluster unless the YAML fixes its size
            fn, retries = _actor_class(s, ledger), {"max_restarts": -1, "max_task_retries": -1}
            common["concurrency"] = r.concurrency or (1, _pool_limit(r))
        else:
            fn, retries = functools.partial(_call, s), {"max_retries": r.retries}
            if r.concurrency:
                common["concurrency"] = r.concurrency
        # A batch that kills its worker (a decoder segfault) is re-run `retries` times, then its block
        # is dropped and its videos become `worker_lost` failure rows; Ray Data's default would retry it
        # forever and one poisonous file would hang the run. Tasks: Ray counts every failure, and a lost
        # node costs each of its tasks one. Actors: Ray retries forever and the actor counts (ledger
        # above), because a lost node leaves its actors unreachable for the seconds before the cluster
        # declares it dead, and Ray burns a finite max_task_retries on that in a few milliseconds: the
        # node's in-flight videos were lost as `worker_lost` although the actor came back on another
        # node. (Ray marks remote args deprecated for 2.64 but offers no other way to set this:
        # pyproject pins ray below 2.64.)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ray_remote_args_fn.*deprecated.*")
            ds = ds.map_batches(fn, **common, ray_remote_args_fn=lambda retries=retries: retries)
    return ds


def _pool_limit(r) -> int:
    """The most actors of one stage the cluster can hold at once (GPU stages: GPUs / num_gpus)."""
    import ray

    have = ray.cluster_resources()
    by_cpu = int(have.get("CPU", 1) // max(r.num_cpus, 1))
    by_gpu = int(have.get("GPU", 0) // r.num_gpus) if r.num_gpus else by_cpu
    return max(1, min(by_cpu, by_gpu))


def check_cluster(stages: list[Stage]) -> None:
    """A stage asking for more GPUs (or CPUs) than one node of the cluster has would wait forever."""
    import ray

    have = ray.cluster_resources()
    for s in stages:
        for key, want in (("GPU", s.resources.num_gpus), ("CPU", s.resources.num_cpus)):
            if want and have.get(key, 0) < want:
                raise ConfigError(f"stage '{s.name}' asks for {want:g} {key}(s) per worker but the Ray cluster has "
                                  f"{have.get(key, 0):g}; lower its resources.num_{key.lower()}s or join a cluster "
                                  f"that has them (--address)")


def fit_pools(stages: list[Stage], cpus: float) -> None:
    """Each actor pool holds at least one actor for the whole run, so the task stages need CPUs beyond
    the pools' or they never start (seen: `--num-cpus 1` with the default pipeline, a CPU and a GPU pool
    on 2 CPUs, or a CPU held by another actor, hung). When the pools' minimum would leave too little,
    their per-actor CPU request is scaled down to fit (the actors then share cores with the tasks) and a
    warning says so."""
    pools = [s for s in stages if s.stateful]
    held = sum((s.resources.concurrency or 1) * s.resources.num_cpus for s in pools)
    task = max([s.resources.num_cpus for s in stages if not s.stateful], default=0.0)
    if not pools or held + task <= cpus + 1e-9:
        return
    scale = max(0.0, cpus - task) / held
    for s in pools:
        s.resources = dataclasses.replace(s.resources, num_cpus=round(s.resources.num_cpus * scale, 3))
    log.warning("the cluster has %g CPUs and the actor pools would hold %g with the task stages needing %g: "
                "actor CPU requests scaled to %s", cpus, held, task,
                ", ".join(f"{s.name} {s.resources.num_cpus:g}" for s in pools))


def input_blocks(files: list[InputFile], schema: pa.Schema, per_block: int = 1) -> list[pa.Table]:
    rows = [{"uri": f.uri, "size_bytes": f.size_bytes, "mtime_ns": f.mtime_ns, "failures": []} for f in files]
    return [rows_to_table(rows[i:i + per_block], schema) for i in range(0, len(rows), per_block)]


@dataclass
class LakeState:
    """What one scan of `videos` tells a new run: inputs to skip (uri, size, mtime), attempt numbers of
    retried failures, and the content ids already committed (byte-identical inputs become duplicates)."""

    done: set[tuple[str, int, int]] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)
    known_ids: dict[str, str] = field(default_factory=dict)


def lake_state(lake: Lake, retry_failed: bool) -> LakeState:
    state = LakeState()
    for b in lake.scan("videos", columns=["uri", "size_bytes", "mtime_ns", "status", "video_id"]):
        for uri, size, mtime, status, vid in zip(*(b.column(i).to_pylist() for i in range(5))):
            if status == "ok" and vid:
                state.known_ids.setdefault(vid, uri)
            if not (retry_failed and status == "failed"):
                state.done.add((uri, size, mtime))
    if retry_failed:
        for b in lake.scan("failures", columns=["uri", "attempt"]):
            for uri, attempt in zip(b.column(0).to_pylist(), b.column(1).to_pylist()):
                state.attempts[uri] = max(state.attempts.get(uri, 1), (attempt or 1) + 1)
    return state


def forget_failed(lake: Lake, uris: list[str]) -> None:
    """Delete the `failed` videos rows of inputs about to be retried (their failure rows stay: history)."""
    from curation.writer import quoted

    for i in range(0, len(uris), 500):
        lake.delete("videos", f"status = 'failed' AND uri IN ({quoted(uris[i:i + 500])})")


def run_pipeline(pipeline: str | dict | Pipeline, inputs: Iterable[str], lake: str | Lake,
                 overrides: Iterable[str] = (), address: str | None = None, num_cpus: int | None = None,
                 progress: bool = True, retry_failed: bool = False,
                 extensions: Iterable[str] | None = None, executor: str = "auto") -> RunSummary:
    """Run a pipeline over input paths into a lake. Completed inputs of earlier runs are skipped.
    `executor`: auto, local or ray (choose_executor)."""
    from curation.pipeline import Pipeline, load_pipeline
    from curation.scoring import fuse

    t0 = time.monotonic()
    pipe = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline, list(overrides))
    existing = lake if not isinstance(lake, (str, os.PathLike)) else _open_lake(lake) if os.path.isdir(lake) else None
    have = existing.dataset("clips").schema.names if existing and existing.exists("clips") else []
    plan: dict = {}

    def streaming(built_stages: list) -> None:
        """The streaming stages built and checked; on a new lake, where every input is to do, the local
        workers start now on the first videos while the driver imports the steps' modules and makes the
        lake (~0.7 s of its start-up with the default pipeline)."""
        for b in built_stages:
            b.validate()
        plan["stages"] = fuse([b for b in built_stages if isinstance(b, Stage)])
        plan["kind"] = choose_executor(executor, plan["stages"], address)  # checked before any work
        root = existing.root if existing else os.path.abspath(os.fspath(lake))
        plan["files"], plan["problems"] = discover(inputs, extensions, exclude=[root])
        if existing is None and plan["kind"] == "local" and plan["files"]:
            blocks = _blocks(plan["files"], plan["stages"])  # before the fork: pyarrow imports pandas for them
            plan["runner"] = open_executor(plan["stages"], "local", num_cpus=num_cpus)
            plan["runner"].submit(blocks, cost=expected_work)

    runner = None
    try:
        built = pipe.build(available=have, on_stages=streaming)  # parameters, resources and columns checked
        runner = plan.get("runner")
        for b in built:
            b.validate()
        from curation.lake import Lake
        from curation.writer import LakeWriter, WriteStats, recover

        lake = existing or Lake(lake)  # created only once the pipeline is known to be valid
        stages, kind, files, problems = plan["stages"], plan["kind"], plan["files"], plan["problems"]
        steps = [b for b in built if isinstance(b, Step)]
        with lake.lock():  # a concurrent run commits under the same lock: recovery never sees its chunk half-written
            recover(lake)
            state = lake_state(lake, retry_failed)
            todo = [f for f in files if (f.uri, f.size_bytes, f.mtime_ns) not in state.done]
            if retry_failed:
                forget_failed(lake, [f.uri for f in todo])
        summary = RunSummary(pipe.name, lake.root, len(files), len(files) - len(todo), WriteStats(),
                             problems=problems)

        fields = output_fields(stages)
        stale = [b for b in built if isinstance(b, Stage) and b.recorded_columns() and lake.exists("clips")
                 and b.is_stale(lake)]
        if todo:
            writer = LakeWriter(lake, fields, commit_every=pipe.commit_every, attempts=state.attempts,
                                known_ids=state.known_ids)
            if runner is None:
                runner = open_executor(stages, kind, address, num_cpus)
                results = runner.map(_blocks(todo, stages), cost=expected_work)
            else:  # started on the new lake's inputs (all of them are to do)
                results = runner.results()
            summary.executor = runner.description
            bar = _progress(len(todo), progress)
            try:
                for batch in results:
                    for row in batch.to_pylist():
                        if writer.add(row):
                            bar.update(1)
                _finish(writer, todo, runner.lost)
            finally:
                writer.commit()
                bar.close()
            summary.stats = writer.stats
    finally:
        runner = runner or plan.get("runner")  # also when a step failed its checks after the workers started
        if runner is not None:
            runner.close()
    if stale:
        summary.steps["rescore"] = rescore_existing(lake, stale, {f.uri for f in todo}, progress,
                                                    executor=kind, address=address, num_cpus=num_cpus)
    if todo or stale:
        with lake.lock():
            lake.record_producers("clips", {f.name: _producer(f) for f in fields})
            lake.set_meta("videos", PIPELINE_KEY, pipe.document())
    for step in steps:
        with lake.lock():  # a step reads and rewrites whole tables: never beside another run's commit
            if not lake.count(step.table):  # a completed run whose inputs all failed or made no clip
                summary.steps[step.name] = {"step": step.name, "skipped": f"no rows in '{step.table}' yet: no "
                                            "input has made a clip"}
                continue
            summary.steps[step.name] = step.run(lake)
    summary.seconds = time.monotonic() - t0
    return summary


def _blocks(files: list[InputFile], stages: list[Stage]) -> list[pa.Table]:
    """The input blocks of a run, largest files first (the local executor reorders them by their headers
    as it goes: expected_work): one video per block until the plan would get too long."""
    files = sorted(files, key=lambda f: -f.size_bytes)
    return input_blocks(files, row_schema(output_fields(stages)), max(1, -(-len(files) // 4000)))


def _open_lake(path: str) -> Lake:
    from curation.lake import Lake

    return Lake(path)


PIXELS_PER_S_OF_WORK = 20e6  # the pixel rate that costs as much as the per-clip work of a footage second


def expected_work(block: pa.Table) -> float:
    """How much work a block of input videos holds, for the order the local executor runs blocks in
    (the costliest first, so the run does not end on one long video alone): per video its seconds of
    footage, weighted up by the pixels a second to decode and scale (a 1080p second at 24 fps weighs
    ~3.5 of a 240p one, about what a default run spends on each: the per-clip scorers cost the same at
    any size). From the containers' headers only (curation.video.header_rate); unreadable ones weigh 0."""
    work = 0.0
    for uri in block.column("uri").to_pylist():
        seconds, pixels_per_s = header_rate(uri.removeprefix("file://"))
        work += seconds * (1.0 + pixels_per_s / PIXELS_PER_S_OF_WORK)
    return work


def _producer(f: pa.Field) -> dict:
    raw = (f.metadata or {}).get(b"videocurate.producer")
    return json.loads(raw) if raw else {}


def rescore_existing(lake: Lake, stages: list[Stage], skip_uris: set[str], progress: bool,
                     where: str | None = None, executor: str = "auto", address: str | None = None,
                     num_cpus: int | None = None) -> dict:
    """Run `stages` (those whose columns are stale) over the clips already in the lake (except those of
    `skip_uris`, just written; only those matching `where` when given) and set their columns in place.
    Clips of a block the executor gave up on become failure rows."""
    import pyarrow.compute as pc

    from curation.scoring import fuse
    from curation.writer import failure_rows

    fused = fuse(stages)
    fields = output_fields(fused)
    produced = {x.name for x in fields}
    have = lake.dataset("clips").schema
    # every other column the lake holds travels along: scorers read earlier scorers' columns (the
    # embeddings read content_box), and those are not recomputed here
    schema = row_schema(fields)
    schema = pa.schema([*schema, *(f for f in have if f.name not in schema.names and f.name not in produced)])
    base = [f.name for f in schema if f.name in have.names and f.name not in produced]
    blocks = []
    for b in lake.scan("clips", columns=base, where=where, batch_size=64):
        t = pa.Table.from_batches([b])
        if skip_uris:
            t = t.filter(pc.invert(pc.is_in(t["uri"], pa.array(sorted(skip_uris)))))
        if t.num_rows:
            blocks.append(rows_to_table(t.to_pylist(), schema))
    if not blocks:
        return {"clips": 0}
    names = ["clip_id", *(f.name for f in fields)]
    done, failed, pending = 0, 0, []
    bar = _progress(sum(b.num_rows for b in blocks), progress, unit="clip", desc="rescoring")
    runner = open_executor(fused, executor, address, num_cpus)
    for batch in runner.map(blocks):
        pending.append(batch.select(names))
        items = failure_rows(batch.select(["uri", "video_id", "failures"]).to_pylist())
        if items:
            lake.append("failures", rows_to_table(items, FAILURES_SCHEMA))
            failed += len(items)
        bar.update(batch.num_rows)
        if sum(p.num_rows for p in pending) >= 1024:
            done += _merge(lake, pending)
            pending = []
    done += _merge(lake, pending)
    bar.close()
    for gone in runner.lost:
        rows = [{**r, "failures": [{"stage": "runner", "kind": gone.kind, "message": gone.message,
                                    "clip_id": r["clip_id"]}]}
                for r in gone.block.select(["uri", "video_id", "clip_id"]).to_pylist()]
        lake.append("failures", rows_to_table(failure_rows(rows), FAILURES_SCHEMA))
        failed += len(rows)
    return {"stages": [s.name for s in stages], "clips": done, "clip_failures": failed}


def _merge(lake: Lake, parts: list[pa.Table]) -> int:
    if not parts:
        return 0
    table = pa.concat_tables(parts)
    with lake.lock():
        lake.merge_columns("clips", table, on="clip_id")
    return table.num_rows


def _finish(writer: LakeWriter, todo: list[InputFile], lost: Iterable = ()) -> None:
    """Inputs whose rows never all arrived (a worker died) become failure rows, never silence; `lost`:
    the blocks the executor gave up on, with their failure kind and message."""
    why = {uri: (g.kind, g.message) for g in lost for uri in g.block.column("uri").to_pylist()}
    for uri in writer.pending_uris():
        writer.fail(uri, *why.get(uri, ("worker_lost", "a worker died before all of this video's clips arrived")))
    for f in todo:
        if f.uri not in writer.seen:
            writer.fail(f.uri, *why.get(f.uri, ("worker_lost", "a worker died while processing this input")),
                        {"size_bytes": f.size_bytes, "mtime_ns": f.mtime_ns})


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, enabled: bool, unit: str = "video", desc: str = "curating"):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True)
