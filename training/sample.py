"""Samples from a trained DiT: `videocurate sample` and the few videos each training phase writes at its end.

A sample is the flow-matching Euler integration of `training.flow.FlowMatching.sample` — the training
convention (t = 0 noise, t = 1 data, the report's shift on the noise level: 7 at 50 steps, 17 below 20) with
classifier-free guidance v_u + g (v_c - v_u), where the unconditional velocity comes from the condition the
trainer drops text to (`TextCondition.null()`), or from an encoded negative prompt — then the VAE decode
(spatially tiled above `TileConfig.sample_size` pixels) and an H.264 yuv420p mp4 written with PyAV.

`--ckpt` takes what a run folder holds (`training.checkpoint`): a checkpoint `OUT/checkpoints/step-N`, the
pointer `OUT/checkpoints/latest`, a phase export `OUT/<phase>/`, or the run folder `OUT` (its latest
checkpoint). The checkpoint's config.json names the model preset, the DiT config, the text encoder and —
since samples exist — the VAE file and its config; older checkpoints take the VAE from the run's run.json
and its config from the preset, and `--vae` overrides either.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from curation.errors import ConfigError
from training import checkpoint as ckpt
from training.dit import DiTConfig
from training.flow import FlowMatching, default_sampling_shift
from training.text_encoder import TextCondition
from training.vae import TileConfig, VAEConfig

DEFAULT_TILE = TileConfig()  # 256-pixel tiles, 0.25 overlap (the report's)

# ---- what to sample -----------------------------------------------------------------------------------


def parse_size(text: str | Sequence[int]) -> tuple[int, int]:
    """'WxH' (or a [W, H] pair) -> (width, height)."""
    if isinstance(text, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
        if not m:
            raise ConfigError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 256x256")
        return int(m.group(1)), int(m.group(2))
    if len(text) != 2 or not all(isinstance(v, int) for v in text):
        raise ConfigError(f"size {text!r}: expected WIDTHxHEIGHT or [width, height]")
    return int(text[0]), int(text[1])


def latent_shape(frames: int, width: int, height: int, vae: VAEConfig, dit: DiTConfig) -> tuple[int, ...]:
    """The latent [1, C, T', H', W'] a video of `frames` x `height` x `width` pixels has, or a clear error:
    frames must be 1 + k * the VAE's temporal compression (the causal VAE's 4k+1), the sides multiples of its
    spatial compression times the DiT's patch."""
    tc, sc = vae.temporal_compression, vae.spatial_compression
    pt, ph, pw = dit.patch_size
    if frames < 1 or (frames - 1) % tc:
        near = max(1, 1 + round((frames - 1) / tc) * tc)
        raise ConfigError(f"--frames {frames}: the causal VAE takes 1 + {tc}k frames (1, {1 + tc}, {1 + 2 * tc}, "
                          f"{1 + 4 * tc} ...); nearest {near}")
    lt = 1 + (frames - 1) // tc
    if lt % pt:
        raise ConfigError(f"--frames {frames}: {lt} latent frames are not divisible by the DiT's temporal patch {pt}")
    mw, mh = sc * pw, sc * ph
    if width < mw or height < mh or width % mw or height % mh:
        near = f"{max(mw, round(width / mw) * mw)}x{max(mh, round(height / mh) * mh)}"
        raise ConfigError(f"--size {width}x{height}: width must be a multiple of {mw} and height of {mh} (VAE "
                          f"x{sc} times patch {pw}x{ph}); nearest {near}")
    if dit.in_channels != vae.latent_channels:
        raise ConfigError(f"the DiT takes {dit.in_channels} latent channels, the VAE makes {vae.latent_channels}")
    return (1, dit.in_channels, lt, height // sc, width // sc)


@dataclass(frozen=True)
class SampleSettings:
    """The samples a training phase writes at its end (`samples:` in the trainer settings).

    `count` videos (0 = none) of `frames` x `size` ('WxH'; both default to the bucket of the phase's
    evaluation batch, i.e. what the phase trains on) in `steps` Euler steps with guidance `cfg` and `shift`
    (None: the report's, 17 below 20 steps). `prompts` default to the phase tier's own training prompts
    (caption synthesis, or the tag fallback); sample i uses seed `seed + i`. `fps` of the mp4.
    """

    count: int = 2
    steps: int = 10
    frames: int | None = None
    size: str | None = None
    prompts: tuple[str, ...] = ()
    cfg: float = 6.0
    shift: float | None = None
    seed: int = 0
    fps: float = 24.0

    def __post_init__(self) -> None:
        if self.count < 0 or self.steps < 1:
            raise ConfigError(f"train samples: count must be >= 0 and steps >= 1, got {self.count}, {self.steps}")
        if self.size is not None:
            parse_size(self.size)
        if self.fps <= 0:
            raise ConfigError(f"train samples: fps must be > 0, got {self.fps}")

    def check(self, vae: VAEConfig, dit: DiTConfig) -> None:
        """A clear error now, not at a phase's end, when the configured frames or size cannot be sampled."""
        if self.count and (self.frames is not None or self.size is not None):
            width, height = parse_size(self.size) if self.size else (dit.patch_size[2] * vae.spatial_compression,
                                                                     dit.patch_size[1] * vae.spatial_compression)
            try:
                latent_shape(self.frames or 1, width, height, vae, dit)
            except ConfigError as exc:
                raise ConfigError(f"train samples: {exc}") from exc

    @classmethod
    def from_mapping(cls, doc: dict | SampleSettings | None) -> SampleSettings:
        if isinstance(doc, SampleSettings):
            return doc
        doc = dict(doc or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"train samples: unknown key(s) {unknown}; known: {sorted(known)}")
        if isinstance(doc.get("prompts"), str):
            doc["prompts"] = [doc["prompts"]]
        doc["prompts"] = tuple(str(p) for p in doc.get("prompts") or ())
        if isinstance(doc.get("size"), (list, tuple)):
            w, h = parse_size(doc["size"])
            doc["size"] = f"{w}x{h}"
        try:
            return cls(**doc)
        except TypeError as exc:
            raise ConfigError(f"train samples: {exc}") from exc


# ---- the sampler --------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One generated video: RGB uint8 frames [T, H, W, 3], its latents, and where the time went."""

    frames: np.ndarray
    latents: torch.Tensor
    steps: int
    sampling_seconds: float
    decode_seconds: float

    @property
    def seconds_per_step(self) -> float:
        return self.sampling_seconds / self.steps


def to_frames(video: torch.Tensor) -> np.ndarray:
    """A decoded video [1, 3, T, H, W] in [-1, 1] -> RGB uint8 frames [T, H, W, 3]."""
    pixels = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).contiguous().cpu().numpy()


