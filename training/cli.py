"""The trainer's commands for the `videocurate` CLI, registered through the `videocurate.commands`
entry point (pyproject.toml): the framework's CLI never imports the trainer by name."""

from __future__ import annotations

import argparse


def cmd_train(args: argparse.Namespace) -> int:
    from training.config import get_preset
    from training.curriculum import load_curriculum, train_curriculum
    from training.trainer import load_config_file

    plan = load_curriculum(args.curriculum)
    if args.preset:
        get_preset(args.preset)  # an unknown name is a clear error before anything loads
        plan.model = args.preset
    config = load_config_file(args.config)
    if args.checkpoint_every:
        config["checkpoint_every"] = args.checkpoint_every
    if args.loader_workers is not None:
        config["loader_workers"] = args.loader_workers
    if args.strategy:
        config["strategy"] = args.strategy
    summary = train_curriculum(args.lake, plan, args.vae, args.out, text_encoder=args.text_encoder,
                               max_steps=args.max_steps, device=args.device, seed=args.seed, config=config,
                               resume=args.resume, workers=args.workers, address=args.address,
                               num_cpus=args.num_cpus, stop_after=args.stop_after)
    for name, s in summary.items():
        print(f"{name}: {s}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train the DiT phase by phase from the lake's tiers (low resolution first)")
    tr.add_argument("--lake", "-l", required=True)
    tr.add_argument("--vae", required=True, help="a train-vae run folder (OUT or OUT/vae), a VAE .safetensors or "
                                                "state-dict file, or 'random' for a smoke test")
    tr.add_argument("--curriculum", default="curriculum", help="curriculum YAML path or bundled name")
    tr.add_argument("--preset", help="model preset (overrides the curriculum): tiny, small, hunyuan-13b")
    tr.add_argument("--config", help="YAML of trainer settings (TrainerConfig: grad_accum, ema_decay, bf16, "
                                     "gradient_checkpointing, checkpoint_every, loader_workers, text_encoder ...); "
                                     "overrides the curriculum's train: section")
    tr.add_argument("--text-encoder", help="minilm (default), tiny, or a local Hugging Face model folder")
    tr.add_argument("--out", default="checkpoints", help="the run folder: checkpoints, loss log, one export per phase")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in --out from its latest checkpoint (from scratch when it has none)")
    tr.add_argument("--max-steps", type=int, help="cap every phase at this many steps (smoke runs)")
    tr.add_argument("--stop-after", type=int, help="stop, checkpointed, after N optimiser steps in all (time-limited "
                                                  "jobs: the next run continues with --resume)")
    tr.add_argument("--checkpoint-every", type=int, help="checkpoint every N optimiser steps (default 500)")
    tr.add_argument("--loader-workers", type=int, help="DataLoader decode processes per worker (default 2)")
    tr.add_argument("--workers", type=int, default=1,
                    help="data-parallel workers; > 1 (or --address) runs under Ray Train: CPU workers with gloo, "
                         "or one per GPU with --device cuda (0 = one per GPU of the cluster)")
    tr.add_argument("--strategy", choices=["ddp", "fsdp"],
                    help="how Ray Train workers share the DiT: ddp (default) or fsdp (FSDP2, sharded per block); "
                         "checkpoints resume under either")
    tr.add_argument("--address", help="Ray cluster address (default: in this process, or an embedded local Ray "
                                      "for --workers > 1)")
    tr.add_argument("--num-cpus", type=int, help="CPUs for the embedded local Ray (default: all)")
    tr.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    tr.add_argument("--seed", type=int, default=0)
    tr.set_defaults(func=cmd_train)
    register_sample(sub)
    register_train_vae(sub)
    register_encode(sub)


def cmd_sample(args: argparse.Namespace) -> int:
    from training.sample import cmd_sample as run

    return run(args)


