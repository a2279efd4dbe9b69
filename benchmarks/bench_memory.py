"""Bounded memory (issue 14 item 2): peak RSS of the driver and of every Ray worker while `videocurate run`
splits and scores one long 1080p video, for two input lengths (driver memory must not grow with the
input), and the same with a deliberately slow scorer after the default scorers (a slow stage must not
make earlier stages pile decoded frames up in memory).

The pipeline runs as a subprocess with its own embedded Ray; a sampler thread here reads, every 0.2 s,
the RSS of that process (the driver) and of all its descendants: Ray workers (`ray::` process titles,
children of the raylet), Ray's own processes (raylet, gcs_server, agents) and anything else (ffmpeg).
It also reads the object store's high-water mark: the blocks allocated in the raylet's plasma file in
/dev/shm (what Ray Data holds between stages).

    PYTHONPATH=. python benchmarks/bench_memory.py                      # 1, 10 and 20 min at 1080p, slow runs
    PYTHONPATH=. python benchmarks/bench_memory.py --lengths 60 600 --slow-videos 0

Inputs are cached under /tmp/videocurate-bench-memory/ (made with imageio-ffmpeg's ffmpeg: eight
synthetic 7.5 s shots, one lavfi pattern each, encoded once with x264 ultrafast CRF 28 and concatenated
as often as the length needs; every 7.5 s is a hard cut)."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field

try:
    import psutil
except ImportError:  # Ray vendors psutil in ray/thirdparty_files and puts that on sys.path when imported
    importlib.import_module("ray")
    import psutil

CACHE = "/tmp/videocurate-bench-memory"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEGMENT_S = 7.5
GIB = 1 << 30
MIB = 1 << 20
# One lavfi pattern per shot; each differs from the next in colour and layout, so every boundary is a cut.
PATTERNS = [
    "testsrc2=size={w}x{h}:rate={fps}",
    "smptehdbars=size={w}x{h}:rate={fps},noise=alls=10:allf=t",
    "gradients=size={w}x{h}:rate={fps}:speed=0.05:seed=3",
    "zoneplate=size={w}x{h}:rate={fps}:kt2=1:kx2=20:ky2=20:kt=2",
    "life=size={lw}x{lh}:rate={fps}:mold=10:ratio=0.3:seed=5,scale={w}x{h}:flags=neighbor",
    "testsrc=size={w}x{h}:rate={fps}",
    "sierpinski=size={w}x{h}:rate={fps}",
    "colorchart=rate={fps},scale={w}x{h},hue=H=t",
]


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def segments(size: tuple[int, int], fps: int = 24, folder: str = CACHE) -> list[str]:
    """The eight shots at `size`, encoded once (cached)."""
    w, h = size
    out = os.path.join(folder, f"segments_{w}x{h}_{fps}")
    os.makedirs(out, exist_ok=True)
    paths = []
    for i, pattern in enumerate(PATTERNS):
        path = os.path.join(out, f"shot{i}.mp4")
        if not os.path.exists(path):
            src = pattern.format(w=w, h=h, fps=fps, lw=max(2, w // 8), lh=max(2, h // 8))
            subprocess.run([ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", src, "-t", str(SEGMENT_S),
                            "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "28",
                            path + ".tmp.mp4"], check=True)
            os.replace(path + ".tmp.mp4", path)
        paths.append(path)
    return paths


def make_video(path: str, seconds: float, size: tuple[int, int] = (1920, 1080), fps: int = 24,
               rotate: int = 0, folder: str = CACHE) -> str:
    """A `seconds` long H.264 video of hard-cut shots (stream copies of the cached shots, starting with
    shot `rotate`, so videos of different `rotate` differ in content and bytes). Kept if it exists."""
    if os.path.exists(path):
        return path
    shots = segments(size, fps, folder)
    n = math.ceil(seconds / SEGMENT_S)
    listing = path + ".txt"
    with open(listing, "w") as f:
        f.writelines(f"file '{shots[(rotate + i) % len(shots)]}'\n" for i in range(n))
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", listing, "-c", "copy",
                    "-t", f"{seconds:g}", path + ".tmp.mp4"], check=True)
    os.replace(path + ".tmp.mp4", path)
    os.remove(listing)
    return path


# ---- the sampler ----------------------------------------------------------------------------------------
RAY_SYSTEM_TITLES = ("ray::Dashboard", "ray::RuntimeEnv", "ray::IDLE_Spill", "ray::IDLE_Restore", "ray::Spill",
                     "ray::Restore")  # prefixes: a title can be seen cut short while it is being set
RAY_SYSTEM_NAMES = ("raylet", "gcs_server")
LOCAL_WORKER_NAME = "vc-worker"  # curation.local.WORKER_NAME: the local executor's workers


@dataclass
class Proc:
    pid: int
    role: str  # driver | worker | ray-system | other
    name: str
    titles: set[str] = field(default_factory=set)  # `ray::` process titles seen (a worker serves several)
    peak_rss: int = 0
    peak_private: int = 0  # RSS less file-backed and shared pages (libraries, object store mappings)
    series: list[tuple[float, int]] = field(default_factory=list, repr=False)  # (seconds since start, RSS)

    @property
    def label(self) -> str:
        """What the process did: its Ray Data stage if it ran one, else its longest title."""
        if self.role == "driver":
            return "driver"
        stages = sorted(t for t in self.titles if t.startswith("MapBatches"))
        rest = sorted((t for t in self.titles if t != "IDLE"), key=len, reverse=True)
        return "+".join(stages) if stages else rest[0] if rest else self.name


@dataclass
class Measurement:
    wall_s: float
    rc: int
    procs: dict[int, Proc]
    peak_total: int  # the largest sum of RSS over all processes at one sample (shared pages counted twice)
    peak_workers: int  # the largest sum over Ray workers at one sample
    plasma_peak: int  # object store pages allocated (high-water mark)
    samples: int
    output: str = ""
    extra: dict = field(default_factory=dict)

    def peak(self, role: str) -> int:
        return max((p.peak_rss for p in self.procs.values() if p.role == role), default=0)

    @property
    def driver(self) -> int:
        return self.peak("driver")

    @property
    def max_worker(self) -> Proc | None:
        workers = [p for p in self.procs.values() if p.role == "worker"]
        return max(workers, key=lambda p: p.peak_rss) if workers else None

    @property
    def spill_workers(self) -> int:
        """Ray's IO workers: started only when the object store spills objects to disk (it ran full)."""
        return sum(1 for p in self.procs.values() if "SpillWorker" in p.label or "RestoreWorker" in p.label)

    def workers(self) -> list[Proc]:
        return sorted((p for p in self.procs.values() if p.role == "worker"), key=lambda p: -p.peak_rss)


