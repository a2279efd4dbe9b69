"""Whole-process pipeline benchmark (issue 11): `videocurate run` (probe + split only, and `default`) against
the `scenedetect` CLI's `detect-content` over the same files, each as a user runs it (a fresh process, a
fresh lake), on a workload of real-looking videos (curation.synth: real photographs, camera moves, hard
cuts, subtitles) at 240p-1080p in MP4, Matroska, WebM and MPEG-PS, ~2.5 minutes of footage; `--scale 10`
renders ten variants of every video (other photos, same lengths).

    PYTHONPATH=. python benchmarks/bench_pipeline.py [--scale 1] [--repeats 3] [--cache DIR] [--write]

Prints, per command, the median wall time and CPU seconds (user + sys of the whole process tree, the
workers included, sampled with psutil), the ratio to the CLI, CPU utilisation (CPU s / wall / cores),
seconds per footage-second, and the time from the process start to the first decoded frame of a
one-video run with the local executor (the default), an embedded Ray and a Ray already running (a
`sitecustomize` on PYTHONPATH, inherited by every worker, notes the first frame `VideoReader.iter_frames`
yields in any process). The default pipeline also runs with `--executor ray` for comparison. `--write`
replaces this benchmark's section of benchmarks/RESULTS.md. The load average is printed beside every number:
the machine is shared."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass

try:
    import psutil
except ImportError:  # Ray vendors psutil in ray/thirdparty_files and puts that on sys.path when imported
    importlib.import_module("ray")
    import psutil

from curation import synth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "RESULTS.md")
SECTION = "## Whole pipeline vs the scenedetect CLI (issue 11, bench_pipeline.py)"
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle", "hubble_deep_field", "camera", "retina"]
SUBTITLES = ["Welcome back to the show", "The harbour at dawn", "Chapter two: the climb", None, None, None]


@dataclass(frozen=True)
class Spec:
    """One video of the workload: file name, frame size, seconds, codec (the container follows the name)."""

    name: str
    size: tuple[int, int]
    seconds: float
    codec: str = "libx264"
    bit_rate: int | None = None


WORKLOAD = [  # 144 s of footage
    Spec("a_1080p.mp4", (1920, 1080), 12), Spec("b_1080p.mp4", (1920, 1080), 12),
    Spec("c_720p.mp4", (1280, 720), 15), Spec("d_720p.mkv", (1280, 720), 15),
    Spec("e_720p.mp4", (1280, 720), 15), Spec("f_480p.webm", (854, 480), 15, "libvpx", 1_500_000),
    Spec("g_360p.mpg", (640, 360), 15, "mpeg2video", 2_000_000), Spec("h_360p.mpg", (640, 360), 15, "mpeg2video",
                                                                      2_000_000),
    Spec("i_240p.webm", (426, 240), 15, "libvpx", 600_000), Spec("j_240p.mp4", (426, 240), 15),
]

LONG_WORKLOAD = [  # 180 s in three files: what raw footage is more often (few files, minutes each)
    Spec("long_a_1080p.mp4", (1920, 1080), 60), Spec("long_b_1080p.mp4", (1920, 1080), 60),
    Spec("long_c_720p.mp4", (1280, 720), 60),
]


def shots_for(spec: Spec, variant: int, fps: float = 24.0, grain: float = 0.0) -> list[synth.Shot]:
    """Shots of 2-6 s over the photos (pans, a zoom, a handheld shot, one blurred, some subtitled), with
    `grain` levels of sensor noise."""
    seed = sum(map(ord, spec.name)) + 7 * variant
    shots, total, k = [], 0, 0
    while total < spec.seconds * fps:
        frames = min(int(fps * (2 + (seed + 3 * k) % 5)), int(spec.seconds * fps) - total)
        frames = max(frames, 12)
        shots.append(synth.Shot(PHOTOS[(seed + k) % len(PHOTOS)], frames, pan=((k % 3) - 1.0, 0.5 * (k % 2)),
                                zoom=1.003 if k % 4 == 3 else 1.0, jitter=2.0 if k % 5 == 4 else 0.0,
                                blur=2.5 if k % 7 == 6 else 0.0, text=SUBTITLES[(seed + k) % len(SUBTITLES)],
                                seed=k, grain=grain))
        total += frames
        k += 1
    return shots


def make_workload(folder: str, scale: int = 1, grain: float = 0.0,
                  specs: list[Spec] = WORKLOAD) -> tuple[list[str], float]:
    """Render the workload (`scale` variants of each video, `grain` levels of sensor noise) into `folder`,
    reusing files already there; returns the paths and the seconds of footage. Noise-free, the photos'
    smooth pans compress to ~0.4 Mbit/s at 1080p and decode in ~1.7 ms a frame; grain 6 gives a camera's
    bit rates (H.264 at crf 23: ~10 Mbit/s at 1080p) and decode cost (~7 ms a frame)."""
    os.makedirs(folder, exist_ok=True)
    paths, seconds = [], 0.0
    for variant in range(scale):
        for spec in specs:
            stem, ext = os.path.splitext(spec.name)
            path = os.path.join(folder, f"{stem}_{variant}{ext}" if scale > 1 else spec.name)
            if not os.path.exists(path):
                part = path + ".part" + ext
                synth.make_video(part, shots_for(spec, variant, grain=grain), size=spec.size, fps=24.0,
                                 codec=spec.codec, bit_rate=spec.bit_rate,
                                 **({"crf": 23} if spec.codec == "libx264" else {}))
                os.replace(part, path)
            paths.append(path)
            seconds += spec.seconds
    return paths, seconds


class TreeCpu(threading.Thread):
    """CPU seconds (user + sys) of a process and all its descendants, sampled every `interval` s; a
    process keeps the last value seen for it after it exits (one that lives under `interval` is missed,
    which only undercounts)."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval, self.seen = pid, interval, {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    t = p.cpu_times()
                    self.seen[(p.pid, p.create_time())] = t.user + t.system
                except psutil.Error:
                    continue
            self._done.wait(self.interval)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return sum(self.seen.values())