class VideoSampler:
    """A DiT, its VAE and its text encoder, ready to turn prompts into videos (no weights change)."""

    def __init__(self, dit: nn.Module, vae: nn.Module, text: nn.Module, device: torch.device | str = "cpu",
                 bf16: bool = False, tile: TileConfig | None = DEFAULT_TILE) -> None:
        self.dit, self.vae, self.text = dit, vae, text
        self.device = torch.device(device)
        self.bf16 = bf16 and self.device.type == "cuda"
        self.tile = tile
        self.flow = FlowMatching()

    def shape(self, frames: int, width: int, height: int) -> tuple[int, ...]:
        return latent_shape(frames, width, height, self.vae.config, self.dit.config)

    @torch.no_grad()
    def conditions(self, prompt: str, negative_prompt: str | None = None) -> tuple[TextCondition, TextCondition]:
        """The prompt's condition and the unconditional one: the encoded negative prompt, or the null condition
        the trainer's text dropout trains the unconditional velocity on."""
        cond = self.text.encode([prompt]).to(self.device, torch.float32)
        if negative_prompt is None:
            return cond, cond.null()
        return cond, self.text.encode([negative_prompt]).to(self.device, torch.float32)

    def _velocity(self, x: torch.Tensor, t: torch.Tensor, cond: TextCondition, guidance) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.dit(x, t, cond, guidance).float()

    @torch.no_grad()
    def latents(self, prompt: str, frames: int, width: int, height: int, *, negative_prompt: str | None = None,
                steps: int = 50, cfg: float = 6.0, shift: float | None = None, seed: int = 0,
                embedded_guidance: float | None = None) -> torch.Tensor:
        """Euler flow sampling from the noise of `seed` (the same seed gives the same latents bit for bit on
        one device); `cfg` 1 runs the conditional pass only."""
        if steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {steps}")
        if getattr(self.dit.config, "guidance_embed", False) and embedded_guidance is None:
            raise ConfigError("this DiT is guidance-distilled (guidance_embed): pass --embedded-guidance (e.g. 6.0)")
        shape = self.shape(frames, width, height)
        cond, uncond = self.conditions(prompt, negative_prompt)
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        was_training = self.dit.training
        self.dit.eval()
        try:
            return self.flow.sample(self._velocity, shape, cond, steps=steps, guidance_scale=cfg, uncond=uncond,
                                    shift=shift, generator=generator, device=self.device,
                                    embedded_guidance=embedded_guidance)
        finally:
            self.dit.train(was_training)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            video = self.vae.from_latents(latents.to(self.device), tile=self.tile)
        return to_frames(video)

    def generate(self, prompt: str, frames: int, width: int, height: int, **options) -> Sample:
        """Latents (see `latents` for the options), decoded to RGB frames."""
        self.shape(frames, width, height)  # a bad shape fails before the text encoder runs
        t0 = time.perf_counter()
        z = self.latents(prompt, frames, width, height, **options)
        t1 = time.perf_counter()
        pixels = self.decode(z)
        return Sample(pixels, z, int(options.get("steps", 50)), t1 - t0, time.perf_counter() - t1)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 24.0, crf: int = 18) -> Path:
    """RGB uint8 frames [T, H, W, 3] (even sides) -> an H.264 yuv420p mp4 (PyAV)."""
    from curation.synth import write_video

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"H.264 yuv420p needs even sides, got {frames.shape[2]}x{frames.shape[1]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, iter(frames), fps=fps, crf=crf)
    return path


