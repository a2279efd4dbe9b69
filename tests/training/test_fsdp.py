"""FSDP2 for the DiT trainer (training.fsdp), on CPU with gloo: the per-block wrap plan, full state dicts
gathered from the shards in the 1-worker layout, the sharded EMA, and the trainer itself: 2 Ray Train workers
under FSDP follow the 1-worker loss curve, and an FSDP checkpoint resumes in one plain worker with the
uninterrupted run's next losses. Reuses the trainer tests' tier, reference run and helpers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch.distributed.tensor import DTensor

from curation.errors import ConfigError
from tests.training.test_trainer import _cli, _curriculum, _curve, _env, world  # noqa: F401 (fixture)
from training import fsdp
from training.checkpoint import dit_config_from
from training.curriculum import load_curriculum, train_curriculum
from training.dit import DiTConfig, VideoDiT
from training.ema import EMA
from training.text_encoder import TextCondition
from training.train import TrainConfig, build_optimizer
from training.trainer import read_losses, trainer_config

TOL = 1e-5
DIT = DiTConfig(hidden_size=32, num_heads=2, depth_double=2, depth_single=2, text_dim=16, pooled_dim=16,
                refiner_depth=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    """One optimiser step of a forward and backward through the DiT on inputs drawn from `seed`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, DIT.in_channels, 1, 4, 4, generator=g)
    cond = TextCondition(torch.randn(2, 3, DIT.text_dim, generator=g), torch.ones(2, 3, dtype=torch.bool),
                         torch.randn(2, DIT.pooled_dim, generator=g))
    opt.zero_grad(set_to_none=True)
    (model(x, torch.rand(2, generator=g), cond) - x).square().mean().backward()
    opt.step()


