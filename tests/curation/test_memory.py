"""Bounded memory (issue 14): a long input is split and scored with every Ray worker's peak RSS under 2 GiB
and the driver's under 1 GiB, and a slow stage does not make the stages before it pile decoded frames up
beyond Ray Data's object store budget (backpressure). Each run is a `videocurate run` subprocess with its
own embedded Ray, sampled from here every 0.2 s by the sampler of benchmarks/bench_memory.py (the
full-size figures, 1, 10 and 20 minutes at 1080p, are in benchmarks/RESULTS.md)."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIB = 1 << 30
MIB = 1 << 20
WORKER_BOUND = 2 * GIB  # every Ray worker (the goal of issue 14)
DRIVER_BOUND = 1 * GIB  # the `videocurate run` process; measured ~0.4 GiB at 1 and 10 minutes of 1080p


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", os.path.join(ROOT, "benchmarks", "bench_memory.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_memory", module)
    spec.loader.exec_module(module)
    return module


bm = _bench()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("memory_media"))
    long = bm.make_video(os.path.join(folder, "long_720p.mp4"), 60, (1280, 720), folder=folder)
    short = [bm.make_video(os.path.join(folder, f"short_720p_{k}.mp4"), 30, (1280, 720), rotate=k, folder=folder)
             for k in range(5)]  # stream copies of the same shots: no more encoding
    return {"long": long, "short": short}


def _env(**extra) -> dict:
    return {"RAY_AUTH_MODE": "disabled", "RUST_LOG": "error", "PYTHONPATH": ROOT, **extra}


def _explain(m) -> str:
    procs = "\n".join(f"  {p.role:<10} {p.pid:>7} {p.label:<50} {p.peak_rss / MIB:7.0f} MiB"
                      for p in sorted(m.procs.values(), key=lambda p: -p.peak_rss))
    return f"rc {m.rc}, {m.samples} samples, wall {m.wall_s:.1f}s\n{procs}\n{m.output[-3000:]}"


def _bounded(m) -> None:
    assert m.rc == 0 and m.samples > 10, _explain(m)
    workers = m.workers()
    assert workers and m.driver, _explain(m)  # the sampler saw the process tree
    assert m.driver < DRIVER_BOUND, _explain(m)
    assert all(w.peak_rss < WORKER_BOUND for w in workers), _explain(m)


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_a_one_minute_720p_video_is_split_and_scored_within_the_memory_bounds(media, tmp_path, executor):
    m = bm.measure([*bm.videocurate(), *bm.run_args("default", [media["long"]], str(tmp_path / "lake"),
                                                    executor=executor)], _env(), timeout=300)
    _bounded(m)
    assert bm.clips_of(m) >= 8, _explain(m)  # a cut every 7.5 s
    stages = {w.label for w in m.workers()}
    if executor == "ray":
        # probe as tasks; the split and the scorers in one actor pool, on one decode (curation.splitscore)
        assert any("SplitScoreStage" in s for s in stages) and any("_call" in s for s in stages), stages
    else:
        assert stages == {"local worker"}, stages


def test_a_slow_stage_does_not_make_earlier_stages_pile_up_decoded_frames(media, tmp_path):
    """A slow (pretend-)GPU scorer, 0.6 s a clip, is fed 32 frames at 640x360 per clip (21 MB) by the CPU
    decode before it: 20 clips, ~420 MB in all. A stamp scorer in the CPU group and the slow scorer note
    when each clip passed them, so the lake tells the most clips decoded and not yet consumed at one moment.
    Ray Data's object store budget for the run is limited to 64 MiB (its default is a share of a store of
    30 % of RAM, GBs, which so small an input never fills: then the decode runs ahead, measured 17 of the 20
    clips in flight, the whole ~420 MB in the store). Limited, the decode waits for the slow stage: measured
    8 in flight (3 clips' worth of budget plus the batches inside the two actors and queued to them)."""
    frames, budget = 32, 64
    per_clip = frames * 640 * 360 * 3
    prefix, extra, pipe = bm.slow_setup(str(tmp_path / "slow"), seconds=0.6, gpu=True, frames=frames, max_side=640,
                                        batch_size=1, stamp=True,
                                        stages=["probe", "split", {"stage": "clarity", "resources": {"batch_size": 1}}])
    lake = str(tmp_path / "lake")
    m = bm.measure([*prefix, "--fake-gpus", "1", "--data-mb", str(budget),
                    *bm.run_args(pipe, media["short"], lake)], {**_env(), **extra}, timeout=300)
    _bounded(m)
    assert any("GpuScoreGroup" in w.label for w in m.workers()), _explain(m)
    most, clips = bm.in_flight(lake)
    assert clips == bm.clips_of(m) >= 20, _explain(m)
    assert most <= clips // 2, (most, clips, _explain(m))  # never more than half the input decoded ahead
    # the store's high-water mark of touched pages (freed objects' pages stay counted, so the allocator's
    # fragmentation adds to it): 169 MiB when this test runs alone, 253 MiB once inside a full CI run with
    # at most 10 clips in flight (the check above passed); unbounded, the whole ~420 MB lands in the store
    assert m.plasma_peak < 0.75 * clips * per_clip and m.spill_workers == 0, (m.plasma_peak / MIB, _explain(m))