# ---- loading a checkpoint -----------------------------------------------------------------------------


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The weights folder `--ckpt` names: a checkpoint or phase export folder, `checkpoints/latest`, or a run
    folder (its latest checkpoint)."""
    p = Path(path)
    hint = ("--ckpt takes OUT/checkpoints/step-N, OUT/checkpoints/latest, a phase export OUT/<phase>/ or a run "
            "folder OUT of `videocurate train`")
    if not p.exists():
        raise ConfigError(f"--ckpt {str(p)!r}: no such file or folder; {hint}")
    if p.is_file() and p.name == ckpt.LATEST:
        p = p.parent / p.read_text().strip()
    elif p.is_dir() and not (p / "config.json").is_file() and (p / ckpt.CHECKPOINTS).is_dir():
        latest = ckpt.latest_checkpoint(p)
        if latest is None:
            raise ConfigError(f"--ckpt {str(p)!r}: the run folder has no complete checkpoint yet; {hint}")
        p = latest
    if not p.is_dir() or not (p / "config.json").is_file() or not (p / "model.safetensors").is_file():
        raise ConfigError(f"--ckpt {str(path)!r} is not a trainer checkpoint (no config.json + model.safetensors "
                          f"in {str(p)!r}); {hint}")
    return p


def _run_file(folder: Path) -> dict:
    """The run.json of the run a checkpoint (OUT/checkpoints/step-N) or phase export (OUT/<phase>) belongs to."""
    for parent in (folder.parent, folder.parent.parent):
        if (parent / "run.json").is_file():
            return json.loads((parent / "run.json").read_text())
    return {}


def _vae_config(doc: dict | None, model: str | None) -> VAEConfig:
    if doc:
        from training.vae_export import vae_config_from

        return vae_config_from(doc)
    from training.config import get_preset

    if not model:
        raise ConfigError("the checkpoint names neither its VAE config nor its model preset")
    return get_preset(model).vae


@dataclass
class CheckpointSpec:
    """What a sampler needs from a checkpoint folder, in words (see `checkpoint_spec`)."""

    folder: Path
    config: dict
    vae: str
    vae_config: VAEConfig
    text_encoder: str | dict
    ema: bool


def checkpoint_spec(path: str | os.PathLike, vae: str | None = None, ema: bool = True) -> CheckpointSpec:
    """The checkpoint's weights folder, its config, and the VAE (`vae` wins over the checkpoint's and the
    run's) and text encoder it was trained with."""
    folder = resolve_checkpoint(path)
    config = json.loads((folder / "config.json").read_text())
    if "dit_config" not in config:
        raise ConfigError(f"--ckpt {str(folder)!r}: config.json has no dit_config (not a trainer checkpoint)")
    run = _run_file(folder)
    vae_path = vae or config.get("vae") or run.get("vae")
    if not vae_path:
        raise ConfigError(f"--ckpt {str(folder)!r} does not say which VAE it was trained with: pass --vae PATH")
    if vae_path != "random" and not os.path.exists(vae_path):
        raise ConfigError(f"the VAE {vae_path!r} (from {'--vae' if vae else 'the checkpoint'}) does not exist: "
                          "pass --vae PATH")
    text = config.get("text_encoder") or run.get("text_encoder") or "minilm"
    return CheckpointSpec(folder, config, str(vae_path), _vae_config(config.get("vae_config"), config.get("model")),
                          text, ema and (folder / "ema.safetensors").is_file())


