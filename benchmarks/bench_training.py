"""Training throughput of the video DiT against diffusers' HunyuanVideoTransformer3DModel (same config,
same process, interleaved rounds), plus GPU-only bf16 MFU and VAE tiled-decode peak memory.

    python benchmarks/bench_training.py [--rounds 5] [--out benchmarks/RESULTS_training.md]

Tokens/s counts video tokens through one forward + backward (batch 1). Prints a markdown table.

    python benchmarks/bench_training.py --loader [--loader-workers 2] [--batches 24]

The data loader's headroom instead: samples/s of the DataLoader (decode + crop + resize in worker
processes, the training path) against samples/s the training step consumes at the same shapes (VAE
encode + text encode + DiT forward/backward + AdamW, tiny preset, CPU), and the two together in the real
loop; then the same from the tier's latent cache (`videocurate encode`, timed too: Lance reads, no VAE in
the step); prints the ratios (the goal: the loader at least 3x faster than the step consumes).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.dit import DiTConfig, VideoDiT  # noqa: E402
from training.text_encoder import TextCondition  # noqa: E402
from training.vae import CausalVAE, TileConfig, VAEConfig  # noqa: E402

# name -> (config, latent shape [C, T, H, W], text length)
SIZES: dict[str, tuple[DiTConfig, tuple[int, int, int, int], int]] = {
    "tiny (h64, 1+1 blocks)": (
        DiTConfig(hidden_size=64, num_heads=4, depth_double=1, depth_single=1, text_dim=64, pooled_dim=64),
        (16, 5, 16, 16),
        16,
    ),
    "small (h256, 2+4 blocks)": (
        DiTConfig(hidden_size=256, num_heads=4, depth_double=2, depth_single=4, text_dim=256, pooled_dim=256),
        (16, 5, 16, 16),
        16,
    ),
}


def _inputs(cfg: DiTConfig, shape: tuple[int, ...], text_len: int, device: str, dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, *shape, generator=g).to(device, dtype)
    tokens = torch.randn(1, text_len, cfg.text_dim, generator=g).to(device, dtype)
    mask = torch.ones(1, text_len, dtype=torch.bool, device=device)
    mask[:, text_len * 3 // 4 :] = False  # realistic padding: both models take the masked path
    pooled = torch.randn(1, cfg.pooled_dim, generator=g).to(device, dtype)
    t = torch.full((1,), 0.5, device=device)
    return x, t, TextCondition(tokens, mask, pooled)


def ours_step(
    cfg: DiTConfig, shape, text_len: int, device: str = "cpu"
) -> tuple[nn.Module, Callable[[], None]]:
    torch.manual_seed(0)
    model = VideoDiT(cfg).to(device)
    x, t, cond = _inputs(cfg, shape, text_len, device, torch.float32)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x, t, cond).float().pow(2).mean().backward()

    return model, step


def diffusers_step(cfg: DiTConfig, shape, text_len: int, device: str = "cpu"):
    """The same architecture in diffusers, or None when diffusers is not installed."""
    try:
        from diffusers import HunyuanVideoTransformer3DModel
    except ImportError:
        return None
    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        num_layers=cfg.depth_double,
        num_single_layers=cfg.depth_single,
        num_refiner_layers=cfg.refiner_depth,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=cfg.patch_size[1],
        patch_size_t=cfg.patch_size[0],
        guidance_embeds=False,
        text_embed_dim=cfg.text_dim,
        pooled_projection_dim=cfg.pooled_dim,
        rope_axes_dim=cfg.axes,
    ).to(device)
    x, t, cond = _inputs(cfg, shape, text_len, device, torch.float32)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(x, t * 1000, cond.tokens, cond.mask.long(), cond.pooled, return_dict=False)[0]
        out.float().pow(2).mean().backward()

    return model, step


def _time(step: Callable[[], None], iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - start) / iters


def compare_cpu(rounds: int, iters: int) -> list[dict[str, object]]:
    rows = []
    for name, (cfg, shape, text_len) in SIZES.items():
        tokens = shape[1] * (shape[2] // 2) * (shape[3] // 2)
        ours_model, ours = ours_step(cfg, shape, text_len)
        peer = diffusers_step(cfg, shape, text_len)
        ours(), ours()  # warm-up
        if peer is not None:
            peer[1](), peer[1]()
        ours_t, peer_t = [], []
        for _ in range(rounds):  # interleaved so background load hits both alike
            ours_t.append(_time(ours, iters))
            if peer is not None:
                peer_t.append(_time(peer[1], iters))
        ours_tps = tokens / statistics.median(ours_t)
        peer_tps = tokens / statistics.median(peer_t) if peer_t else None
        rows.append(
            {
                "size": name,
                "params_ours": sum(p.numel() for p in ours_model.parameters()),
                "params_peer": sum(p.numel() for p in peer[0].parameters()) if peer else None,
                "tokens": tokens,
                "ours": ours_tps,
                "peer": peer_tps,
            }
        )
    return rows


def _linear_flops(model: nn.Module, run: Callable[[], None]) -> float:
    """Forward FLOPs of all Linear/Conv3d layers for one call of ``run`` (2 * MACs), via hooks."""
    total = [0.0]

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        total[0] += 2.0 * out.numel() * (mod.weight.numel() // mod.weight.shape[0])

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv3d))
    ]
    with torch.no_grad():
        run()
    for h in handles:
        h.remove()
    return total[0]


def gpu_mfu(peak_tflops: float, depth: tuple[int, int]) -> dict[str, float]:
    """bf16 forward+backward MFU of a HunyuanVideo-width DiT at 256x256 x 33 frames (latent 9x32x32)."""
    cfg = DiTConfig(depth_double=depth[0], depth_single=depth[1])
    shape, text_len = (16, 9, 32, 32), 256
    model = VideoDiT(cfg).cuda().to(torch.bfloat16)
    x, t, cond = _inputs(cfg, shape, text_len, "cuda", torch.bfloat16)
    cond = TextCondition(cond.tokens, torch.ones_like(cond.mask), cond.pooled)  # no padding: flash path
    n_video = 9 * 16 * 16
    seq = n_video + text_len
    fwd = _linear_flops(model, lambda: model(x, t, cond))
    fwd += (depth[0] + depth[1]) * 4.0 * seq * seq * cfg.hidden_size  # QK^T and AV
    fwd += cfg.refiner_depth * 4.0 * text_len * text_len * cfg.hidden_size

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x, t, cond).float().pow(2).mean().backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    iters = 10
    start = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    sec = (time.perf_counter() - start) / iters
    achieved = 3 * fwd / sec / 1e12
    return {"step_s": sec, "tflops": achieved, "mfu": achieved / peak_tflops, "tokens_per_s": n_video / sec}


def gpu_vae_decode_memory() -> dict[str, float]:
    """Peak memory of a tiled bf16 decode of 720x1280 x 129 frames (latent 16 x 33 x 90 x 160)."""
    vae = CausalVAE(VAEConfig()).cuda().to(torch.bfloat16).eval()
    z = torch.randn(1, 16, 33, 90, 160, device="cuda", dtype=torch.bfloat16)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        video = vae.decode(z, TileConfig(256, 0.25))
    torch.cuda.synchronize()
    return {
        "seconds": time.perf_counter() - start,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "shape": tuple(video.shape),
    }


def markdown(rows: list[dict[str, object]], gpu: dict[str, object] | None, command: str) -> str:
    lines = [
        "# Training benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "",
        "DiT forward+backward, batch 1, fp32 on CPU, video tokens/s (median of interleaved rounds):",
        "",
        "| size | params (ours / diffusers) | video tokens | ours tok/s | diffusers tok/s "
        "| ours / diffusers |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        peer = f"{r['peer']:.0f}" if r["peer"] else "n/a (diffusers not installed)"
        ratio = f"{r['ours'] / r['peer']:.2f}x" if r["peer"] else "n/a"
        params = f"{r['params_ours'] / 1e6:.2f}M / " + (
            f"{r['params_peer'] / 1e6:.2f}M" if r["params_peer"] else "n/a"
        )
        lines.append(f"| {r['size']} | {params} | {r['tokens']} | {r['ours']:.0f} | {peer} | {ratio} |")
    lines.append("")
    if gpu:
        lines += [
            "GPU:",
            "",
            "| measurement | value |",
            "| --- | --- |",
            f"| DiT bf16 MFU, 256x256x33f, {gpu['depth']} | {gpu['mfu']['mfu'] * 100:.1f}% "
            f"({gpu['mfu']['tflops']:.0f} TFLOP/s, {gpu['mfu']['tokens_per_s']:.0f} video tok/s) |",
            f"| VAE tiled decode 720x1280x129f bf16 peak memory | {gpu['vae']['peak_gib']:.1f} GiB "
            f"({gpu['vae']['seconds']:.1f} s) |",
        ]
    else:
        lines.append(
            "GPU rows (bf16 MFU at 256p x 33 frames, VAE tiled decode peak memory at 720p x 129 frames):"
        )
        lines.append("not measured: no CUDA device in this run.")
    return "\n".join(lines) + "\n"


def _loader_world(folder: Path, clips: int):
    """A lake with a tier of `clips` 40-frame clips cut from synthetic 320x180 H.264 videos."""
    import pyarrow as pa

    from curation import synth
    from curation.lake import Lake

    rows = []
    for v in range((clips + 5) // 6):
        truth = synth.make_video(folder / f"v{v}.mp4", [synth.Shot(synth.PHOTOS[v % len(synth.PHOTOS)], 240,
                                                                     pan=(1 + 0.2 * v, 0))], size=(320, 180))
        rows += [(f"v{v}c{i}", truth.path, 40 * i, 40 * i + 40) for i in range(6)]
    rows = rows[:clips]
    lake = Lake(folder / "lake")
    lake.append("tiers/bench", pa.table({
        "clip_id": [r[0] for r in rows], "uri": [r[1] for r in rows], "start_frame": [r[2] for r in rows],
        "end_frame": [r[3] for r in rows], "fps": [24.0] * len(rows),
        "width": pa.array([320] * len(rows), pa.int32()), "height": pa.array([180] * len(rows), pa.int32())}))
    return lake


def bench_loader(workers: int, batches: int, base_size: int, frames: int, batch: int) -> dict[str, object]:
    """Samples/s of the DataLoader, of the training step alone and of the two together, once with clips
    decoded from video (VAE encode in the step) and once from the tier's latent cache (`videocurate encode`,
    written here first and timed), at the same bucket shape."""
    import tempfile

    from training.config import get_preset
    from training.curriculum import load_vae
    from training.data import BucketBatchSampler, BucketConfig, TierDataset, make_loader, read_tier
    from training.encode import encode_tier
    from training.flow import FlowMatching
    from training.latents import batch_posterior, draw_latents, phase_dataset
    from training.text_encoder import build_text_encoder
    from training.train import MicroBatch, TrainConfig, accumulated_step, build_optimizer

    cfg = BucketConfig(base_size=base_size, frame_counts=(frames,), max_batch=batch, pixel_budget=2**40)
    rounds = max(4, batches // 3)
    with tempfile.TemporaryDirectory() as tmp:
        lake = _loader_world(Path(tmp), 48)
        refs = read_tier(lake, "bench", cfg)
        preset = get_preset("tiny")
        text = build_text_encoder("tiny", preset.dit.text_dim)
        torch.manual_seed(0)
        dit, vae, flow = VideoDiT(preset.dit), load_vae(preset.vae, "random"), FlowMatching()
        tcfg = TrainConfig(warmup_steps=1)
        opt, sched = build_optimizer(dit, tcfg)

        def step(b: dict) -> None:  # the trainer's step: latents (cached, or VAE-encoded videos), text, DiT
            with torch.no_grad():
                mean, _ = batch_posterior(vae, b, torch.device("cpu"), need_std=False)
                latents, cond = draw_latents(mean, None, None, vae.config.scaling_factor), text.encode(b["prompts"])
            keys = [(0, 0, k.epoch, k.batch, k.slot) for k in b["keys"]]
            accumulated_step(dit, flow, opt, sched, [MicroBatch(latents, cond, keys)], tcfg, len(keys))

        def measure(data) -> dict[str, float]:
            # 1. the DataLoader alone (workers started and warm: the first 2 batches are not timed)
            loader = iter(make_loader(data, BucketBatchSampler(refs, cfg, seed=0), workers, prefetch_factor=2))
            first = [next(loader) for _ in range(2)]
            start = time.perf_counter()
            n = sum(len(next(loader)["keys"]) for _ in range(batches))
            loader_sps = n / (time.perf_counter() - start)
            del loader
            # 2. the training step alone on those batches
            step(first[0])  # warm-up
            start = time.perf_counter()
            for i in range(rounds):
                step(first[i % 2])
            step_sps = rounds * batch / (time.perf_counter() - start)
            # 3. the two together: the training loop fed by the DataLoader
            loader = iter(make_loader(data, BucketBatchSampler(refs, cfg, seed=1), workers, prefetch_factor=2))
            step(next(loader))
            start = time.perf_counter()
            for _ in range(rounds):
                step(next(loader))
            loop_sps = rounds * batch / (time.perf_counter() - start)
            del loader
            return {"loader": loader_sps, "step": step_sps, "loop": loop_sps, "shape": tuple(
                first[0]["videos" if "videos" in first[0] else "latent_mean"].shape)}

        decode = measure(TierDataset(refs))
        start = time.perf_counter()
        report = encode_tier(lake, "bench", [cfg], vae, workers=workers, batch=batch, log=lambda _: None)
        encode_s = time.perf_counter() - start
        cached = phase_dataset(lake, "bench", refs, cfg.frame_stride, vae, log=lambda _: None)
        assert type(cached).__name__ == "LatentDataset", "the fresh cache must be valid"
        cache = measure(cached)
        cache_bytes = sum(f.stat().st_size for f in Path(lake.path("latents/bench")).rglob("*") if f.is_file())
    return {"shape": decode["shape"], "latent_shape": cache["shape"], "workers": workers, "decode": decode,
            "cache": cache, "encoded": report.encoded, "encode_s": encode_s, "cache_mib": cache_bytes / 2**20}


def loader_markdown(r: dict[str, object], command: str) -> str:
    b, _, t, h, w = r["shape"]
    d, c = r["decode"], r["cache"]
    return "\n".join([
        f"Command: `{command}`", "",
        f"Data loader vs training step, tiny preset on CPU ({torch.get_num_threads()} torch threads), batches of "
        f"{b} x {t} frames x {h}x{w} from 320x180 H.264 (latents {tuple(r['latent_shape'][1:])} float16), "
        f"{r['workers']} DataLoader workers; the same bucket and batches both ways:", "",
        "| measurement (samples/s) | from video decode | from the latent cache |", "| --- | --- | --- |",
        f"| DataLoader alone (decode + crop + resize / one Lance take per batch) | {d['loader']:.1f} | "
        f"{c['loader']:.1f} |",
        f"| training step alone (VAE encode only from decode; text encode, DiT fwd+bwd, AdamW) | {d['step']:.1f} | "
        f"{c['step']:.1f} |",
        f"| training loop fed by the DataLoader | {d['loop']:.1f} | {c['loop']:.1f} |",
        f"| **headroom: loader / step** | **{d['loader'] / d['step']:.1f}x** | **{c['loader'] / c['step']:.1f}x** |",
        "",
        f"`videocurate encode` of the tier first: {r['encoded']} clips in {r['encode_s']:.1f} s "
        f"({r['encoded'] / r['encode_s']:.1f} clips/s, {r['cache_mib']:.2f} MiB of Lance files).", ""]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100 SXM: 989)")
    ap.add_argument("--gpu-depth", default="2,4", help="dual,single blocks of the 3072-wide DiT for MFU")
    ap.add_argument("--loader", action="store_true", help="the data loader's headroom over the training step instead")
    ap.add_argument("--loader-workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=24)
    ap.add_argument("--base-size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    if args.loader:
        r = bench_loader(args.loader_workers, args.batches, args.base_size, args.frames, args.batch)
        table = loader_markdown(r, "python " + " ".join(sys.argv))
        print(table)
        if args.out:
            with open(args.out, "a") as f:
                f.write("\n## Data loader headroom: video decode vs latent cache\n\n" + table)
        return
    rows = compare_cpu(args.rounds, args.iters)
    gpu = None
    if torch.cuda.is_available():
        depth = tuple(int(v) for v in args.gpu_depth.split(","))
        gpu = {
            "depth": f"{depth[0]}+{depth[1]} blocks, 3072 wide",
            "mfu": gpu_mfu(args.peak_tflops, depth),
            "vae": gpu_vae_decode_memory(),
        }
    command = "python " + " ".join(sys.argv)
    table = markdown(rows, gpu, command)
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
