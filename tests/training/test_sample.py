"""Sampling: the Euler sampler integrates known velocity fields exactly (the project's t = 0 noise → t = 1
data convention and shift), guidance follows v_u + g (v_c - v_u), seeds reproduce bit for bit, the mp4
reads back with PyAV, a tiny curriculum run writes per-phase samples that `videocurate sample` reproduces
from the phase export, and bad frames, sizes and checkpoints are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml
from torch import nn

from curation import synth
from curation.cli import main
from curation.errors import ConfigError
from curation.lake import Lake
from training.checkpoint import latest_checkpoint
from training.config import get_preset
from training.curriculum import load_curriculum, train_curriculum
from training.dit import VideoDiT
from training.flow import FlowMatching
from training.sample import (
    SampleSettings,
    VideoSampler,
    checkpoint_spec,
    latent_shape,
    parse_size,
    resolve_checkpoint,
    to_frames,
    write_mp4,
)
from training.text_encoder import build_text_encoder
from training.trainer import trainer_config
from training.vae import CausalVAE, TileConfig

PRESET = get_preset("tiny")
SHAPE = (1, 16, 2, 2, 2)  # the latent of 5 frames x 16 x 16 pixels (VAE 4x in time, 8x in space)


def _noise(seed: int) -> torch.Tensor:
    """The noise the sampler starts from for `seed` (x at t = 0)."""
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


class ToyField(nn.Module):
    """A velocity model of known behaviour, with the tiny DiT's config (the sampler reads shapes from it)."""

    def __init__(self, velocity):
        super().__init__()
        self.config = PRESET.dit
        self.velocity = velocity
        self.calls = 0

    def forward(self, x, t, cond, guidance):
        self.calls += 1
        return self.velocity(x, t, cond)


def _sampler(model: nn.Module) -> VideoSampler:
    return VideoSampler(model, CausalVAE(PRESET.vae).eval(), build_text_encoder("tiny", 32), "cpu")


def _real_dit() -> VideoDiT:
    """A tiny random-init DiT whose adaLN-Zero gates are opened (at init it predicts exactly 0)."""
    torch.manual_seed(0)
    dit = VideoDiT(PRESET.dit).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return dit


def test_euler_integrates_the_straight_path_to_a_known_target():
    target = torch.linspace(-2, 2, int(np.prod(SHAPE))).reshape(SHAPE)
    x0 = _noise(11)
    constant = ToyField(lambda x, t, cond: (target - x0).expand_as(x))  # dx/dt of x_t = (1 - t) x0 + t target
    out = _sampler(constant).latents("a cat", 5, 16, 16, steps=7, cfg=1.0, seed=11)
    assert constant.calls == 7 and torch.allclose(out, target, atol=1e-5)
    # the same path's velocity read off the current point, (target - x_t) / (1 - t): exact for Euler, and only
    # with the project's convention (t = 0 noise, increasing to 1 = data); the schedule is the shifted one
    seen: list[float] = []

    def toward(x, t, cond):
        seen.append(float(t[0]))
        return (target - x) / (1 - t).reshape(-1, 1, 1, 1, 1)

    out = _sampler(ToyField(toward)).latents("a cat", 5, 16, 16, steps=5, cfg=1.0, shift=7.0, seed=3)
    assert torch.allclose(out, target, atol=1e-5)
    assert np.allclose(seen, FlowMatching.timesteps(5, 7.0)[:-1].tolist()) and seen[0] == 0.0 and seen[1] < 0.05


