"""Checkpoint interchange with diffusers' ``HunyuanVideoTransformer3DModel``.

Load public HunyuanVideo transformer weights (a diffusers model folder, e.g. the ``transformer/`` folder of
a pipeline) into ``VideoDiT``, and save a ``VideoDiT`` as a folder that diffusers can ``from_pretrained``.
Only ``torch`` and ``safetensors`` are needed here; diffusers itself is needed only to run its model.

Layout: our DiT is the same network as diffusers' (the original HunyuanVideo layout), so every weight maps
to one weight, except for two re-packings (the table is ``NAME_MAP``):
  * fused projections: our ``qkv`` (dual-stream and refiner) is diffusers' ``to_q|to_k|to_v`` (or
    ``add_q_proj|add_k_proj|add_v_proj`` for text) stacked by rows; our single-stream ``linear1`` is
    ``to_q|to_k|to_v|proj_mlp`` stacked by rows;
  * the final adaLN: ours chunks into (shift, scale), diffusers' ``AdaLayerNormContinuous`` into
    (scale, shift), so the two halves of ``norm_out.linear`` swap.

Timestep convention (``convention=``):
  * diffusers' transformer takes ``timestep`` = 1000 * sigma, where sigma is the noise level (its flow-match
    scheduler runs sigma from 1 = noise to 0 = data; ``x = sigma * noise + (1 - sigma) * data``) and returns
    the velocity ``noise - data``. The guidance-distilled models take ``guidance`` = 1000 * scale.
  * our ``VideoDiT`` takes t in [0, 1] with t = 0 noise and t = 1 data (``training.flow``), embeds
    sinusoid(1000 * t) and returns ``data - noise``; ``guidance`` is the plain scale (embedded as 1000 *
    scale, so guidance maps 1:1).
  * ``"trainer"`` (default) folds the difference into the weights, exactly: sinusoid(1000 * (1 - t)) is a
    fixed orthogonal 256 x 256 matrix R times sinusoid(1000 * t) (per frequency f: cos(f(1000 - s)) =
    cos(1000 f) cos(fs) + sin(1000 f) sin(fs), likewise for sin), so the two timestep-embedder input
    layers (main and token refiner) become W R, and the output projection is negated. Then
    ``ours(x, t, cond, g) == -diffusers(x, timestep=1000 * (1 - t), ..., guidance=1000 * g)`` and public
    weights work unchanged with ``FlowMatching``'s loss and sampler. R is its own inverse, so saving
    applies the same transform.
  * ``"raw"``: weights copied 1:1, ``ours(x, t, ...) == diffusers(x, timestep=1000 * t, ...)``; useful for
    comparing networks, not for sampling with ``FlowMatching``.
  ``to_diffusers_timestep`` / ``to_diffusers_guidance`` do these input conversions.

Not representable (clear errors): ``image_condition_type="token_replace"`` (HunyuanVideo-I2V's per-first-frame
modulation; ``"latent_concat"`` is only a wider ``in_channels`` and loads), ``qk_norm`` other than
``rms_norm``, non-square spatial patches, and ``mlp_ratio`` != 4 (diffusers' token refiner is always 4x,
ours follows ``mlp_ratio``). diffusers builds its joint-attention mask from the count of real text tokens,
so it assumes right-padded prompts; ours takes any mask. Both ignore padded tokens identically otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from curation.errors import ConfigError
from training.dit import DiTConfig, VideoDiT

DIFFUSERS_CLASS = "HunyuanVideoTransformer3DModel"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
TIMESTEP_SCALE = 1000.0
CONVENTIONS = ("trainer", "raw")

# diffusers' constructor defaults (HunyuanVideo 13B T2V), for keys a config.json leaves out.
DIFFUSERS_DEFAULTS: dict[str, object] = {
    "in_channels": 16,
    "out_channels": 16,
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "num_layers": 20,
    "num_single_layers": 40,
    "num_refiner_layers": 2,
    "mlp_ratio": 4.0,
    "patch_size": 2,
    "patch_size_t": 1,
    "qk_norm": "rms_norm",
    "guidance_embeds": True,
    "text_embed_dim": 4096,
    "pooled_projection_dim": 768,
    "rope_theta": 256.0,
    "rope_axes_dim": (16, 56, 56),
    "image_condition_type": None,
}

# The name mapping: (our module, diffusers module(s), how). ``{i}`` is a block index (refiner blocks,
# dual-stream blocks or single-stream blocks, by prefix); ``.weight`` / ``.bias`` follow each name.
#   copy  : the same tensor
#   cat   : ours = diffusers modules stacked by rows (dim 0); each part is hidden_size rows, the last
#           part takes the rest (q, k, v, then the MLP input for single-stream linear1)
#   swap  : ours (shift, scale) = diffusers (scale, shift) halves
#   time  : timestep-embedding input layer; weight @ R under convention "trainer" (see module docstring)
#   out   : output projection; negated under convention "trainer"
NAME_MAP: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("patch_embed", ("x_embedder.proj",), "copy"),
    ("time_in.0", ("time_text_embed.timestep_embedder.linear_1",), "time"),
    ("time_in.2", ("time_text_embed.timestep_embedder.linear_2",), "copy"),
    ("vector_in.0", ("time_text_embed.text_embedder.linear_1",), "copy"),
    ("vector_in.2", ("time_text_embed.text_embedder.linear_2",), "copy"),
    ("guidance_in.0", ("time_text_embed.guidance_embedder.linear_1",), "copy"),
    ("guidance_in.2", ("time_text_embed.guidance_embedder.linear_2",), "copy"),
    # text token refiner
    ("txt_in.proj_in", ("context_embedder.proj_in",), "copy"),
    ("txt_in.t_embed.0", ("context_embedder.time_text_embed.timestep_embedder.linear_1",), "time"),
    ("txt_in.t_embed.2", ("context_embedder.time_text_embed.timestep_embedder.linear_2",), "copy"),
    ("txt_in.c_embed.0", ("context_embedder.time_text_embed.text_embedder.linear_1",), "copy"),
    ("txt_in.c_embed.2", ("context_embedder.time_text_embed.text_embedder.linear_2",), "copy"),
    ("txt_in.blocks.{i}.norm1", ("context_embedder.token_refiner.refiner_blocks.{i}.norm1",), "copy"),
    (
        "txt_in.blocks.{i}.qkv",
        tuple(f"context_embedder.token_refiner.refiner_blocks.{{i}}.attn.to_{x}" for x in "qkv"),
        "cat",
    ),
    ("txt_in.blocks.{i}.proj", ("context_embedder.token_refiner.refiner_blocks.{i}.attn.to_out.0",), "copy"),
    ("txt_in.blocks.{i}.norm2", ("context_embedder.token_refiner.refiner_blocks.{i}.norm2",), "copy"),
    ("txt_in.blocks.{i}.mlp.0", ("context_embedder.token_refiner.refiner_blocks.{i}.ff.net.0.proj",), "copy"),
    ("txt_in.blocks.{i}.mlp.2", ("context_embedder.token_refiner.refiner_blocks.{i}.ff.net.2",), "copy"),
    ("txt_in.blocks.{i}.gates.lin", ("context_embedder.token_refiner.refiner_blocks.{i}.norm_out.linear",), "copy"),
    # dual-stream blocks
    ("double_blocks.{i}.img_mod.lin", ("transformer_blocks.{i}.norm1.linear",), "copy"),
    ("double_blocks.{i}.txt_mod.lin", ("transformer_blocks.{i}.norm1_context.linear",), "copy"),
    ("double_blocks.{i}.img_qkv.qkv", tuple(f"transformer_blocks.{{i}}.attn.to_{x}" for x in "qkv"), "cat"),
    ("double_blocks.{i}.img_qkv.q_norm", ("transformer_blocks.{i}.attn.norm_q",), "copy"),
    ("double_blocks.{i}.img_qkv.k_norm", ("transformer_blocks.{i}.attn.norm_k",), "copy"),
    ("double_blocks.{i}.txt_qkv.qkv", tuple(f"transformer_blocks.{{i}}.attn.add_{x}_proj" for x in "qkv"), "cat"),
    ("double_blocks.{i}.txt_qkv.q_norm", ("transformer_blocks.{i}.attn.norm_added_q",), "copy"),
    ("double_blocks.{i}.txt_qkv.k_norm", ("transformer_blocks.{i}.attn.norm_added_k",), "copy"),
    ("double_blocks.{i}.img_proj", ("transformer_blocks.{i}.attn.to_out.0",), "copy"),
    ("double_blocks.{i}.txt_proj", ("transformer_blocks.{i}.attn.to_add_out",), "copy"),
    ("double_blocks.{i}.img_mlp.0", ("transformer_blocks.{i}.ff.net.0.proj",), "copy"),
    ("double_blocks.{i}.img_mlp.2", ("transformer_blocks.{i}.ff.net.2",), "copy"),
    ("double_blocks.{i}.txt_mlp.0", ("transformer_blocks.{i}.ff_context.net.0.proj",), "copy"),
    ("double_blocks.{i}.txt_mlp.2", ("transformer_blocks.{i}.ff_context.net.2",), "copy"),
    # single-stream blocks
    ("single_blocks.{i}.mod.lin", ("single_transformer_blocks.{i}.norm.linear",), "copy"),
    (
        "single_blocks.{i}.linear1",
        (*(f"single_transformer_blocks.{{i}}.attn.to_{x}" for x in "qkv"), "single_transformer_blocks.{i}.proj_mlp"),
        "cat",
    ),
    ("single_blocks.{i}.q_norm", ("single_transformer_blocks.{i}.attn.norm_q",), "copy"),
    ("single_blocks.{i}.k_norm", ("single_transformer_blocks.{i}.attn.norm_k",), "copy"),
    ("single_blocks.{i}.linear2", ("single_transformer_blocks.{i}.proj_out",), "copy"),
    # output
    ("final.mod.lin", ("norm_out.linear",), "swap"),
    ("final.linear", ("proj_out",), "out"),
)


class CheckpointMismatchError(ConfigError):
    """A diffusers checkpoint or config that our DiT cannot represent, or whose keys/shapes do not match."""

    kind = "checkpoint_mismatch"


# ---------------------------------------------------------------------------------------------- configs


def config_from_diffusers(diffusers_config: Mapping[str, object] | str | Path, **overrides: object) -> DiTConfig:
    """Our ``DiTConfig`` for a diffusers ``HunyuanVideoTransformer3DModel`` config (dict, config.json or its
    folder). ``overrides`` set DiTConfig fields that diffusers does not carry (e.g. gradient_checkpointing).
    """
    if not isinstance(diffusers_config, Mapping):
        diffusers_config = _read_config(_model_folder(Path(diffusers_config)))
    cls = diffusers_config.get("_class_name", DIFFUSERS_CLASS)
    if cls != DIFFUSERS_CLASS:
        raise CheckpointMismatchError(f"config is for {cls!r}, not {DIFFUSERS_CLASS!r}")
    unknown = sorted(k for k in diffusers_config if not k.startswith("_") and k not in DIFFUSERS_DEFAULTS)
    if unknown:
        raise CheckpointMismatchError(f"unknown {DIFFUSERS_CLASS} config keys {unknown}: cannot vouch for the layout")
    c = {**DIFFUSERS_DEFAULTS, **{k: v for k, v in diffusers_config.items() if not k.startswith("_")}}
    problems = []
    if c["image_condition_type"] not in (None, "latent_concat"):
        problems.append(
            f"image_condition_type={c['image_condition_type']!r} (first-frame token-replace modulation has no "
            "counterpart in VideoDiT; only None and 'latent_concat' load)"
        )
    if c["qk_norm"] != "rms_norm":
        problems.append(f"qk_norm={c['qk_norm']!r} (VideoDiT uses RMSNorm QK-norm)")
    if float(c["mlp_ratio"]) != 4.0:
        problems.append(f"mlp_ratio={c['mlp_ratio']} (diffusers' token refiner is fixed at 4x, ours uses mlp_ratio)")
    if problems:
        raise CheckpointMismatchError("cannot represent this diffusers model: " + "; ".join(problems))
    heads, head_dim = int(c["num_attention_heads"]), int(c["attention_head_dim"])
    fields = {
        "in_channels": int(c["in_channels"]),
        "out_channels": int(c["out_channels"] or c["in_channels"]),
        "hidden_size": heads * head_dim,
        "num_heads": heads,
        "depth_double": int(c["num_layers"]),
        "depth_single": int(c["num_single_layers"]),
        "mlp_ratio": float(c["mlp_ratio"]),
        "patch_size": (int(c["patch_size_t"]), int(c["patch_size"]), int(c["patch_size"])),
        "rope_axes": tuple(int(a) for a in c["rope_axes_dim"]),
        "rope_theta": float(c["rope_theta"]),
        "text_dim": int(c["text_embed_dim"]),
        "pooled_dim": int(c["pooled_projection_dim"]),
        "refiner_depth": int(c["num_refiner_layers"]),
        "guidance_embed": bool(c["guidance_embeds"]),
        "qkv_bias": True,
    }
    fields.update(overrides)
    return DiTConfig(**fields)


def diffusers_config(config: DiTConfig, image_condition_type: str | None = None) -> dict[str, object]:
    """The diffusers config.json content for our ``DiTConfig`` (raises if diffusers cannot express it)."""
    pt, ph, pw = config.patch_size
    problems = []
    if ph != pw:
        problems.append(f"patch_size {config.patch_size}: diffusers needs square spatial patches")
    if config.mlp_ratio != 4.0:
        problems.append(f"mlp_ratio={config.mlp_ratio}: diffusers' token refiner is fixed at 4x")
    if image_condition_type not in (None, "latent_concat"):
        problems.append(f"image_condition_type={image_condition_type!r}: only None and 'latent_concat'")
    if problems:
        raise CheckpointMismatchError("cannot express this DiT in diffusers: " + "; ".join(problems))
    return {
        "_class_name": DIFFUSERS_CLASS,
        "_diffusers_version": _diffusers_version(),
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "num_attention_heads": config.num_heads,
        "attention_head_dim": config.head_dim,
        "num_layers": config.depth_double,
        "num_single_layers": config.depth_single,
        "num_refiner_layers": config.refiner_depth,
        "mlp_ratio": config.mlp_ratio,
        "patch_size": ph,
        "patch_size_t": pt,
        "qk_norm": "rms_norm",
        "guidance_embeds": config.guidance_embed,
        "text_embed_dim": config.text_dim,
        "pooled_projection_dim": config.pooled_dim,
        "rope_theta": config.rope_theta,
        "rope_axes_dim": list(config.axes),
        "image_condition_type": image_condition_type,
    }


# ------------------------------------------------------------------------------------- input conventions


def to_diffusers_timestep(t: torch.Tensor, convention: str = "trainer") -> torch.Tensor:
    """Our t in [0, 1] -> diffusers' ``timestep``: 1000 (1 - t) ("trainer") or 1000 t ("raw")."""
    _check_convention(convention)
    return TIMESTEP_SCALE * (1 - t) if convention == "trainer" else TIMESTEP_SCALE * t