def _label(title: str) -> str:
    """`ray::MapWorker(MapBatches(ScoreGroupActor)).submit` -> `MapBatches(ScoreGroupActor)`."""
    t = title.removeprefix("ray::")
    if t.startswith("MapWorker(") and ")" in t:
        t = t[len("MapWorker("):t.rindex(")")]
    return t.split(".")[0] if not t.startswith("MapBatches") else t.rsplit(")", 1)[0] + ")"


class Sampler(threading.Thread):
    """Samples the RSS of process `root` and its descendants every `interval` seconds until `stop()`."""

    def __init__(self, root: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.procs: dict[int, Proc] = {}
        self.peak_total = self.peak_workers = self.plasma_peak = self.samples = 0
        self._done = threading.Event()
        self._plasma: dict[int, str] = {}  # raylet pid -> /proc path of its plasma fd
        self._system: set[int] = set()  # pids seen with a Ray system title (agents, IO workers)
        self.t0 = time.monotonic()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = workers = 0
        for p in procs:
            try:
                mem = p.memory_info()
                rss = mem.rss
                cmd = p.cmdline()
                name = p.name()
            except psutil.Error:
                continue
            title = cmd[0] if cmd else name
            rec = self.procs.get(p.pid)
            if rec is None:
                rec = self.procs[p.pid] = Proc(p.pid, "other", name)
            if title.startswith("ray::"):
                rec.titles.add(_label(title))
            if p.pid == self.root:
                rec.role = "driver"
            elif name == LOCAL_WORKER_NAME:
                rec.role = "worker"
                rec.titles.add("local worker")
            elif name in RAY_SYSTEM_NAMES or title.startswith(RAY_SYSTEM_TITLES):
                rec.role = "ray-system"
                self._system.add(p.pid)
            elif title.startswith("ray::"):
                rec.role = "ray-system" if p.pid in self._system else "worker"
            elif rec.role == "other" and "python" in name:
                rec.role = "ray-system"  # log monitor, autoscaler monitor; a new worker until it is retitled
            rec.peak_rss = max(rec.peak_rss, rss)
            rec.series.append((time.monotonic() - self.t0, rss))
            rec.peak_private = max(rec.peak_private, rss - mem.shared)
            total += rss
            workers += rss if rec.role == "worker" else 0
            if name == "raylet":
                self._read_plasma(p.pid)
        self.peak_total = max(self.peak_total, total)
        self.peak_workers = max(self.peak_workers, workers)
        self.samples += 1

    def _read_plasma(self, pid: int) -> None:
        path = self._plasma.get(pid)
        if path is None:
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    if "plasma" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                        path = self._plasma[pid] = f"/proc/{pid}/fd/{fd}"
                        break
            except OSError:
                return
        if path:
            try:
                self.plasma_peak = max(self.plasma_peak, os.stat(path).st_blocks * 512)
            except OSError:
                pass


def measure(cmd: list[str], env: dict | None = None, timeout: float = 3600, interval: float = 0.2,
            cwd: str = ROOT) -> Measurement:
    """Run `cmd` and sample its process tree until it exits."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid, interval)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    finally:
        sampler.stop()
    return Measurement(time.monotonic() - t0, proc.returncode, sampler.procs, sampler.peak_total,
                       sampler.peak_workers, sampler.plasma_peak, sampler.samples, out)


# ---- a deliberately slow scorer, registered the way a user registers their own ----------------------------
SLOW_SCORER = '''
"""A scorer that sleeps (the slow stage of the backpressure check) and one that notes when the CPU decode
reached each clip. Both write the time they saw the clip, so the lake tells how many clips had been
decoded and not yet consumed by the slow stage at any moment."""
import time

import pyarrow as pa

from curation.frames import FrameRequest
from curation.scoring import Scorer
from curation.stage import params


@params
class SlowParams:
    seconds: float = 0.5  # sleep per clip
    frames: int = 1
    max_side: int = 64


class SlowScorer(Scorer):
    name = "slow"
    version = "1"
    Params = SlowParams

    def output_fields(self):
        return [pa.field("slow_frames", pa.int32()), pa.field("slow_at", pa.float64())]

    def request(self):
        return FrameRequest(frames=self.params.frames, max_side=self.params.max_side)

    def score(self, clip):
        time.sleep(self.params.seconds)
        return {"slow_frames": int(len(clip.frames)), "slow_at": time.time()}


class StampScorer(Scorer):
    name = "stamp"
    version = "1"

    def output_fields(self):
        return [pa.field("decoded_at", pa.float64())]

    def request(self):
        return FrameRequest(frames=1, max_side=64)

    def score(self, clip):
        return {"decoded_at": time.time()}
'''

DRIVER = '''
"""`videocurate` with the slow and stamp scorers registered (what an entry point does for an installed
package). Leading options: --fake-gpus N starts the embedded Ray with N (pretend) GPUs, for a scorer that
declares num_gpus; --data-mb N limits Ray Data's object store budget (`resource_limits`) to N MiB."""
import sys

from curation import registry
from curation.cli import main

registry.register("slow", "slow_scorer:SlowScorer")
registry.register("stamp", "slow_scorer:StampScorer")
args = sys.argv[1:]
while args[:1] in (["--fake-gpus"], ["--data-mb"]):
    if args[0] == "--fake-gpus":
        from curation.runner import init_ray

        init_ray(num_gpus=int(args[1]))
    else:
        import ray

        limits = ray.data.ExecutionResources.for_limits(object_store_memory=int(args[1]) * 2**20)
        ray.data.DataContext.get_current().execution_options.resource_limits = limits
    args = args[2:]
sys.exit(main(args))
'''


def slow_setup(folder: str, seconds: float = 0.5, gpu: bool = False, frames: int = 1, max_side: int = 64,
               base: str = "default", stages: list[str | dict] | None = None,
               batch_size: int | None = None, stamp: bool = False,
               cpu_batch: int | None = None) -> tuple[list[str], dict, str]:
    """Write the slow scorer module, its driver and a pipeline YAML (`base`, or just `stages` when given:
    names or pipeline entries, with the slow scorer after the last stage); return (command prefix, env,
    pipeline path). With `stamp`, a CPU scorer before it records when the decode reached each clip
    (`decoded_at`; see `in_flight`); `cpu_batch` sets its batch size, which the CPU group takes."""
    import yaml

    from curation.pipeline import resolve_path

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "slow_scorer.py"), "w") as f:
        f.write(textwrap.dedent(SLOW_SCORER))
    with open(os.path.join(folder, "drive.py"), "w") as f:
        f.write(textwrap.dedent(DRIVER))
    if stages is None:
        with open(resolve_path(base)) as f:
            doc = yaml.safe_load(f)
    else:
        entries = [{"stage": s} if isinstance(s, str) else dict(s) for s in stages]
        base = "_".join(e["stage"] for e in entries)
        doc = {"name": base, "stages": entries}
    entry = {"stage": "slow", "params": {"seconds": seconds, "frames": frames, "max_side": max_side}}
    if gpu or batch_size:
        entry["resources"] = {**({"num_gpus": 1} if gpu else {}), **({"batch_size": batch_size} if batch_size else {})}
    last = max(i for i, e in enumerate(doc["stages"]) if "stage" in e)
    doc["stages"].insert(last + 1, entry)
    if stamp:
        doc["stages"].insert(last + 1, {"stage": "stamp", **({"resources": {"batch_size": cpu_batch}}
                                                             if cpu_batch else {})})
    doc["name"] = f"{doc.get('name', base)}+slow"
    path = os.path.join(folder, f"{base}_slow{'_gpu' if gpu else ''}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    env = {"PYTHONPATH": os.pathsep.join([folder, ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return [sys.executable, os.path.join(folder, "drive.py")], env, path


def videocurate() -> list[str]:
    return [sys.executable, "-m", "curation.cli"]


def run_args(pipeline: str, inputs: list[str], lake: str, num_cpus: int | None = None,
             executor: str = "auto") -> list[str]:
    args = ["run", pipeline, "--input", *inputs, "--lake", lake, "--no-progress", "--executor", executor]
    return args + (["--num-cpus", str(num_cpus)] if num_cpus else [])


def clips_of(m: Measurement) -> int:
    """Clips committed, from the run summary's `clips N` (0 when absent)."""
    found = re.search(r"; clips (\d+);", m.output)
    return int(found.group(1)) if found else 0


def in_flight(lake: str) -> tuple[int, int]:
    """(most clips decoded by the CPU group but not yet through the slow stage at one moment, clips): from the
    `decoded_at` and `slow_at` columns the stamp and slow scorers wrote."""
    from curation.lake import Lake

    events = []
    for b in Lake(lake).scan("clips", columns=["decoded_at", "slow_at"]):
        for decoded, done in zip(b.column(0).to_pylist(), b.column(1).to_pylist()):
            events += [(decoded, 1), (done, -1)]
    held = most = 0
    for _, step in sorted(events):
        held += step
        most = max(most, held)
    return most, len(events) // 2


def summary_line(what: str, m: Measurement) -> str:
    w = m.max_worker
    return (f"{what:<44} wall {m.wall_s:7.1f} s  driver {m.driver / MIB:6.0f} MiB  max worker "
            f"{(w.peak_rss if w else 0) / MIB:6.0f} MiB ({w.label if w else '-'})  workers sum "
            f"{m.peak_workers / MIB:6.0f} MiB  all {m.peak_total / MIB:6.0f} MiB  object store "
            f"{m.plasma_peak / MIB:5.0f} MiB  spill workers {m.spill_workers}  clips {clips_of(m)}  rc {m.rc}")


def table(rows: list[tuple[str, str, Measurement]]) -> str:
    out = ["| run | input | clips | wall s | driver peak MiB | max worker peak MiB (stage) | workers sum MiB "
           "| all processes MiB | object store high-water MiB | spilled | clips in flight (decoded, not consumed) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for what, inp, m in rows:
        w = m.max_worker
        out.append(f"| {what} | {inp} | {clips_of(m)} | {m.wall_s:.1f} | {m.driver / MIB:.0f} | "
                   f"{(w.peak_rss if w else 0) / MIB:.0f} ({w.label if w else '-'}) | {m.peak_workers / MIB:.0f} | "
                   f"{m.peak_total / MIB:.0f} | {m.plasma_peak / MIB:.0f} | {'yes' if m.spill_workers else 'no'} | "
                   f"{_flight(m)} |")
    return "\n".join(out)


def trace(p: Proc, points: int = 10) -> str:
    """The process's RSS (MiB) at `points` evenly spaced moments of its life: does it climb or plateau?"""
    if not p.series:
        return ""
    t0, t1 = p.series[0][0], p.series[-1][0]
    marks, j = [], 0
    for k in range(1, points + 1):
        at = t0 + (t1 - t0) * k / points
        while j + 1 < len(p.series) and p.series[j + 1][0] <= at:
            j += 1
        marks.append(f"{p.series[j][1] / MIB:.0f}")
    return " ".join(marks)


def _flight(m: Measurement) -> str:
    if "in_flight" not in m.extra:
        return ""
    most, n, per_clip = m.extra["in_flight"]
    return f"{most} of {n} ({most * per_clip / MIB:.0f} of {n * per_clip / MIB:.0f} MiB)"


def check(m: Measurement, what: str) -> None:
    if m.rc != 0:
        print(m.output[-4000:], file=sys.stderr)
        raise SystemExit(f"{what}: videocurate exited with {m.rc}")


def report(what: str, inp: str, m: Measurement, rows: list) -> None:
    check(m, what)
    rows.append((what, inp, m))
    print(summary_line(what, m), flush=True)
    for w in m.workers():
        print(f"    worker {w.pid:>7} {w.label:<48} {w.peak_rss / MIB:7.0f} MiB (private {w.peak_private / MIB:.0f})"
              + (f"; RSS over its life: {trace(w)}" if "MapBatches" in w.label else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=float, nargs="*", default=[60, 600, 1200], help="input lengths in seconds")
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--slow-videos", type=int, default=4, help="1-minute videos for the slow-scorer runs (0: skip)")
    ap.add_argument("--slow-seconds", type=float, default=0.5, help="the slow scorer's sleep per clip")
    ap.add_argument("--feed", default="16x640", help="frames x max side the slow pretend-GPU scorer is fed")
    ap.add_argument("--data-mb", type=int, default=64,
                    help="Ray Data object store budget (resource_limits) of the last slow-scorer run, so that the "
                         "frames fed to the slow stage outgrow it (by default it is a share of a store of 30%% of "
                         "RAM, which 4 videos never fill)")
    ap.add_argument("--no-gpu-feed", action="store_true", help="skip the slow (pretend) GPU scorer run")
    ap.add_argument("--num-cpus", type=int)
    ap.add_argument("--keep", action="store_true", help="keep the lakes")
    args = ap.parse_args(argv)
    size = tuple(int(x) for x in args.size.split("x"))
    feed_frames, feed_side = (int(x) for x in args.feed.split("x"))
    os.makedirs(CACHE, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-memory-", dir=CACHE)
    env = {"RAY_AUTH_MODE": "disabled", "RUST_LOG": "error", "PYTHONPATH": ROOT}
    rows: list[tuple[str, str, Measurement]] = []
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / GIB:.1f} GiB; load "
          f"{os.getloadavg()[0]:.1f}; sampling every 0.2 s", flush=True)
    try:
        for seconds in args.lengths:
            t0 = time.monotonic()
            video = make_video(os.path.join(CACHE, f"video_{size[0]}x{size[1]}_{seconds:g}s.mp4"), seconds, size)
            print(f"input {video}: {seconds:g} s ({os.path.getsize(video) / MIB:.0f} MB, made/cached in "
                  f"{time.monotonic() - t0:.1f} s)", flush=True)
            lake = os.path.join(work, f"lake_{seconds:g}")
            m = measure([*videocurate(), *run_args("default", [video], lake, args.num_cpus)], env)
            report("default", f"1 × {seconds / 60:g} min {size[1]}p", m, rows)
        if args.slow_videos:
            videos = [make_video(os.path.join(CACHE, f"video_{size[0]}x{size[1]}_60s_r{k}.mp4"), 60, size, rotate=k)
                      for k in range(args.slow_videos)]
            inp = f"{len(videos)} × 1 min {size[1]}p"
            slow = f"{args.slow_seconds:g} s/clip"
            fed = f"fed {feed_frames} frames at {feed_side} px"
            runs = [("default (no slow scorer)", None, 0), (f"default + slow scorer ({slow})", False, 0)]
            if not args.no_gpu_feed:
                runs += [(f"default + slow pretend-GPU scorer ({slow}, {fed})", True, 0),
                         (f"default + slow pretend-GPU scorer ({slow}, {fed}), Ray Data budget {args.data_mb} MiB",
                          True, args.data_mb)]
            for i, (what, gpu, budget) in enumerate(runs):
                lake = os.path.join(work, f"lake_slow_{i}")
                extra = dict(env)
                if gpu is None:
                    cmd, pipe = videocurate(), "default"
                else:
                    feed = {"frames": feed_frames, "max_side": feed_side, "batch_size": 1, "stamp": True,
                            "cpu_batch": 2} if gpu else {}
                    prefix, more, pipe = slow_setup(os.path.join(work, f"slow_{i}"), args.slow_seconds, gpu=gpu, **feed)
                    cmd = [*prefix, *(["--fake-gpus", "1"] if gpu else [])]
                    cmd += ["--data-mb", str(budget)] if budget else []
                    extra.update(more)
                m = measure([*cmd, *run_args(pipe, videos, lake, args.num_cpus)], extra)
                report(what, inp, m, rows)
                if gpu:
                    from curation.video import fit_size

                    w, h = fit_size(size[0], size[1], max_side=feed_side)
                    per_clip = feed_frames * w * h * 3
                    most, n = in_flight(lake)
                    m.extra["in_flight"] = (most, n, per_clip)
                    print(f"    frames fed to the slow stage: {n} clips x {per_clip / MIB:.1f} MiB = "
                          f"{n * per_clip / MIB:.0f} MiB in all; at most {most} clips ({most * per_clip / MIB:.0f} "
                          f"MiB) decoded and not yet consumed at once; object store high-water "
                          f"{m.plasma_peak / MIB:.0f} MiB", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
