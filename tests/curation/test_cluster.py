"""A real two-node Ray cluster on loopback (`ray start --head` with 2 CPUs + `ray start --address` with 1,
each with its own temp dir): the pipeline runs on it with `--address`, the worker node is killed with
SIGKILL mid-run (its `ray start`, raylet and workers) while it works for the run, and the run still
completes: every input once in `videos`, no failure row, no clip lost or duplicated, and the lake equals
a single-node run's. Ray re-runs the dead node's tasks and brings its actors back on the head.

Everything Ray runs in subprocesses (the nodes, the drivers), so this never touches the embedded Ray
that other tests share in the pytest process. Nodes are stopped by pid, never with `ray stop`, which
would also stop that embedded Ray."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from curation import synth
from curation.lake import Lake
from curation.query import query

RAY = Path(sys.executable).with_name("ray")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not RAY.exists(), reason="the `ray` CLI is not installed beside this python"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds a node's processes in /proc"),
]

PIPELINE = """\
name: cluster
commit_every: 2
stages:
  - stage: probe
  - stage: split
    params: {min_clip_s: 1.0}
  - stage: clarity
  - stage: motion
  - stage: ocr
    params: {frames: 1}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every live process we can see (zombies left out)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            out[int(d)] = (int(ppid), cmd.strip())
    return out


def _tree(root: int) -> dict[int, str]:
    """`root` and all its descendants: pid → command line."""
    procs = _processes()
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in procs and pid not in found:
            found[pid] = procs[pid][1]
            todo += [p for p, (ppid, _) in procs.items() if ppid == pid]
    return found


