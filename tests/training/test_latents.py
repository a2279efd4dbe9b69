"""The latent cache (`videocurate encode`, training.latents / training.encode), for real: the cached posteriors
equal the VAE's encode of the very clips the tier loader decodes; training from the cache never decodes video
nor runs the VAE encoder and follows the decode run's loss curve within float16 tolerance (posterior mean, and
z = mean + std·eps with per-sample keyed eps); a changed VAE or a re-materialised tier makes the cache stale
(not used, with the reason); a rerun encodes nothing; an encode SIGKILLed between commits resumes. Tiny
random-init models, 32-pixel buckets, videos made from real photos."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml

import training.data
from curation import synth
from curation.errors import ConfigError
from curation.lake import Lake
from training.config import get_preset
from training.curriculum import load_curriculum, load_vae, train_curriculum
from training.data import Bucket, SampleKey, TierDataset, decode_clip, make_loader, read_tier
from training.encode import encode_tier, tier_configs
from training.latents import CacheIndex, LatentDataset, cache_table, phase_dataset, state_dict_hash
from training.trainer import read_losses
from training.vae import CausalVAE

ROOT = Path(__file__).resolve().parents[2]
TRAIN = {"text_encoder": "tiny", "grad_accum": 2, "ema_decay": 0.9, "checkpoint_every": 4, "log_every": 1,
         "loader_workers": 0, "keep_checkpoints": 1, "warmup_steps": 2, "text_dropout": 0.25}
BUCKETS = {"base_size": 32, "max_batch": 2}
N_CLIPS = 10
# name, photo, size, clips, frames per clip, camera motion: two aspect buckets, clips of 8 and 12 frames
SOURCES = (("wide", "coffee", (128, 40), 6, 8, {"pan": (1, 0)}), ("square", "chelsea", (64, 64), 4, 12, {"zoom": 1.01}))


def _tier_table(rows: list[tuple], crop_of: dict[str, tuple[int, int, int, int]] | None = None) -> pa.Table:
    crop_of = crop_of or {}
    crops = [crop_of.get(r[0], (0, 0, r[4], r[5])) for r in rows]
    return pa.table({
        "clip_id": [r[0] for r in rows], "uri": [r[1] for r in rows], "start_frame": [r[2] for r in rows],
        "end_frame": [r[3] for r in rows], "fps": [24.0] * len(rows),
        "width": pa.array([r[4] for r in rows], pa.int32()), "height": pa.array([r[5] for r in rows], pa.int32()),
        **{f"crop_{n}": pa.array([c[i] for c in crops], pa.int32()) for i, n in enumerate(("x0", "y0", "x1", "y1"))},
        "camera_motion": ["pan right"] * 6 + ["zoom in"] * 4})


def _spec(path: Path, **train) -> Path:
    path.write_text(yaml.safe_dump({"model": "tiny", "train": {**TRAIN, **train}, "phases": [
        {"name": "images", "tier": "t", "steps": 3, "buckets": {**BUCKETS, "frame_counts": [1]}},
        {"name": "video", "tier": "t", "steps": 3, "buckets": {**BUCKETS, "frame_counts": [1, 5]}}]}))
    return path


def _save_vae(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(CausalVAE(get_preset("tiny").vae).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tier of 10 clips (two aspect buckets, 8 and 12 frames), two VAE files, a two-phase curriculum."""
    root = tmp_path_factory.mktemp("latents")
    rows = []
    for name, photo, size, clips, length, motion in SOURCES:
        path = synth.make_video(root / f"{name}.mp4", [synth.Shot(photo, 48, **motion)], size=size).path
        rows += [(f"{name[0]}{i}", path, length * i, length * (i + 1), *size) for i in range(clips)]
    Lake(root / "lake").append("tiers/t", _tier_table(rows))
    spec = _spec(root / "curriculum.yaml")
    return {"root": root, "lake": root / "lake", "rows": rows, "spec": spec, "plan": load_curriculum(str(spec)),
            "vae": _save_vae(root / "vae.pt", 1), "vae2": _save_vae(root / "vae2.pt", 2)}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", RUST_LOG="error",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _lake(world, tmp_path: Path) -> Lake:
    """A private copy of the fixture lake (tests change its tier and cache)."""
    shutil.copytree(world["lake"], tmp_path / "lake")
    return Lake(tmp_path / "lake")