def load_sampler(spec: CheckpointSpec, device: str = "auto", tile: TileConfig | None = DEFAULT_TILE,
                 log: Callable[[str], None] = print) -> VideoSampler:
    """A VideoSampler of a checkpoint: its DiT (EMA weights when `spec.ema`), VAE and text encoder."""
    from training.curriculum import load_vae
    from training.text_encoder import build_text_encoder

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    dit = ckpt.load_dit(spec.folder, ema=spec.ema, device=dev)
    if spec.vae == "random":
        log("warning: the run used --vae random: the VAE is untrained and the frames are noise")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(spec.config.get("seed", 0)))
            vae_model = load_vae(spec.vae_config, "random")
    else:
        vae_model = load_vae(spec.vae_config, spec.vae)
    text = build_text_encoder(spec.text_encoder, dit.config.text_dim)
    if getattr(text, "dim", dit.config.text_dim) != dit.config.text_dim:
        raise ConfigError(f"text encoder {spec.text_encoder!r} gives {text.dim}-wide states, the DiT takes "
                          f"{dit.config.text_dim}")
    return VideoSampler(dit, vae_model.to(dev), text.to(dev), dev, bf16=dev.type == "cuda", tile=tile)


# ---- the per-phase samples of a training run ----------------------------------------------------------


def phase_prompts(settings: SampleSettings, refs: Sequence, seed: int) -> list[str]:
    """`settings.count` prompts: the configured ones (cycled), else the training prompts of evenly spaced
    clips of the phase's tier."""
    from training.data import training_prompt

    n = settings.count
    if settings.prompts:
        return [settings.prompts[i % len(settings.prompts)] for i in range(n)]
    if not refs:
        raise ConfigError("train samples: no prompts configured and the tier has no clips to take them from")
    return [training_prompt(refs[(i * len(refs)) // n], seed + i) for i in range(n)]


def write_phase_samples(folder: str | os.PathLike, sampler: VideoSampler, settings: SampleSettings,
                        prompts: Sequence[str], frames: int, width: int, height: int, info: dict) -> dict:
    """`folder/<i>.mp4` for each prompt and `folder/samples.json` (prompts, seeds, steps, guidance, shape and
    `info`, e.g. phase and step). Returns the JSON document."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = settings.frames or frames
    if settings.size:
        width, height = parse_size(settings.size)
    sampler.shape(frames, width, height)
    rows, per_step = [], []
    for i, prompt in enumerate(prompts):
        sample = sampler.generate(prompt, frames, width, height, steps=settings.steps, cfg=settings.cfg,
                                  shift=settings.shift, seed=settings.seed + i)
        write_mp4(folder / f"{i}.mp4", sample.frames, settings.fps)
        per_step.append(sample.seconds_per_step)
        rows.append({"file": f"{i}.mp4", "prompt": prompt, "seed": settings.seed + i})
    doc = {**info, "steps": settings.steps, "cfg": settings.cfg,
           "shift": settings.shift if settings.shift is not None else default_sampling_shift(settings.steps),
           "frames": frames, "size": [width, height], "fps": settings.fps,
           "seconds_per_step": round(float(np.mean(per_step)), 5) if per_step else None, "samples": rows}
    ckpt.write_json(folder / "samples.json", doc)
    return doc


# ---- the CLI body ---------------------------------------------------------------------------------------


def cmd_sample(args) -> int:
    """`videocurate sample` (arguments: training.cli.register_sample)."""
    width, height = parse_size(args.size)
    spec = checkpoint_spec(args.ckpt, vae=args.vae, ema=not args.no_ema)
    tile = TileConfig(sample_size=args.tile_size) if args.tile_size else None
    sampler = load_sampler(spec, device=args.device, tile=tile)
    sample = sampler.generate(args.prompt, args.frames, width, height, negative_prompt=args.negative_prompt,
                              steps=args.steps, cfg=args.cfg, shift=args.shift, seed=args.seed,
                              embedded_guidance=args.embedded_guidance)
    out = write_mp4(args.output, sample.frames, args.fps)
    weights = "EMA" if spec.ema else "raw"
    print(f"wrote {out}: {args.frames} frames {width}x{height}, {args.steps} steps (cfg {args.cfg}, seed {args.seed}, "
          f"{weights} weights of {spec.folder}), {sample.seconds_per_step:.4f} s/step, "
          f"decode {sample.decode_seconds:.2f} s")
    return 0
