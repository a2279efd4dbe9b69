"""`videocurate train-vae`: trains the causal 3D VAE (`training.vae.CausalVAE`) on a tier's clips.

Losses are `training.vae_loss`'s: L1 + KL, LPIPS when `lpips_weight` > 0 (from a local checkpoint), and the
report's PatchGAN hinge term when `adversarial_weight` > 0 (off by default), whose discriminator trains
from step `disc_start`. Images and videos are mixed per batch (`training.vae_data`: an image is a 1-frame
video; `image_ratio` of the batches), random square crops at a random frame interval, all seeded.

A run folder::

    OUT/run.json                    tier, lake, settings
    OUT/losses.jsonl                one line per step (loss terms, grad norm, lr, frames of the batch) and one
                                    per evaluation (`eval_psnr`: reconstruction PSNR of the held-out clips)
    OUT/summary.json                steps, first/last loss, first/last PSNR, steps/s, the export folder
    OUT/checkpoints/step-NNNNNNNN/  model.safetensors config.json trainer_state.pt rng-rank0.pt state.json
    OUT/checkpoints/latest
    OUT/vae/                        the final VAE: model.safetensors + config.json (its VAEConfig, with the
                                    scaling_factor fitted to unit-variance latents)

Every random draw of a step (the crops in `CropBatchSampler`, the posterior sample here) is keyed by the
step's index, and a checkpoint holds the weights, the optimiser and LR scheduler (and the discriminator's),
the step and every RNG state, so `--resume` after a kill repeats the uninterrupted run's losses exactly.
`videocurate train --vae OUT` (or `OUT/vae`, or its `model.safetensors`) loads the result with its shape
(`training.vae_export.read_vae`, behind `training.curriculum.load_vae`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as recompute

from curation.errors import ConfigError
from training import checkpoint as ckpt
from training.config import get_preset
from training.data import BucketConfig, make_loader, read_tier
from training.lpips import LPIPSWeightsMissing, load_lpips
from training.train import TrainConfig, build_optimizer, key_seed
from training.trainer import LossLog, _resolve_device, _truncate_losses, read_losses
from training.vae import CausalVAE, DiagonalGaussian, TileConfig, VAEConfig, check_video_shape
from training.vae_data import CropBatchSampler, CropConfig, CropDataset, eval_videos, split_holdout
from training.vae_export import EXPORT, KIND, config_doc, export_vae, vae_config_from
from training.vae_loss import PatchDiscriminator, VAELoss, VAELossConfig, discriminator_hinge_loss

# settings a resumed run may change: they do not change what is trained
RUNTIME_ONLY = frozenset({"steps", "loader_workers", "prefetch_factor", "loader_start_method", "log_every",
                          "checkpoint_every", "keep_checkpoints"})
SCALING_KEY = 2**30  # batch keys of the crops the latent scale is fitted on (beyond any training step)


@dataclass(frozen=True)
class VAETrainConfig:
    """Settings of `videocurate train-vae` (the `--config` YAML holds any of them).

    Model: `model` (a preset whose VAE shape is the start: tiny, small, hunyuan-13b) and `vae` (VAEConfig
    fields that override it, e.g. {block_out_channels: [64, 128, 256, 256]}). Optimiser: AdamW `lr`,
    `betas`, `weight_decay`, linear `warmup_steps`, `grad_clip`; `steps` in all (`--max-steps` caps them).
    Data (`training.vae_data.CropConfig`): `batch_size` crops of `size`² pixels, videos of `frames` frames
    (4n+1) at a random interval up to `max_frame_interval`, `image_ratio` of the batches images.
    Loss: L1 + `kl_weight` KL + `lpips_weight` LPIPS (`lpips_path`, `lpips_backbone_path`: local files;
    0 turns it off) + `adversarial_weight` PatchGAN hinge from step `disc_start` (discriminator lr
    `disc_lr`). Evaluation: every `eval_every` steps (and before the first and after the last), the PSNR of
    `eval_clips` held-out clips at about `eval_size`² pixels × `eval_frames` frames, encoded and decoded in
    tiles of `tile_sample_size` pixels with `tile_overlap` when larger. `checkpoint_every` steps (and at the
    end), the newest `keep_checkpoints` kept. `bf16`: autocast on CUDA (CPU stays fp32);
    `gradient_checkpointing`: recompute each encoder/decoder block in the backward pass (any device).
    `scaling_batches`: the exported VAE's `scaling_factor` is 1 / the std of its latents over this many
    batches of training crops (0 keeps the preset's).
    """

    model: str = "hunyuan-13b"
    vae: dict = field(default_factory=dict)
    seed: int = 0
    steps: int = 10_000
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    batch_size: int = 4
    size: int = 256
    frames: int = 17
    image_ratio: float = 0.2
    max_frame_interval: int = 8
    kl_weight: float = 1e-6
    lpips_weight: float = 0.1
    lpips_path: str | None = None
    lpips_backbone_path: str | None = None
    adversarial_weight: float = 0.0
    disc_start: int = 5_000
    disc_lr: float = 1e-4
    eval_every: int = 500
    eval_clips: int = 4
    eval_size: int = 512
    eval_frames: int = 17
    tile_sample_size: int = 256
    tile_overlap: float = 0.25
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 50
    loader_workers: int = 2
    prefetch_factor: int = 2
    loader_start_method: str = "forkserver"
    bf16: bool = True
    gradient_checkpointing: bool = False
    scaling_batches: int = 8

    def __post_init__(self) -> None:
        positive = ("steps", "eval_every", "checkpoint_every", "keep_checkpoints", "log_every", "eval_size",
                    "eval_frames", "tile_sample_size", "prefetch_factor")
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad:
            raise ConfigError(f"train-vae: {bad} must be >= 1")
        if min(self.loader_workers, self.eval_clips, self.disc_start, self.scaling_batches) < 0:
            raise ConfigError("train-vae: loader_workers, eval_clips, disc_start and scaling_batches must be >= 0")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise ConfigError(f"train-vae: tile_overlap must be in [0, 1), got {self.tile_overlap}")
        if min(self.kl_weight, self.lpips_weight, self.adversarial_weight) < 0:
            raise ConfigError("train-vae: loss weights must be >= 0")
        self.crops()  # its own checks

    def crops(self) -> CropConfig:
        return CropConfig(self.size, self.frames, self.image_ratio, self.max_frame_interval, self.batch_size)

    def vae_config(self) -> VAEConfig:
        """The preset's VAE shape with `vae` overrides applied."""
        return vae_config_from({**dataclasses.asdict(get_preset(self.model).vae), **self.vae})

    def tile(self) -> TileConfig:
        return TileConfig(self.tile_sample_size, self.tile_overlap)


def vae_train_config(*docs: dict | None, **overrides) -> VAETrainConfig:
    """A VAETrainConfig from mappings (later ones win) and keyword overrides (None = not given)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    merged = {k: v for doc in (*docs, given) for k, v in (doc or {}).items()}
    known = {f.name for f in dataclasses.fields(VAETrainConfig)}
    if set(merged) - known:
        raise ConfigError(f"train-vae settings: unknown key(s) {sorted(set(merged) - known)}; known: {sorted(known)}")
    try:
        return VAETrainConfig(**{**merged, "betas": tuple(merged.get("betas", VAETrainConfig.betas))})
    except TypeError as exc:
        raise ConfigError(f"train-vae settings: {exc}") from exc


def load_vae_train_config(path: str | None, **overrides) -> VAETrainConfig:
    """The settings of a `--config` YAML (a mapping of VAETrainConfig fields), with overrides."""
    doc: dict = {}
    if path:
        import yaml

        if not os.path.isfile(path):
            raise ConfigError(f"train-vae --config {path!r}: no such file")
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
        if not isinstance(doc, dict):
            raise ConfigError(f"train-vae --config {path}: expected a mapping of settings")
    return vae_train_config(doc, **overrides)


# ---- model pieces ----------------------------------------------------------------------------------------


def _recomputed(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled():
        return recompute(forward, x, use_reentrant=False)
    return forward(x)


def enable_gradient_checkpointing(vae: CausalVAE) -> None:
    """Recompute each encoder and decoder block (down/up blocks and the mid blocks) in the backward pass
    instead of keeping its activations; the weights and their names do not change."""
    blocks = [*vae.encoder.down, vae.encoder.mid, vae.decoder.mid, *vae.decoder.up]
    for block in blocks:
        block.forward = functools.partial(_recomputed, block.forward)


def psnr(recon: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (peak 1 after mapping to [0, 1]); the reconstruction is clamped."""
    mse = float(((recon.float().clamp(-1, 1) - target.float()) / 2).pow(2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def eval_psnr(vae: CausalVAE, videos: list[torch.Tensor], tile: TileConfig, device: torch.device,
              bf16: bool = False) -> list[float]:
    """Reconstruction PSNR of each video (posterior mode), tiled encode and decode for frames above a tile."""
    was_training = vae.training
    vae.eval()
    out = []
    for video in videos:
        x = video.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            recon = vae.decode(vae.encode(x, tile).mode(), tile)
        out.append(psnr(recon, x))
    vae.train(was_training)
    return out


def _loss_terms(cfg: VAETrainConfig) -> tuple[VAELoss, VAELoss | None, PatchDiscriminator | None]:
    """(the loss before `disc_start`, the loss with the adversarial term after it, the discriminator)."""
    lcfg = VAELossConfig(cfg.kl_weight, cfg.lpips_weight, cfg.adversarial_weight, cfg.lpips_path,
                         cfg.lpips_backbone_path)
    perceptual = None
    if cfg.lpips_weight > 0:
        try:
            perceptual = load_lpips(cfg.lpips_path, cfg.lpips_backbone_path)
        except LPIPSWeightsMissing as exc:
            raise ConfigError(f"train-vae: {exc} (train-vae settings lpips_path / lpips_weight: 0)") from exc
    plain = VAELoss(lcfg, perceptual)
    if cfg.adversarial_weight <= 0:
        return plain, None, None
    with torch.random.fork_rng(devices=[]):  # its initial weights depend on the run's seed only
        torch.manual_seed(cfg.seed + 1)
        disc = PatchDiscriminator()
    return plain, VAELoss(lcfg, perceptual, disc), disc


@torch.no_grad()
def fit_scaling_factor(vae: CausalVAE, batches: list[torch.Tensor], device: torch.device) -> float:
    """1 / the standard deviation of the posterior means over `batches` (the latent scale the DiT wants: unit
    variance, as the report's 0.476986 is for its VAE)."""
    was_training = vae.training
    vae.eval()
    means = torch.cat([vae.encode(b.to(device)).mode().flatten().float().cpu() for b in batches])
    vae.train(was_training)
    return float(1.0 / means.std().clamp_min(1e-6))


# ---- the run ---------------------------------------------------------------------------------------------


def _prepare_out(out: Path, run: dict, resume: bool, log: Callable[[str], None]) -> Path | None:
    """Make the run folder, refuse to overwrite another run, and return the checkpoint to resume from."""
    out.mkdir(parents=True, exist_ok=True)
    run_file, latest = out / "run.json", ckpt.latest_checkpoint(out)
    if not resume and (latest is not None or run_file.exists()):
        raise ConfigError(f"train-vae: {out} already holds a training run; pass --resume to continue it or "
                          "choose another --out")
    if resume and latest is not None:
        before = json.loads(run_file.read_text()) if run_file.is_file() else {}
        was, now = before.get("config", {}), run["config"]
        changed = sorted(k for k in set(was) | set(now) if k not in RUNTIME_ONLY and was.get(k) != now.get(k))
        if before.get("tier", run["tier"]) != run["tier"] or changed:
            raise ConfigError(f"train-vae --resume: the run in {out} was started with other settings "
                              f"({changed or 'tier'}); resume with the same ones or choose another --out")
        state = json.loads((latest / "state.json").read_text())
        _truncate_losses(str(out), state["global_step"])
        log(f"resuming {out} from {latest.name} (step {state['step']})")
    else:
        if resume:
            log(f"--resume: no checkpoint in {out} yet, starting from scratch")
        latest = None
        for stale in ("losses.jsonl", "summary.json"):
            (out / stale).unlink(missing_ok=True)
    ckpt.write_json(run_file, run)
    return latest


def _tier_refs(lake: str, tier: str) -> list:
    try:
        refs = read_tier(lake, tier, BucketConfig())
    except FileNotFoundError as exc:
        raise ConfigError(f"train-vae: {exc}") from exc
    if not refs:
        raise ConfigError(f"train-vae: tier '{tier}' in {lake} is empty")
    return refs


def _jsonable(cfg: VAETrainConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def train_vae(lake: str, tier: str, out: str | os.PathLike, config: VAETrainConfig | None = None,
              resume: bool = False, max_steps: int | None = None, device: str = "auto",
              log: Callable[[str], None] = print) -> dict:
    """Train a CausalVAE on `tier` of `lake` into the run folder `out` (see the module docstring); returns the
    summary. `max_steps` caps `config.steps`; `resume` continues the run in `out` from its latest checkpoint."""
    cfg = config or VAETrainConfig()
    out = Path(out).resolve()
    vae_cfg = cfg.vae_config()
    try:
        check_video_shape((1, vae_cfg.in_channels, cfg.frames, cfg.size, cfg.size), vae_cfg)
    except ValueError as exc:
        raise ConfigError(f"train-vae: frames={cfg.frames}, size={cfg.size}: {exc}") from exc
    train_refs, held = split_holdout(_tier_refs(str(lake), tier), cfg.eval_clips, cfg.seed)
    sampler = CropBatchSampler(train_refs, cfg.crops(), cfg.seed)
    plain_loss, adv_loss, disc = _loss_terms(cfg)
    dev = _resolve_device(device)
    bf16 = cfg.bf16 and dev.type == "cuda"
    cap = min(cfg.steps, max_steps) if max_steps else cfg.steps
    run = {"kind": KIND, "lake": str(lake), "tier": tier, "config": _jsonable(cfg),
           "held_out": [r.clip_id for r in held]}
    latest = _prepare_out(out, run, resume, log)

    torch.manual_seed(cfg.seed)
    vae = CausalVAE(vae_cfg).to(dev)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(vae)
    plain_loss.to(dev)
    opt, sched = build_optimizer(vae, TrainConfig(lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                                  warmup_steps=cfg.warmup_steps))
    disc_opt = None
    if disc is not None:
        adv_loss.to(dev)
        disc_opt, _ = build_optimizer(disc, TrainConfig(lr=cfg.disc_lr, betas=(0.5, 0.9), warmup_steps=0))
    done = 0
    if latest is not None:
        state = ckpt.load_checkpoint(latest)
        vae.load_state_dict(state["model"])
        trainer = state["trainer"]
        opt.load_state_dict(trainer["optimizer"])
        sched.load_state_dict(trainer["scheduler"])
        if disc is not None:
            disc.load_state_dict(trainer["discriminator"])
            disc_opt.load_state_dict(trainer["disc_optimizer"])
        if state["rng"] is not None:
            ckpt.set_rng_state(state["rng"])
        done = trainer["step"]
    sampler.set_position(done)
    tile = cfg.tile()
    held_videos = eval_videos(held, cfg.eval_size, cfg.eval_frames) if held else []
    losses = LossLog(out / "losses.jsonl")

    def evaluate(step: int) -> None:
        if held_videos:
            scores = eval_psnr(vae, held_videos, tile, dev, bf16)
            losses.write({"step": step, "global_step": step, "eval_psnr": sum(scores) / len(scores),
                          "eval_psnr_clips": scores})

    def save(step: int, stats: dict) -> None:
        ckpt.begin_checkpoint(out, step, 0)
        trainer_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step}
        if disc is not None:
            trainer_state.update(discriminator=disc.state_dict(), disc_optimizer=disc_opt.state_dict())
        state = {"step": step, "global_step": step, "loss": stats["loss"], "time": time.time()}
        ckpt.finish_checkpoint(out, step, vae.state_dict(), None, config_doc(vae_cfg, step=step), trainer_state,
                               state, cfg.keep_checkpoints)

    t0 = time.monotonic()
    try:
        if done == 0:
            evaluate(0)
        if done < cap:
            loader = make_loader(CropDataset(train_refs), sampler, cfg.loader_workers, cfg.prefetch_factor,
                                 pin_memory=dev.type == "cuda", start_method=cfg.loader_start_method)
            batches = iter(loader)
            vae.train()
            for step in range(done, cap):
                batch = next(batches)
                adversarial = disc is not None and step >= cfg.disc_start
                stats = _step(vae, adv_loss if adversarial else plain_loss, disc if adversarial else None, opt,
                              sched, disc_opt, batch["videos"].to(dev, non_blocking=True),
                              torch.Generator(device=dev).manual_seed(key_seed((cfg.seed, step))), cfg.grad_clip,
                              bf16)
                frames = batch["bucket"].frames
                losses.write({"step": step + 1, "global_step": step + 1, **stats, "frames": frames,
                              "samples": len(batch["keys"])})
                if step % cfg.log_every == 0 or step + 1 == cap:
                    log(f"train-vae step {step + 1}/{cap} {'image' if frames == 1 else 'video'} batch "
                        f"loss {stats['loss']:.4f} (l1 {stats['l1']:.4f})")
                if (step + 1) % cfg.eval_every == 0 or step + 1 == cap:
                    evaluate(step + 1)
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cap:
                    save(step + 1, stats)
            del batches, loader
    finally:
        losses.close()
    scale = None
    if cfg.scaling_batches:
        crops = CropDataset(train_refs)
        batches = [torch.stack([crops[k]["video"] for k in sampler.draw(SCALING_KEY + i)])
                   for i in range(cfg.scaling_batches)]
        scale = fit_scaling_factor(vae, batches, dev)
    folder = export_vae(out / EXPORT, vae, scale, steps=cap, tier=tier)
    return _summarise(out, cap, folder, time.monotonic() - t0, done)


def _step(vae: CausalVAE, loss_fn: VAELoss, disc: nn.Module | None, opt, sched, disc_opt, x: torch.Tensor,
          generator: torch.Generator, grad_clip: float, bf16: bool) -> dict:
    """One optimiser step of the VAE (and, with a discriminator, one hinge step of it on the same batch)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        recon, posterior = vae(x, sample=True, generator=generator)
    terms = loss_fn(recon.float(), x, DiagonalGaussian(posterior.params.float()))
    opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(vae.parameters(), grad_clip)
    lr = opt.param_groups[0]["lr"]
    opt.step()
    sched.step()
    stats = {"loss": float(terms["total"].detach()), **{k: float(v.detach()) for k, v in terms.items()
                                                         if k != "total"}}
    if disc is not None:
        disc_opt.zero_grad(set_to_none=True)
        d_loss = discriminator_hinge_loss(disc, x, recon.float())
        d_loss.backward()
        disc_opt.step()
        stats["disc_loss"] = float(d_loss.detach())
    return {**stats, "grad_norm": float(grad_norm), "lr": float(lr)}


def _summarise(out: Path, cap: int, folder: Path, seconds: float, done: int) -> dict:
    rows = read_losses(out)
    train_rows = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_psnr" in r]
    summary = {"steps": cap, "first_loss": train_rows[0]["loss"] if train_rows else None,
               "last_loss": train_rows[-1]["loss"] if train_rows else None,
               "first_psnr": evals[0]["eval_psnr"] if evals else None,
               "last_psnr": evals[-1]["eval_psnr"] if evals else None,
               "image_batches": sum(r["frames"] == 1 for r in train_rows),
               "video_batches": sum(r["frames"] > 1 for r in train_rows),
               "seconds": round(seconds, 2), "steps_per_s": round((cap - done) / seconds, 3) if seconds else None,
               "export": str(folder)}
    ckpt.write_json(out / "summary.json", summary)
    return summary
