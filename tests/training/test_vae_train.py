"""`videocurate train-vae` for real: a tiny random-init CausalVAE trained on a tier of synthetic clips (real
photos panned and zoomed, H.264) learns (loss falls, held-out PSNR rises by dB), mixes images and videos
as configured, resumes after a SIGKILL with the same loss log bit for bit (adversarial term on), and its
export is what `videocurate train --vae OUT` loads, shape included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml
from safetensors.torch import load_file

from curation import synth
from curation.cli import main as cli_main
from curation.errors import ConfigError
from curation.lake import Lake
from curation.video import VideoReader
from tests.training.conftest import wait_for_checkpoint
from training.checkpoint import latest_checkpoint, load_checkpoint, save_weights
from training.config import get_preset
from training.curriculum import load_vae
from training.data import Bucket, BucketConfig, ClipRef, read_tier
from training.lpips import LPIPS
from training.trainer import read_losses
from training.vae import CausalVAE, TileConfig, VAEConfig
from training.vae_data import CropBatchSampler, CropConfig, CropDataset, CropKey, split_holdout
from training.vae_export import export_vae
from training.vae_train import (
    SCALING_KEY,
    VAETrainConfig,
    enable_gradient_checkpointing,
    eval_psnr,
    load_vae_train_config,
    train_vae,
    vae_train_config,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = {"model": "tiny", "size": 32, "frames": 5, "batch_size": 2, "lr": 1e-3, "warmup_steps": 0,
        "lpips_weight": 0.0, "eval_clips": 2, "eval_size": 64, "eval_frames": 5, "tile_sample_size": 32,
        "loader_workers": 0, "image_ratio": 0.25, "log_every": 100}
SILENT = {"log": lambda _msg: None}


TRAINED = {**TINY, "eval_every": 10, "batch_size": 4}  # the `trained` run (4 crops a step: a steadier curve)
# The tier's sources, H.264 lossless (crf 0): libx264's lossy encode of the very same RGB frames is not
# reproducible (PyAV 18.1 / FFmpeg 8.1.2: two to three different bitstreams in 150 encodes in one process,
# frames off by up to 7 levels), so a lossy fixture made each pytest run train on slightly other pixels, and
# 40 steps of a tiny VAE amplify that (held-out PSNR +4 dB on one bitstream, +2.3 on another). Lossless, the
# decoded frames are the renders' yuv420p whatever the encoder decides.
SOURCES = {"wide": ((96, 54), synth.Shot("coffee", 48, pan=(1, 0))),
           "square": ((64, 64), synth.Shot("chelsea", 48, zoom=1.01))}


def _source(path: Path, name: str) -> synth.Truth:
    size, shot = SOURCES[name]
    return synth.make_video(path, [shot], size=size, crf=0)


@pytest.fixture(scope="module")
def tier(tmp_path_factory) -> dict:
    """A tier `t` of 10 clips from two sources (96x54 pan over a photo, 64x64 zoom into another)."""
    root = tmp_path_factory.mktemp("vae")
    wide, square = _source(root / "wide.mp4", "wide"), _source(root / "square.mp4", "square")
    rows = [(f"w{i}", wide.path, 8 * i, 8 * i + 8, 96, 54) for i in range(6)]
    rows += [(f"s{i}", square.path, 12 * i, 12 * i + 12, 64, 64) for i in range(4)]
    Lake(root / "lake").append("tiers/t", pa.table({
        "clip_id": [r[0] for r in rows], "uri": [r[1] for r in rows], "start_frame": [r[2] for r in rows],
        "end_frame": [r[3] for r in rows], "fps": [24.0] * len(rows),
        "width": pa.array([r[4] for r in rows], pa.int32()), "height": pa.array([r[5] for r in rows], pa.int32())}))
    return {"root": root, "lake": str(root / "lake"), "wide": wide.path}


@pytest.fixture(scope="module")
def trained(tier) -> dict:
    """40 steps of the tiny config, evaluated every 10."""
    out = tier["root"] / "run40"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test single thread
    try:
        summary = train_vae(tier["lake"], "t", out, vae_train_config(TRAINED), max_steps=40, **SILENT)
    finally:
        torch.set_num_threads(threads)
    return {"out": out, "summary": summary, "rows": read_losses(out)}


def test_loss_falls_and_held_out_psnr_rises(trained):
    rows, summary = trained["rows"], trained["summary"]
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_psnr" in r]
    assert [r["step"] for r in steps] == list(range(1, 41))
    assert [r["step"] for r in evals] == [0, 10, 20, 30, 40]
    first, last = np.mean([r["l1"] for r in steps[:8]]), np.mean([r["l1"] for r in steps[-8:]])
    assert last < 0.65 * first, (first, last)
    psnr = [r["eval_psnr"] for r in evals]
    assert psnr[-1] > psnr[0] + 2.5, psnr  # dB on clips never trained on
    assert psnr[-1] > max(psnr[:2])
    assert all(len(r["eval_psnr_clips"]) == 2 for r in evals)
    assert summary["last_psnr"] == psnr[-1] and summary["steps"] == 40
    assert all(r["kl"] > 0 and "perceptual" not in r and "adversarial" not in r for r in steps)
    assert (trained["out"] / "vae" / "model.safetensors").is_file()


def test_export_fits_the_latent_scale(tier, trained):
    """The exported scaling_factor makes the latents of training crops unit-variance (the DiT's input scale)."""
    vae = load_vae(get_preset("tiny").vae, str(trained["out"]))
    assert vae.config.scaling_factor != get_preset("tiny").vae.scaling_factor
    train_refs, _ = split_holdout(read_tier(tier["lake"], "t", BucketConfig()), TINY["eval_clips"], 0)
    crops = CropDataset(train_refs)
    sampler = CropBatchSampler(train_refs, vae_train_config(TRAINED).crops(), 0)
    batches = [torch.stack([crops[k]["video"] for k in sampler.draw(SCALING_KEY + i)]) for i in range(8)]
    latents = torch.cat([vae.to_latents(b).flatten() for b in batches])
    assert abs(float(latents.std()) - 1.0) < 1e-3


def test_the_tier_sources_decode_to_the_same_pixels_every_time(tmp_path):
    """The fixture's videos are a function of their renders: 8 encodes of one source decode to equal frames
    (the lossy libx264 encode did not: a few bitstreams, frames up to 7 levels apart)."""
    first = None
    for k in range(8):
        frames = VideoReader(_source(tmp_path / f"wide{k}.mp4", "wide").path).read(range(48))
        if first is None:
            first = frames
        assert frames.shape == (48, 54, 96, 3) and np.array_equal(frames, first), k


def test_images_and_videos_both_train(trained):
    frames = Counter(r["frames"] for r in trained["rows"] if "loss" in r)
    assert set(frames) == {1, 5} and frames[1] >= 3 and frames[5] >= 20, frames
    assert trained["summary"]["image_batches"] == frames[1] and trained["summary"]["video_batches"] == frames[5]


def _refs(n: int = 6) -> list[ClipRef]:
    return [ClipRef(f"c{i}", "", 10 * i, 10 * i + (3 if i == 0 else 40), (0, 0, 64, 48)) for i in range(n)]


def test_sampler_mixes_at_the_image_ratio_and_stays_inside_clips():
    refs = _refs()
    sampler = CropBatchSampler(refs, CropConfig(size=32, frames=9, image_ratio=0.2, max_frame_interval=8,
                                                batch_size=3), seed=5)
    batches = [sampler.draw(b) for b in range(2000)]
    kinds = Counter(keys[0].bucket.frames for keys in batches)
    assert set(kinds) == {1, 9} and abs(kinds[1] / 2000 - 0.2) < 0.03, kinds
    intervals = Counter()
    for keys in batches:
        assert len(keys) == 3 and len({k.bucket for k in keys}) == 1
        for k in keys:
            ref = refs[k.index]
            assert ref.start <= k.start and k.start + (k.bucket.frames - 1) * k.interval < ref.end
            if k.bucket.frames == 9:
                assert k.index != 0  # the 3-frame clip is too short for a video crop: images only
                intervals[k.interval] += 1
    assert set(intervals) == set(range(1, 5))  # 40-frame clips: intervals 1 .. (40 - 1) // 8
    assert sampler.draw(17) == CropBatchSampler(refs, sampler.cfg, seed=5).draw(17)  # seeded, stateless
    assert sampler.draw(17) != CropBatchSampler(refs, sampler.cfg, seed=6).draw(17)
    sampler.set_position(11)
    assert next(iter(sampler)) == sampler.draw(11)
    with pytest.raises(ConfigError, match="holds 9 frames"):
        CropBatchSampler(refs[:1], sampler.cfg)
    assert CropBatchSampler(refs[:1], CropConfig(frames=9, image_ratio=1.0)).draw(0)[0].bucket.frames == 1


def test_holdout_is_fixed_seeded_and_disjoint():
    refs = _refs(10)
    train, held = split_holdout(refs, 3, seed=1)
    assert len(held) == 3 and len(train) == 7 and not {r.clip_id for r in train} & {r.clip_id for r in held}
    assert [r.clip_id for r in split_holdout(refs, 3, seed=1)[1]] == [r.clip_id for r in held]
    assert any([r.clip_id for r in split_holdout(refs, 3, seed=s)[1]] != [r.clip_id for r in held]
               for s in range(2, 6))
    with pytest.raises(ConfigError, match="eval_clips"):
        split_holdout(refs, 10, seed=1)


def test_crops_are_the_source_pixels(tier):
    """A decoded crop is exactly the source frames' window at the drawn place, frame interval included; a crop
    larger than the clip's picture scales the picture up first."""
    ref = ClipRef("w", tier["wide"], 0, 48, (0, 0, 96, 54))
    ds = CropDataset([ref])
    key = CropKey(0, Bucket(5, 32, 32), 3, 2, 0.5, 1.0, 0, 0)
    video = ds[key]["video"]
    assert video.shape == (3, 5, 32, 32)
    source = VideoReader(tier["wide"]).read([3, 5, 7, 9, 11])
    top, left = int(0.5 * (54 - 32 + 1)), 96 - 32
    expected = torch.from_numpy(np.stack(source)[:, top:top + 32, left:left + 32]).permute(3, 0, 1, 2)
    assert torch.equal(((video + 1) * 127.5).round().to(torch.uint8), expected)
    big = ds[key._replace(bucket=Bucket(1, 64, 64), u_x=0.0)]["video"]
    assert big.shape == (3, 1, 64, 64)  # 96x54 scaled to 114x64 first


def test_eval_uses_the_tiled_decode_above_the_tile():
    vae = CausalVAE(get_preset("tiny").vae)
    seen = []
    decode = vae._decode
    vae._decode = lambda z: seen.append(tuple(z.shape[-2:])) or decode(z)
    video = torch.rand(1, 3, 5, 64, 64) * 2 - 1
    tiled = eval_psnr(vae, [video], TileConfig(32, 0.25), torch.device("cpu"))
    assert len(seen) == 9 and max(max(s) for s in seen) == 4  # 64 px frames, 32 px tiles: 3x3 latent tiles
    seen.clear()
    whole = eval_psnr(vae, [video], TileConfig(64, 0.25), torch.device("cpu"))
    assert seen == [(8, 8)] and tiled[0] != whole[0]


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        vae = CausalVAE(get_preset("tiny").vae)
        if checkpointing:
            enable_gradient_checkpointing(vae)
        x = torch.rand(2, 3, 5, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
        recon, posterior = vae(x, generator=torch.Generator().manual_seed(2))
        ((recon - x).abs().mean() + posterior.kl().mean() * 1e-6).backward()
        return {k: p.grad for k, p in vae.named_parameters()}

    plain, recomputed = grads(False), grads(True)
    assert plain.keys() == recomputed.keys()
    assert max(float((plain[k] - recomputed[k]).abs().max()) for k in plain) < 1e-6


def test_lpips_term_from_a_local_checkpoint(tier, tmp_path):
    lpips = tmp_path / "lpips.pth"
    state = LPIPS().state_dict()  # random init in the real LPIPS layout, with its non-negative linear heads
    torch.save({k: v.abs() if k.startswith("lin") else v for k, v in state.items()}, lpips)
    cfg = vae_train_config(TINY, lpips_weight=0.1, lpips_path=str(lpips), eval_clips=0)
    train_vae(tier["lake"], "t", tmp_path / "run", cfg, max_steps=2, **SILENT)
    rows = read_losses(tmp_path / "run")
    assert len(rows) == 2 and all(r["perceptual"] > 0 for r in rows)
    assert all(abs(r["loss"] - (r["l1"] + r["kl"] + r["perceptual"])) < 1e-5 for r in rows)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(OMP_NUM_THREADS="1", RUST_LOG="error", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def test_sigkill_then_resume_repeats_the_loss_log(tier, tmp_path):
    """A CLI run (2 decode workers, adversarial term from step 3) SIGKILLed once its 3rd checkpoint exists,
    then resumed: the loss log (train and eval rows) equals an uninterrupted in-process run's exactly."""
    settings = {**TINY, "eval_every": 2, "checkpoint_every": 1, "keep_checkpoints": 3, "adversarial_weight": 0.05,
                "disc_start": 3}
    steps = 8
    ref_out = tmp_path / "ref"
    train_vae(tier["lake"], "t", ref_out, vae_train_config(settings), max_steps=steps, **SILENT)
    ref = read_losses(ref_out)
    assert all(("adversarial" in r) == (r["step"] > 3) for r in ref if "loss" in r)
    assert all(r["disc_loss"] > 0 for r in ref if "adversarial" in r)

    spec = tmp_path / "vae.yaml"
    spec.write_text(yaml.safe_dump({**settings, "loader_workers": 2}))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "curation.cli", "train-vae", "--lake", tier["lake"], "--tier", "t", "--config",
           str(spec), "--out", str(out), "--max-steps", str(steps), "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    latest = out / "checkpoints" / "latest"
    try:
        wait_for_checkpoint(proc, out)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    killed_at = int(latest.read_text().split("-")[1])
    assert 3 <= killed_at < steps and not (out / "vae").exists()
    with pytest.raises(ConfigError, match="--resume"):
        train_vae(tier["lake"], "t", out, load_vae_train_config(str(spec)), max_steps=steps, **SILENT)
    done = subprocess.run([*cmd, "--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming" in done.stdout
    assert read_losses(out) == ref  # bit for bit, every field
    final = load_checkpoint(latest_checkpoint(out))
    assert set(final["trainer"]) >= {"optimizer", "scheduler", "step", "discriminator", "disc_optimizer"}
    reference = load_file(str(ref_out / "vae" / "model.safetensors"))
    assert all(torch.equal(reference[k], v) for k, v in load_file(str(out / "vae" / "model.safetensors")).items())


def test_train_loads_the_trained_vae_with_its_shape(tier, tmp_path):
    """A VAE of a non-default shape (wider blocks, no mid attention) trained by train-vae loads from the run
    folder, its export folder, its safetensors file and a checkpoint, with equal weights; `videocurate train
    --vae OUT` trains the DiT on it."""
    out = tmp_path / "vae"
    cfg = vae_train_config(TINY, vae={"block_out_channels": [8, 16, 32, 32], "mid_attention": False},
                           eval_clips=0)
    train_vae(tier["lake"], "t", out, cfg, max_steps=3, **SILENT)
    exported = load_file(str(out / "vae" / "model.safetensors"))
    preset = get_preset("tiny").vae
    for path in (out, out / "vae", out / "vae" / "model.safetensors", latest_checkpoint(out)):
        vae = load_vae(preset, str(path))
        assert vae.config.block_out_channels == (8, 16, 32, 32) and not vae.config.mid_attention
        assert all(torch.equal(exported[k], v) for k, v in vae.state_dict().items()), path
        assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    with pytest.raises(RuntimeError):  # the preset's shape would not hold these weights
        CausalVAE(preset).load_state_dict(exported)

    spec = tmp_path / "curriculum.yaml"
    spec.write_text(yaml.safe_dump({"model": "tiny", "train": {"text_encoder": "tiny", "loader_workers": 0},
                                    "phases": [{"name": "images", "tier": "t", "steps": 2,
                                                "buckets": {"base_size": 32, "frame_counts": [1, 5]}}]}))
    dit_out = tmp_path / "dit"
    assert cli_main(["train", "--lake", tier["lake"], "--vae", str(out), "--curriculum", str(spec), "--out",
                     str(dit_out), "--device", "cpu"]) == 0
    assert [r["step"] for r in read_losses(dit_out)] == [1, 2]


def test_bad_input_is_a_clear_error(tier, tmp_path, capsys):
    cfg = vae_train_config(TINY)
    with pytest.raises(ConfigError, match="no tier 'nope'"):
        train_vae(tier["lake"], "nope", tmp_path / "a", cfg, **SILENT)
    assert cli_main(["train-vae", "--lake", tier["lake"], "--tier", "nope", "--out", str(tmp_path / "b")]) == 2
    assert "no tier 'nope'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="lpips_path"):
        train_vae(tier["lake"], "t", tmp_path / "c", vae_train_config(TINY, lpips_weight=0.1), **SILENT)
    with pytest.raises(ConfigError, match="frame count 6"):
        train_vae(tier["lake"], "t", tmp_path / "d", vae_train_config(TINY, frames=6), **SILENT)
    run = tmp_path / "once"
    train_vae(tier["lake"], "t", run, vae_train_config(TINY, eval_clips=0, scaling_batches=0), max_steps=1, **SILENT)
    with pytest.raises(ConfigError, match=r"other settings \(\['lr'\]\)"):
        train_vae(tier["lake"], "t", run, vae_train_config(TINY, eval_clips=0, scaling_batches=0, lr=0.1),
                  resume=True, max_steps=2, **SILENT)
    with pytest.raises(ConfigError, match="unknown key.*batchsize"):
        vae_train_config({"batchsize": 2})
    with pytest.raises(ConfigError, match="unknown key.*blocks"):
        VAETrainConfig(vae={"blocks": 3}).vae_config()
    with pytest.raises(ConfigError, match="image_ratio"):
        vae_train_config(image_ratio=1.5)

    preset = get_preset("tiny").vae
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not weights at all")
    for bad in (garbage, tmp_path / "missing", tmp_path):
        with pytest.raises(ConfigError, match="--vae"):
            load_vae(preset, str(bad))
    text = tmp_path / "vae.pt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match="not a VAE weights file"):
        load_vae(preset, str(text))
    wrong = tmp_path / "wrong.pt"
    torch.save(CausalVAE(get_preset("small").vae).state_dict(), wrong)
    with pytest.raises(ConfigError, match="do not fit"):
        load_vae(preset, str(wrong))
    dit_folder = tmp_path / "dit_phase"
    save_weights(dit_folder, {"w": torch.zeros(1)}, None, {"dit_config": {}, "vae_config": {}})
    with pytest.raises(ConfigError, match="DiT weights"):
        load_vae(preset, str(dit_folder))
    narrow = VAEConfig(latent_channels=8, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4)
    export_vae(tmp_path / "narrow", CausalVAE(narrow))
    with pytest.raises(ConfigError, match="8 latent channels"):
        load_vae(preset, str(tmp_path / "narrow"))
