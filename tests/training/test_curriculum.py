"""The curriculum: phases run in order on one DiT, checkpoints load, bad settings are clear."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch
import yaml

from curation import synth
from curation.errors import ConfigError
from curation.lake import Lake
from training.checkpoint import latest_checkpoint, load_dit
from training.config import get_preset
from training.curriculum import load_curriculum, load_vae, train_curriculum
from training.dit import VideoDiT
from training.trainer import read_losses
from training.vae import CausalVAE


def test_bundled_plan_goes_from_low_to_high_resolution():
    plan = load_curriculum("curriculum")
    sizes = [s.buckets.base_size for s in plan.phases]
    assert sizes == sorted(sizes) and plan.phases[0].buckets.frame_counts == (1,)
    assert all(1 in s.buckets.frame_counts for s in plan.phases)  # images mixed in at every stage


def test_phases_train_in_order_and_checkpoint(tmp_path):
    truth = synth.make_video(tmp_path / "v.mp4", [synth.Shot("coffee", 24, pan=(1, 0))], size=(128, 72))
    lake = Lake(tmp_path / "lake")
    lake.append("tiers/low", pa.table({
        "clip_id": ["c"], "uri": [truth.path], "start_frame": [0], "end_frame": [24], "fps": [24.0],
        "width": pa.array([128], pa.int32()), "height": pa.array([72], pa.int32())}))
    spec = tmp_path / "curriculum.yaml"
    spec.write_text(yaml.safe_dump({"model": "tiny", "phases": [
        {"name": "images", "tier": "low", "steps": 3, "buckets": {"base_size": 32, "frame_counts": [1]}},
        {"name": "video", "tier": "low", "steps": 2, "buckets": {"base_size": 32, "frame_counts": [1, 17]}},
        {"name": "later", "tier": "missing", "steps": 2}]}))
    logs: list[str] = []
    out = tmp_path / "ckpt"
    config = {"text_encoder": "tiny", "loader_workers": 0, "ema_decay": 0.5}
    summary = train_curriculum(lake, load_curriculum(str(spec)), "random", str(out), log=logs.append, config=config)
    assert summary["images"]["steps"] == 3 and summary["video"]["steps"] == 2
    assert "no tier 'missing'" in summary["later"]["skipped"]
    assert any("bucket 17x" in line for line in logs)  # the video phase trained on 17-frame clips
    # each phase's weights: safetensors (raw and EMA) + config; the EMA differs from the raw weights
    folder = out / "video"
    assert summary["video"]["checkpoint"] == str(folder)
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "ema.safetensors", "config.json"}
    raw, ema = load_dit(folder, ema=False), load_dit(folder)
    assert isinstance(ema, VideoDiT) and not ema.training
    assert any(not torch.equal(a, b) for a, b in zip(raw.state_dict().values(), ema.state_dict().values()))
    assert summary["video"]["eval_loss_ema"] > 0 and summary["video"]["eval_loss"] > 0
    # the run folder: one loss line per step, the last checkpoint at the end of the last phase trained
    assert [(r["phase"], r["step"]) for r in read_losses(out)] == [("images", 1), ("images", 2), ("images", 3),
                                                                  ("video", 1), ("video", 2)]
    assert latest_checkpoint(out).name == "step-00000005"
    with pytest.raises(ConfigError, match="--resume"):  # never overwrites a run by accident
        train_curriculum(lake, load_curriculum(str(spec)), "random", str(out), log=logs.append, config=config)


def test_curriculum_train_section_is_checked(tmp_path):
    spec = tmp_path / "c.yaml"
    spec.write_text(yaml.safe_dump({"model": "tiny", "train": {"grad_acum": 2},
                                    "phases": [{"name": "a", "tier": "t", "steps": 1}]}))
    with pytest.raises(ConfigError, match="grad_acum"):
        load_curriculum(str(spec))
    spec.write_text(yaml.safe_dump({"model": "tiny", "train": {"grad_accum": 2, "ema_decay": 0.99},
                                    "phases": [{"name": "a", "tier": "t", "steps": 1}]}))
    assert load_curriculum(str(spec)).train == {"grad_accum": 2, "ema_decay": 0.99}


def test_vae_loads_from_a_state_dict_and_refuses_silence(tmp_path):
    cfg = get_preset("tiny").vae
    vae = CausalVAE(cfg)
    path = tmp_path / "vae.pt"
    torch.save(vae.state_dict(), path)
    loaded = load_vae(cfg, str(path))
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ConfigError, match="--vae"):
        load_vae(cfg, str(tmp_path / "missing.pt"))
