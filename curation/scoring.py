"""Scorers and their fusion. A `Scorer` is a stage that turns a clip's decoded frames into score columns,
one clip (`score`) or a batch of clips (`score_batch`, what a GPU model wants) at a time. The runner
fuses consecutive scorers: the CPU ones into one `ScoreGroup` that decodes each clip's frames once for
all of them, the GPU ones into one `GpuScoreGroup` actor pool (declared `num_gpus`) fed the frames that
the CPU group decoded for it, so decode and CPU scoring never hold a GPU."""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from curation.errors import ConfigError
from curation.frames import ClipFrames, FrameRequest, decode_clips, merge_requests
from curation.schema import FAILURE_ITEM
from curation.stage import Resources, Stage, append_columns, failure, field_meta

CLIPS_PER_BATCH = 16  # clips decoded and scored together: bounds decoded frames per worker
FRAMES_COLUMN = "_frames"  # decoded samples handed from a CPU group to the GPU group after it
CLIP_INPUTS = ["clip_id", "uri", "start_frame", "end_frame", "fps", "width", "height"]


class Scorer(Stage):
    """A stage that adds score columns to clip rows. Subclasses set `name`, `version`, `Params` and
    implement `output_fields()`, `request()` and `score(clip) -> dict` (or `score_batch(clips)` for a
    batched model), optionally `setup()`. `resources.num_gpus > 0` makes it a GPU scorer; `self.device`
    is then `cuda`."""

    def __init__(self, params=None, resources: Resources | None = None):
        cls = type(self)
        if cls.score is Scorer.score and cls.score_batch is Scorer.score_batch:
            raise TypeError(f"scorer {cls.__name__} must implement score(clip) or score_batch(clips)")
        super().__init__(params, resources)

    @abstractmethod
    def request(self) -> FrameRequest:
        """The frames this scorer needs from each clip."""

    def score(self, clip: ClipFrames) -> dict:
        """Output columns for one clip, keyed by field name (default: a batch of one)."""
        return self.score_batch([clip])[0]

    def score_batch(self, clips: Sequence[ClipFrames]) -> list[dict]:
        """Output columns for each clip of a batch (default: `score` one by one)."""
        return [self.score(c) for c in clips]

    @abstractmethod
    def output_fields(self) -> list[pa.Field]: ...

    def input_columns(self) -> list[str]:
        return list(CLIP_INPUTS)

    @property
    def device(self) -> str:
        return self.resources.device

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.ensure_setup()
        return score_table(batch, [self], group_name=self.name, threads=self.resources.threads)


def annotated_fields(scorer: Scorer) -> list[pa.Field]:
    """The scorer's output fields, each carrying its provenance (stage, version, params)."""
    meta = field_meta(scorer)
    return [f.with_metadata({**(f.metadata or {}), **meta}) for f in scorer.output_fields()]


def _to_arrow_value(value):
    # NumPy values become plain Python so pa.array can build the declared (e.g. fixed-size list) type.
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _batched(scorer: Scorer) -> bool:
    return type(scorer).score_batch is not Scorer.score_batch


def run_scorers(scorers: Sequence[Scorer], clips: list[tuple[int, ClipFrames]], outs: list[dict],
                fails: list[list[dict]], timings: dict[str, float]) -> None:
    """Score `clips` (row position, frames) with each scorer in order, into `outs`/`fails` by position.
    A scorer raising fails only its own columns of that clip; a batched scorer whose batch raises is
    retried clip by clip so one bad clip does not fail the others. Later scorers see earlier scorers'
    columns in `clip.row`."""
    for scorer in scorers:
        t0 = time.perf_counter()
        subs = [c.subset(scorer.request().frames) for _, c in clips]
        values: list[dict | BaseException] | None = None
        if _batched(scorer) and len(subs) > 1:
            try:
                values = scorer.score_batch(subs)
                if len(values) != len(subs):
                    raise ValueError(f"score_batch returned {len(values)} results for {len(subs)} clips")
            except Exception:  # noqa: BLE001 - isolate the bad clip below
                values = None
        if values is None:
            values = []
            for sub in subs:
                try:
                    values.append(scorer.score_batch([sub])[0])
                except Exception as exc:  # noqa: BLE001 - recorded on the row, other scorers still run
                    values.append(exc)
        for (i, clip), value in zip(clips, values):
            if isinstance(value, BaseException):
                fails[i].append(failure(scorer.name, value, clip.clip_id))
                continue
            value = {k: _to_arrow_value(v) for k, v in value.items()}
            outs[i].update(value)
            clip.row.update(value)
        timings[scorer.name] = timings.get(scorer.name, 0.0) + time.perf_counter() - t0


