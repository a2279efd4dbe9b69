"""The local executor (curation.local): the same lake as the Ray plan, its failure rules, and which
executor a run picks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from curation.errors import ConfigError
from curation.lake import Lake
from curation.local import LocalExecutor, run_chain, spare_cpu
from curation.query import query
from curation.runner import choose_executor, run_pipeline
from curation.split import SplitStage
from curation.stage import Resources, Stage

SCORES = ("clip_id, uri, start_frame, end_frame, clarity, motion, camera_motion, camera_motion_confidence, text_area, "
          "text_boxes, subtitle_box, content_box, embedding, dup_group, is_duplicate, concept")


def _lake_rows(lake: Lake) -> dict:
    return {
        "videos": query(lake, "select uri, status, n_clips, cuts, frame_count, error from videos "
                              "order by uri").to_pylist(),
        "clips": query(lake, f"select {SCORES} from clips order by clip_id").to_pylist(),
        "failures": query(lake, "select uri, stage, kind, message from failures "
                                "order by uri, stage, kind").to_pylist(),
    }


def test_local_and_ray_executors_write_the_same_lake(ray_local, demo_videos, bad_folder, tmp_path):
    """Good and bad inputs through the default pipeline: every video, clip, score and failure row equal."""
    inputs = [os.path.dirname(demo_videos[0].path), bad_folder[0]]
    lakes = {}
    for kind in ("local", "ray"):
        lakes[kind] = Lake(tmp_path / kind)
        summary = run_pipeline("default", inputs, lakes[kind], progress=False, executor=kind)
        assert summary.stats.videos["ok"] >= 3
    local, ray = _lake_rows(lakes["local"]), _lake_rows(lakes["ray"])
    assert len(local["clips"]) > 3 and len(local["failures"]) > 5
    for table in ("videos", "clips", "failures"):
        assert local[table] == ray[table], table


def _dies_on(name: str) -> bool:
    return os.path.basename(name).startswith("crash")


class _CountingCrashSplit(SplitStage):
    """Kills its worker on files named crash* and leaves a line in `<file>.tries` each time it starts."""

    def split_row(self, row):
        if _dies_on(row["uri"]):
            with open(row["uri"] + ".tries", "a") as f:
                f.write("x\n")
            os._exit(3)
        return super().split_row(row)


class _Raising(Stage):
    """Lets an exception out of the stage (a bug) on files named crash*."""

    name = "raising"

    def __call__(self, batch):
        if any(_dies_on(u) for u in batch.column("uri").to_pylist()):
            raise RuntimeError("stage bug: index out of range")
        return batch


def _folder(demo_videos, tmp_path) -> str:
    folder = tmp_path / "in"
    folder.mkdir()
    for t in demo_videos[:2]:
        shutil.copy(t.path, folder)
    shutil.copy(demo_videos[2].path, folder / "crash.mp4")
    return str(folder)


def test_a_worker_that_dies_is_retried_then_its_video_is_a_failure_row(demo_videos, tmp_path, monkeypatch):
    from curation import registry

    monkeypatch.setitem(registry._extra, "crashing", _CountingCrashSplit)
    folder = _folder(demo_videos, tmp_path)
    lake = Lake(tmp_path / "lake")
    pipe = {"name": "c", "stages": [{"stage": "probe"}, {"stage": "crashing", "resources": {"retries": 1}},
                                    {"stage": "clarity"}]}
    summary = run_pipeline(pipe, [folder], lake, progress=False, executor="local")
    assert summary.stats.videos["ok"] == 2 and summary.stats.videos["failed"] == 1
    with open(os.path.join(folder, "crash.mp4.tries")) as f:
        assert len(f.readlines()) == 2  # the first try and one retry, each on a fresh worker
    [lost] = query(lake, "select uri, kind, stage, message from failures").to_pylist()
    assert (lost["uri"], lost["kind"], lost["stage"]) == (os.path.join(folder, "crash.mp4"), "worker_lost", "runner")
    assert "in stage 'split'" in lost["message"] and "exit code 3" in lost["message"]
    assert lake.count("clips") == sum(len(t.shots) for t in demo_videos[:2])
    assert query(lake, "select count(*) as n from clips where clarity is null").to_pylist() == [{"n": 0}]


def test_an_exception_out_of_a_stage_fails_its_video_with_the_message_and_is_not_retried(
        demo_videos, tmp_path, monkeypatch):
    from curation import registry

    monkeypatch.setitem(registry._extra, "raising", _Raising)
    folder = _folder(demo_videos, tmp_path)
    lake = Lake(tmp_path / "lake")
    pipe = {"name": "c", "stages": [{"stage": "probe"}, {"stage": "split"}, {"stage": "raising"}]}
    summary = run_pipeline(pipe, [folder], lake, progress=False, executor="local")
    assert summary.stats.videos["ok"] == 2 and summary.stats.videos["failed"] == 1
    [row] = query(lake, "select kind, message from failures").to_pylist()
    assert row["kind"] == "stage_error"
    assert "stage 'raising' raised RuntimeError: stage bug: index out of range" in row["message"]


class _Pid(Stage):
    """Adds the worker's pid and whether its setup ran in that process."""

    name = "pid"
    stateful = True
    resources = Resources(batch_size=2)

    def setup(self):
        self.setup_pid = os.getpid()

    def __call__(self, batch: pa.Table) -> pa.Table:
        assert batch.num_rows <= 2
        n = batch.num_rows
        return batch.append_column("pid", pa.array([os.getpid()] * n)).append_column(
            "setup_pid", pa.array([self.setup_pid] * n))


