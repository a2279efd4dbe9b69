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
from training import fsdp
from training.config import get_preset
from training.data import BucketBatchSampler, SampleKey, TierDataset, collate_batch, make_loader, read_tier
from training.dit import VideoDiT
from training.ema import EMA
from training.flow import FlowMatching
from training.latents import batch_posterior, draw_latents, phase_dataset
from training.sample import SampleSettings, VideoSampler, phase_prompts, write_phase_samples
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
    Train worker reserves. `latent_sample`: train on z = mean + std·eps of the VAE posterior (eps keyed per
    sample, like the flow noise) instead of the mean; the same from the latent cache (`videocurate encode`,
    `training.latents`) as from decoded video.
    `samples`: the videos each phase writes at its end to OUT/samples/<phase>/
    ({count, steps, frames, size, prompts, cfg, shift, seed, fps}: `training.sample.SampleSettings`; count 0
    = none), by rank 0 with the EMA weights.
    `strategy`: how Ray Train workers share the DiT: ddp (replicated weights, `prepare_model`) or fsdp (FSDP2
    shards per DiT block, bf16 compute parameters with fp32 gradient reduction when `bf16` applies; one
    in-process worker trains the plain module either way). Checkpoints have the same layout under both
    (`training.fsdp`), so a run resumes under the other strategy or another worker count.
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
    latent_sample: bool = False
    samples: SampleSettings | dict = field(default_factory=SampleSettings)
    strategy: str = "ddp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", SampleSettings.from_mapping(self.samples))
        fsdp.check_strategy(self.strategy)
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


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _encode(vae: nn.Module, text: nn.Module, batch: dict, device: torch.device, bf16: bool,
            sample_keys: list[tuple[int, ...]] | None = None):
    """Scaled latents and text condition of a loader batch: its cached posterior (latent cache) or the VAE's
    encode of its videos; the posterior mean, or a draw keyed per sample by `sample_keys` (latent_sample)."""
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        mean, std = batch_posterior(vae, batch, device, need_std=sample_keys is not None)
        cond = text.encode(batch["prompts"])
    return draw_latents(mean, std, sample_keys, vae.config.scaling_factor), cond.to(device, torch.float32)


def _eval_batch(vae, text, flow: FlowMatching, dataset: TierDataset, sampler: BucketBatchSampler, seed: int,
                phase: int, device: torch.device, bf16: bool) -> tuple:
    """The fixed evaluation batch (the phase's first global batch) with fixed draws: (latents, cond, t, x0)."""
    bucket, members = sampler.draw(0, 0)
    items = [dataset[SampleKey(i, bucket, seed, 0, 0, j, len(members))] for j, i in enumerate(members)]
    latents, cond = _encode(vae, text, collate_batch(items), device, bf16)
    keys = [(seed, phase, EVAL_EPOCH, 0, j) for j in range(len(items))]
    _, t, x0 = sample_draws(flow, keys, latents.shape[1:], device)
    return latents, cond, t, x0