def _vae(world, name: str = "vae") -> CausalVAE:
    return load_vae(get_preset("tiny").vae, str(world[name]))


def _encode(world, lake: Lake, name: str = "vae", **kw):
    kw.setdefault("workers", 0)
    return encode_tier(lake, "t", tier_configs(world["plan"], "t"), _vae(world, name), str(world[name]),
                       log=lambda _: None, **kw)


def _expected_items(world) -> set[tuple]:
    """(clip, frames, h, w) the two phases draw, from the loader's own bucket assignment."""
    lake = Lake(world["lake"])
    return {(r.clip_id, r.bucket.frames, r.bucket.height, r.bucket.width)
            for phase in world["plan"].phases for r in read_tier(lake, "t", phase.buckets)}


def test_cached_latents_equal_the_vae_encode_of_the_decoded_clip(world, tmp_path):
    lake = _lake(world, tmp_path)
    report = _encode(world, lake, workers=2, chunk=3)
    expected = _expected_items(world)
    assert len(expected) == 2 * N_CLIPS  # an image bucket and a 5-frame bucket per clip
    assert {(e[2], e[3]) for e in expected} == {(16, 64), (32, 32)}  # two aspects
    assert (report.needed, report.cached, report.encoded, report.removed) == (20, 0, 20, 0)
    table = lake.dataset(cache_table("t")).to_table().to_pylist()
    assert {(r["clip_id"], r["frames"], r["height"], r["width"]) for r in table} == expected
    meta = lake.meta(cache_table("t"), "videocurate.latents")
    assert meta["tier_version"] == lake.dataset("tiers/t").version
    assert meta["vae"] == state_dict_hash(torch.load(world["vae"], weights_only=True))

    vae = _vae(world)
    refs = {r.clip_id: r for r in read_tier(lake, "t", world["plan"].phases[0].buckets)}
    worst = 0.0
    for row in table:
        bucket = Bucket(row["frames"], row["height"], row["width"])
        assert row["shape"] == [16, 1 + (bucket.frames - 1) // 4, bucket.height // 8, bucket.width // 8]
        with torch.no_grad():
            posterior = vae.encode(decode_clip(refs[row["clip_id"]], bucket)[None])
        for name, want in (("mean", posterior.mean[0]), ("std", posterior.std[0])):
            got = np.frombuffer(row[name], np.float16).reshape(row["shape"]).astype(np.float32)
            want = want.numpy()
            assert np.abs(want).max() > 1e-2  # a real signal, not zeros
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
            worst = max(worst, float(np.abs(got - want).max()))
    assert worst > 0  # stored as float16: not bit-identical, within its precision

    # the latent dataset reads the same tensors in DataLoader worker processes as in this one
    ds = phase_dataset(lake.root, "t", list(refs.values()), 1, vae, log=lambda _: None)
    assert isinstance(ds, LatentDataset)
    with pytest.raises(ValueError, match="cached at bucket"):  # refs of the image phase: frames 1 only
        ds[SampleKey(0, Bucket(5, 16, 64), 0, 0, 0, 0, 1)]
    batches = [[SampleKey(i, r.bucket, 0, 0, b, 0, 1)] for b, (i, r) in enumerate(enumerate(refs.values()))]
    here = list(make_loader(ds, batches, workers=0))
    there = list(make_loader(ds, batches, workers=2, persistent_workers=False))
    assert len(here) == len(there) == N_CLIPS
    for a, b in zip(here, there):
        assert "videos" not in a and a["latent_mean"].dtype == torch.float16
        assert torch.equal(a["latent_mean"], b["latent_mean"]) and torch.equal(a["latent_std"], b["latent_std"])


def _train(world, lake: Lake, out: Path, spec: Path) -> tuple[list[dict], list[str]]:
    logs: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_curriculum(lake, load_curriculum(str(spec)), str(world["vae"]), str(out), log=logs.append)
    finally:
        torch.set_num_threads(threads)
    return read_losses(out), logs


@pytest.mark.parametrize("latent_sample", [False, True])
def test_training_from_the_cache_follows_training_from_decode(world, tmp_path, monkeypatch, latent_sample):
    spec = _spec(tmp_path / "spec.yaml", latent_sample=latent_sample)
    decoded, logs = _train(world, _lake(world, tmp_path / "a"), tmp_path / "decode", spec)
    assert sum("decoding video (no latent cache" in m for m in logs) == 2  # one line per phase
    if latent_sample:  # the reference for "the draw matters": the same run on the posterior mean
        mean_run, _ = _train(world, _lake(world, tmp_path / "c"), tmp_path / "mean", _spec(tmp_path / "m.yaml"))

    lake = _lake(world, tmp_path / "b")
    _encode(world, lake)
    calls = {"decode": 0, "vae": 0}

    def no_decode(*a, **k):
        calls["decode"] += 1
        raise AssertionError("decoded a clip although the latent cache is valid")

    def no_vae(*a, **k):
        calls["vae"] += 1
        raise AssertionError("ran the VAE encoder although the latent cache is valid")

    monkeypatch.setattr(training.data, "decode_clip", no_decode)
    monkeypatch.setattr(CausalVAE, "encode", no_vae)
    cached, logs = _train(world, lake, tmp_path / "cache", spec)
    assert calls == {"decode": 0, "vae": 0}
    assert sum("latents from the cache latents/t" in m for m in logs) == 2

    assert [(r["phase"], r["step"], r["bucket"], r["samples"]) for r in cached] == \
        [(r["phase"], r["step"], r["bucket"], r["samples"]) for r in decoded]
    assert len(cached) == 6
    diffs = [abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(cached, decoded)]
    print(f"latent_sample={latent_sample}: max relative loss difference cache vs decode {max(diffs):.2e}")
    assert max(diffs) < 5e-4
    if latent_sample:  # the draw matters (a random VAE's std is not small) and both paths draw the same eps
        moved = max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(mean_run, decoded))
        print(f"relative loss difference sampled vs mean latents {moved:.2e}")
        assert moved > 20 * max(diffs)