def _sharded_worker(rank: int, size: int, port: int) -> None:
    """Each rank: shard a DiT, step it, and check what rank 0 gathers against an unsharded twin."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        torch.manual_seed(0)
        plain = VideoDiT(DIT)
        dit = VideoDiT(DIT)
        dit.load_state_dict(plain.state_dict())
        fsdp.shard_dit(dit)
        assert fsdp.wrap_plan(dit) == ["", "double_blocks.0", "double_blocks.1", "single_blocks.0",
                                       "single_blocks.1"]
        local = sum(p.to_local().numel() for p in dit.parameters())
        assert local < plain.num_params() * 0.6  # each rank holds about half

        cfg = TrainConfig(lr=1e-2, warmup_steps=1, weight_decay=0.01)
        opt, _ = build_optimizer(dit, cfg)
        plain_opt, _ = build_optimizer(plain, cfg)
        ema, plain_ema = EMA(dit, 0.5), EMA(plain, 0.5)
        for seed in (1, 2):
            _step(dit, opt, seed)  # every rank the same batch: the mean gradient over ranks equals its own
            _step(plain, plain_opt, seed)
            ema.update(dit)
            plain_ema.update(plain)

        weights = fsdp.full_model_state(dit)
        opt_state = fsdp.full_optimizer_state(dit, opt)
        ema_state = fsdp.gather_full(ema.state_dict())
        if rank == 0:
            reference = plain.state_dict()
            assert list(weights) == list(reference)  # the 1-worker layout: same names, order, shapes
            for k, v in reference.items():
                assert weights[k].device.type == "cpu" and not isinstance(weights[k], DTensor)
                torch.testing.assert_close(weights[k], v, rtol=0, atol=1e-6)
                torch.testing.assert_close(ema_state[k], plain_ema.state_dict()[k], rtol=0, atol=1e-6)
            names = [n for n, _ in plain.named_parameters()]
            assert list(opt_state["state"]) == names
            plain_sd = plain_opt.state_dict()["state"]
            for i, n in enumerate(names):
                torch.testing.assert_close(opt_state["state"][n]["exp_avg_sq"], plain_sd[i]["exp_avg_sq"])
                assert float(opt_state["state"][n]["step"]) == 2.0
        else:
            assert weights == {} and ema_state == {}

        # every rank loads a full state (as from a checkpoint) back into its shards
        full_opt = [opt_state]
        dist.broadcast_object_list(full_opt, src=0)
        fresh = VideoDiT(DIT)
        fsdp.shard_dit(fresh)
        fresh_opt, _ = build_optimizer(fresh, cfg)
        fsdp.load_optimizer_state(fresh, fresh_opt, full_opt[0])
        shifted = {k: v + 1.0 for k, v in plain.state_dict().items()}
        fsdp.load_full(fresh.state_dict(), shifted)
        fresh_ema = EMA(fresh, 0.5)
        fsdp.load_full(fresh_ema.shadow, plain_ema.state_dict())
        again, again_opt = fsdp.full_model_state(fresh), fsdp.full_optimizer_state(fresh, fresh_opt)
        again_ema = fsdp.gather_full(fresh_ema.state_dict())
        if rank == 0:
            for k, v in shifted.items():
                assert torch.equal(again[k], v)
                assert torch.equal(again_ema[k], plain_ema.state_dict()[k])
            for n, s in opt_state["state"].items():
                assert torch.equal(again_opt["state"][n]["exp_avg"], s["exp_avg"])
        with pytest.raises(ConfigError, match="keyed by parameter index"):
            fsdp.load_optimizer_state(fresh, fresh_opt, plain_opt.state_dict())
    finally:
        dist.destroy_process_group()


def test_sharded_dit_gathers_to_the_one_worker_layout():
    """2 gloo processes: per-block wrap plan, each rank holds about half the weights, and rank 0's gathered
    weights, EMA and name-keyed AdamW state equal an unsharded twin's after two steps; full states load back
    into the shards (weights, EMA, optimiser) and gather to the same values; index-keyed optimiser state is
    refused under FSDP."""
    mp.spawn(_sharded_worker, args=(2, _free_port()), nprocs=2, join=True)


def test_optimizer_state_round_trips_by_name_without_process_group():
    """One plain process (the in-process trainer): the name-keyed state loads bit for bit into a new optimiser,
    and the older index-keyed state still loads."""
    torch.manual_seed(0)
    dit = VideoDiT(DIT)
    opt, _ = build_optimizer(dit, TrainConfig(lr=1e-2, warmup_steps=1))
    _step(dit, opt, 3)
    state = fsdp.full_optimizer_state(dit, opt)
    assert list(state["state"])[0] == "patch_embed.weight"
    for saved in (state, opt.state_dict()):
        fresh, _ = build_optimizer(dit, TrainConfig(lr=1e-2, warmup_steps=1))
        fsdp.load_optimizer_state(dit, fresh, saved)
        for a, b in zip(fresh.state_dict()["state"].values(), opt.state_dict()["state"].values()):
            assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["step"], b["step"])


def test_strategy_setting_is_checked():
    assert trainer_config({"strategy": "fsdp"}).strategy == "fsdp"
    assert trainer_config().strategy == "ddp"
    with pytest.raises(ConfigError, match="strategy must be one of"):
        trainer_config({"strategy": "zero3"})


@pytest.fixture(scope="module")
def fsdp_run(world, tmp_path_factory):  # noqa: F811 (the imported fixture)
    """2 Ray Train CPU workers under FSDP, per-worker batch 1: the same global batches as the reference."""
    root = tmp_path_factory.mktemp("fsdp")
    spec = _curriculum(root / "half.yaml", max_batch=1)
    out = root / "run"
    run = subprocess.run(_cli(world, out, "--workers", "2", "--num-cpus", "2", "--strategy", "fsdp", spec=spec),
                         env=_env(), capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "2 Ray Train worker(s), CPU (gloo), FSDP" in run.stdout
    return out


def test_two_fsdp_workers_follow_the_one_worker_curve(world, fsdp_run):  # noqa: F811
    rows, ref = read_losses(fsdp_run), world["ref"]
    assert [(r["phase"], r["step"], r["samples"], r["bucket"]) for r in rows] == \
        [(r["phase"], r["step"], r["samples"], r["bucket"]) for r in ref]
    diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(rows, ref))
    print(f"max |loss(2 FSDP workers) - loss(1 worker)| = {diff:.3g}")
    assert diff < TOL
    assert max(abs(a["grad_norm"] - b["grad_norm"]) / b["grad_norm"] for a, b in zip(rows, ref)) < 1e-4
    # the checkpoint has the 1-worker layout: the same tensor names and shapes in the same single files
    last = fsdp_run / "checkpoints" / "step-00000008"
    state = json.loads((last / "state.json").read_text())
    assert (state["strategy"], state["world"]) == ("fsdp", 2)
    plain = VideoDiT(dit_config_from(json.loads((last / "config.json").read_text())["dit_config"])).state_dict()
    for name in ("model.safetensors", "ema.safetensors"):
        saved = load_file(str(last / name))
        assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(v.shape) for k, v in plain.items()}
    ref_ema = load_file(str(world["root"] / "ref" / "video" / "ema.safetensors"))
    ema = load_file(str(fsdp_run / "video" / "ema.safetensors"))
    assert max(float((ema[k] - v).abs().max()) for k, v in ref_ema.items()) < 1e-4
    summary = json.loads((fsdp_run / "summary.json").read_text())
    assert summary["video"]["eval_loss_ema"] == pytest.approx(
        json.loads((world["root"] / "ref" / "summary.json").read_text())["video"]["eval_loss_ema"], abs=1e-4)


def _cut_back(run: Path, out: Path, step: int) -> None:
    """A copy of a finished run folder as a kill after checkpoint `step` would have left it (phase 2 unfinished)."""
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("ray"))
    for later in (out / "checkpoints").glob("step-*"):
        if int(later.name.split("-")[1]) > step:
            shutil.rmtree(later)
    (out / "checkpoints" / "latest").write_text(f"step-{step:08d}")
    shutil.rmtree(out / "video")


def _resumed_diff(rows: list[dict], ref: list[dict], step: int) -> float:
    """Max loss difference over the steps after `step`; the logs must cover the same steps with the same lr."""
    assert [r[:3] for r in _curve(rows)] == [r[:3] for r in _curve(ref)]
    resumed = [(a, b) for a, b in zip(rows, ref) if a["global_step"] > step]
    assert len(resumed) == len(ref) - step
    assert all(a["lr"] == b["lr"] for a, b in resumed)
    return max(abs(a["loss"] - b["loss"]) for a, b in resumed)


def test_fsdp_checkpoint_resumes_in_one_plain_worker(world, fsdp_run, tmp_path):  # noqa: F811
    """The FSDP run cut back to its step-6 checkpoint (the video phase's 2nd step) resumes in one in-process
    worker (no FSDP, batch 2): steps 7 and 8 repeat the uninterrupted 1-worker run's losses."""
    out = tmp_path / "run"
    _cut_back(fsdp_run, out, 6)
    logs: list[str] = []
    summary = train_curriculum(world["lake"], load_curriculum(str(world["spec"])), "random", str(out),
                               log=logs.append, resume=True)
    assert any("from step-00000006" in line for line in logs)
    assert summary["video"]["steps"] == 4
    assert _resumed_diff(read_losses(out), world["ref"], 6) < TOL


def test_one_worker_checkpoint_resumes_under_two_fsdp_workers(world, tmp_path):  # noqa: F811
    """The reverse: the in-process reference cut back to step 6 resumes under 2 FSDP workers (each loads the
    full checkpoint and keeps its shards of weights, EMA and AdamW state): the same next losses, the same EMA."""
    out = tmp_path / "run"
    _cut_back(world["root"] / "ref", out, 6)
    spec = _curriculum(tmp_path / "half.yaml", max_batch=1)
    run = subprocess.run(_cli(world, out, "--workers", "2", "--num-cpus", "2", "--strategy", "fsdp", "--resume",
                              spec=spec), env=_env(), capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "resuming" in run.stdout
    state = json.loads((out / "checkpoints" / "step-00000008" / "state.json").read_text())
    assert (state["strategy"], state["world"]) == ("fsdp", 2)  # steps 7 and 8 were trained under FSDP
    diff = _resumed_diff(read_losses(out), world["ref"], 6)
    print(f"resumed under FSDP: max |loss - loss(uninterrupted)| = {diff:.3g}")
    assert diff < TOL
    ref_ema = load_file(str(world["root"] / "ref" / "video" / "ema.safetensors"))
    ema = load_file(str(out / "video" / "ema.safetensors"))
    assert max(float((ema[k] - v).abs().max()) for k, v in ref_ema.items()) < 1e-4
