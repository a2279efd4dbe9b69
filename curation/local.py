"""The local executor: a run on one machine without Ray. The same stages, with the same batches and the
same failure rules as the Ray plan (curation.runner), run in a few worker processes of this machine: each
worker takes one input block at a time (one video), passes it through the whole chain of stages (a Ray
Data plan with every operator fused), and sends the result back. Stateful stages set up once per worker.

Why it exists: on a laptop Ray's fixed cost dominates small runs (measured on 2 cores: `ray.init` 2.1-2.6 s,
~2 s more to shut down, and ~15 Python processes of its own each importing ray and ray.data, ~10 CPU-s a
run; benchmarks/RESULTS.md "Whole pipeline vs the scenedetect CLI"). Workers here are forked from the
driver, so they import nothing: the first frame decodes ~1 s after the process starts.

Failures as in the Ray plan: a block whose worker dies (a decoder segfault, the OOM killer) runs again
on a fresh worker up to the retries of the stage it died in, then is given up (`lost`, and its videos
become `worker_lost` rows); an exception a stage lets out is not retried (Ray does not retry application
errors either) and its videos become failure rows with the exception's message."""

from __future__ import annotations

import collections
import heapq
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait

import pyarrow as pa

from curation.errors import ConfigError
from curation.stage import Stage


def machine_cpus() -> int:
    """CPUs this process may run on (the affinity mask or cgroup-limited set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@dataclass
class Lost:
    """A block given up: its rows, the failure kind (`worker_lost` or `stage_error`) and why."""

    block: pa.Table
    kind: str
    message: str


WORKER_NAME = "vc-worker"  # what `ps`, `top` and psutil show for a worker (Linux)


def _name_process(name: str) -> None:
    """Set this process's name (Linux prctl PR_SET_NAME; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def limit_threads(threads: int, opencv: bool = True) -> None:
    """Hold this worker's math libraries to `threads` threads (its CPUs): OpenCV, the BLAS pools
    (threadpoolctl) and torch when it is loaded. Left alone, each worker's OpenCV and OpenBLAS start a
    thread per core of the machine, so two workers on two cores split every resize, colour conversion,
    flow and least-squares call across threads that wait on each other (measured on bench_pipeline's
    workload: ~0.8 CPU-s of 13.9 in a default run). ONNX Runtime sessions and decoders set their own.
    `opencv=False` in a forked worker: there OpenCV's setting comes from the fork (`opencv_threads`)."""
    if opencv and "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


@contextmanager
def opencv_threads(threads: int) -> Iterator[None]:
    """OpenCV held to `threads` threads in this process for the block (a fork inside it: the child
    keeps the setting), then as it was. Set in a forked child instead, OpenCV tears down the thread pool
    it inherited, whose threads the child does not have, and `pthread_cond_destroy` waits for them
    forever once they had gone to sleep in the parent (seen: `videocurate demo`, whose driver makes its
    videos with OpenCV, hung every worker). At one thread OpenCV runs serially and never touches the pool."""
    cv2 = sys.modules.get("cv2")
    before = cv2.getNumThreads() if cv2 is not None else None
    if cv2 is not None:
        cv2.setNumThreads(threads)
    try:
        yield
    finally:
        if cv2 is not None:
            cv2.setNumThreads(before)


def worker_threads(stages: list[Stage]) -> int:
    return max(s.resources.threads for s in stages)


def run_chain(stages: list[Stage], block: pa.Table, where=None) -> pa.Table:
    """One block through every stage, each called on slices of its `batch_size` (the whole block when
    unset), as Ray Data's map_batches would. `where[0]` is set to the index of the stage running."""
    for i, s in enumerate(stages):
        if where is not None:
            where[0] = i
        if not block.num_rows:
            break
        if s.stateful:
            s.ensure_setup()
        size = s.resources.batch_size or block.num_rows
        parts = [s(block.slice(j, size)) for j in range(0, block.num_rows, size)]
        block = parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="default")
    return block


_SPARE = [False]


def spare_cpu() -> bool:
    """True in a local worker while it runs a block handed out when no other block was waiting: from then
    on the pool has fewer blocks than workers and a core falls idle before this one ends, which a stage may
    fill with a second thread (curation.splitscore). False elsewhere (on Ray, in the driver)."""
    return _SPARE[0]


