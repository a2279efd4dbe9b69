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
    tr.add_argument("--vae", required=True, help="CausalVAE state-dict file, or 'random' for a smoke test")
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
    tr.add_argument("--address", help="Ray cluster address (default: in this process, or an embedded local Ray "
                                      "for --workers > 1)")
    tr.add_argument("--num-cpus", type=int, help="CPUs for the embedded local Ray (default: all)")
    tr.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    tr.add_argument("--seed", type=int, default=0)
    tr.set_defaults(func=cmd_train)
