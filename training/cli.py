"""The trainer's commands for the `videocurate` CLI, registered through the `videocurate.commands`
entry point (pyproject.toml): the framework's CLI never imports the trainer by name."""

from __future__ import annotations

import argparse


def cmd_train(args: argparse.Namespace) -> int:
    from training.config import get_preset
    from training.curriculum import load_curriculum, train_curriculum

    plan = load_curriculum(args.curriculum)
    if args.preset:
        get_preset(args.preset)  # an unknown name is a clear error before anything loads
        plan.model = args.preset
    summary = train_curriculum(args.lake, plan, args.vae, args.out, text_encoder=args.text_encoder,
                               max_steps=args.max_steps, device=args.device, seed=args.seed)
    for name, s in summary.items():
        print(f"{name}: {s}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train the DiT phase by phase from the lake's tiers (low resolution first)")
    tr.add_argument("--lake", "-l", required=True)
    tr.add_argument("--vae", required=True, help="CausalVAE state-dict file, or 'random' for a smoke test")
    tr.add_argument("--curriculum", default="curriculum", help="curriculum YAML path or bundled name")
    tr.add_argument("--preset", help="model preset (overrides the curriculum): tiny, small, hunyuan-13b")
    tr.add_argument("--text-encoder", default="tiny", help="tiny, minilm, or a local Hugging Face folder")
    tr.add_argument("--out", default="checkpoints", help="folder for one checkpoint per phase")
    tr.add_argument("--max-steps", type=int, help="cap every phase at this many steps (smoke runs)")
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--seed", type=int, default=0)
    tr.set_defaults(func=cmd_train)
