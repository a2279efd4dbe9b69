"""The split and the CPU scorers after it on one decode of each video. Scored apart, every clip is
decoded a second time for its samples, and on real footage decoding is most of the cost (1080p H.264 at
9 Mbit/s: ~7 ms a frame, against ~1 ms to scale it; benchmarks/RESULTS.md "Decode once").

While the split streams a video at its analysis size, a FrameTap keeps the frames the scorers' request
asks for, at their size (as YUV 4:2:0), from where the first undecided clip starts. Every SETTLE_EVERY
frames the clips the detections have already decided (ShotDetector.settle: shots and windows that ended
more than `lag()` frames ago) take their samples from the tap and are scored at once (on a second thread
of the worker, while the decode goes on, when a core is to spare: `SplitScoreStage._video`); the tap then
lets go of the frames before the next undecided clip, so it holds about max_clip_s + lag of frames (~120 MB
at 640x360, 24 fps; capped by TAP_BYTES). When the video ends, the split's exact clips (its one fusion of
everything the detectors found) are matched with the clips scored on the way, by span and by every
column the scorers read; those not scored yet take their samples from the tap, and any clip left (a
detection that changed late, a frame dropped at the cap) is decoded again as before. The samples are the
same pixels either way (curation.frames), so the lake is the one the split and the scorers write apart:
tested on the fixtures, the decode-once path must leave every column equal."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import pyarrow as pa

from curation.frames import ClipFrames, FrameTap, merge_requests
from curation.local import spare_cpu
from curation.scoring import CLIPS_PER_BATCH, ScoreGroup, group_resources, run_scorers, score_table
from curation.split import ShotDetector, SplitStage, clip_columns
from curation.stage import Stage
from curation.timeline import Timeline
from curation.video import VideoInfo

MAX_PENDING = 2  # batches of decided clips waiting for the scoring thread before the decode waits (~15 MB a clip)


def joins(stage: Stage, group: ScoreGroup) -> bool:
    """Whether `stage` is a split the CPU scorer group after it can take its frames from: one that decodes
    through PyAV and decides clips as it goes (TransNetV2 decides at the end of each video)."""
    return (type(stage) is SplitStage and stage.params.backend != "decord"
            and "transnetv2" not in stage.params.detectors and group.feed is None)


@dataclass
class _Scored:
    inputs: dict  # the columns the scorers read, as they were when the clip was scored
    columns: dict
    failures: list[dict]


class _Watch:
    """Follows one video's split decode (curation.split.SplitWatch): keeps its frames in a tap and scores
    each clip as soon as the detections decide it, on `pool`'s thread when given (`finish` waits for it)."""

    def __init__(self, stage: SplitScoreStage, row: dict, pool: ThreadPoolExecutor | None = None):
        self.stage, self.row, self.pool = stage, row, pool
        self.tap: FrameTap | None = None
        self.base = 0  # where the first undecided shot or window starts
        self.scored: dict[tuple[int, int], _Scored] = {}
        self.pending: list[Future] = []

    def start(self, info: VideoInfo) -> Callable[[int, object, object], None] | None:
        try:
            self.tap = FrameTap(info, self.stage.request)
        except Exception:  # noqa: BLE001 - no tap (a size the scaler refuses): every clip decodes again
            return None
        return self._frame

    def _frame(self, index: int, frame, scaled=None) -> None:
        if self.tap is None:
            return
        try:
            self.tap(index, frame, scaled)
        except Exception:  # noqa: BLE001 - a frame the tap cannot convert: every clip decodes again
            self.tap = None

    def settle(self, det: ShotDetector, times: Timeline) -> None:
        if self.tap is None:
            return
        spans, self.base = det.settle(self.base, times)
        clips: list[tuple[int, ClipFrames]] = []
        for span in spans:
            frames = self.tap.take(span.start, span.end)
            if frames is None:
                continue
            frames.row = {**self.row, **clip_columns(self.row["video_id"], span, times)}
            frames.clip_id, frames.uri = frames.row["clip_id"], frames.row["uri"]
            clips.append((len(clips), frames))
        self.tap.release(self.base)
        if not clips:
            return
        if self.pool is None:
            self._score(clips)
            return
        self.pending = [f for f in self.pending if not f.done()]
        if len(self.pending) >= MAX_PENDING:
            wait(self.pending, return_when=FIRST_COMPLETED)
        self.pending.append(self.pool.submit(self._score, clips))

    def finish(self) -> None:
        """Wait for the clips being scored beside the decode. A batch that raised there left no scores: its
        clips are decoded again at the video's end (their frames have left the tap)."""
        for f in self.pending:
            f.exception()
        self.pending = []

    def _score(self, clips: list[tuple[int, ClipFrames]]) -> None:
        inputs = [self.stage.inputs(c.row) for _, c in clips]
        outs: list[dict] = [{} for _ in clips]
        fails: list[list[dict]] = [[] for _ in clips]
        self.stage.scorers_ready()
        run_scorers(self.stage.group.scorers, clips, outs, fails, self.stage.group.timings)
        for (_, c), seen, columns, items in zip(clips, inputs, outs, fails):
            self.scored[(c.row["start_frame"], c.row["end_frame"])] = _Scored(seen, columns, items)