def _with_failures(batch: pa.Table, fails: list[list[dict]]) -> pa.Table:
    idx = batch.schema.get_field_index("failures")
    arr = pa.array(fails, batch.schema.field(idx).type if idx >= 0 else pa.list_(FAILURE_ITEM))
    return batch.set_column(idx, "failures", arr) if idx >= 0 else batch.append_column("failures", arr)


def score_table(batch: pa.Table, scorers: Sequence[Scorer], group_name: str,
                timings: dict[str, float] | None = None, feed: FrameRequest | None = None,
                threads: int | None = None, scored: dict[int, tuple[dict, list[dict]]] | None = None,
                frames: dict[int, ClipFrames] | None = None) -> pa.Table:
    """Score every clip row of `batch` on one decode per clip. A decode failure fails the clip for all
    scorers (a `failures` item from `group_name`). Rows without a clip pass through. With `feed`, the
    samples a downstream GPU group asked for are attached in FRAMES_COLUMN. `scored` (row position ->
    columns and failure items) and `frames` (row position -> samples) come from the split's decode
    (curation.splitscore): those clips are not decoded again."""
    timings = timings if timings is not None else {}
    scored, frames = scored or {}, frames or {}
    rows = batch.to_pylist()
    live = [i for i, r in enumerate(rows) if r.get("clip_id") is not None and i not in scored and i not in frames]
    outs: list[dict] = [{} for _ in rows]
    fails: list[list[dict]] = [list(r.get("failures") or []) for r in rows]
    for i, (columns, items) in scored.items():
        outs[i] = dict(columns)
        fails[i] += items
    requests = [s.request() for s in scorers] + ([feed] if feed else [])
    t0 = time.perf_counter()
    decoded = decode_clips([rows[i] for i in live], merge_requests(requests), threads) if live else []
    timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t0
    clips = []
    for i, clip in frames.items():
        clip.row, clip.clip_id, clip.uri = rows[i], rows[i]["clip_id"], rows[i]["uri"]
        clips.append((i, clip))
    for i, clip in zip(live, decoded):
        if isinstance(clip, BaseException):
            fails[i].append(failure(group_name, clip, rows[i]["clip_id"]))
        else:
            clips.append((i, clip))
    run_scorers(scorers, clips, outs, fails, timings)
    batch = append_columns(_with_failures(batch, fails), [f for s in scorers for f in annotated_fields(s)], outs)
    if feed is not None:
        payload: list[bytes | None] = [None] * len(rows)
        for i, clip in clips:
            payload[i] = clip.fit(feed).to_bytes()
        batch = append_columns(batch, [pa.field(FRAMES_COLUMN, pa.large_binary())],
                               [{FRAMES_COLUMN: p} for p in payload])
    return batch


def group_resources(scorers: Sequence[Scorer], gpu: bool) -> Resources:
    """One worker holds every member, so it needs the most any member asks for; the smallest
    concurrency and batch size any member sets are honoured."""
    rs = [s.resources for s in scorers]
    conc = [r.concurrency for r in rs if r.concurrency]
    sizes = [r.batch_size for r in rs if r.batch_size]
    return Resources(num_cpus=max([r.num_cpus for r in rs], default=1.0),
                     num_gpus=max([r.num_gpus for r in rs], default=0.0) if gpu else 0.0,
                     concurrency=min(conc) if conc else None,
                     batch_size=min(sizes) if sizes else (CLIPS_PER_BATCH if gpu else None),
                     retries=max([r.retries for r in rs], default=Resources().retries))


