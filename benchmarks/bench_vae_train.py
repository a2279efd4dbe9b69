"""`videocurate train-vae` on this machine: steps/s and held-out PSNR after N steps for a tiny VAE config.

    python benchmarks/bench_vae_train.py [--steps 150] [--size 64] [--frames 9] [--threads 1]
        [--out benchmarks/RESULTS_training.md]

Makes a tier of 16 clips (four 160x90 H.264 videos panning/zooming over scikit-image's photos) in a temporary
lake, trains the tiny preset's VAE on it through `training.vae_train.train_vae` (the code path of the CLI:
DataLoader decode workers, images and videos mixed, checkpoints, evaluation) and prints a markdown section:
the PSNR of the 2 held-out clips (tiled encode/decode at about 2x the crop size) over the steps, and the
throughput of the loop (1 / the median time between steps, and steps / wall time of the whole run).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation import synth  # noqa: E402
from curation.lake import Lake  # noqa: E402
from training.trainer import read_losses  # noqa: E402
from training.vae_train import train_vae, vae_train_config  # noqa: E402

SHOTS = [("coffee", (1, 0), 1.0), ("chelsea", (0, 0), 1.01), ("astronaut", (0, 1), 1.0), ("rocket", (-1, 0), 1.0)]


def make_tier(root: Path) -> str:
    rows = []
    for name, pan, zoom in SHOTS:
        video = synth.make_video(root / f"{name}.mp4", [synth.Shot(name, 96, pan=pan, zoom=zoom)], size=(160, 90))
        rows += [(f"{name}{i}", video.path, 24 * i, 24 * i + 24) for i in range(4)]
    lake = Lake(root / "lake")
    lake.append("tiers/bench", pa.table({
        "clip_id": [r[0] for r in rows], "uri": [r[1] for r in rows], "start_frame": [r[2] for r in rows],
        "end_frame": [r[3] for r in rows], "fps": [24.0] * len(rows),
        "width": pa.array([160] * len(rows), pa.int32()), "height": pa.array([90] * len(rows), pa.int32())}))
    return str(root / "lake")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny kernels, shared CPUs)")
    ap.add_argument("--loader-workers", type=int, default=1)
    ap.add_argument("--out", type=Path, help="append the section to this markdown file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = {"model": "tiny", "size": args.size, "frames": args.frames, "batch_size": args.batch, "lr": 1e-3,
                "warmup_steps": 10, "lpips_weight": 0.0, "eval_clips": 2, "eval_size": 2 * args.size,
                "eval_frames": args.frames, "tile_sample_size": args.size, "eval_every": max(1, args.steps // 5),
                "checkpoint_every": args.steps, "loader_workers": args.loader_workers, "log_every": 1}
    with tempfile.TemporaryDirectory() as tmp:
        lake = make_tier(Path(tmp))
        stamps: list[float] = []
        t0 = time.monotonic()
        summary = train_vae(lake, "bench", Path(tmp) / "run", vae_train_config(settings), max_steps=args.steps,
                            log=lambda _msg: stamps.append(time.monotonic()))
        wall = time.monotonic() - t0
        rows = read_losses(Path(tmp) / "run")
    evals = [(r["step"], r["eval_psnr"]) for r in rows if "eval_psnr" in r]
    train_rows = [r for r in rows if "loss" in r]
    step_s = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))  # evaluation gaps fall outside it
    cmd = (f"python benchmarks/bench_vae_train.py --steps {args.steps} --size {args.size} --frames {args.frames} "
           f"--batch {args.batch} --threads {args.threads} --loader-workers {args.loader_workers}")
    lines = [
        "## VAE training (`videocurate train-vae`)", "",
        f"Command: `{cmd}`", "",
        f"Machine: {platform.machine()}, {args.threads} torch threads, torch {torch.__version__}; tiny preset VAE "
        f"(blocks 8/16/16/16, 1 layer each), crops {args.size}x{args.size}, videos {args.frames} frames, batch "
        f"{args.batch}, image ratio 0.2, L1 + 1e-6 KL, AdamW 1e-3; {args.loader_workers} DataLoader decode "
        "worker(s); 14 training clips, 2 held out.", "",
        "| step | held-out PSNR (dB) |", "| --- | --- |",
        *[f"| {s} | {p:.2f} |" for s, p in evals], "",
        "| measurement | value |", "| --- | --- |",
        f"| steps | {len(train_rows)} ({summary['image_batches']} image, {summary['video_batches']} video batches) |",
        f"| training steps/s (1 / median step time; evaluations excluded) | {1 / step_s:.2f} |",
        f"| steps/s of the whole run (with {len(evals)} evaluations, checkpoint, loader start) | "
        f"{len(train_rows) / summary['seconds']:.2f} |",
        f"| L1 first 10 / last 10 steps | {_mean(train_rows[:10], 'l1'):.4f} / {_mean(train_rows[-10:], 'l1'):.4f} |",
        f"| wall incl. lake setup | {wall:.1f} s |", "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text + "\n")


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


if __name__ == "__main__":
    main()