def _eval_loss(dit: nn.Module, flow: FlowMatching, batch: tuple, device: torch.device, bf16: bool) -> float:
    """Flow loss of `dit` on the `_eval_batch` (no text dropout)."""
    latents, cond, t, x0 = batch
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
    sharded = cfg.strategy == "fsdp" and dist.is_initialized()
    ema = EMA(dit, cfg.ema_decay) if lead and not sharded else None
    bf16 = cfg.bf16 and device.type == "cuda"
    config_doc = {"model": plan.model, "dit_config": dataclasses.asdict(dit_cfg), "seed": job.seed,
                  "text_encoder": cfg.text_encoder, "vae_config": dataclasses.asdict(vae.config),
                  "vae": job.vae if job.vae == "random" else os.path.abspath(job.vae)}
    cfg.samples.check(vae.config, dit_cfg)

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
    if sharded:  # every rank keeps the EMA of its own shards (training.fsdp)
        model = fsdp.shard_dit(dit, bf16)
        ema = EMA(dit, cfg.ema_decay)
        if resume and resume["ema"] is not None:
            fsdp.load_full(ema.shadow, resume["ema"])
    else:
        if cfg.strategy == "fsdp":
            say("strategy fsdp: one in-process worker trains the unsharded DiT (FSDP needs Ray Train workers)")
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
            dataset = phase_dataset(job.lake, phase.tier, refs, phase.buckets.frame_stride, vae, say)
            tcfg = TrainConfig(lr=phase.lr or cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                               warmup_steps=min(cfg.warmup_steps, phase.steps), grad_clip=cfg.grad_clip,
                               text_dropout=cfg.text_dropout, bf16=bf16)
            opt, sched = build_optimizer(model, tcfg)
            done = 0
            if resume and pi == start_phase:
                trainer_state = resume["trainer"]
                done = trainer_state["step"]
                fsdp.load_optimizer_state(model, opt, trainer_state["optimizer"])
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
                        rng_keys = [(job.seed, pi, k.epoch, k.batch, k.slot) for k in keys]
                        latents, cond = _encode(vae, text, batch, device, bf16,
                                                rng_keys if cfg.latent_sample else None)
                        micro.append(MicroBatch(latents, cond, rng_keys))
                        total += keys[0].size
                        last = keys[-1]
                    stats = accumulated_step(model, flow, opt, sched, micro, tcfg, total, world)
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
                        _save(job, rank, world, global_step, pi, phase.name, step + 1, epoch, nxt, stats, model,
                              ema, opt, sched, sampler, config_doc)
                    if stop:
                        say(f"stopped after {global_step} steps (--stop-after); continue with --resume")
                        summary["stopped"] = {"global_step": global_step, "phase": phase.name, "step": step + 1}
                        return summary
                del batches, loader
            weights = fsdp.full_model_state(model)  # every rank: a collective under FSDP
            ema_weights = fsdp.gather_full(ema.state_dict()) if ema is not None else {}
            if lead:
                folder = Path(out) / phase.name
                ckpt.save_weights(folder, weights, ema_weights,
                                  {**config_doc, "phase": phase.name, "global_step": global_step, "steps": cap})
                # rank 0 evaluates and samples alone: under FSDP on an unsharded copy
                eval_dit, eval_ema = _unsharded(dit_cfg, weights, ema_weights, cfg.ema_decay, device) if sharded \
                    else (dit, ema)
                eval_batch = _eval_batch(vae, text, flow, dataset, sampler, job.seed, pi, device, bf16)
                with eval_ema.applied(eval_dit):
                    ema_loss = _eval_loss(eval_dit, flow, eval_batch, device, bf16)
                raw_loss = _eval_loss(eval_dit, flow, eval_batch, device, bf16)
                if cfg.samples.count:
                    shape = sampler.draw(0, 0)[0]  # the eval batch's bucket: a shape the phase trains on
                    prompts = phase_prompts(cfg.samples, refs, job.seed)
                    with eval_ema.applied(eval_dit):
                        write_phase_samples(Path(out) / "samples" / phase.name,
                                            VideoSampler(eval_dit, vae, text, device, bf16), cfg.samples, prompts,
                                            shape.frames, shape.width, shape.height,
                                            {"phase": phase.name, "global_step": global_step, "weights": "ema"})
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


def _unsharded(dit_cfg, weights: dict, ema_weights: dict, decay: float, device: torch.device) -> tuple[VideoDiT, EMA]:
    """A plain DiT and its EMA from full state dicts (rank 0's evaluation copy of an FSDP model)."""
    dit = VideoDiT(dit_cfg).to(device)
    dit.load_state_dict(weights)
    ema = EMA(dit, decay)
    ema.load_state_dict(ema_weights)
    return dit, ema


def _save(job: Job, rank: int, world: int, global_step: int, phase_index: int, phase: str, step: int, epoch: int,
          batch: int, stats: dict, model: nn.Module, ema: EMA | None, opt, sched, sampler: BucketBatchSampler,
          config_doc: dict) -> None:
    ckpt.begin_checkpoint(job.out, global_step, rank)
    _barrier(world)
    # full, name-keyed states whatever the strategy (rank 0 gets them; collectives under FSDP)
    weights, opt_state = fsdp.full_model_state(model), fsdp.full_optimizer_state(model, opt)
    ema_weights = fsdp.gather_full(ema.state_dict()) if ema is not None else None
    if rank == 0:
        sampler_state = {**sampler.state_dict(), "epoch": epoch, "batch": batch}
        trainer_state = {"optimizer": opt_state, "scheduler": sched.state_dict(), "sampler": sampler_state,
                         "step": step, "phase": phase_index, "global_step": global_step}
        state = {"phase": phase_index, "phase_name": phase, "step": step, "global_step": global_step,
                 "epoch": epoch, "batch": batch, "loss": stats["loss"], "world": world,
                 "strategy": "fsdp" if fsdp.is_sharded(model) else "ddp", "time": time.time()}
        ckpt.finish_checkpoint(job.out, global_step, weights, ema_weights,
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
    log(f"training on {workers} Ray Train worker(s), {'GPU (NCCL)' if use_gpu else 'CPU (gloo)'}, "
        f"{job.config.strategy.upper()}")
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
