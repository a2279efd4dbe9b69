"""`videocurate caption`: (re)caption the clips of an existing lake with any backend, then rewrite the
tiers so they carry the captions. Registered through the `videocurate.commands` entry point."""

from __future__ import annotations

import argparse
import json


def cmd_caption(args: argparse.Namespace) -> int:
    from curation.lake import Lake
    from curation.pipeline import load_pipeline
    from curation.tiers import TierStep, render_funnel

    given = {"backend": args.backend, "model": args.model, "url": args.url, "tier": args.tier}
    entry = {"step": "caption", "params": {k: v for k, v in given.items() if v is not None}}
    pipe = load_pipeline({"name": "caption", "stages": [entry]}, args.set or [])
    lake = Lake(args.lake, create=False)
    (step,) = pipe.build(available=lake.dataset("clips").schema.names if lake.exists("clips") else [])
    step.validate()
    if step.params.backend == "vllm":
        from curation.runner import init_ray

        init_ray(args.address)
    print(json.dumps(step.run(lake)))
    if not args.no_tiers:
        print(render_funnel(TierStep({"spec": step.params.spec}).run(lake)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("caption", help="caption the lake's selected clips (signals, vLLM engine or server), "
                                       "then rewrite the tiers")
    c.add_argument("--lake", "-l", required=True)
    c.add_argument("--backend", choices=["signals", "vllm", "server"])
    c.add_argument("--model", help="vllm: local model folder; server: served model name (default: the first)")
    c.add_argument("--url", help="server: OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    c.add_argument("--tier", help="caption the clips of this tier (default 256p); see also --set caption.select=")
    c.add_argument("--set", "-s", action="append", metavar="caption.PARAM=VALUE", help="any step parameter")
    c.add_argument("--address", help="Ray cluster for the vLLM engines (default: embedded)")
    c.add_argument("--no-tiers", action="store_true", help="do not rewrite the tiers afterwards")
    c.set_defaults(func=cmd_caption)