def to_diffusers_guidance(guidance: torch.Tensor) -> torch.Tensor:
    """Our guidance scale -> diffusers' ``guidance`` input (1000 * scale, as its pipeline passes it)."""
    return TIMESTEP_SCALE * guidance


def timestep_reflection(dim: int = 256, max_period: float = 10000.0, scale: float = TIMESTEP_SCALE) -> torch.Tensor:
    """R [dim, dim] (float64) with sinusoid(scale - s) = R @ sinusoid(s) for the [cos | sin] embedding of
    ``training.dit.timestep_embedding``; symmetric and orthogonal, so R @ R = I."""
    half = dim // 2
    # the same float32 frequencies as timestep_embedding (and diffusers' get_timestep_embedding)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).double()
    c, s = torch.cos(scale * freqs), torch.sin(scale * freqs)
    r = torch.zeros(dim, dim, dtype=torch.float64)
    r[:half, :half], r[:half, half:] = torch.diag(c), torch.diag(s)
    r[half:, :half], r[half:, half:] = torch.diag(s), -torch.diag(c)
    return r


# ---------------------------------------------------------------------------------------- state dicts


def _expanded_map(config: DiTConfig) -> list[tuple[str, tuple[str, ...], str]]:
    counts = {"txt_in.blocks.": config.refiner_depth, "double_blocks.": config.depth_double}
    counts["single_blocks."] = config.depth_single
    rows = []
    for ours, theirs, how in NAME_MAP:
        if ours.startswith("guidance_in.") and not config.guidance_embed:
            continue
        if "{i}" not in ours:
            rows.append((ours, theirs, how))
            continue
        n = next(v for k, v in counts.items() if ours.startswith(k))
        rows += [(ours.format(i=i), tuple(t.format(i=i) for t in theirs), how) for i in range(n)]
    return rows


