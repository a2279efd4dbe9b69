"""The trainer as a training system, for real: a run SIGKILLed mid-training and resumed repeats an
uninterrupted run's losses bit for bit (CPU, one process), so does a run stopped and resumed across a
phase boundary, and 2 Ray Train workers (DDP over gloo) follow the 1-worker loss curve at the same global
batch. Tiny random-init models, 32-pixel buckets, a few steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import torch
import yaml

from curation import synth
from curation.lake import Lake
from tests.training.conftest import wait_for_checkpoint
from training.checkpoint import latest_checkpoint, load_checkpoint
from training.curriculum import load_curriculum, train_curriculum
from training.trainer import read_losses

ROOT = Path(__file__).resolve().parents[2]
STEPS = (4, 4)  # optimiser steps of the two phases
TRAIN = {"text_encoder": "tiny", "grad_accum": 2, "ema_decay": 0.9, "checkpoint_every": 1, "log_every": 1,
         "loader_workers": 0, "keep_checkpoints": 3, "warmup_steps": 2, "text_dropout": 0.25}


def _curriculum(path: Path, max_batch: int, **train) -> Path:
    buckets = {"base_size": 32, "max_batch": max_batch}
    path.write_text(yaml.safe_dump({"model": "tiny", "train": {**TRAIN, **train}, "phases": [
        {"name": "images", "tier": "t", "steps": STEPS[0], "buckets": {**buckets, "frame_counts": [1]}},
        {"name": "video", "tier": "t", "steps": STEPS[1], "buckets": {**buckets, "frame_counts": [1, 5]}}]}))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tier of 10 clips in two aspect buckets, and the reference: an uninterrupted in-process run."""
    root = tmp_path_factory.mktemp("trainer")
    wide = synth.make_video(root / "wide.mp4", [synth.Shot("coffee", 48, pan=(1, 0))], size=(96, 54))
    square = synth.make_video(root / "square.mp4", [synth.Shot("chelsea", 48, zoom=1.01)], size=(64, 64))
    rows = [(f"w{i}", wide.path, 8 * i, 8 * i + 8, 96, 54) for i in range(6)]
    rows += [(f"s{i}", square.path, 12 * i, 12 * i + 12, 64, 64) for i in range(4)]
    lake = Lake(root / "lake")
    lake.append("tiers/t", pa.table({
        "clip_id": [r[0] for r in rows], "uri": [r[1] for r in rows], "start_frame": [r[2] for r in rows],
        "end_frame": [r[3] for r in rows], "fps": [24.0] * len(rows),
        "width": pa.array([r[4] for r in rows], pa.int32()), "height": pa.array([r[5] for r in rows], pa.int32()),
        "camera_motion": ["pan right"] * 6 + ["zoom in"] * 4}))
    spec = _curriculum(root / "curriculum.yaml", max_batch=2)
    ref = root / "ref"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the tests (conftest) and the subprocesses: float sums depend on threads
    try:
        summary = train_curriculum(lake, load_curriculum(str(spec)), "random", str(ref), log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    assert summary["video"]["steps"] == STEPS[1]
    return {"root": root, "lake": str(root / "lake"), "spec": spec, "ref": read_losses(ref)}


def _curve(rows: list[dict]) -> list[tuple]:
    return [(r["phase"], r["step"], r["global_step"], r["loss"], r["grad_norm"], r["lr"]) for r in rows]


def _descendants(root: int) -> list[int]:
    """Live descendants of `root` (from /proc)."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            parents[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        kids = [c for c, p in parents.items() if p == pid]
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RUST_LOG="error",
               HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _cli(world: dict, out: Path, *extra: str, spec: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "curation.cli", "train", "--lake", world["lake"], "--vae", "random",
            "--curriculum", str(spec or world["spec"]), "--out", str(out), "--device", "cpu", *extra]


def test_reference_run_is_sane(world):
    ref = world["ref"]
    assert [(r["phase"], r["step"]) for r in ref] == [("images", s) for s in range(1, 5)] + \
        [("video", s) for s in range(1, 5)]
    assert all(r["samples"] == 4 for r in ref)  # grad_accum 2 x global batch 2
    assert {tuple(r["bucket"]) for r in ref if r["phase"] == "video"} & {(5, 32, 48), (5, 32, 32)}
    assert len({r["loss"] for r in ref}) == len(ref)


def test_sigkill_then_resume_repeats_the_losses_bit_for_bit(world, tmp_path):
    """A subprocess run (2 DataLoader decode workers) is SIGKILLed once its 3rd checkpoint exists (its decode
    workers end with it); the resumed run finishes, and its loss log equals the uninterrupted run's exactly
    (not approximately)."""
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(world, out, "--loader-workers", "2"), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    latest = out / "checkpoints" / "latest"
    try:
        wait_for_checkpoint(proc, out)
        children = _descendants(proc.pid)
        assert len(children) >= 3  # the fork server and the 2 decode workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30  # the decode workers and the fork server end with the trainer
        while time.monotonic() < deadline and any(_alive(p) for p in children):
            time.sleep(0.1)
        assert not [p for p in children if _alive(p)], "processes outlived the killed trainer"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(latest.read_text().split("-")[1])
    assert 3 <= killed_at < sum(STEPS), "the kill must land mid-run"
    assert not (out / "video").exists()

    done = subprocess.run(_cli(world, out, "--loader-workers", "2", "--resume"), env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming" in done.stdout
    assert _curve(read_losses(out)) == _curve(world["ref"])  # bit for bit
    assert latest_checkpoint(out).name == f"step-{sum(STEPS):08d}"


def test_stop_and_resume_across_a_phase_boundary(world, tmp_path):
    """--stop-after 3 (mid-phase), resume to step 5 (just past the phase boundary), resume to the end: the
    same losses, the same final weights and EMA as the uninterrupted run's last checkpoint."""
    out = tmp_path / "run"
    plan = load_curriculum(str(world["spec"]))
    for stop in (3, 5, None):
        summary = train_curriculum(world["lake"], plan, "random", str(out), log=lambda _: None, resume=stop != 3,
                                   stop_after=stop)
        state = json.loads((latest_checkpoint(out) / "state.json").read_text())
        if stop:
            assert summary["stopped"]["global_step"] == stop == state["global_step"]
    assert (state["phase_name"], state["step"]) == ("video", STEPS[1])
    assert _curve(read_losses(out)) == _curve(world["ref"])
    assert json.loads((out / "summary.json").read_text())["images"]["steps"] == STEPS[0]

    mid = load_checkpoint(out / "checkpoints" / "step-00000008")
    assert set(mid["trainer"]) >= {"optimizer", "scheduler", "sampler", "step", "global_step"}
    assert {"python", "numpy", "torch", "cuda"} <= set(mid["rng"])


def test_two_ray_train_workers_follow_the_one_worker_curve(world, tmp_path):
    """2 Ray Train CPU workers (DDP over gloo, one shard of every batch each) with per-worker batch 1 vs
    one worker with batch 2: the same global batches, the same loss curve within float tolerance."""
    spec = _curriculum(tmp_path / "half.yaml", max_batch=1)
    out = tmp_path / "ddp"
    run = subprocess.run(_cli(world, out, "--workers", "2", "--num-cpus", "2", spec=spec), env=_env(),
                         capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "2 Ray Train worker(s)" in run.stdout
    ddp, ref = read_losses(out), world["ref"]
    assert [(r["phase"], r["step"], r["samples"], r["bucket"]) for r in ddp] == \
        [(r["phase"], r["step"], r["samples"], r["bucket"]) for r in ref]
    diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(ddp, ref))
    print(f"max |loss(2 workers) - loss(1 worker)| = {diff:.3g}")
    assert diff < 1e-5
    assert max(abs(a["grad_norm"] - b["grad_norm"]) / b["grad_norm"] for a, b in zip(ddp, ref)) < 1e-4
    assert (out / "video" / "ema.safetensors").is_file()
