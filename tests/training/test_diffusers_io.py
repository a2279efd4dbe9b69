"""Checkpoint interchange with diffusers: a tiny random HunyuanVideoTransformer3DModel and our VideoDiT give
the same velocity after conversion, both ways, through a saved folder; bad checkpoints fail by key name."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import HunyuanVideoTransformer3DModel  # noqa: E402

from training.diffusers_io import (  # noqa: E402
    INDEX_NAME,
    CheckpointMismatchError,
    config_from_diffusers,
    dit_from_diffusers,
    dit_to_diffusers,
    save_diffusers,
    state_dict_from_diffusers,
    state_dict_to_diffusers,
    timestep_reflection,
    to_diffusers_guidance,
    to_diffusers_timestep,
)
from training.dit import DiTConfig, VideoDiT, timestep_embedding  # noqa: E402
from training.text_encoder import TextCondition  # noqa: E402

TINY = {
    "in_channels": 4,
    "out_channels": 4,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "num_layers": 2,
    "num_single_layers": 2,
    "num_refiner_layers": 2,
    "mlp_ratio": 4.0,
    "patch_size": 2,
    "patch_size_t": 1,
    "qk_norm": "rms_norm",
    "guidance_embeds": True,
    "text_embed_dim": 12,
    "pooled_projection_dim": 6,
    "rope_theta": 256.0,
    "rope_axes_dim": (2, 2, 4),
}
TOL = 1e-4


def _perturb(model: torch.nn.Module, scale: float = 0.1) -> None:
    """Move every weight off its init (diffusers' and our zero-inits would hide mapping errors)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def _diffusers_model(**overrides) -> HunyuanVideoTransformer3DModel:
    model = HunyuanVideoTransformer3DModel(**{**TINY, **overrides}).eval()
    _perturb(model)
    return model


def _inputs(batch: int = 2):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 4, 3, 4, 4, generator=g)  # 3 x 2 x 2 = 12 video tokens
    mask = torch.ones(batch, 5, dtype=torch.bool)
    mask[-1, 3:] = False  # right-padded, as diffusers' joint-attention mask assumes
    cond = TextCondition(torch.randn(batch, 5, 12, generator=g), mask, torch.randn(batch, 6, generator=g))
    t = torch.tensor([0.3137, 0.8])[:batch]
    guidance = torch.tensor([6.0, 3.5])[:batch]
    return x, t, cond, guidance


@torch.no_grad()
def _theirs(model, x, t, cond, guidance, convention="trainer"):
    return model(
        hidden_states=x,
        timestep=to_diffusers_timestep(t, convention),
        encoder_hidden_states=cond.tokens,
        encoder_attention_mask=cond.mask,
        pooled_projections=cond.pooled,
        guidance=to_diffusers_guidance(guidance),
    ).sample


def test_reflection_turns_t_into_one_minus_t():
    r = timestep_reflection()
    t = torch.tensor([0.0, 0.25, 0.6, 1.0], dtype=torch.float64)
    assert torch.allclose(r @ r, torch.eye(256, dtype=torch.float64), atol=1e-12)
    flipped = timestep_embedding(t * 1000).double() @ r.T
    assert torch.allclose(flipped, timestep_embedding((1 - t) * 1000).double(), atol=1e-4)


@pytest.mark.parametrize("convention", ["trainer", "raw"])
def test_diffusers_weights_give_the_same_velocity(convention):
    theirs = _diffusers_model()
    ours = dit_from_diffusers(theirs.state_dict(), dict(theirs.config), convention=convention).eval()
    assert ours.config.patch_size == (1, 2, 2) and ours.config.axes == (2, 2, 4) and ours.config.guidance_embed
    x, t, cond, guidance = _inputs()
    with torch.no_grad():
        mine = ours(x, t, cond, guidance)
    ref = _theirs(theirs, x, t, cond, guidance, convention)
    sign = -1 if convention == "trainer" else 1  # ours predicts data - noise, diffusers noise - data
    assert mine.shape == ref.shape == x.shape
    assert ref.abs().max() > 0.1  # a meaningful comparison, not two zeros
    diff = (mine - sign * ref).abs().max().item()
    assert diff < TOL, diff