def _transform(how: str, suffix: str, tensor: torch.Tensor, convention: str) -> torch.Tensor:
    """The per-tensor part of a mapping (its own inverse for every ``how``); the time fold comes back in
    float64 so that the caller rounds once, to the target dtype."""
    if how == "swap":
        a, b = tensor.chunk(2, dim=0)
        return torch.cat([b, a], dim=0)
    if convention == "trainer" and how == "time" and suffix == "weight":
        return tensor.double() @ timestep_reflection(tensor.shape[1])
    if convention == "trainer" and how == "out":
        return -tensor
    return tensor


def state_dict_from_diffusers(
    state_dict: Mapping[str, torch.Tensor],
    config: DiTConfig,
    convention: str = "trainer",
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """A diffusers transformer state dict -> a ``VideoDiT(config)`` state dict (new tensors).

    Raises ``CheckpointMismatchError`` naming every missing, unmapped or mis-shaped key.
    """
    _check_convention(convention)
    with torch.device("meta"):
        expected = VideoDiT(config).state_dict()
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    shapes: list[str] = []
    for ours, theirs, how in _expanded_map(config):
        for suffix in ("weight", "bias"):
            key = f"{ours}.{suffix}"
            if key not in expected:
                continue
            names = [f"{t}.{suffix}" for t in theirs]
            absent = [n for n in names if n not in state_dict]
            if absent:
                missing += absent
                continue
            used.update(names)
            parts = [state_dict[n] for n in names]
            tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
            if tuple(tensor.shape) != tuple(expected[key].shape):
                got = " + ".join(str(tuple(p.shape)) for p in parts)
                shapes.append(f"{' | '.join(names)} {got} -> {key} needs {tuple(expected[key].shape)}")
                continue
            target = dtype or tensor.dtype
            out[key] = _transform(how, suffix, tensor, convention).to(dtype=target, copy=True).contiguous()
    unmapped = sorted(set(state_dict) - used)
    if missing or unmapped or shapes:
        raise CheckpointMismatchError(
            f"diffusers {DIFFUSERS_CLASS} weights do not match {config}:"
            + _listing("missing diffusers keys", missing)
            + _listing("unmapped diffusers keys (no place in VideoDiT)", unmapped)
            + _listing("shape mismatches", shapes)
        )
    return out


def state_dict_to_diffusers(
    state_dict: Mapping[str, torch.Tensor],
    config: DiTConfig,
    convention: str = "trainer",
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """A ``VideoDiT(config)`` state dict -> diffusers' layout. A DiT built with ``qkv_bias=False`` gets zero
    biases (diffusers always has them), which is exact."""
    _check_convention(convention)
    h = config.hidden_size
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for ours, theirs, how in _expanded_map(config):
        for suffix in ("weight", "bias"):
            key = f"{ours}.{suffix}"
            if key in state_dict:
                tensor = state_dict[key]
                used.add(key)
            elif suffix == "bias" and how == "cat" and f"{ours}.weight" in state_dict:
                weight = state_dict[f"{ours}.weight"]
                tensor = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
            elif suffix == "bias" and ours.endswith("_norm"):
                continue  # RMSNorm has a weight only
            else:
                missing.append(key)
                continue
            target = dtype or tensor.dtype
            tensor = _transform(how, suffix, tensor.detach(), convention)
            if how == "cat":
                sizes = [h] * (len(theirs) - 1)
                parts = tensor.split([*sizes, tensor.shape[0] - sum(sizes)], dim=0)
            else:
                parts = (tensor,)
            for name, part in zip(theirs, parts):
                out[f"{name}.{suffix}"] = part.to(dtype=target, copy=True).contiguous()
    unmapped = sorted(set(state_dict) - used)
    if missing or unmapped:
        raise CheckpointMismatchError(
            f"VideoDiT weights do not match {config}:"
            + _listing("missing keys", missing)
            + _listing("keys with no place in diffusers' layout", unmapped)
        )
    return out


# ------------------------------------------------------------------------------------ models and folders


def dit_from_diffusers(
    source: Mapping[str, torch.Tensor] | str | Path,
    config: DiTConfig | Mapping[str, object] | None = None,
    *,
    convention: str = "trainer",
    dtype: torch.dtype | None = torch.float32,
    device: torch.device | str = "cpu",
) -> VideoDiT:
    """Our ``VideoDiT`` from diffusers HunyuanVideo transformer weights.

    ``source``: a state dict, or a diffusers model folder (config.json + diffusion_pytorch_model*.safetensors,
    sharded with an index or not; a pipeline folder with a ``transformer/`` subfolder also works).
    ``config``: our DiTConfig or a diffusers config dict; read from the folder's config.json when omitted.
    ``dtype``: parameter dtype (None keeps the stored one, e.g. bf16). See the module docstring for
    ``convention``.
    """
    if isinstance(source, Mapping):
        if config is None:
            raise ValueError("dit_from_diffusers: pass config= with a state dict")
        state_dict = source
    else:
        folder = _model_folder(Path(source))
        if config is None:
            config = _read_config(folder)
        state_dict = load_diffusers_state_dict(folder)
    if not isinstance(config, DiTConfig):
        config = config_from_diffusers(config)
    converted = state_dict_from_diffusers(state_dict, config, convention, dtype)
    del state_dict
    with torch.device("meta"):
        model = VideoDiT(config)
    model.load_state_dict(converted, strict=True, assign=True)
    return model.to(device)


def dit_to_diffusers(
    dit: VideoDiT,
    *,
    convention: str = "trainer",
    dtype: torch.dtype | None = None,
    image_condition_type: str | None = None,
) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """(diffusers config dict, diffusers state dict) for our DiT. ``image_condition_type="latent_concat"``
    marks an image-to-video DiT whose ``in_channels`` include the concatenated image latents and mask."""
    cfg = diffusers_config(dit.config, image_condition_type)
    return cfg, state_dict_to_diffusers(dit.state_dict(), dit.config, convention, dtype)


def save_diffusers(
    dit: VideoDiT,
    folder: str | Path,
    *,
    convention: str = "trainer",
    dtype: torch.dtype | None = None,
    max_shard_bytes: int | None = 10 * 2**30,
    image_condition_type: str | None = None,
) -> Path:
    """Write ``dit`` as a diffusers model folder (config.json + safetensors, sharded with an index above
    ``max_shard_bytes``) that ``HunyuanVideoTransformer3DModel.from_pretrained(folder)`` loads."""
    from safetensors.torch import save_file

    config, state_dict = dit_to_diffusers(
        dit, convention=convention, dtype=dtype, image_condition_type=image_condition_type
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("diffusion_pytorch_model*.safetensors"), folder / INDEX_NAME]:
        old.unlink(missing_ok=True)  # stale shards of an earlier save would be picked up by a glob loader
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state_dict = {k: v.cpu() for k, v in state_dict.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state_dict.items():
        nbytes = tensor.numel() * tensor.element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        return folder
    weight_map = {}
    for n, shard in enumerate(shards, 1):
        name = f"diffusion_pytorch_model-{n:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return folder


def load_diffusers_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a diffusers model folder: the index's shards, else diffusion_pytorch_model.safetensors,
    else every *.safetensors file in it."""
    from safetensors.torch import load_file

    folder = _model_folder(Path(folder))
    if (folder / INDEX_NAME).is_file():
        weight_map = json.loads((folder / INDEX_NAME).read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    elif (folder / WEIGHTS_NAME).is_file():
        files = [WEIGHTS_NAME]
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"no safetensors weights in {folder}")
    state_dict: dict[str, torch.Tensor] = {}
    for name in files:
        state_dict.update(load_file(str(folder / name)))
    return state_dict


# ------------------------------------------------------------------------------------------------ helpers


def _model_folder(path: Path) -> Path:
    if path.is_file():
        path = path.parent
    if not (path / "config.json").is_file() and (path / "transformer" / "config.json").is_file():
        path = path / "transformer"
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a diffusers model folder (no config.json)")
    return path


def _read_config(folder: Path) -> dict[str, object]:
    return json.loads((folder / "config.json").read_text())


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def _listing(title: str, items: list[str], limit: int = 20) -> str:
    if not items:
        return ""
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more


def _diffusers_version() -> str:
    try:
        from importlib.metadata import version

        return version("diffusers")
    except Exception:  # diffusers is optional: the folder format is what matters
        return "0.32.0"


__all__ = [
    "NAME_MAP",
    "CheckpointMismatchError",
    "config_from_diffusers",
    "diffusers_config",
    "dit_from_diffusers",
    "dit_to_diffusers",
    "load_diffusers_state_dict",
    "save_diffusers",
    "state_dict_from_diffusers",
    "state_dict_to_diffusers",
    "timestep_reflection",
    "to_diffusers_guidance",
    "to_diffusers_timestep",
]