def _serve(conn, stages: list[Stage] | bytes, where: _Where) -> None:
    """A worker's loop: (key, block, spare) in, (key, table, None) or (key, None, (stage, error)) out; None or a
    closed pipe ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which stops the workers
    _name_process(WORKER_NAME)
    spawned = isinstance(stages, bytes)
    if spawned:
        from ray import cloudpickle  # ray vendors it: always installed with videocurate

        stages = cloudpickle.loads(stages)
    limit_threads(worker_threads(stages), opencv=spawned)
    try:
        for s in stages:  # before the first block: a warmed worker sets up while the driver still starts
            if s.stateful:
                try:
                    s.ensure_setup()
                except Exception:  # noqa: BLE001 - raised again, and reported, with the first block
                    break
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            key, block, _SPARE[0] = job
            try:
                out, error = run_chain(stages, block, where), None
            except Exception as exc:  # noqa: BLE001 - reported to the driver, which writes failure rows
                out, error = None, (stages[where[0]].name, f"{type(exc).__name__}: {exc}")
            where[0] = -1
            conn.send((key, out, error))
    finally:
        for s in stages:
            if s.stateful and s._ready:
                s.teardown()


class _Where:
    """The stage index a worker is in, readable by the driver after the worker died."""

    def __init__(self, ctx):
        self.shared = ctx.RawValue("i", -1)

    def __setitem__(self, _i: int, value: int) -> None:
        self.shared.value = value

    def __getitem__(self, _i: int) -> int:
        return self.shared.value


@dataclass
class _Worker:
    process: mp.Process
    conn: object
    where: _Where
    job: int | None = None


@dataclass
class _Job:
    key: int
    block: pa.Table
    deaths: int = 0


FIRST_ESTIMATE_S = 0.1  # the driver's time to estimate block costs before the first hand-out
ESTIMATE_S = 0.01  # ... and each time it waits for a result


class _Queue:
    """Blocks waiting for a worker: blocks to run again first, then the costliest of those whose cost
    is known, then the rest in their given order."""

    def __init__(self, jobs: list[_Job], cost: Callable[[pa.Table], float] | None):
        self.fresh, self.again, self.cost = collections.deque(jobs), collections.deque(), cost
        self.ranked: list[tuple[float, int, _Job]] = []  # heap of (-cost, key, job)

    def __len__(self) -> int:
        return len(self.fresh) + len(self.again) + len(self.ranked)

    def pop(self) -> _Job:
        if self.again:
            return self.again.popleft()
        return heapq.heappop(self.ranked)[2] if self.ranked else self.fresh.popleft()

    def estimate(self, seconds: float) -> None:
        """Estimate the cost of waiting blocks for about `seconds` (at least one when any is left)."""
        if self.cost is None:
            return
        end = time.monotonic() + seconds
        while self.fresh:
            job = self.fresh.popleft()
            heapq.heappush(self.ranked, (-self.cost(job.block), job.key, job))
            if time.monotonic() >= end:
                return


@dataclass
class LocalExecutor:
    """Runs `stages` over blocks in worker processes: as many as `cpus` (default: the CPUs this process may
    use) hold workers of the most CPU-hungry stage, and never more than there are blocks."""

    stages: list[Stage]
    cpus: int | None = None
    lost: list[Lost] = field(default_factory=list)

    def __post_init__(self):
        have = self.cpus or machine_cpus()
        self.check(self.stages, have)
        per_worker = max([1.0, *(s.resources.num_cpus for s in self.stages)])
        self.workers = max(1, int(have // per_worker))
        # fork: workers inherit the stages and every imported module (no pickling, no imports). Spawn (the
        # stages pickled by value) on macOS and Windows, where fork is unsafe, and in a process that runs
        # Ray: a fork copies its gRPC state, and the driver's next Ray call hung (seen in the test suite)
        ray = sys.modules.get("ray")
        ray_up = ray is not None and hasattr(ray, "is_initialized") and ray.is_initialized()
        fork = "fork" in mp.get_all_start_methods() and sys.platform != "darwin" and not ray_up
        self._ctx = mp.get_context("fork" if fork else "spawn")
        self._pool: list[_Worker] = []

    @staticmethod
    def check(stages: list[Stage], cpus: int) -> None:
        for s in stages:
            if s.resources.num_gpus:
                raise ConfigError(f"stage '{s.name}' asks for GPUs: the local executor runs CPU stages only; "
                                  "run it on Ray (--executor ray, or --address to join a cluster)")
            if s.resources.num_cpus > cpus:
                raise ConfigError(f"stage '{s.name}' asks for {s.resources.num_cpus:g} CPUs per worker but this "
                                  f"machine has {cpus}; lower its resources.num_cpus or run on a cluster (--address)")

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        where = _Where(self._ctx)
        payload = self.stages
        if self._ctx.get_start_method() != "fork":
            from ray import cloudpickle

            payload = cloudpickle.dumps(self.stages)
        p = self._ctx.Process(target=_serve, args=(child, payload, where), daemon=True,
                              name="videocurate-worker")
        with opencv_threads(worker_threads(self.stages)):
            p.start()
        child.close()
        return _Worker(p, parent, where)

    @property
    def description(self) -> str:
        return f"local executor, up to {self.workers} worker{'s' if self.workers != 1 else ''}"

    def _warm(self, blocks: int) -> None:
        """Start the workers `blocks` blocks will use (each sets its stages up at once)."""
        while len(self._pool) < min(self.workers, blocks):
            self._grow(self._pool)

    def close(self) -> None:
        """Stop the workers (`results` does when it ends; this covers a run that stops before it): all are
        told first, then each is waited for, so they exit side by side."""
        pool, self._pool = self._pool, []
        for w in pool:
            self._tell_to_stop(w)
        for w in pool:
            self._reap(w)

    def map(self, blocks: Iterable[pa.Table], cost: Callable[[pa.Table], float] | None = None) -> Iterator[pa.Table]:
        """Each block's result as it completes (in completion order). Blocks given up land in `lost`.
        `cost(block)`: the work a block holds (curation.runner.expected_work); given, the driver estimates
        it for the waiting blocks while the workers are busy, and hands out the costliest known first, so
        the run does not end on one long block running alone."""
        self.submit(blocks, cost)
        return self.results()

    def submit(self, blocks: Iterable[pa.Table], cost: Callable[[pa.Table], float] | None = None) -> None:
        """`map`'s first half: start the workers and hand them their first blocks now (each sets its
        stages up at once), so the driver can go on with its own start-up before it reads `results`."""
        self._todo = _Queue([_Job(i, b) for i, b in enumerate(blocks)], cost)
        self._jobs = {j.key: j for j in self._todo.fresh}
        self._size = min(self.workers, len(self._todo))
        self._todo.estimate(0.0)  # one before the fork: what `cost` imports (PyAV) is then imported once
        self._warm(self._size)
        self._todo.estimate(FIRST_ESTIMATE_S)  # the workers are setting up meanwhile
        self._hand_out()

    def _hand_out(self) -> None:
        pool, todo = self._pool, self._todo
        while todo and (idle := next((w for w in pool if w.job is None), None) or
                        (self._grow(pool) if len(pool) < self._size else None)):
            job = todo.pop()
            try:
                idle.conn.send((job.key, job.block, not todo))
                idle.job = job.key
            except (OSError, ValueError):  # it died idle (the OOM killer picks any process)
                pool.remove(idle)
                self._stop(idle)
                self._died(job, idle, todo)  # counted against the block: workers dying at start cannot loop

    def results(self) -> Iterator[pa.Table]:
        """`map`'s second half: the results of the submitted blocks as they complete."""
        pool, todo = self._pool, self._todo
        try:
            while todo or any(w.job is not None for w in pool):
                self._hand_out()
                busy = [w for w in pool if w.job is not None]
                todo.estimate(ESTIMATE_S)
                ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
                for w in busy:
                    if w.conn not in ready and w.process.sentinel not in ready:
                        continue
                    result = self._receive(w)
                    job = self._jobs[w.job]
                    w.job = None
                    if result is None:  # the worker died with the block
                        pool.remove(w)
                        self._died(job, w, todo)
                        continue
                    _, out, error = result
                    if error is None:
                        yield out
                    else:
                        stage, message = error
                        self.lost.append(Lost(job.block, "stage_error", f"stage '{stage}' raised {message}"[:2000]))
        finally:
            self.close()

    def _grow(self, pool: list[_Worker]) -> _Worker:
        w = self._start()
        pool.append(w)
        return w

    @staticmethod
    def _receive(w: _Worker):
        try:
            if w.conn.poll():
                return w.conn.recv()
        except (EOFError, OSError):
            pass
        if w.process.is_alive():  # the sentinel fired: it is on its way out
            w.process.join(5)
        return None

    def _died(self, job: _Job, w: _Worker, todo: _Queue) -> None:
        at = w.where[0]
        stage = self.stages[at] if 0 <= at < len(self.stages) else None
        job.deaths += 1
        retries = stage.resources.retries if stage is not None else max(s.resources.retries for s in self.stages)
        if job.deaths <= retries:
            todo.again.append(job)
            return
        code = w.process.exitcode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        where = f" in stage '{stage.name}'" if stage is not None else ""
        self.lost.append(Lost(job.block, "worker_lost", f"a worker died{where} while processing this input "
                                                        f"({how}, {job.deaths} time(s))"))

    @classmethod
    def _stop(cls, w: _Worker) -> None:
        cls._tell_to_stop(w)
        cls._reap(w)

    @staticmethod
    def _tell_to_stop(w: _Worker) -> None:
        try:
            w.conn.send(None)
        except (OSError, ValueError):
            pass

    @staticmethod
    def _reap(w: _Worker) -> None:
        w.process.join(2)
        if w.process.is_alive():
            w.process.terminate()
            w.process.join(2)
        w.conn.close()