def test_blocks_spread_over_workers_each_stage_sees_its_batch_size_and_sets_up_once_per_worker():
    blocks = [pa.table({"x": list(range(i, i + 5))}) for i in range(0, 40, 5)]
    ex = LocalExecutor([_Pid()], cpus=2)
    out = pa.concat_tables(list(ex.map(blocks)))
    assert sorted(out.column("x").to_pylist()) == list(range(40)) and not ex.lost
    pids = set(out.column("pid").to_pylist())
    assert len(pids) == 2 and os.getpid() not in pids
    assert out.column("pid").to_pylist() == out.column("setup_pid").to_pylist()
    assert run_chain([_Pid()], blocks[0]).num_rows == 5  # in-process, for a debugger


class _Gpu(_Pid):
    name = "gpu"
    resources = Resources(num_gpus=1)


def test_auto_picks_ray_for_a_cluster_a_running_ray_or_a_gpu_stage_and_local_otherwise(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cpu, gpu = [_Pid()], [_Pid(), _Gpu()]
    ray = sys.modules.get("ray")
    running = ray is not None and ray.is_initialized()
    assert choose_executor("auto", cpu) == ("ray" if running else "local")
    assert choose_executor("auto", cpu, address="auto") == "ray"
    assert choose_executor("auto", gpu) == "ray"
    assert choose_executor("local", cpu) == "local" and choose_executor("ray", cpu) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert choose_executor("auto", cpu) == "ray"
    with pytest.raises(ConfigError, match="needs Ray"):
        choose_executor("local", cpu)
    with pytest.raises(ConfigError, match="unknown executor"):
        choose_executor("dask", cpu)
    with pytest.raises(ConfigError, match="GPUs"):
        LocalExecutor(gpu)
    with pytest.raises(ConfigError, match="CPUs per worker"):
        LocalExecutor([_Pid(resources=Resources(num_cpus=64))], cpus=2)


def test_a_local_run_starts_no_ray(demo_videos, tmp_path):
    """In a fresh process, as `videocurate run` on a laptop: no Ray instance, workers forked from the run."""
    code = ("import sys; from curation.runner import run_pipeline; "
            f"s = run_pipeline('default', [{demo_videos[0].path!r}], {str(tmp_path / 'lake')!r}, progress=False); "
            "assert s.stats.videos['ok'] == 1, s.lines(); ray = sys.modules.get('ray'); "
            "assert ray is None or not ray.is_initialized(); print('ok', s.stats.clips)")
    env = {**os.environ, "RAY_ADDRESS": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", str(len(demo_videos[0].shots))]


def test_spawned_workers_as_on_macos_get_the_stages_pickled():
    import multiprocessing as mp

    blocks = [pa.table({"x": [i, i + 1]}) for i in range(0, 8, 2)]
    ex = LocalExecutor([_Pid()], cpus=2)
    ex._ctx = mp.get_context("spawn")  # what macOS and Windows get: no fork, the stages travel pickled
    out = pa.concat_tables(list(ex.map(blocks)))
    assert sorted(out.column("x").to_pylist()) == list(range(8)) and not ex.lost
    assert len(set(out.column("pid").to_pylist())) == 2


def test_a_step_over_a_big_table_starts_ray_for_its_tasks_a_small_one_runs_in_the_driver(monkeypatch):
    """On the local executor the global steps have no Ray; from RAY_STEP_ROWS rows they start one (their
    tasks' memory stays out of the driver), below it they run in-process."""
    import ray

    from curation import buckets, runner

    started = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runner, "init_ray", lambda *a, **k: started.append(a))
    monkeypatch.setattr(buckets, "RAY_STEP_ROWS", 100)
    assert buckets.want_ray(99) is False and not started
    assert buckets.want_ray(100) is True and len(started) == 1


class _Threads(Stage):
    """Adds the OpenCV and BLAS thread counts of the worker it runs in."""

    name = "threads"

    def __call__(self, batch: pa.Table) -> pa.Table:
        import cv2
        from threadpoolctl import threadpool_info

        blas = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        n = batch.num_rows
        return batch.append_column("cv", pa.array([cv2.getNumThreads()] * n)).append_column(
            "blas", pa.array([blas] * n))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs: one worker per CPU is the point")
def test_workers_hold_opencv_and_blas_to_the_cpus_of_their_stage():
    """Unheld, each of two workers on two cores runs OpenCV and OpenBLAS with a thread per core."""
    import cv2

    blocks = [pa.table({"x": [i]}) for i in range(4)]
    for cpus, want in ((1, 1), (2, 2)):
        ex = LocalExecutor([_Threads(resources=Resources(num_cpus=cpus))], cpus=2)
        out = pa.concat_tables(list(ex.map(blocks)))
        assert set(out.column("cv").to_pylist()) == {want} and set(out.column("blas").to_pylist()) == {want}
    assert cv2.getNumThreads() == len(os.sched_getaffinity(0))  # the driver is left as it was


def test_workers_forked_after_the_driver_used_opencv_threads_do_not_hang():
    """The driver of `videocurate demo` makes its videos with OpenCV, whose pool threads then sleep; a
    worker that set OpenCV's thread count itself after the fork waited for them forever."""
    code = """
import time, cv2, numpy as np, pyarrow as pa
from curation.local import LocalExecutor
from curation.stage import Stage
img = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
for _ in range(4):
    cv2.GaussianBlur(img, (9, 9), 0)
time.sleep(0.5)  # the pool's threads stop spinning and wait
class Blur(Stage):
    name = "blur"
    def __call__(self, batch):
        cv2.GaussianBlur(img, (9, 9), 0)
        return batch.append_column("cv", pa.array([cv2.getNumThreads()] * batch.num_rows))
out = pa.concat_tables(list(LocalExecutor([Blur()], cpus=2).map([pa.table({"x": [i]}) for i in range(4)])))
print(sorted(set(out.column("cv").to_pylist())), cv2.getNumThreads())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("]")[0] == "[1"  # the workers ran with one OpenCV thread each


class _Order(Stage):
    """Adds when its worker took each block."""

    name = "order"

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch.append_column("at", pa.array([time.monotonic_ns()] * batch.num_rows))


def test_blocks_go_out_costliest_first_when_a_cost_is_given():
    work = [3, 9, 1, 7, 5, 8]
    blocks = [pa.table({"w": [w]}) for w in work]
    ex = LocalExecutor([_Order()], cpus=1)
    took = pa.concat_tables(list(ex.map(blocks, cost=lambda b: b.column("w")[0].as_py()))).sort_by("at")
    assert took.column("w").to_pylist() == sorted(work, reverse=True)
    plain = pa.concat_tables(list(LocalExecutor([_Order()], cpus=1).map(blocks))).sort_by("at")
    assert plain.column("w").to_pylist() == work


class _Spare(Stage):
    """Adds whether its worker was told a core will fall idle before the block ends (spare_cpu)."""

    name = "spare"

    def __call__(self, batch: pa.Table) -> pa.Table:
        return batch.append_column("spare", pa.array([spare_cpu()] * batch.num_rows))


def test_only_the_block_handed_out_last_is_told_a_core_will_be_spare():
    """Costliest first, on one worker: the last block goes out when none waits; the driver is never told."""
    blocks = [pa.table({"w": [w]}) for w in (3, 9, 1, 7)]
    out = pa.concat_tables(list(LocalExecutor([_Spare()], cpus=1).map(blocks, cost=lambda b: b.column("w")[0].as_py())))
    assert dict(zip(out.column("w").to_pylist(), out.column("spare").to_pylist())) == {
        9: False, 7: False, 3: False, 1: True}
    assert not spare_cpu() and run_chain([_Spare()], blocks[0]).column("spare").to_pylist() == [False]


def test_a_new_lake_run_whose_step_fails_its_checks_leaves_no_worker_and_no_lake(demo_videos, tmp_path):
    """On a new lake the workers start before the steps are built: a step's bad setting still fails the run
    before anything is written, and the workers it started are stopped."""
    import multiprocessing as mp

    lake = tmp_path / "lake"
    with pytest.raises(ConfigError, match="threshold"):
        run_pipeline("default", [demo_videos[0].path], str(lake), overrides=["dedup.threshold=7"], progress=False)
    assert not lake.exists()
    assert not mp.active_children()