def test_two_ray_train_workers_train_from_the_cache(world, tmp_path):
    """2 Ray Train CPU workers (DDP over gloo, per-worker batch 1), each reading its shard from the cache, follow
    the in-process run from the cache at the same global batch (2)."""
    lake = _lake(world, tmp_path)
    _encode(world, lake)
    ref, _ = _train(world, lake, tmp_path / "one", _spec(tmp_path / "one.yaml", latent_sample=True))
    spec = yaml.safe_load(_spec(tmp_path / "two.yaml", latent_sample=True).read_text())
    for phase in spec["phases"]:
        phase["buckets"]["max_batch"] = 1
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "curation.cli", "train", "--lake", lake.root, "--vae", str(world["vae"]),
           "--curriculum", str(tmp_path / "two.yaml"), "--out", str(tmp_path / "two"), "--device", "cpu",
           "--workers", "2", "--num-cpus", "2"]
    env = _env()
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "2 Ray Train worker(s)" in run.stdout
    assert "latents from the cache latents/t" in run.stdout + run.stderr
    ddp = read_losses(tmp_path / "two")
    assert [(r["phase"], r["step"], r["samples"], r["bucket"]) for r in ddp] == \
        [(r["phase"], r["step"], r["samples"], r["bucket"]) for r in ref]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(ddp, ref)) < 1e-5


