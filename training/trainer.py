"""The trainer as a training system: the curriculum's phases run on one DiT with a DataLoader of decoded
tier clips, gradient accumulation, EMA, bf16 autocast and gradient checkpointing on GPUs, checkpoints that
resume exactly, and data parallelism under Ray Train.

One code path from laptop to cluster: `train()` runs the loop in this process for one worker (no Ray), or
as the per-worker function of a `ray.train.torch.TorchTrainer` (DDP through `prepare_model`; gloo on
CPUs, NCCL on GPUs) on the embedded Ray or the cluster at `address` — the one curation uses.

Exactness. Nothing in a step depends on process-global RNG state or on how samples are split: the batch
sampler's batch b of epoch e comes from a generator seeded by (seed, e, b); each sample's text-dropout
draw, timestep and noise come from a generator seeded by (seed, phase, epoch, batch, slot); the loss is
weighted so that an optimiser step is the mean over all its samples whatever the split over micro-batches
and ranks. A checkpoint stores the weights, the EMA, the optimiser and LR scheduler, the loader position
(epoch and batch after the last one consumed) and every RNG state; a resumed run restores them, rebuilds the
DataLoader at that position and repeats the uninterrupted run's losses step for step (bit for bit on CPU
in one process).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from curation.errors import ConfigError
from training import checkpoint as ckpt
from training.config import get_preset
from training.data import BucketBatchSampler, SampleKey, TierDataset, make_loader, read_tier
from training.dit import VideoDiT
from training.ema import EMA
from training.flow import FlowMatching
from training.text_encoder import build_text_encoder
from training.train import MicroBatch, TrainConfig, accumulated_step, build_optimizer, sample_draws

EVAL_EPOCH = 2**31 - 1  # the RNG key epoch of the fixed evaluation draws (no training batch has it)


@dataclass(frozen=True)
class TrainerConfig:
    """Trainer settings: the curriculum YAML's `train:` section, overridden by `videocurate train --config`.

    Optimiser (HunyuanVideo's proxy): AdamW `lr` with linear warmup over `warmup_steps` (capped at a phase's
    planned steps), `grad_clip`, `text_dropout`; a phase's own `lr` wins. `grad_accum` micro-batches (each a
    sampler batch) per optimiser step. `ema_decay`: the EMA kept beside the weights (saved, used for eval).
    `bf16`: bf16 autocast on CUDA (CPU stays fp32); `gradient_checkpointing` recomputes each DiT block in
    the backward pass (any device). `checkpoint_every` optimiser steps (and at each phase's end), the newest
    `keep_checkpoints` kept. DataLoader: `loader_workers` decode processes per worker, `prefetch_factor`
    batches each, `persistent_workers`, started by `loader_start_method` (forkserver: see
    `training.data.make_loader`); pinned memory on CUDA. `text_encoder`: minilm | tiny | a local
    Hugging Face folder | {path, max_length, skip_last_layers, pooling}. `cpus_per_worker`: the CPUs a Ray
    Train worker reserves.
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 500
    grad_clip: float = 1.0
    text_dropout: float = 0.1
    grad_accum: int = 1
    ema_decay: float = 0.9999
    bf16: bool = True
    gradient_checkpointing: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 50
    loader_workers: int = 2
    prefetch_factor: int = 2
    persistent_workers: bool = True
    loader_start_method: str = "forkserver"
    text_encoder: str | dict = "minilm"
    cpus_per_worker: float = 1.0

    def __post_init__(self) -> None:
        if self.grad_accum < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ConfigError("train: grad_accum, checkpoint_every and log_every must be >= 1")
        if self.loader_workers < 0 or self.prefetch_factor < 1:
            raise ConfigError("train: loader_workers must be >= 0 and prefetch_factor >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train: ema_decay must be in [0, 1), got {self.ema_decay}")


def trainer_config(*docs: dict | None, **overrides) -> TrainerConfig:
    """A TrainerConfig from mappings (later ones win) and keyword overrides (None = not given)."""
    known = {f.name for f in dataclasses.fields(TrainerConfig)}
    merged: dict = {}
    for doc in docs:
        if not doc:
            continue
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"train settings: unknown key(s) {unknown}; known: {sorted(known)}")
        merged.update(doc)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    if "betas" in merged:
        merged["betas"] = tuple(merged["betas"])
    try:
        return TrainerConfig(**merged)
    except TypeError as exc:
        raise ConfigError(f"train settings: {exc}") from exc


def load_config_file(path: str | None) -> dict:
    """The mapping in a `--config` YAML (its `train:` section when it has one)."""
    if not path:
        return {}
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"train --config {path!r}: no such file")
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"train --config {path}: expected a mapping of trainer settings")
    return doc["train"] if isinstance(doc.get("train"), dict) else doc