@dataclass
class Timing:
    wall: float
    cpu: float
    load: float  # 1-minute load average when the run started
    output: str


def timed(cmd: list[str], env: dict | None = None) -> Timing:
    """Run `cmd` as a whole process; its wall time and the CPU seconds of its process tree."""
    load = os.getloadavg()[0]
    before = os.times()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    sampler = TreeCpu(proc.pid)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.monotonic() - t0
    sampled = sampler.stop()
    after = os.times()
    reaped = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} … exited {proc.returncode}:\n{out[-3000:]}")
    # reaped: the direct child and the descendants it waited for; sampled: every process seen alive
    return Timing(wall, max(sampled, reaped), load, out)


def scenedetect_cli(paths: list[str], out: str) -> list[list[str]]:
    exe = shutil.which("scenedetect", path=os.path.dirname(sys.executable)) or "scenedetect"
    return [[exe, "-q", "-i", p, "-o", out, "detect-content"] for p in paths]


def run_cli_over(paths: list[str], out: str) -> Timing:
    """The CLI once per file, one after the other (how its users run it over a folder)."""
    parts = [timed(cmd) for cmd in scenedetect_cli(paths, out)]
    return Timing(sum(p.wall for p in parts), sum(p.cpu for p in parts), parts[0].load, "")