def test_guidance_formula_and_scale_one_is_conditional_only():
    # v = the pooled text vector's mean: the null condition (what text dropout trains) has pooled = 0
    field = ToyField(lambda x, t, cond: cond.pooled.mean(1).reshape(-1, 1, 1, 1, 1).expand_as(x) + 0.5)
    sampler = _sampler(field)
    x0 = _noise(5)
    text = sampler.text
    v_c = float(text.encode(["a red boat"]).pooled.mean()) + 0.5
    v_neg = float(text.encode(["blurry"]).pooled.mean()) + 0.5
    for g in (1.0, 3.5):  # the velocity is constant in t, so the result is x0 + v
        out = sampler.latents("a red boat", 5, 16, 16, steps=4, cfg=g, seed=5)
        assert torch.allclose(out, x0 + 0.5 + g * (v_c - 0.5), atol=1e-5)
        out = sampler.latents("a red boat", 5, 16, 16, steps=4, cfg=g, seed=5, negative_prompt="blurry")
        assert torch.allclose(out, x0 + v_neg + g * (v_c - v_neg), atol=1e-5)
    # a real tiny DiT: one Euler step from t = 0 is x0 + v_u + g (v_c - v_u) with the DiT's own velocities
    dit = _real_dit()
    sampler = _sampler(dit)
    cond, uncond = sampler.conditions("a red boat")
    t0 = torch.zeros(1)
    with torch.no_grad():
        vc, vu = dit(x0, t0, cond), dit(x0, t0, uncond)
    assert not torch.allclose(vc, vu, atol=1e-4)  # the text matters, so guidance is a real test
    out = sampler.latents("a red boat", 5, 16, 16, steps=1, cfg=4.0, seed=5)
    assert torch.allclose(out, x0 + vu + 4.0 * (vc - vu), atol=1e-5)
    # scale 1 is the conditional pass alone: the negative prompt then changes nothing
    one = sampler.latents("a red boat", 5, 16, 16, steps=3, seed=5, cfg=1.0)
    assert torch.equal(one, sampler.latents("a red boat", 5, 16, 16, steps=3, seed=5, cfg=1.0,
                                            negative_prompt="blurry"))
    assert torch.equal(one, FlowMatching().sample(dit, SHAPE, cond, steps=3,
                                                  generator=torch.Generator().manual_seed(5)))
    assert not torch.allclose(one, sampler.latents("a red boat", 5, 16, 16, steps=3, seed=5, cfg=6.0), atol=1e-3)


def test_seeds_reproduce_bit_for_bit_and_differ_between_seeds():
    sampler = _sampler(_real_dit())
    a = sampler.generate("a dog on a beach", 5, 32, 16, steps=3, cfg=6.0, seed=7)
    b = sampler.generate("a dog on a beach", 5, 32, 16, steps=3, cfg=6.0, seed=7)
    c = sampler.generate("a dog on a beach", 5, 32, 16, steps=3, cfg=6.0, seed=8)
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)
    assert not torch.equal(a.latents, c.latents)
    assert a.frames.shape == (5, 16, 32, 3) and a.frames.dtype == np.uint8
    assert a.latents.shape == (1, 16, 2, 2, 4) and a.seconds_per_step > 0


def test_tiled_decode_for_frames_larger_than_a_tile():
    sampler = _sampler(_real_dit())
    z = torch.randn(1, 16, 2, 6, 8, generator=torch.Generator().manual_seed(0))
    whole = sampler.decode(z)  # 48x64 pixels fit one default 256-pixel tile
    with torch.no_grad():
        assert np.array_equal(whole, to_frames(sampler.vae.from_latents(z)))
        sampler.tile = TileConfig(sample_size=32)  # now larger than a tile: decoded as 3x2 blended tiles
        tiled = sampler.decode(z)
        assert np.array_equal(tiled, to_frames(sampler.vae.from_latents(z, tile=TileConfig(sample_size=32))))
    assert tiled.shape == whole.shape == (5, 48, 64, 3) and not np.array_equal(tiled, whole)


def _read(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def test_mp4_reads_back_with_pyav(tmp_path):
    t, h, w = 9, 48, 80
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.stack([np.stack([(xx * 3 + 10 * i) % 256, yy * 5, np.full_like(xx, 128)], -1) for i in range(t)])
    frames = frames.astype(np.uint8)
    path = write_mp4(tmp_path / "sub" / "v.mp4", frames, fps=12.0)
    back = _read(path)
    assert back.shape == (t, h, w, 3)
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 6  # lossy, but the picture survives
    with av.open(str(path)) as container:
        assert float(container.streams.video[0].average_rate) == 12.0
    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "odd.mp4", frames[:, :47], fps=12.0)