def test_no_guidance_and_latent_concat_models_load():
    theirs = _diffusers_model(guidance_embeds=False, in_channels=9, image_condition_type="latent_concat")
    ours = dit_from_diffusers(theirs.state_dict(), dict(theirs.config)).eval()
    assert ours.guidance_in is None and ours.config.in_channels == 9
    x, t, cond, _ = _inputs()
    x = torch.randn(2, 9, 3, 4, 4)
    with torch.no_grad():
        mine = ours(x, t, cond)
        ref = theirs(x, to_diffusers_timestep(t), cond.tokens, cond.mask, cond.pooled).sample
    assert (mine + ref).abs().max().item() < TOL


def test_round_trip_through_a_diffusers_folder(tmp_path):
    ours = VideoDiT(config_from_diffusers(TINY)).eval()
    _perturb(ours)  # off the adaLN-Zero point, so every weight reaches the output
    folder = save_diffusers(ours, tmp_path / "transformer", max_shard_bytes=20_000)  # forces sharding
    index = json.loads((folder / INDEX_NAME).read_text())
    assert len(set(index["weight_map"].values())) > 1

    theirs = HunyuanVideoTransformer3DModel.from_pretrained(folder, low_cpu_mem_usage=False).eval()
    x, t, cond, guidance = _inputs()
    with torch.no_grad():
        mine = ours(x, t, cond, guidance)
    assert mine.abs().max() > 0.1
    assert (mine + _theirs(theirs, x, t, cond, guidance)).abs().max().item() < TOL

    back = dit_from_diffusers(tmp_path)  # the pipeline folder: finds transformer/, reads config.json
    assert back.config == ours.config
    for key, value in ours.state_dict().items():
        assert torch.allclose(back.state_dict()[key], value, atol=1e-6), key

    config, state = dit_to_diffusers(ours)
    assert set(state) == set(theirs.state_dict()) and config["rope_axes_dim"] == [2, 2, 4]


def test_mismatched_checkpoints_name_the_keys():
    theirs = _diffusers_model()
    config = config_from_diffusers(dict(theirs.config))
    state = dict(theirs.state_dict())
    state["transformer_blocks.0.attn.extra.weight"] = torch.zeros(3)
    del state["single_transformer_blocks.0.proj_mlp.bias"]
    state["proj_out.weight"] = torch.zeros(5, 16)
    with pytest.raises(CheckpointMismatchError) as err:
        state_dict_from_diffusers(state, config)
    text = str(err.value)
    assert "transformer_blocks.0.attn.extra.weight" in text and "unmapped" in text
    assert "missing diffusers keys (1): single_transformer_blocks.0.proj_mlp.bias" in text
    assert "proj_out.weight (5, 16) -> final.linear.weight needs (16, 16)" in text

    # a config that disagrees with the weights (one more dual block) lists what is absent
    with pytest.raises(CheckpointMismatchError, match="transformer_blocks.2.norm1.linear.weight"):
        state_dict_from_diffusers(theirs.state_dict(), dataclasses.replace(config, depth_double=3))
    with pytest.raises(CheckpointMismatchError, match="token_replace"):
        config_from_diffusers({**TINY, "image_condition_type": "token_replace"})
    with pytest.raises(CheckpointMismatchError, match="unknown"):
        config_from_diffusers({**TINY, "some_new_switch": 1})


def test_hunyuan_13b_layout_covers_every_key():
    with torch.device("meta"):  # shapes only
        theirs = HunyuanVideoTransformer3DModel()  # diffusers' defaults: the 13B text-to-video model
    config = config_from_diffusers(dict(theirs.config))
    assert config == DiTConfig(rope_axes=(16, 56, 56), guidance_embed=True)  # our defaults are the 13B shape
    with torch.device("meta"):
        ours = VideoDiT(config)
    state = state_dict_to_diffusers(ours.state_dict(), config)
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert set(state_dict_from_diffusers(theirs.state_dict(), config)) == set(ours.state_dict())