@dataclass
class Job:
    """Everything a worker needs to run (picklable: it travels to Ray Train workers)."""

    lake: str
    plan: object  # training.curriculum.Curriculum
    vae: str
    out: str
    config: TrainerConfig
    seed: int = 0
    device: str = "auto"
    max_steps: int | None = None
    stop_after: int | None = None  # stop (checkpointed) once this many optimiser steps are done in all
    resume_from: str | None = None
    phase_caps: list[int] = field(default_factory=list)


# ---- the per-worker loop --------------------------------------------------------------------------------


def _barrier(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.barrier()


class LossLog:
    """OUT/losses.jsonl, appended line by line (flushed: a kill loses nothing logged before it)."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "a")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_losses(out: str | os.PathLike) -> list[dict]:
    path = Path(out) / "losses.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_losses(out: str, global_step: int) -> None:
    """Drop the log lines of steps after the checkpoint a run resumes from (the resumed run redoes them)."""
    rows = [r for r in read_losses(out) if r["global_step"] <= global_step]
    tmp = Path(out) / "losses.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, Path(out) / "losses.jsonl")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _encode(vae: nn.Module, text: nn.Module, videos: torch.Tensor, prompts: list[str], device: torch.device,
            bf16: bool):
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        latents = vae.to_latents(videos.to(device, non_blocking=True)).float()
        cond = text.encode(prompts)
    return latents, cond.to(device, torch.float32)


def _eval_loss(dit: nn.Module, vae, text, flow: FlowMatching, dataset: TierDataset, sampler: BucketBatchSampler,
               seed: int, phase: int, device: torch.device, bf16: bool) -> float:
    """Flow loss of `dit` on a fixed batch (the phase's first global batch) with fixed draws, no text dropout."""
    bucket, members = sampler.draw(0, 0)
    items = [dataset[SampleKey(i, bucket, seed, 0, 0, j, len(members))] for j, i in enumerate(members)]
    latents, cond = _encode(vae, text, torch.stack([it["video"] for it in items]), [it["prompt"] for it in items],
                            device, bf16)
    keys = [(seed, phase, EVAL_EPOCH, 0, j) for j in range(len(items))]
    _, t, x0 = sample_draws(flow, keys, latents.shape[1:], device)
    was_training = dit.training
    dit.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = float(flow.loss(dit, latents, cond, x0=x0, t=t))
    dit.train(was_training)
    return loss


def train_loop(job: Job, rank: int = 0, world: int = 1, device: torch.device | None = None,
               wrap: Callable[[nn.Module], nn.Module] | None = None,
               log: Callable[[str], None] = print) -> dict:
    """Every phase of `job.plan` on this worker; rank 0 logs, checkpoints, exports and returns the summary."""
    from training.curriculum import load_vae

    cfg, plan, out = job.config, job.plan, job.out
    device = device or _resolve_device(job.device)
    lead = rank == 0
    say = log if lead else (lambda _msg: None)
    preset = get_preset(plan.model)
    text = build_text_encoder(cfg.text_encoder, preset.dit.text_dim).to(device)
    dit_cfg = dataclasses.replace(preset.dit, text_dim=text.dim, pooled_dim=text.dim,
                                  gradient_checkpointing=cfg.gradient_checkpointing)
    torch.manual_seed(job.seed)
    dit = VideoDiT(dit_cfg).to(device)
    vae = load_vae(preset.vae, job.vae).to(device)
    flow = FlowMatching()
    ema = EMA(dit, cfg.ema_decay) if lead else None
    bf16 = cfg.bf16 and device.type == "cuda"
    config_doc = {"model": plan.model, "dit_config": dataclasses.asdict(dit_cfg), "seed": job.seed,
                  "text_encoder": cfg.text_encoder}

    resume = None
    if job.resume_from:
        resume = ckpt.load_checkpoint(job.resume_from, rank)
        dit.load_state_dict(resume["model"])
        if ema is not None and resume["ema"] is not None:
            ema.load_state_dict(resume["ema"])
        if resume["rng"] is not None:
            ckpt.set_rng_state(resume["rng"])
        say(f"resumed from {job.resume_from} (phase {resume['state']['phase']}, step {resume['state']['step']}, "
            f"global step {resume['state']['global_step']})")
    model = wrap(dit) if wrap is not None else dit
    global_step = resume["state"]["global_step"] if resume else 0
    summary: dict = {}
    summary_path = Path(out) / "summary.json"
    if lead and resume and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
    losses = LossLog(Path(out) / "losses.jsonl") if lead else None
    start_phase = resume["state"]["phase"] if resume else 0
    try:
        for pi, phase in enumerate(plan.phases):
            if pi < start_phase:
                continue
            cap = job.phase_caps[pi] if job.phase_caps else phase.steps
            try:
                refs = read_tier(job.lake, phase.tier, phase.buckets)
                if not refs:
                    raise ValueError(f"tier '{phase.tier}' is empty")
                sampler = BucketBatchSampler(refs, phase.buckets, seed=job.seed + 100_003 * pi, rank=rank,
                                             world=world)
            except (FileNotFoundError, ValueError) as exc:
                summary[phase.name] = {"skipped": str(exc)}
                say(f"phase {phase.name}: skipped ({exc})")
                continue
            dataset = TierDataset(refs, phase.buckets.frame_stride)
            tcfg = TrainConfig(lr=phase.lr or cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                               warmup_steps=min(cfg.warmup_steps, phase.steps), grad_clip=cfg.grad_clip,
                               text_dropout=cfg.text_dropout, bf16=bf16)
            opt, sched = build_optimizer(model, tcfg)
            done = 0
            if resume and pi == start_phase:
                trainer_state = resume["trainer"]
                done = trainer_state["step"]
                opt.load_state_dict(trainer_state["optimizer"])
                sched.load_state_dict(trainer_state["scheduler"])
                sampler.load_state_dict(trainer_state["sampler"])
            resume = None
            t0 = time.monotonic()
            if done < cap:
                loader = make_loader(dataset, sampler, cfg.loader_workers, cfg.prefetch_factor,
                                     cfg.persistent_workers, pin_memory=device.type == "cuda",
                                     start_method=cfg.loader_start_method)
                batches = iter(loader)
                for step in range(done, cap):
                    micro, total, last = [], 0, None
                    for _ in range(cfg.grad_accum):
                        batch = next(batches)
                        keys = batch["keys"]
                        latents, cond = _encode(vae, text, batch["videos"], batch["prompts"], device, bf16)
                        micro.append(MicroBatch(latents, cond, [(job.seed, pi, k.epoch, k.batch, k.slot)
                                                                for k in keys]))
                        total += keys[0].size
                        last = keys[-1]
                    stats = accumulated_step(model, flow, opt, sched, micro, tcfg, total, world, bf16=bf16)
                    global_step += 1
                    if ema is not None:
                        ema.update(dit)
                    bucket = batch["bucket"]
                    if lead:
                        losses.write({"phase": phase.name, "step": step + 1, "global_step": global_step,
                                      "loss": stats["loss"], "grad_norm": stats["grad_norm"], "lr": stats["lr"],
                                      "bucket": [bucket.frames, bucket.height, bucket.width], "samples": total})
                    if step % cfg.log_every == 0 or step == cap - 1:
                        say(f"phase {phase.name} step {step + 1}/{cap} bucket {bucket.frames}x{bucket.height}x"
                            f"{bucket.width} loss {stats['loss']:.4f}")
                    stop = job.stop_after is not None and global_step >= job.stop_after
                    if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cap or stop:
                        epoch, nxt = sampler.position_after(last)
                        _save(job, rank, world, global_step, pi, phase.name, step + 1, epoch, nxt, stats, dit,
                              ema, opt, sched, sampler, config_doc)
                    if stop:
                        say(f"stopped after {global_step} steps (--stop-after); continue with --resume")
                        summary["stopped"] = {"global_step": global_step, "phase": phase.name, "step": step + 1}
                        return summary
                del batches, loader
            if lead:
                folder = Path(out) / phase.name
                ckpt.save_weights(folder, dit.state_dict(), ema.state_dict(),
                                  {**config_doc, "phase": phase.name, "global_step": global_step, "steps": cap})
                with ema.applied(dit):
                    ema_loss = _eval_loss(dit, vae, text, flow, dataset, sampler, job.seed, pi, device, bf16)
                raw_loss = _eval_loss(dit, vae, text, flow, dataset, sampler, job.seed, pi, device, bf16)
                rows = [r for r in read_losses(out) if r["phase"] == phase.name]
                summary[phase.name] = {"steps": cap, "first_loss": rows[0]["loss"] if rows else None,
                                       "last_loss": rows[-1]["loss"] if rows else None,
                                       "eval_loss_ema": ema_loss, "eval_loss": raw_loss,
                                       "seconds": round(time.monotonic() - t0, 1), "checkpoint": str(folder)}
                ckpt.write_json(summary_path, summary)
            _barrier(world)
    finally:
        if losses is not None:
            losses.close()
    return summary


def _save(job: Job, rank: int, world: int, global_step: int, phase_index: int, phase: str, step: int, epoch: int,
          batch: int, stats: dict, dit: nn.Module, ema: EMA | None, opt, sched, sampler: BucketBatchSampler,
          config_doc: dict) -> None:
    ckpt.begin_checkpoint(job.out, global_step, rank)
    _barrier(world)
    if rank == 0:
        sampler_state = {**sampler.state_dict(), "epoch": epoch, "batch": batch}
        trainer_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "sampler": sampler_state,
                         "step": step, "phase": phase_index, "global_step": global_step}
        state = {"phase": phase_index, "phase_name": phase, "step": step, "global_step": global_step,
                 "epoch": epoch, "batch": batch, "loss": stats["loss"], "world": world, "time": time.time()}
        ckpt.finish_checkpoint(job.out, global_step, dit.state_dict(), ema.state_dict() if ema else None,
                               {**config_doc, "phase": phase, "global_step": global_step}, trainer_state, state,
                               job.config.keep_checkpoints)
    _barrier(world)


def _ray_worker(config: dict) -> None:
    """The per-worker function of the TorchTrainer."""
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    torch.set_num_threads(max(1, int(config.get("threads") or 1)))
    train_loop(config["job"], rank=ctx.get_world_rank(), world=ctx.get_world_size(),
               device=ray.train.torch.get_device(), wrap=lambda m: ray.train.torch.prepare_model(m))


# ---- the driver ------------------------------------------------------------------------------------------


def _prepare_out(job: Job, resume: bool, log: Callable[[str], None]) -> None:
    """Make the run folder; refuse to overwrite another run; find the checkpoint to resume from."""
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    latest = ckpt.latest_checkpoint(out)
    if not resume and (latest is not None or run_file.exists()):
        raise ConfigError(f"train: {out} already holds a training run; pass --resume to continue it "
                          "or choose another --out")
    preset = get_preset(job.plan.model)
    run = {"model": job.plan.model, "seed": job.seed, "vae": job.vae, "lake": str(job.lake),
           "text_encoder": job.config.text_encoder, "dit": dataclasses.asdict(preset.dit),
           "config": dataclasses.asdict(job.config),
           "phases": [dataclasses.asdict(p) for p in job.plan.phases], "max_steps": job.max_steps}
    if resume and latest is not None:
        before = json.loads(run_file.read_text()) if run_file.is_file() else {}
        for key in ("model", "seed", "text_encoder"):
            if key in before and before[key] != run[key]:
                raise ConfigError(f"train --resume: the run in {out} has {key}={before[key]!r}, this command "
                                  f"{run[key]!r}; resume with the same setting or choose another --out")
        job.resume_from = str(latest)
        state = json.loads((latest / "state.json").read_text())
        _truncate_losses(str(out), state["global_step"])
        log(f"resuming {out} from {latest.name} (phase {state['phase_name']}, step {state['step']})")
    else:
        if resume:
            log(f"--resume: no checkpoint in {out} yet, starting from scratch")
        for stale in ("losses.jsonl", "summary.json"):
            (out / stale).unlink(missing_ok=True)
    ckpt.write_json(run_file, run)
    caps = [min(p.steps, job.max_steps) if job.max_steps else p.steps for p in job.plan.phases]
    job.phase_caps = caps


def train(job: Job, workers: int = 1, address: str | None = None, num_cpus: int | None = None,
          resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run a training job: in this process for one worker without `address`, else under Ray Train with
    `workers` workers (one per GPU when the device is CUDA: `workers` defaults to the cluster's GPUs)."""
    job.out = os.path.abspath(job.out)
    _prepare_out(job, resume, log)
    if workers == 1 and not address:
        return train_loop(job, log=log)
    return _train_ray(job, workers, address, num_cpus, log)


def _train_ray(job: Job, workers: int, address: str | None, num_cpus: int | None,
               log: Callable[[str], None]) -> dict:
    from curation.runner import init_ray

    init_ray(address=address, num_cpus=num_cpus)
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = job.device == "cuda" or (job.device == "auto" and gpus > 0)
    if use_gpu and gpus == 0:
        raise ConfigError("train --device cuda: the Ray cluster has no GPUs")
    if workers < 1:
        workers = gpus if use_gpu else 1
    resources = {"CPU": job.config.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    job.device = "cuda" if use_gpu else "cpu"
    log(f"training on {workers} Ray Train worker(s), {'GPU (NCCL)' if use_gpu else 'CPU (gloo)'}")
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"job": job, "threads": max(1, int(job.config.cpus_per_worker))},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(storage_path=os.path.join(job.out, "ray"), name=f"train-{int(time.time())}"),
    )
    result = trainer.fit()
    if getattr(result, "error", None):
        raise RuntimeError(f"training failed on a Ray Train worker: {result.error}")
    summary_path = Path(job.out) / "summary.json"
    return json.loads(summary_path.read_text()) if summary_path.is_file() else {}
