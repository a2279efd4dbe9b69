"""Split benchmark: our split (one decode per video at analysis size) vs PySceneDetect's own
`scenedetect -i FILE detect-content` CLI and its Python API `scenedetect.detect`, on the same videos in
one process run. Prints wall time of each, the ratio, and cut accuracy against the known cuts.

    python benchmarks/bench_split.py [--videos 6] [--seconds 20] [--size 1280x720]
    python benchmarks/bench_split.py --transitions [--videos 4]

`--transitions`: edits with a hard cut, a dissolve, a fade through black and a two-frame flash inside a
shot (curation.synth.edit_with_transitions, exact truth): cut F1 at ±2 frames and flash cuts for our
default (content), ours fused with TransNetV2, TransNetV2 alone as its authors run it (predict_frames +
predictions_to_scenes), and the scenedetect CLI's detect-content and detect-adaptive.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from curation import synth
from curation.split import SplitParams, SplitStage, detect
from curation.video import VideoReader, fit_size, probe

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle", "hubble_deep_field", "camera", "retina"]


def make_videos(folder: str, n: int, seconds: float, size: tuple[int, int], fps: float = 24.0) -> list:
    truths = []
    for v in range(n):
        shots, total, k = [], 0, 0
        while total < seconds * fps:
            frames = int(fps * (2 + (v * 7 + k * 3) % 5))
            shots.append(synth.Shot(PHOTOS[(v + k) % len(PHOTOS)], frames, pan=((k % 3) - 1.0, 0.5 * (k % 2)),
                                    zoom=1.002 if k % 4 == 3 else 1.0))
            total += frames
            k += 1
        truths.append(synth.make_video(os.path.join(folder, f"v{v}.mp4"), shots, size=size, fps=fps, crf=23))
    return truths


def f1(found: list[int], known: list[int], tol: int = 2) -> float:
    used, tp = set(), 0
    for k in known:
        match = next((i for i, f in enumerate(found) if i not in used and abs(f - k) <= tol), None)
        if match is not None:
            used.add(match)
            tp += 1
    if not found and not known:
        return 1.0
    return 2 * tp / (len(found) + len(known))


def ours(path: str, detectors: tuple[str, ...] = ("content",)) -> list[int]:
    info = probe(path)
    params = SplitParams(detectors=list(detectors))
    size = fit_size(info.width, info.height, target_width=params.analysis_width)
    return detect(VideoReader(path, info=info).iter_frames(size, bgr=True), info.fps, params).cuts


def peer_transnet(path: str) -> list[int]:
    """TransNetV2 as published: all 48x27 frames at once, predict_frames, predictions_to_scenes(0.5)."""
    import cv2
    import numpy as np
    import torch

    from curation.transnet import SIZE, load_model

    model = load_model("cpu")
    frames = np.stack([cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA) for f in VideoReader(path).iter_frames()])
    single, _ = model.predict_frames(torch.from_numpy(frames), quiet=True)
    scenes = type(model).predictions_to_scenes(single.numpy())
    return [int(s[0]) for s in scenes[1:]]


def peer_api(path: str) -> list[int]:
    import scenedetect

    scenes = scenedetect.detect(path, scenedetect.ContentDetector())
    return [s[0].frame_num for s in scenes[1:]]


def peer_cli(path: str, out: str, detector: str = "detect-content") -> list[int]:
    exe = shutil.which("scenedetect", path=os.path.dirname(sys.executable)) or "scenedetect"
    subprocess.run([exe, "-q", "-i", path, "-o", out, detector, "list-scenes", "-q"], check=True)
    csv_path = os.path.join(out, os.path.splitext(os.path.basename(path))[0] + "-Scenes.csv")
    with open(csv_path) as f:
        rows = [line.split(",") for line in f.read().splitlines()[2:]]
    return [int(r[1]) - 1 for r in rows[1:]]  # "Start Frame" is 1-based in the CSV


def transitions_benchmark(n: int) -> None:
    order = PHOTOS[:6]
    with tempfile.TemporaryDirectory() as tmp:
        edits = [synth.edit_with_transitions(os.path.join(tmp, f"e{i}.mp4"),
                                             photos=tuple(order[(i + k) % len(order)] for k in range(4)))
                 for i in range(n)]
        tools = [("videocurate default (content)", ours),
                 ("videocurate content + transnetv2", lambda p: ours(p, ("content", "transnetv2"))),
                 ("TransNetV2 alone (authors' inference)", peer_transnet),
                 ("scenedetect CLI detect-content", lambda p: peer_cli(p, tmp)),
                 ("scenedetect CLI detect-adaptive", lambda p: peer_cli(p, tmp, "detect-adaptive"))]
        for _, fn in tools[:3]:
            fn(edits[0]["path"])  # warm-up: imports and the model load are not the tools' speed
        frames = sum(e["frames"] for e in edits)
        print(f"{n} edits, {frames} frames at 320x180, each: a hard cut, a dissolve (16 frames), a fade "
              f"through black (16), a 2-frame flash inside a shot\n")
        print("| tool | wall s | cut F1 (±2) | cuts at the flash |")
        print("|---|---|---|---|")
        for name, fn in tools:
            t0 = time.perf_counter()
            found = [fn(e["path"]) for e in edits]
            secs = time.perf_counter() - t0
            score = sum(f1(f, e["cuts"]) for f, e in zip(found, edits)) / n
            flashes = sum(any(e["flash"][0] - 2 <= c <= e["flash"][1] + 3 for c in f) for f, e in zip(found, edits))
            print(f"| {name} | {secs:.2f} | {score:.3f} | {flashes}/{n} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--transitions", action="store_true", help="the gradual-transition and flash benchmark")
    args = ap.parse_args()
    if args.transitions:
        return transitions_benchmark(args.videos)
    size = tuple(int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        truths = make_videos(tmp, args.videos, args.seconds, size)
        frames = sum(t.frame_count for t in truths)
        for fn in (ours, peer_api):  # warm-up: imports and first-call costs are not the tools' speed
            fn(truths[0].path)
        results = {}
        for name, fn in (("videocurate split", ours), ("scenedetect API", peer_api),
                         ("scenedetect CLI", lambda p: peer_cli(p, tmp))):
            t0 = time.perf_counter()
            found = [fn(t.path) for t in truths]
            secs = time.perf_counter() - t0
            score = sum(f1(f, t.cuts) for f, t in zip(found, truths)) / len(truths)
            results[name] = (secs, score)
        stage = SplitStage()  # the full stage (probe columns in, clip rows out) for the record
        t0 = time.perf_counter()
        for t in truths:
            info = probe(t.path)
            stage.split_row({"uri": t.path, "video_id": "x", "status": "ok", "failures": [], **info.as_dict()})
        stage_secs = time.perf_counter() - t0
    base = results["videocurate split"][0]
    print(f"{args.videos} videos, {frames} frames at {size[0]}x{size[1]} H.264, 2 threads of this machine\n")
    print("| tool | wall s | frames/s | cut F1 (±2) | time vs ours |")
    print("|---|---|---|---|---|")
    for name, (secs, score) in results.items():
        print(f"| {name} | {secs:.2f} | {frames / secs:.0f} | {score:.3f} | {secs / base:.2f}x |")
    print(f"| videocurate SplitStage (clips too) | {stage_secs:.2f} | {frames / stage_secs:.0f} | | |")
    print(f"\nratio: scenedetect CLI / ours = {results['scenedetect CLI'][0] / base:.2f}x")


if __name__ == "__main__":
    main()