def _kill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Node:
    """One `ray start --block` process and the Ray processes under it (gcs, raylet, agents, workers)."""

    def __init__(self, temp_dir: str, num_cpus: int, *args: str):
        self.temp_dir = temp_dir
        self.log = open(os.path.join(temp_dir, "start.log"), "wb")
        # min/max worker port 0: workers take random free ports, so two raylets on one host never clash
        cmd = [str(RAY), "start", "--block", "--temp-dir", temp_dir, "--num-cpus", str(num_cpus), "--num-gpus",
               "0", "--disable-usage-stats", "--min-worker-port", "0", "--max-worker-port", "0",
               "--object-store-memory", str(200 * 1024**2), "--dashboard-agent-listen-port", str(_free_port()),
               *args]
        # the GCS declares a silent node dead after 5 missed 1 s health checks (default 5 x 3 s): only
        # to keep the test short; the run waits for it either way
        env = {**_env(), "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        self.known: set[int] = {self.proc.pid}

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            self.log.flush()
            tail = Path(self.temp_dir, "start.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"`ray start` exited with {self.proc.returncode}:\n{tail}")
        return True

    def processes(self) -> dict[int, str]:
        tree = _tree(self.proc.pid)
        self.known |= set(tree)
        return tree

    def raylet(self) -> int | None:
        return next((p for p, cmd in self.processes().items() if "/raylet " in cmd.split(" --")[0] + " "), None)

    def stage_workers(self) -> list[str]:
        """Process titles of this node's workers that serve the run's stages: `ray::MapBatches(...)` is a
        stage's task, `ray::MapWorker(...)` a stage's actor (`...).submit` while it works on a batch).
        Ray's own agents and actors and idle workers are left out."""
        raylet = self.raylet()
        return [cmd for ppid, cmd in _processes().values()
                if ppid == raylet and cmd.startswith(("ray::MapBatches(", "ray::MapWorker("))]

    def kill(self) -> None:
        """A hard node loss: SIGKILL to `ray start`, the raylet, its workers and every other process of it."""
        tree = self.processes()
        _kill(tree)
        _kill(self.processes())  # anything forked while we were killing
        self.proc.wait(timeout=30)
    def stop(self) -> None:
        self.kill()
        # a process that lost its parent before we saw it is still recognisable by the node's temp dir
        _kill(p for p, (_, cmd) in _processes().items() if self.temp_dir in cmd and p != os.getpid())
        _kill(self.known)
        self.proc.wait(timeout=30)
        self.log.close()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RUST_LOG="error", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")]))
    return env


def _cli(pipeline: Path, inputs: Path, lake: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "curation.cli", "run", str(pipeline), "--input", str(inputs), "--lake",
            str(lake), "--no-progress", *extra]


def _wait(cond, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def _committed(root: Path) -> int:
    return Lake(root, create=False).count("videos") if (root / "videos.lance").exists() else 0


def _lake_rows(root: Path) -> dict:
    lake = str(root)
    return {
        "videos": query(lake, "select uri, status, n_clips, video_id from videos order by uri").to_pylist(),
        "clips": query(lake, "select clip_id, uri, start_frame, end_frame from clips order by clip_id").to_pylist(),
        "scores": query(lake, "select clip_id, clarity, motion, camera_motion, text_area from clips "
                        "order by clip_id").to_pylist(),
        "failures": query(lake, "select uri, stage, kind from failures order by uri").to_pylist()
        if Lake(lake, create=False).exists("failures") else [],
    }


def _same_scores(a: list[dict], b: list[dict]) -> None:
    assert [r["clip_id"] for r in a] == [r["clip_id"] for r in b]
    for x, y in zip(a, b):
        assert x["camera_motion"] == y["camera_motion"], x["clip_id"]
        for k in ("clarity", "motion", "text_area"):
            assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-9), (x["clip_id"], k)


def test_worker_node_killed_mid_run_the_run_completes_and_equals_a_single_node_run(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    n = 8
    photos = synth.PHOTOS
    for i in range(n):
        synth.make_video(inputs / f"v{i:02d}.mp4", [synth.Shot(photos[i % len(photos)], 60, pan=(1 + 0.3 * i, 0)),
                                                    synth.Shot(photos[(i + 7) % len(photos)], 60,
                                                               pan=(0, 0.5 + 0.2 * i))], size=(320, 180))
    pipeline = tmp_path / "cluster.yaml"
    pipeline.write_text(PIPELINE)

    # the reference: one embedded Ray with the CPUs of the head node, which is what survives the kill
    # (it must hold an actor of the scorer pool and a split task on its own, or the run waits forever)
    single = tmp_path / "single"
    t0 = time.monotonic()
    ref = subprocess.run(_cli(pipeline, inputs, single, "--num-cpus", "2"), env=_env(), capture_output=True,
                         text=True, timeout=180)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    single_s = time.monotonic() - t0
    expected = _lake_rows(single)
    assert len(expected["videos"]) == n and {v["status"] for v in expected["videos"]} == {"ok"}
    assert len(expected["clips"]) == 2 * n and not expected["failures"]

    # short temp dirs: Ray's unix socket paths must stay under 107 characters
    head_dir = tempfile.mkdtemp(prefix="vch", dir="/tmp")
    worker_dir = tempfile.mkdtemp(prefix="vcw", dir="/tmp")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[Node] = []
    driver = None
    try:
        nodes.append(Node(head_dir, 2, "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                          "--include-dashboard=false"))
        head = nodes[0]
        _wait(lambda: head.alive() and os.path.exists(os.path.join(head_dir, "ray_current_cluster"))
              and head.raylet(), 60, "the head node")
        nodes.append(Node(worker_dir, 1, "--address", address, "--node-ip-address", "127.0.0.1",
                          "--include-log-monitor=false"))
        worker = nodes[1]
        _wait(lambda: worker.alive() and worker.raylet(), 60, "the worker node's raylet")
        assert head.proc.poll() is None and worker.proc.poll() is None

        lake = tmp_path / "cluster"
        log = tmp_path / "driver.log"
        t0 = time.monotonic()
        with open(log, "wb") as sink:  # a file, not a pipe: a full pipe would stall the driver
            driver = subprocess.Popen(_cli(pipeline, inputs, lake, "--address", address), env=_env(),
                                      stdout=sink, stderr=subprocess.STDOUT)
        # Kill the worker node while it works for the run: if a scorer actor was placed there, in a call
        # into it once the first videos are committed (the harder case: Ray must bring the actor back
        # on the head and send the batch again), else in a split task (those run ahead of the scorers).
        seen: set[str] = set()
        now: list[str] = []
        deadline = time.monotonic() + 150
        while driver.poll() is None and time.monotonic() < deadline:
            now = worker.stage_workers()
            seen.update(now)
            actors = [c for c in now if c.startswith("ray::MapWorker(")]
            if actors and any(c.endswith(".submit") for c in actors) and _committed(lake) or not actors and now:
                break
            time.sleep(0.02)
        raylet = worker.raylet()
        worker.kill()
        killed_at = time.monotonic() - t0
        committed = _committed(lake)
        assert driver.poll() is None, f"the run ended before the kill (the worker node ran {sorted(seen)})"
        assert now, "the worker node never ran a stage of the run"
        assert raylet is not None and not worker.processes(), "the worker node survived its SIGKILL"
        assert committed < n, "the kill did not land mid-run"

        try:
            driver.wait(timeout=240)
        finally:
            output = log.read_text(errors="replace")
        cluster_s = time.monotonic() - t0
        assert driver.returncode == 0, output[-6000:]
        assert head.proc.poll() is None, "the head node died with the worker"
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        for node in reversed(nodes):
            node.stop()
        for d in (head_dir, worker_dir):
            shutil.rmtree(d, ignore_errors=True)

    got = _lake_rows(lake)
    print(f"single node {single_s:.1f}s; cluster {cluster_s:.1f}s; worker node killed at {killed_at:.1f}s "
          f"running {sorted(now)} ({committed} of {n} videos committed); "
          f"retried: {output.count('so the task will be retried')}; failures {got['failures']}")
    # every input once, none lost to the dead node: Ray re-ran the lost node's work on the head
    assert [v["uri"] for v in got["videos"]] == sorted(str(p) for p in inputs.iterdir())
    assert got["failures"] == [] and {v["status"] for v in got["videos"]} == {"ok"}
    ids = [c["clip_id"] for c in got["clips"]]
    assert len(ids) == len(set(ids)) == 2 * n
    assert got["videos"] == expected["videos"]
    assert got["clips"] == expected["clips"]
    _same_scores(got["scores"], expected["scores"])
