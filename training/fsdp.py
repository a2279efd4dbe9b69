"""Data-parallel strategies of the DiT trainer: DDP (replicated weights) or FSDP2 (sharded weights), and the
one checkpoint layout both read and write.

FSDP2 (`torch.distributed.fsdp.fully_shard`) shards every dual-stream block, every single-stream block and
then the root (the embedders, the token refiner and the final layer) over the data-parallel ranks; the
parameters stay fp32 shards (DTensors), all-gathered block by block for the forward and backward. With
`bf16` on CUDA the gathered parameters are bf16 and gradients are reduced in fp32 (MixedPrecisionPolicy);
on CPU (gloo, the tests) everything stays fp32.

Checkpoints do not depend on the strategy: the weights are gathered to full tensors on rank 0 (CPU) and
written as the same single-file safetensors as a 1-worker run, the optimiser state as a full state dict
keyed by parameter name (`get_optimizer_state_dict(full_state_dict=True, cpu_offload=True)`). Loading gives
every rank the full state and each keeps its shard (`set_optimizer_state_dict`), so a run resumes under the
other strategy or another world size.

EMA under FSDP: every rank keeps the fp32 EMA of its own parameter shards (`training.ema.EMA` built on the
sharded module: its shadow tensors are DTensors with the parameters' placements), so no rank ever holds a
full EMA copy while training; `gather_full` all-gathers it tensor by tensor at a checkpoint.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from curation.errors import ConfigError

STRATEGIES = ("ddp", "fsdp")
FULL_TO_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ConfigError(f"train: strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    return strategy


def shard_dit(dit: nn.Module, bf16: bool = False) -> nn.Module:
    """`fully_shard` each DiT block (dual-stream, then single-stream), then the root, in place; returns `dit`
    (now an FSDPModule). `bf16`: bf16 compute parameters, fp32 gradient reduction."""
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    for block in [*dit.double_blocks, *dit.single_blocks]:
        fully_shard(block, mp_policy=policy)
    fully_shard(dit, mp_policy=policy)
    return dit


def wrap_plan(model: nn.Module) -> list[str]:
    """The names of a module's FSDP units ('' for the root), in module order."""
    return [name for name, m in model.named_modules() if isinstance(m, FSDPModule)]


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's full state dict on CPU (names as in the unwrapped module) on rank 0, {} on other ranks.
    Collective under FSDP: every rank calls it."""
    return get_model_state_dict(model, options=FULL_TO_CPU)


def full_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The optimiser's full state dict keyed by parameter name, on CPU on rank 0 ({} elsewhere). Collective."""
    return get_optimizer_state_dict(model, opt, options=FULL_TO_CPU)


def load_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Load a full optimiser state (given to every rank) into `opt` over the model, sharded or not. A
    checkpoint from before name-keyed optimiser state (integer parameter ids) loads as it was written."""
    if state.get("state") and all(isinstance(k, int) for k in state["state"]):
        if is_sharded(model):
            raise ConfigError("train --resume: this checkpoint's optimiser state is keyed by parameter index "
                              "(an older trainer); resume it with strategy ddp")
        opt.load_state_dict(state)
        return
    opt.zero_grad(set_to_none=True)  # set_* initialises an empty optimiser's state only when there are no grads
    set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True))


def gather_full(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full CPU tensors of a state dict of DTensor shards and plain tensors, on rank 0 ({} elsewhere).
    One tensor gathered at a time. Collective when the state holds DTensors: every rank calls it."""
    lead = not dist.is_initialized() or dist.get_rank() == 0
    full: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        t = v.full_tensor() if isinstance(v, DTensor) else v
        if lead:
            full[k] = t.detach().cpu().clone()
    return full


@torch.no_grad()
def load_full(shards: dict[str, torch.Tensor], full: dict[str, torch.Tensor]) -> None:
    """Copy full tensors (present on every rank) into a state dict of DTensor shards and plain tensors, each
    rank taking its own slice (no communication)."""
    missing = sorted(set(shards) - set(full))
    if missing:
        raise KeyError(f"state lacks {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for k, v in shards.items():
        if isinstance(v, DTensor):
            src = full[k].to(device=v.device, dtype=v.dtype)
            local = distribute_tensor(src, v.device_mesh, v.placements, src_data_rank=None).to_local()
            v.to_local().copy_(local)
        else:
            v.copy_(full[k])