def test_changed_vae_or_rematerialised_tier_makes_the_cache_stale(world, tmp_path):
    lake = _lake(world, tmp_path)
    _encode(world, lake)
    refs = read_tier(lake, "t", world["plan"].phases[1].buckets)
    logs: list[str] = []

    def dataset(name: str = "vae"):
        logs.clear()
        return phase_dataset(lake.root, "t", refs, 1, _vae(world, name), log=logs.append)

    assert isinstance(dataset(), LatentDataset)
    assert isinstance(dataset("vae2"), TierDataset)
    assert "stale" in logs[0] and "VAE" in logs[0] and "decoding video" in logs[0]

    table = lake.dataset("tiers/t").to_table()
    lake.overwrite("tiers/t", table)  # re-materialised, the same clips: a new table version
    assert isinstance(dataset(), TierDataset)
    assert "stale" in logs[0] and "version" in logs[0]
    report = _encode(world, lake)  # the clips did not change: nothing to encode, the version is recorded
    assert (report.cached, report.encoded, report.removed) == (20, 0, 0)
    assert isinstance(dataset(), LatentDataset)

    lake.overwrite("tiers/t", _tier_table(world["rows"], {"w0": (8, 0, 120, 40)}))  # one clip's crop changed
    assert isinstance(dataset(), TierDataset)
    report = _encode(world, lake)
    assert (report.cached, report.encoded, report.removed) == (18, 2, 2)
    refs = read_tier(lake, "t", world["plan"].phases[1].buckets)
    assert isinstance(dataset(), LatentDataset)

    report = _encode(world, lake, "vae2")  # another VAE: every row is stale
    assert (report.cached, report.encoded, report.removed) == (0, 20, 20)
    assert isinstance(dataset("vae2"), LatentDataset) and isinstance(dataset("vae"), TierDataset)
    assert lake.count(cache_table("t")) == 20


def test_a_rerun_encodes_nothing_and_writes_nothing(world, tmp_path):
    lake = _lake(world, tmp_path)
    _encode(world, lake, batch=3, chunk=4)
    version = lake.dataset(cache_table("t")).version
    report = _encode(world, lake)
    assert (report.needed, report.cached, report.encoded, report.removed) == (20, 20, 0, 0)
    assert lake.dataset(cache_table("t")).version == version


KILL_AFTER_3_COMMITS = """
import os, signal, sys
import training.encode as enc
commit, done = enc._commit, []
def dying_commit(*args, **kwargs):
    n = commit(*args, **kwargs)
    done.append(n)
    if len(done) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return n
enc._commit = dying_commit
from curation.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_encode_resumes(world, tmp_path):
    """`videocurate encode --chunk 2` SIGKILLs itself right after its 3rd commit (6 rows); the cache is then
    incomplete and not used; a rerun encodes the 14 missing clip-buckets only, and no row is duplicated."""
    lake = _lake(world, tmp_path)
    cmd = [sys.executable, "-c", KILL_AFTER_3_COMMITS, "encode", "--lake", lake.root, "--tier", "t", "--vae",
           str(world["vae"]), "--curriculum", str(world["spec"]), "--device", "cpu", "--batch", "1", "--chunk", "2",
           "--workers", "2"]
    run = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stdout[-2000:] + run.stderr[-2000:]
    assert lake.count(cache_table("t")) == 6
    refs = read_tier(lake, "t", world["plan"].phases[0].buckets)
    logs: list[str] = []
    assert isinstance(phase_dataset(lake.root, "t", refs, 1, _vae(world), log=logs.append), TierDataset)
    assert "incomplete" in logs[0]

    report = _encode(world, lake)
    assert (report.cached, report.encoded) == (6, 14)
    index = CacheIndex.read(lake, "t")
    assert len(index.rows) == lake.count(cache_table("t")) == 20
    assert {k[:4] for k in index.rows} == _expected_items(world)
    assert isinstance(phase_dataset(lake.root, "t", refs, 1, _vae(world), log=logs.append), LatentDataset)


def test_bad_input_is_a_clear_error(world, tmp_path):
    lake = _lake(world, tmp_path)
    with pytest.raises(ConfigError, match="no phase of the curriculum trains on tier 'other'"):
        tier_configs(world["plan"], "other")
    with pytest.raises(ConfigError, match="no tier 'nope'"):
        encode_tier(lake, "nope", tier_configs(world["plan"], "t"), _vae(world), log=lambda _: None)
    from curation.cli import main

    assert main(["encode", "--lake", lake.root, "--tier", "t", "--vae", "random", "--curriculum",
                 str(world["spec"])]) == 2
    assert not lake.exists(cache_table("t"))