class SplitScoreStage(Stage):
    """A SplitStage and the CPU ScoreGroup after it in one worker, on one decode of each video. The
    columns, failures and provenance are those of the two stages; one video per call."""

    name = "split+score"
    version = "1"
    stateful = True

    def __init__(self, split: SplitStage, group: ScoreGroup):
        # one worker holds both: the most CPUs and retries either asks for, one video per call
        super().__init__(None, dataclasses.replace(group_resources([split, group], gpu=False), batch_size=1))
        self.split, self.group = split, group
        self.request = merge_requests([s.request() for s in group.scorers])
        # where each clip's samples came from: scored while the split decoded, taken from the tap at the
        # video's end, or decoded again
        self.sources = {"on the way": 0, "at the end": 0, "decoded again": 0}
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0  # the process that made _pool
        self._loading: Future | None = None  # the scorers' set-up, on _pool's thread
        made = set(group.output_columns())
        self._read = sorted({c for s in group.scorers for c in s.input_columns() if c not in made})

    def inputs(self, row: dict) -> dict:
        """The columns of `row` the scorers read (and no scorer of the group writes)."""
        return {c: row.get(c) for c in self._read}

    def input_columns(self) -> list[str]:
        return self.split.input_columns()

    def output_columns(self) -> list[str]:
        return [*self.split.output_columns(), *self.group.output_columns()]

    def output_fields(self) -> list[pa.Field]:
        return self.group.output_fields()

    def provenance(self) -> dict:
        return {"stage": self.name, "version": self.version,
                "members": [self.split.provenance(), self.group.provenance()]}

    def setup(self) -> None:
        # The scorers set up (their models load) on the stage's thread while the split starts on the first
        # video: the first clip to score waits for it (scorers_ready). OCR's engine is ~0.8 CPU-s, most of a
        # worker's start-up, and the split needs none of it: the first frame decodes that much sooner.
        self._loading = self._thread().submit(self.group.ensure_setup)

    def _thread(self) -> ThreadPoolExecutor:
        """The stage's second thread (the scorers' set-up, then scoring beside the decode), made in this
        process."""
        self._drop_inherited()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="score")
        return self._pool

    def _drop_inherited(self) -> None:
        """Forget a thread and a set-up a process this was forked from started: no thread here would run
        them (the scorers then set up again in this process)."""
        if self._pid != os.getpid():
            self._pid, self._pool, self._loading = os.getpid(), None, None

    def scorers_ready(self) -> None:
        """Wait for the scorers' set-up (raising what it raised; the next call then sets up again, as a
        stage whose set-up failed does with its next batch)."""
        self._drop_inherited()
        if (loading := self._loading) is not None:
            try:
                loading.result()
            finally:
                self._loading = None
        self.group.ensure_setup()

    def teardown(self) -> None:
        self._drop_inherited()
        if self._pool is not None:
            self._pool.shutdown()  # after the set-up, if it still runs
        self._pool = self._loading = None
        self.group.teardown()

    def __getstate__(self) -> dict:
        # a thread pool and a future do not pickle; a copy makes its own
        return {**self.__dict__, "_pool": None, "_loading": None}

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.ensure_setup()
        parts = [self._video(row, batch.schema) for row in batch.to_pylist()]
        return pa.concat_tables(parts) if parts else batch

    def _video(self, row: dict, schema: pa.Schema) -> pa.Table:
        # In a local worker running one of the last blocks (curation.local.spare_cpu: a core falls idle
        # before it ends), the clips decided while the video decodes are scored on a second thread (the
        # decoder, swscale, OpenCV and ONNX Runtime release the GIL). Three 60 s files on two cores: -5 to
        # -13 % wall; on every block it cost ten short files +2 to +9 % with both workers busy
        # (benchmarks/RESULTS.md, fifth pass).
        watch = _Watch(self, row, self._thread() if spare_cpu() else None)
        try:
            rows = self.split.split_row(row, watch)
        finally:
            watch.finish()
        table = pa.Table.from_pylist(rows, schema=schema)
        parts = []
        self.scorers_ready()
        for s in range(0, len(rows), CLIPS_PER_BATCH):  # bounds the samples made at once, as ScoreGroup does
            scored: dict[int, tuple[dict, list[dict]]] = {}
            frames: dict[int, ClipFrames] = {}
            for j, r in enumerate(rows[s:s + CLIPS_PER_BATCH]):
                if r.get("clip_id") is None:
                    continue
                span = (r["start_frame"], r["end_frame"])
                done = watch.scored.pop(span, None)
                if done is not None and done.inputs == self.inputs(r):
                    scored[j] = (done.columns, done.failures)
                    self.sources["on the way"] += 1
                elif watch.tap is not None and (held := watch.tap.take(*span)) is not None:
                    frames[j] = held
                    self.sources["at the end"] += 1
                else:
                    self.sources["decoded again"] += 1
            parts.append(score_table(table.slice(s, CLIPS_PER_BATCH), self.group.scorers, self.group.name,
                                     self.group.timings, None, self.resources.threads, scored, frames))
        return pa.concat_tables(parts)