def test_bad_frames_size_and_settings_are_clear_errors():
    assert latent_shape(17, 64, 32, PRESET.vae, PRESET.dit) == (1, 16, 5, 4, 8)
    with pytest.raises(ConfigError, match=r"1 \+ 4k.*nearest 17"):
        latent_shape(16, 64, 64, PRESET.vae, PRESET.dit)
    with pytest.raises(ConfigError, match="1 \\+ 4k"):
        latent_shape(0, 64, 64, PRESET.vae, PRESET.dit)
    with pytest.raises(ConfigError, match="multiple of 16.*nearest 96x64"):
        latent_shape(5, 100, 64, PRESET.vae, PRESET.dit)
    with pytest.raises(ConfigError, match="multiple of 16"):
        latent_shape(5, 8, 8, PRESET.vae, PRESET.dit)
    assert parse_size("320x176") == (320, 176) and parse_size([64, 32]) == (64, 32)
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_size("320*176")
    with pytest.raises(ConfigError, match="sizze"):
        trainer_config({"samples": {"sizze": "64x64"}})
    assert trainer_config({"samples": {"count": 0}}).samples == SampleSettings(count=0)
    assert trainer_config({"samples": {"size": [64, 32], "prompts": "a cat"}}).samples.prompts == ("a cat",)
    with pytest.raises(ConfigError, match="count"):
        SampleSettings(count=-1)


def test_bad_ckpt_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no such file"):
        resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a trainer checkpoint"):
        resolve_checkpoint(tmp_path / "empty")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        resolve_checkpoint(tmp_path / "run")
    rc = main(["sample", "--ckpt", str(tmp_path / "empty"), "--prompt", "x", "--frames", "5", "--size", "16x16",
               "-o", str(tmp_path / "x.mp4")])
    assert rc == 2 and "not a trainer checkpoint" in capsys.readouterr().err


# ---- a tiny curriculum run --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two phases of a tiny run with a (random-init, saved) VAE file; samples at each phase's end."""
    root = tmp_path_factory.mktemp("sample_run")
    video = synth.make_video(root / "v.mp4", [synth.Shot("coffee", 48, pan=(1, 0))], size=(64, 64))
    lake = Lake(root / "lake")
    lake.append("tiers/t", pa.table({
        "clip_id": [f"c{i}" for i in range(4)], "uri": [video.path] * 4, "start_frame": [8 * i for i in range(4)],
        "end_frame": [8 * i + 8 for i in range(4)], "fps": [24.0] * 4, "width": pa.array([64] * 4, pa.int32()),
        "height": pa.array([64] * 4, pa.int32()), "camera_motion": ["pan right", "pan right", "zoom in", "static"]}))
    torch.manual_seed(1)
    vae = root / "vae.pt"
    torch.save(CausalVAE(PRESET.vae).state_dict(), vae)
    train = {"text_encoder": "tiny", "loader_workers": 0, "ema_decay": 0.5, "warmup_steps": 1,
             "samples": {"count": 2, "steps": 3, "cfg": 4.0, "seed": 5}}
    buckets = {"base_size": 32, "max_batch": 2}
    spec = root / "curriculum.yaml"
    spec.write_text(yaml.safe_dump({"model": "tiny", "train": train, "phases": [
        {"name": "images", "tier": "t", "steps": 2, "buckets": {**buckets, "frame_counts": [1]}},
        {"name": "video", "tier": "t", "steps": 2, "buckets": {**buckets, "frame_counts": [5]}}]}))
    out = root / "out"
    train_curriculum(lake, load_curriculum(str(spec)), str(vae), str(out), log=lambda _: None)
    return {"root": root, "lake": lake, "spec": spec, "out": out, "vae": vae}


def test_each_phase_writes_samples_with_their_settings(run):
    for phase, frames in (("images", 1), ("video", 5)):
        folder = run["out"] / "samples" / phase
        doc = json.loads((folder / "samples.json").read_text())
        assert doc["phase"] == phase and doc["steps"] == 3 and doc["cfg"] == 4.0 and doc["weights"] == "ema"
        assert doc["shift"] == 17.0 and doc["frames"] == frames and doc["size"] == [32, 32]
        assert [s["seed"] for s in doc["samples"]] == [5, 6]
        # default prompts: the tier's own training prompts (no captions here: the camera-motion fallback)
        assert {s["prompt"] for s in doc["samples"]} <= {"a video clip, pan right", "a video clip, zoom in",
                                                          "a video clip, static"}
        assert [s["prompt"] for s in doc["samples"]] == ["a video clip, pan right", "a video clip, zoom in"]
        for s in doc["samples"]:
            assert _read(folder / s["file"]).shape == (frames, 32, 32, 3)