class _Group(Stage):
    """Scorers run in one worker; adds the union of their columns, each with its own provenance."""

    version = "1"
    stateful = True

    def __init__(self, scorers: Sequence[Scorer], resources: Resources):
        super().__init__(None, resources)
        self.scorers = list(scorers)
        seen: dict[str, str] = {}
        for s in self.scorers:
            for f in s.output_fields():
                if f.name in seen:
                    raise ConfigError(f"scorers '{seen[f.name]}' and '{s.name}' both write column '{f.name}'")
                seen[f.name] = s.name
        self.timings: dict[str, float] = {}  # seconds per scorer (and "decode"), summed over calls

    def setup(self) -> None:
        for s in self.scorers:
            s.ensure_setup()

    def teardown(self) -> None:
        for s in self.scorers:
            s.teardown()

    def output_fields(self) -> list[pa.Field]:
        return [f for s in self.scorers for f in annotated_fields(s)]

    def provenance(self) -> dict:
        return {"stage": self.name, "version": self.version, "scorers": [s.provenance() for s in self.scorers]}


class ScoreGroup(_Group):
    """CPU scorers on one decode per clip. With `feed`, it also decodes the samples the GPU group after
    it needs (in the same read) and hands them on."""

    name = "score"

    def __init__(self, scorers: Sequence[Scorer], feed: FrameRequest | None = None):
        resources = group_resources(scorers, gpu=False)
        if feed is not None and resources.batch_size is None:
            # The frames fed to the GPU pool travel in this stage's output, so each call takes a batch of
            # clips, not a whole video's block: otherwise a long video's clips all sit in one output block
            # (measured: a 3-minute video's 27 clips, 2.2 GB in one worker; benchmarks/bench_memory.py).
            resources = dataclasses.replace(resources, batch_size=CLIPS_PER_BATCH)
        super().__init__(scorers, resources)
        self.feed = feed

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Score in slices of `batch_size` clips (default 16): a long video's block can hold hundreds of
        clips, and 16 clips x 16 frames at 640 px is already ~180 MB of decoded frames."""
        self.ensure_setup()
        step = self.resources.batch_size or CLIPS_PER_BATCH
        parts = [score_table(batch.slice(i, step), self.scorers, self.name, self.timings, self.feed,
                             self.resources.threads) for i in range(0, max(batch.num_rows, 1), step)]
        return pa.concat_tables(parts)


class GpuScoreGroup(_Group):
    """GPU scorers in one actor pool (declared num_gpus, concurrency, batch_size): each call takes a
    batch of clips whose frames a CPU group decoded, and runs each scorer's `score_batch` on them."""

    name = "score_gpu"

    def __init__(self, scorers: Sequence[Scorer]):
        super().__init__(scorers, group_resources(scorers, gpu=True))

    def input_columns(self) -> list[str]:
        return [FRAMES_COLUMN]

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.ensure_setup()
        rows = batch.to_pylist()
        outs: list[dict] = [{} for _ in rows]
        fails: list[list[dict]] = [list(r.get("failures") or []) for r in rows]
        clips = [(i, ClipFrames.from_bytes(r[FRAMES_COLUMN], row=r)) for i, r in enumerate(rows)
                 if r.get(FRAMES_COLUMN) is not None]
        step = self.resources.batch_size or CLIPS_PER_BATCH
        for s in range(0, len(clips), step):
            run_scorers(self.scorers, clips[s:s + step], outs, fails, self.timings)
        if FRAMES_COLUMN in batch.column_names:
            batch = batch.drop_columns([FRAMES_COLUMN])
        return append_columns(_with_failures(batch, fails), self.output_fields(), outs)


def fuse(stages: Sequence[Stage]) -> list[Stage]:
    """Consecutive scorers become one CPU ScoreGroup (one decode per clip for all) followed, when some of
    them declare GPUs, by one GpuScoreGroup fed by that decode; a split right before a CPU group that
    feeds no GPU group joins it (curation.splitscore: the scorers take their frames from the split's
    decode). Other stages pass through in order."""
    from curation.splitscore import SplitScoreStage, joins

    out: list[Stage] = []
    run: list[Scorer] = []
    for s in [*stages, None]:
        if isinstance(s, Scorer):
            run.append(s)
            continue
        if run:
            cpu = [x for x in run if not x.resources.num_gpus]
            gpu = [x for x in run if x.resources.num_gpus]
            group = ScoreGroup(cpu, feed=merge_requests([x.request() for x in gpu]) if gpu else None)
            if cpu and not gpu and out and joins(out[-1], group):
                out[-1] = SplitScoreStage(out[-1], group)
            else:
                out.append(group)
            if gpu:
                out.append(GpuScoreGroup(gpu))
            run = []
        if s is not None:
            out.append(s)
    return out