def register_sample(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("sample", help="generate a video from a trained DiT checkpoint (Euler flow sampling, CFG)")
    sp.add_argument("--ckpt", required=True, help="OUT/checkpoints/step-N, OUT/checkpoints/latest, a phase export "
                                                  "OUT/<phase>/ or a run folder OUT of `videocurate train`")
    sp.add_argument("--prompt", required=True)
    sp.add_argument("--negative-prompt", help="the unconditional side of guidance (default: the null condition "
                                              "the trainer's text dropout uses)")
    sp.add_argument("--frames", type=int, required=True, help="1 + 4k frames (1 = an image)")
    sp.add_argument("--size", required=True, help="WIDTHxHEIGHT, multiples of 16 (VAE x8 times patch 2)")
    sp.add_argument("--steps", type=int, default=50, help="Euler steps (default 50)")
    sp.add_argument("--cfg", type=float, default=6.0, help="classifier-free guidance scale (1 = conditional only)")
    sp.add_argument("--shift", type=float, help="timestep shift (default: 7, or 17 below 20 steps)")
    sp.add_argument("--embedded-guidance", type=float, help="guidance input of a guidance-distilled DiT")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--vae", help="a train-vae run folder, VAE .safetensors or state-dict file (default: the VAE "
                                  "the checkpoint was trained with)")
    sp.add_argument("--no-ema", action="store_true", help="the raw weights instead of the EMA")
    sp.add_argument("--tile-size", type=int, default=256, help="VAE decode tile in pixels (0 = never tile)")
    sp.add_argument("--fps", type=float, default=24.0)
    sp.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    sp.add_argument("-o", "--output", required=True, help="the mp4 to write")
    sp.set_defaults(func=cmd_sample)


def cmd_train_vae(args: argparse.Namespace) -> int:
    from training.vae_train import load_vae_train_config, train_vae

    config = load_vae_train_config(args.config, seed=args.seed)
    summary = train_vae(args.lake, args.tier, args.out, config, resume=args.resume, max_steps=args.max_steps,
                        device=args.device)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


def register_train_vae(sub: argparse._SubParsersAction) -> None:
    tv = sub.add_parser("train-vae", help="train the causal 3D VAE on a tier's clips (images and videos mixed)")
    tv.add_argument("--lake", "-l", required=True)
    tv.add_argument("--tier", required=True, help="the tier whose clips it trains on (a fixed share held out)")
    tv.add_argument("--config", help="YAML of settings (training.vae_train.VAETrainConfig: model, vae, size, frames, "
                                     "image_ratio, batch_size, lr, kl_weight, lpips_weight, lpips_path, "
                                     "adversarial_weight, eval_every, checkpoint_every, tile_sample_size ...)")
    tv.add_argument("--out", required=True, help="the run folder: checkpoints, loss log, the final VAE in OUT/vae/")
    tv.add_argument("--max-steps", type=int, help="stop after this many steps (default: the config's steps)")
    tv.add_argument("--resume", action="store_true",
                    help="continue the run in --out from its latest checkpoint (from scratch when it has none)")
    tv.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    tv.add_argument("--seed", type=int, help="overrides the config's seed")
    tv.set_defaults(func=cmd_train_vae)


def cmd_encode(args: argparse.Namespace) -> int:
    from training.encode import cmd_encode as run

    return run(args)


def register_encode(sub: argparse._SubParsersAction) -> None:
    en = sub.add_parser("encode", help="cache a tier's VAE latents per clip and bucket (latents/<tier>), so "
                                       "training reads latents instead of decoding video")
    en.add_argument("--lake", "-l", required=True)
    en.add_argument("--tier", required=True)
    en.add_argument("--vae", required=True, help="the VAE training will use: state-dict or .safetensors file, or a "
                                                 "train-vae run folder")
    en.add_argument("--curriculum", default="curriculum", help="curriculum whose phases on --tier set the bucket "
                                                               "shapes (YAML path or bundled name)")
    en.add_argument("--preset", help="model preset of the VAE's shape (default: the curriculum's model)")
    en.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    en.add_argument("--workers", type=int, default=2, help="DataLoader decode processes (0: decode in this one)")
    en.add_argument("--batch", type=int, default=4, help="most clips per VAE batch (capped by each bucket's "
                                                         "training batch)")
    en.add_argument("--chunk", type=int, default=64, help="rows per Lance commit (a kill loses at most one chunk)")
    en.add_argument("--tile", type=int, help="tiled VAE encode with tiles of this many pixels (large frames)")
    en.set_defaults(func=cmd_encode)
