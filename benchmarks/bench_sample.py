"""Seconds per sampling step of `videocurate sample` (training.sample) for a model preset on this machine.

Builds a random-init checkpoint of the preset in a temporary run folder (the layout `videocurate train`
writes: DiT + EMA safetensors, config.json naming the VAE file, its config and the text encoder), loads it
the way the CLI does, and times Euler steps with and without classifier-free guidance, and the VAE decode
(the fastest of --repeat runs: the CPUs may be shared).

    python benchmarks/bench_sample.py --preset tiny --shape 17x64x64 --shape 33x128x128 --steps 10
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path

import torch

from training import checkpoint as ckpt
from training.config import get_preset
from training.dit import VideoDiT
from training.sample import checkpoint_spec, load_sampler
from training.text_encoder import build_text_encoder
from training.vae import CausalVAE


def make_checkpoint(folder: Path, preset_name: str, text_encoder: str) -> Path:
    """A random-init phase export of `preset_name` (weights perturbed so adaLN gates are open)."""
    preset = get_preset(preset_name)
    text = build_text_encoder(text_encoder, preset.dit.text_dim)
    dit_cfg = dataclasses.replace(preset.dit, text_dim=text.dim, pooled_dim=text.dim)
    torch.manual_seed(0)
    dit = VideoDiT(dit_cfg)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    vae_file = folder / "vae.pt"
    torch.save(CausalVAE(preset.vae).state_dict(), vae_file)
    export = folder / "phase"
    ckpt.save_weights(export, dit.state_dict(), dit.state_dict(),
                      {"model": preset_name, "dit_config": dataclasses.asdict(dit_cfg), "seed": 0,
                       "text_encoder": text_encoder, "vae": str(vae_file),
                       "vae_config": dataclasses.asdict(preset.vae)})
    return export


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--text-encoder", default="tiny")
    ap.add_argument("--shape", action="append", help="FRAMESxHEIGHTxWIDTH (repeatable; default 17x64x64)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the fastest is reported (shared CPUs)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        sampler = load_sampler(checkpoint_spec(make_checkpoint(Path(tmp), args.preset, args.text_encoder)),
                               device=args.device, log=lambda _: None)
        params = sampler.dit.num_params()
        print(f"preset {args.preset} ({params / 1e6:.2f}M DiT params), {args.steps} steps, {args.threads} threads, "
              f"device {args.device}")
        print("| frames x H x W | latent tokens | s/step cfg 6 (2 passes) | s/step cfg 1 | VAE decode s |")
        print("| --- | --- | --- | --- | --- |")
        for shape in args.shape or ["17x64x64"]:
            frames, height, width = (int(v) for v in shape.split("x"))
            lat = sampler.shape(frames, width, height)
            pt, ph, pw = sampler.dit.config.patch_size
            tokens = lat[2] // pt * (lat[3] // ph) * (lat[4] // pw)
            sampler.generate("warm up", frames, width, height, steps=1, cfg=6.0)
            runs = {g: [sampler.generate("a cat on a sofa", frames, width, height, steps=args.steps, cfg=g)
                        for _ in range(args.repeat)] for g in (6.0, 1.0)}
            guided, plain = (min(s.seconds_per_step for s in runs[g]) for g in (6.0, 1.0))
            decode = min(s.decode_seconds for s in runs[6.0] + runs[1.0])
            print(f"| {frames}x{height}x{width} | {tokens} | {guided:.4f} | {plain:.4f} | {decode:.3f} |")


if __name__ == "__main__":
    main()