def test_cli_reproduces_the_phase_sample_from_the_export(run, tmp_path, capsys):
    export = run["out"] / "video"
    doc = json.loads((run["out"] / "samples" / "video" / "samples.json").read_text())
    first = doc["samples"][0]
    w, h = doc["size"]
    args = ["sample", "--ckpt", str(export), "--prompt", first["prompt"], "--frames", str(doc["frames"]),
            "--size", f"{w}x{h}", "--steps", str(doc["steps"]), "--cfg", str(doc["cfg"]), "--seed",
            str(first["seed"]), "--device", "cpu", "-o", str(tmp_path / "cli.mp4")]
    assert main(args) == 0
    assert "EMA weights" in capsys.readouterr().out
    trainer_frames = _read(run["out"] / "samples" / "video" / first["file"])
    cli_frames = _read(tmp_path / "cli.mp4")
    # the checkpoint carries the VAE file, its config and the text encoder: the same EMA sample bit for bit
    assert cli_frames.shape == (5, 32, 32, 3) and np.array_equal(cli_frames, trainer_frames)
    assert main(args[:-2] + ["--no-ema", "-o", str(tmp_path / "raw.mp4")]) == 0
    assert not np.array_equal(_read(tmp_path / "raw.mp4"), trainer_frames)
    # bad frames / size through the CLI
    for flag, value, message in (("--frames", "6", "1 + 4k"), ("--size", "40x32", "multiple of 16")):
        bad = list(args)
        bad[bad.index(flag) + 1] = value
        assert main(bad) == 2 and message in capsys.readouterr().err


def test_ckpt_forms_and_older_checkpoints(run, tmp_path):
    out = run["out"]
    latest = latest_checkpoint(out)
    assert resolve_checkpoint(out / "checkpoints" / "latest") == latest == resolve_checkpoint(out)
    spec = checkpoint_spec(latest)
    assert spec.vae == str(run["vae"]) and spec.text_encoder == "tiny" and spec.ema
    assert spec.vae_config == PRESET.vae and not checkpoint_spec(latest, ema=False).ema
    # a checkpoint from before samples existed (no vae / vae_config): the run's run.json names the VAE
    old = out / "old-phase"
    old.mkdir()
    config = json.loads((out / "video" / "config.json").read_text())
    for key in ("vae", "vae_config"):
        config.pop(key)
    (old / "config.json").write_text(json.dumps(config))
    (old / "model.safetensors").write_bytes((out / "video" / "model.safetensors").read_bytes())
    spec = checkpoint_spec(old)
    assert spec.vae == str(run["vae"]) and spec.vae_config == PRESET.vae and not spec.ema
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "config.json").write_text(json.dumps(config))
    (lone / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="pass --vae"):
        checkpoint_spec(lone)
    with pytest.raises(ConfigError, match="does not exist"):
        checkpoint_spec(lone, vae=str(tmp_path / "missing.pt"))


def test_samples_count_zero_writes_none(run, tmp_path):
    doc = yaml.safe_load(run["spec"].read_text())
    doc["train"]["samples"] = {"count": 0}
    doc["phases"] = doc["phases"][:1]
    doc["phases"][0]["steps"] = 1
    spec = tmp_path / "c.yaml"
    spec.write_text(yaml.safe_dump(doc))
    train_curriculum(run["lake"], load_curriculum(str(spec)), str(run["vae"]), str(tmp_path / "out"),
                     log=lambda _: None)
    assert (tmp_path / "out" / "images" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / "samples").exists()


def test_unsampleable_settings_fail_before_training(run, tmp_path):
    doc = yaml.safe_load(run["spec"].read_text())
    doc["train"]["samples"] = {"count": 1, "frames": 6}
    spec = tmp_path / "c.yaml"
    spec.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"train samples: --frames 6"):
        train_curriculum(run["lake"], load_curriculum(str(spec)), str(run["vae"]), str(tmp_path / "out"),
                         log=lambda _: None)
    assert not list((tmp_path / "out").glob("checkpoints/step-*"))  # not a step was trained