def split_only_pipeline(folder: str) -> str:
    """`pipelines/default.yaml` cut to its probe and split stages."""
    import yaml

    from curation.pipeline import resolve_path

    with open(resolve_path("default")) as f:
        doc = yaml.safe_load(f)
    doc["name"], doc["stages"] = "probe+split", [e for e in doc["stages"] if e.get("stage") in ("probe", "split")]
    path = os.path.join(folder, "split_only.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return path


def videocurate(pipeline: str, inputs: list[str], lake: str, extra: list[str] = ()) -> list[str]:
    return [sys.executable, "-m", "curation.cli", "run", pipeline, "--input", *inputs, "--lake", lake,
            "--no-progress", *extra]


HOOK = '''
"""bench_pipeline: note the wall-clock time of the first frame any process decodes (first one wins)."""
import os, sys, time

_MARK = os.environ.get("VC_BENCH_FIRST_DECODE")


class _Finder:
    def find_spec(self, name, path=None, target=None):
        if name != "curation.video":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        loader = spec.loader
        real = loader.exec_module

        def exec_module(module):
            real(module)
            orig = module.VideoReader.iter_frames

            def iter_frames(self, *a, **k):
                for i, frame in enumerate(orig(self, *a, **k)):
                    if i == 0:
                        try:
                            fd = os.open(_MARK, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                            os.write(fd, repr(time.time()).encode())
                            os.close(fd)
                        except FileExistsError:
                            pass
                    yield frame
            module.VideoReader.iter_frames = iter_frames
        loader.exec_module = exec_module
        return spec


if _MARK:
    sys.meta_path.insert(0, _Finder())
'''


def hook_env(folder: str) -> dict[str, str]:
    """Environment that makes every Python process note the first decoded frame in `folder`/first_decode."""
    hook = os.path.join(folder, "hook")
    os.makedirs(hook, exist_ok=True)
    with open(os.path.join(hook, "sitecustomize.py"), "w") as f:
        f.write(textwrap.dedent(HOOK))
    return {"VC_BENCH_FIRST_DECODE": os.path.join(folder, "first_decode"),
            "PYTHONPATH": os.pathsep.join([hook, ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def first_decode(path: str, folder: str, extra: list[str] = ()) -> tuple[float, Timing]:
    """Seconds from starting `videocurate run default` over one video to the first decoded frame."""
    env = hook_env(folder)
    mark = env["VC_BENCH_FIRST_DECODE"]
    if os.path.exists(mark):
        os.remove(mark)
    lake = os.path.join(folder, "lake_one")
    shutil.rmtree(lake, ignore_errors=True)
    t0 = time.time()
    run = timed(videocurate("default", [path], lake, extra), env)
    with open(mark) as f:
        return float(f.read()) - t0, run


@contextlib.contextmanager
def local_cluster(folder: str, port: int = 6391):
    """A local Ray head started for the run (`ray start --head --block`, its own process group, stopped by
    signalling that group: never `ray stop`, which would stop every Ray on the machine); its workers get
    the first-decode hook. Yields the address to pass as `--address`."""
    env = {**os.environ, **hook_env(folder), "RAY_AUTH_MODE": "disabled"}
    ray_exe = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"
    proc = subprocess.Popen([ray_exe, "start", "--head", "--block", f"--port={port}", f"--num-cpus={os.cpu_count()}",
                             "--include-dashboard=false", "--disable-usage-stats"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='{address}'); ray.shutdown()"],
                       env=env, check=True, capture_output=True, timeout=120)  # up and answering
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _median_first(runs: list[tuple[float, Timing]]) -> tuple[float, Timing]:
    return sorted(runs, key=lambda r: r[0])[(len(runs) - 1) // 2]


def median_of(runs: list[Timing]) -> Timing:
    walls = [r.wall for r in runs]
    best = runs[walls.index(statistics.median_low(walls))]
    return Timing(statistics.median(walls), statistics.median(r.cpu for r in runs),
                  statistics.mean(r.load for r in runs), best.output)


def fresh_lake_run(cmd_of, folder: str, name: str):
    def go() -> Timing:
        lake = os.path.join(folder, name)
        shutil.rmtree(lake, ignore_errors=True)
        return timed(cmd_of(lake))
    return go


def summary_line(output: str) -> str:
    return next((line for line in output.splitlines() if line.startswith("videos ok")), "")


@dataclass
class Measured:
    timing: Timing  # medians over the rounds
    ratio: float  # median over the rounds of this command's wall time / the CLI's in the same round


def measure(paths: list[str], seconds: float, folder: str, repeats: int, extra: list[str]) -> dict[str, Measured]:
    """Every command once per round, `repeats` rounds: this machine's speed moves by tens of per cent within
    the hour, and a change between rounds then falls on every command alike; the ratio to the CLI is the
    median of the per-round ratios."""
    split_yaml = split_only_pipeline(folder)
    runs = {
        "scenedetect CLI detect-content (one process per file)": lambda: run_cli_over(paths, folder),
        "videocurate run, probe + split only": fresh_lake_run(
            lambda lake: videocurate(split_yaml, paths, lake, extra), folder, "lake_split"),
        "videocurate run default": fresh_lake_run(lambda lake: videocurate("default", paths, lake, extra),
                                                  folder, "lake_default"),
    }
    if not extra:  # the same run on an embedded Ray, for comparison
        runs["videocurate run default --executor ray (embedded Ray)"] = fresh_lake_run(
            lambda lake: videocurate("default", paths, lake, ["--executor", "ray"]), folder, "lake_ray")
    rounds: dict[str, list[Timing]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            rounds[name].append(fn())
    cli = next(iter(rounds.values()))
    return {name: Measured(median_of(ts), statistics.median(t.wall / c.wall for t, c in zip(ts, cli)))
            for name, ts in rounds.items()}


def cpu_model() -> str:
    """The CPU's name and vector units, from /proc/cpuinfo (Linux; elsewhere platform's guess): the ratio
    depends on it, the OCR detector most (its 480 px pass: ~30 ms on AVX-512 machines, 110-145 ms on a
    Zen 1 EPYC with AVX2 only)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0]  # the first processor's block
    except OSError:
        return platform.processor() or platform.machine()
    info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines()) if v}
    flags = set(info.get("flags", "").split())
    simd = next((f for f in ("avx512f", "avx2", "avx", "sse4_2", "asimd") if f in flags), "")
    family = f" (family {info['cpu family']} model {info['model']})" if "cpu family" in info else ""
    return f"{info.get('model name', platform.machine())}{family}{', ' + simd if simd else ''}"


def render(results: dict[str, Measured], seconds: float, n: int, first: tuple | None,
           args: argparse.Namespace) -> str:
    cores = os.cpu_count() or 1
    lines = [f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} cores ({cpu_model()}), "
             f"median of {args.repeats} rounds (each round runs every command once, in the order below)"]
    if results:
        kinds = ("720p-1080p MP4/H.264, 60 s each" if args.long else
                 "240p-1080p; MP4/H.264, MKV/H.264, WebM/VP8, MPEG-PS/MPEG-2")
        lines += [f"{n} videos, {seconds:.0f} s of footage ({kinds}), scale {args.scale}, grain {args.grain:g}", "",
                  "| command | wall s | CPU s | ratio to CLI (wall, median of the rounds' ratios) | CPU utilisation "
                  "| wall s per footage-s | load avg |",
                  "|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        t = m.timing
        lines.append(f"| {name} | {t.wall:.2f} | {t.cpu:.2f} | {m.ratio:.2f}× | "
                     f"{t.cpu / t.wall / cores:.0%} | {t.wall / seconds:.3f} | {t.load:.1f} |")
    for name, m in results.items():
        if summary_line(m.timing.output):
            lines.append(f"\n{name}: {summary_line(m.timing.output)}")
    if first is not None:
        lines += ["", "One 6 s 320×180 video, `videocurate run default` (median of the repeats):", "",
                  "| executor | first decoded frame after process start, s | whole run wall s | CPU s | load avg |",
                  "|---|---|---|---|---|"]
        for what, (secs, run) in zip(("local (the default on one machine)", "embedded Ray (`--executor ray`)",
                                      "Ray already running (`--address`)"), first):
            lines.append(f"| {what} | {secs:.2f} | {run.wall:.2f} | {run.cpu:.2f} | {run.load:.1f} |")
    return "\n".join(lines)


# (pattern in a frame, stage label): the first pattern found walking a sample's stack from the leaf up names it
STAGE_FRAMES = [
    ("(filters/ocr.py", "score: ocr"), ("(filters/text_gate.py", "score: ocr"),
    ("(filters/motion.py", "score: motion"), ("(filters/clarity.py", "score: clarity"),
    ("(filters/borders.py", "score: borders"), ("(filters/embedding.py", "score: embedding"),
    ("decode_clips (curation/frames.py", "score: decode (second decode of each clip)"),
    ("(curation/split.py", "split (decode + detection + clips)"), ("(curation/probe.py", "probe (hash + probe)"),
    ("(curation/writer.py", "driver: lake writes"), ("(curation/dedup.py", "step: dedup"),
    ("(curation/concepts.py", "step: concepts"), ("(captioner/", "step: caption"),
    ("(curation/tiers.py", "step: tiers"),
    ("(curation/lake.py", "driver: lake (scans, commits)"), ("init_ray (curation/runner.py", "driver: ray.init"),
    ("_find_and_load (<frozen", "imports"),
]


def profile_table(raw: str, rate: int) -> str:
    """Stage → CPU seconds and share from `py-spy record --subprocesses --format raw` output (one line per
    distinct stack: `process A;process B;frame;...;frame COUNT`), sampled `rate` times a second."""
    by: dict[str, float] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        procs = [f for f in frames if f.startswith("process ")]
        label = next((name for f in reversed(frames) for pat, name in STAGE_FRAMES if pat in f), None)
        if label is None:
            label = "driver: other (scheduling, plan)" if len(procs) == 1 else "worker: other"
        elif label == "imports":
            label = "driver: imports" if len(procs) == 1 else "worker: imports"
        by[label] = by.get(label, 0.0) + int(count) / rate
    total = sum(by.values()) or 1.0
    rows = [f"| {k} | {v:.1f} | {v / total:.0%} |" for k, v in sorted(by.items(), key=lambda kv: -kv[1])]
    return "\n".join(["| stage (py-spy, Python processes) | CPU s | share |", "|---|---|---|", *rows,
                      f"| **all sampled** | **{total:.1f}** | |"])


def profile(paths: list[str], folder: str, rate: int = 50) -> str:
    """`videocurate run default` under `py-spy record --subprocesses`: the stage table."""
    spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"
    out, lake = os.path.join(folder, "profile.txt"), os.path.join(folder, "lake_profile")
    shutil.rmtree(lake, ignore_errors=True)
    timed([spy, "record", "--subprocesses", "--nonblocking", "--format", "raw", "--rate", str(rate), "-o", out,
           "--", *videocurate("default", paths, lake)])
    with open(out) as f:
        return profile_table(f.read(), rate)


def frame_costs(paths: list[str]) -> str:
    """CPU ms a frame, one decoder thread, over the first video of each size: decoding alone; decoding and
    scaling to the split's 256 px BGR in one step; through 640 px YUV 4:2:0 (what the split does now, the
    scorers' tap frames included: curation.split.VIA_SIDE); and to both apart (what keeping the tap's
    frames would cost without the 640 px step). A second decode of every frame is what decode-once saves.
    The "now" column scales as the split does (swscale's area averaging for both steps), the others with
    swscale's default (bilinear)."""
    import av
    from av.video.reformatter import VideoReformatter

    from curation.split import ANALYSIS_INTERPOLATION
    from curation.video import I420_INTERPOLATION

    def cost(path: str, steps: list[tuple]) -> float:
        """steps: (format, longer side, from the previous step's frame rather than the decoded one[,
        swscale interpolation])."""
        t = time.process_time()
        with av.open(path) as c:
            stream = c.streams.video[0]
            stream.thread_count = 1
            scalers = [VideoReformatter() for _ in steps]
            n = 0
            for frame in c.decode(stream):
                n += 1
                prev = frame
                for scaler, (fmt, side, chained, *how) in zip(scalers, steps):
                    src = prev if chained else frame
                    width = min(side, frame.width)  # never up (as fit_size); these are all landscape
                    prev = scaler.reformat(src, format=fmt, width=width, interpolation=how[0] if how else None,
                                           height=round(frame.height * width / frame.width / 2) * 2)
                    prev.to_ndarray()
        return (time.process_time() - t) / max(n, 1) * 1000

    plans = ([], [("bgr24", 256, False)],
             [("yuv420p", 640, False, I420_INTERPOLATION), ("bgr24", 256, True, ANALYSIS_INTERPOLATION)],
             [("bgr24", 256, False), ("yuv420p", 640, False)])
    lines = ["| video | decode | + 256 px BGR | + 640 px I420 -> 256 px BGR (now) | + 256 px and 640 px apart |",
             "|---|---|---|---|---|"]
    seen = set()
    for path in paths:
        name = os.path.basename(path)
        key = name.split("_")[1].split(".")[0]
        if key in seen:
            continue
        seen.add(key)
        row = [min(cost(path, steps) for _ in range(3)) for steps in plans]  # the least of 3 passes
        with av.open(path) as c:
            rate = os.path.getsize(path) * 8 / 1e6 / max(float(c.duration or 1) / av.time_base, 1e-3)
        lines.append(f"| {name} ({rate:.1f} Mbit/s) | " + " | ".join(f"{v:.2f} ms" for v in row) + " |")
    return "\n".join(lines)


def section(args: argparse.Namespace) -> str:
    """The RESULTS.md heading of this run's kind of workload."""
    kind = [f"at {args.scale}x the footage"] if args.scale > 1 else []
    kind += ["on few long files"] if args.long else []
    kind += [f"on grainy footage (grain {args.grain:g})"] if args.grain else []
    return SECTION if not kind else f"## Whole pipeline {', '.join(kind)} (issue 11, bench_pipeline.py)"


def write_section(body: str, command: str, path: str = RESULTS, heading: str = SECTION) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md; other sections are left as they are."""
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    block = f"{heading}\n\nCommand: `{command}`\n\n{body}\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + block + (text[nxt:] if nxt >= 0 else "")
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=1, help="render this many variants of every video (10: 10x)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", help="keep the rendered workload here and reuse it (default: a temp folder)")
    ap.add_argument("--grain", type=float, default=0.0, help="sensor noise in grey levels (6: a camera's bit "
                    "rates and decode cost; keep its --cache apart)")
    ap.add_argument("--long", action="store_true", help="three 60 s files (two 1080p, one 720p) instead of ten "
                    "12-15 s ones: the CLI's start-up per file weighs less, and one video is one block (keep its "
                    "--cache apart)")
    ap.add_argument("--address", help="pass --address to videocurate run (e.g. auto: a running local Ray)")
    ap.add_argument("--skip-first-decode", action="store_true")
    ap.add_argument("--only-first-decode", action="store_true", help="only the one-video start-up measurement")
    ap.add_argument("--profile", action="store_true", help="also profile the default run with py-spy (pip install "
                    "py-spy) and print the stage table")
    ap.add_argument("--only-profile", action="store_true", help="only the py-spy profile")
    ap.add_argument("--frame-costs", action="store_true", help="also print decode and scaling CPU ms a frame")
    ap.add_argument("--write", action="store_true", help="replace this benchmark's section of RESULTS.md")
    args = ap.parse_args(argv)
    if args.scale < 1 or args.repeats < 1:
        ap.error("--scale and --repeats must be >= 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RUST_LOG", "error")
    extra = ["--address", args.address] if args.address else []
    with tempfile.TemporaryDirectory() as tmp:
        paths, seconds = [], 0.0
        if not args.only_first_decode:
            t0 = time.monotonic()
            paths, seconds = make_workload(args.cache or os.path.join(tmp, "media"), args.scale, args.grain,
                                           LONG_WORKLOAD if args.long else WORKLOAD)
            print(f"workload: {len(paths)} videos, {seconds:.0f} s of footage ({time.monotonic() - t0:.0f} s to make)",
                  flush=True)
        table = profile(paths, tmp) if paths and (args.profile or args.only_profile) else ""
        if args.only_profile:
            print(table)
            return 0
        first = None
        if not args.skip_first_decode:
            one = os.path.join(tmp, "one.mp4")
            synth.make_video(one, [synth.Shot("coffee", 72, pan=(1, 0)), synth.Shot("astronaut", 72, pan=(1, 0))])
            first_decode(one, tmp, extra)  # warm-up: the page cache, .pyc files
            first = [first_decode(one, tmp, extra) for _ in range(args.repeats)]
            first_decode(one, tmp, ["--executor", "ray"])
            embedded = [first_decode(one, tmp, ["--executor", "ray"]) for _ in range(args.repeats)]
            with local_cluster(tmp) as address:
                first_decode(one, tmp, ["--address", address])
                reuse = [first_decode(one, tmp, ["--address", address]) for _ in range(args.repeats)]
            first = (_median_first(first), _median_first(embedded), _median_first(reuse))
        results = {} if args.only_first_decode else measure(paths, seconds, tmp, args.repeats, extra)
    body = render(results, seconds, len(paths), first, args)
    if args.frame_costs and paths:
        body += f"\n\nDecode and scaling cost, CPU ms a frame (one thread):\n\n{frame_costs(paths)}"
    if table:
        body += f"\n\nProfile of `videocurate run default` over the same files (py-spy, 50 Hz):\n\n{table}"
    print(body)
    if args.write:
        cmd = "PYTHONPATH=. python benchmarks/bench_pipeline.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_section(body, cmd.strip(), heading=section(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
