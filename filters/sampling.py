"""The shared frame sampler and `ScoreGroup`: each clip's frames are decoded once (K evenly spaced
samples, plus the next frame of each when a scorer needs optical flow), at the largest size any scorer
asked for, opening each video once per batch; every scorer of the group then reads that one decode."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from curation.errors import ConfigError, VideoError
from curation.schema import FAILURE_ITEM
from curation.stage import Resources, Stage, append_columns, failure, field_meta
from curation.video import VideoInfo, VideoReader, fit_size
from filters.base import ClipFrames, FrameRequest, Scorer, even_positions, merge_requests

CLIPS_PER_BATCH = 16


def sample_indices(start: int, end: int, k: int, pairs: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """`k` evenly spaced frame numbers in [start, end) and, with `pairs`, the frame after each (so the
    samples are drawn from [start, end - 1) and every next frame stays inside the clip)."""
    n = int(end) - int(start)
    if n <= 0:
        raise VideoError(f"empty clip span [{start}, {end})", kind="too_short")
    span = n - 1 if pairs and n >= 2 else n
    idx = int(start) + even_positions(span, k)
    if not pairs:
        return idx, None
    return idx, np.minimum(idx + 1, int(end) - 1)


def _path(uri: str) -> str:
    return uri.removeprefix("file://")


def decode_clips(rows: Sequence[dict], request: FrameRequest) -> list[ClipFrames | BaseException]:
    """Decode the sampled frames of every clip row; rows of one video share one open and one read."""
    out: list[ClipFrames | BaseException] = [VideoError("not decoded")] * len(rows)
    by_video: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_video[row["uri"]].append(i)
    for uri, members in by_video.items():
        try:
            reader = VideoReader(_path(uri), info=VideoInfo.from_row(rows[members[0]]))
        except Exception as exc:  # noqa: BLE001 - the whole video's clips fail with the same error
            for i in members:
                out[i] = exc
            continue
        plans: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        for i in members:
            try:
                plans[i] = sample_indices(rows[i]["start_frame"], rows[i]["end_frame"], request.frames,
                                          request.pairs)
            except Exception as exc:  # noqa: BLE001 - recorded on that clip only
                out[i] = exc
        if not plans:
            continue
        info = reader.info
        size = None if request.max_side is None else fit_size(info.width, info.height,
                                                                 max_side=request.max_side)
        wanted = sorted({int(f) for pair in plans.values() for part in pair if part is not None
                         for f in part})
        try:
            decoded = reader.read(wanted, size)
        except Exception as exc:  # noqa: BLE001
            for i in plans:
                out[i] = exc
            continue
        where = {f: j for j, f in enumerate(wanted)}
        for i, (idx, nxt) in plans.items():
            out[i] = ClipFrames(
                frames=decoded[[where[int(f)] for f in idx]], indices=idx, fps=info.fps,
                width=info.width, height=info.height,
                next_frames=None if nxt is None else decoded[[where[int(f)] for f in nxt]],
                clip_id=rows[i].get("clip_id"), uri=uri)
    return out


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


def run_scorers(batch: pa.Table, scorers: Sequence[Scorer], group_name: str,
                timings: dict[str, float] | None = None) -> pa.Table:
    """Score every clip row of `batch` with `scorers` on one decode per clip. A decode failure fails
    the clip for all scorers (a `failures` item from `group_name`); a scorer raising fails only its own
    columns of that clip (a `failures` item named after the scorer). Rows without a clip pass through."""
    timings = timings if timings is not None else {}
    rows = batch.to_pylist()
    live = [i for i, r in enumerate(rows) if r.get("clip_id") is not None]
    outs: list[dict] = [{} for _ in rows]
    fails: list[list[dict]] = [list(r.get("failures") or []) for r in rows]
    t0 = time.perf_counter()
    clips = decode_clips([rows[i] for i in live], merge_requests([s.request() for s in scorers]))
    timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t0
    for i, clip in zip(live, clips):
        if isinstance(clip, BaseException):
            fails[i].append(failure(group_name, clip, rows[i]["clip_id"]))
            continue
        for scorer in scorers:
            t0 = time.perf_counter()
            try:
                values = scorer.score(clip.subset(scorer.request().frames))
                outs[i].update({k: _to_arrow_value(v) for k, v in values.items()})
            except Exception as exc:  # noqa: BLE001 - recorded on the row, other scorers still run
                fails[i].append(failure(scorer.name, exc, rows[i]["clip_id"]))
            timings[scorer.name] = timings.get(scorer.name, 0.0) + time.perf_counter() - t0
    idx = batch.schema.get_field_index("failures")
    failures = pa.array(fails, batch.schema.field(idx).type if idx >= 0 else pa.list_(FAILURE_ITEM))
    if idx >= 0:
        batch = batch.set_column(idx, "failures", failures)
    else:
        batch = batch.append_column("failures", failures)
    return append_columns(batch, [f for s in scorers for f in annotated_fields(s)], outs)


class ScoreGroup(Stage):
    """Several scorers run in-process on one decode per clip (the runner fuses consecutive scorer
    stages of a pipeline into one group). Adds the union of the scorers' columns."""

    name = "score"
    version = "1"
    stateful = True

    def __init__(self, scorers: Sequence[Scorer], resources: Resources | None = None):
        super().__init__(None, resources)
        self.scorers = list(scorers)
        if resources is None and self.scorers:  # a worker must hold what its hungriest scorer needs
            # batch_size None: one call per block, i.e. per video from the split, so a worker that dies
            # on a poisonous file takes no other video down with it (the runner records it as lost).
            self.resources = Resources(num_cpus=max(s.resources.num_cpus for s in self.scorers),
                                       num_gpus=max(s.resources.num_gpus for s in self.scorers))
        seen: dict[str, str] = {}
        for s in self.scorers:
            for f in s.output_fields():
                if f.name in seen:
                    raise ConfigError(f"scorers '{seen[f.name]}' and '{s.name}' both write column '{f.name}'")
                seen[f.name] = s.name
        self.timings: dict[str, float] = {}  # seconds spent per scorer and in "decode", summed over calls

    def setup(self) -> None:
        for s in self.scorers:
            s.ensure_setup()

    def output_fields(self) -> list[pa.Field]:
        return [f for s in self.scorers for f in annotated_fields(s)]

    def provenance(self) -> dict:
        return {"stage": self.name, "version": self.version,
                "scorers": [s.provenance() for s in self.scorers]}

    def with_(self, **overrides) -> ScoreGroup:
        raise ConfigError("a ScoreGroup has no parameters of its own; configure its scorers")

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Score in slices of CLIPS_PER_BATCH clips: a long video's block can hold hundreds of clips, and
        16 clips x 16 frames at 640 px is already ~180 MB of decoded frames."""
        self.ensure_setup()
        parts = [run_scorers(batch.slice(i, CLIPS_PER_BATCH), self.scorers, self.name, self.timings)
                 for i in range(0, max(batch.num_rows, 1), CLIPS_PER_BATCH)]
        return pa.concat_tables(parts)
