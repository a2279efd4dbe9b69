"""Model-backed scorers (aesthetic, CLIP embedding) on a tiny random-init open_clip ViT saved to disk and
loaded back through open_clip's real checkpoint path; missing weights are a clear ConfigError."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from curation.errors import ConfigError
from curation.scoring import ScoreGroup
from curation.synth import Shot
from filter_media import clip_row, frames_for, table
from filters.aesthetic import AestheticParams, AestheticScorer, build_head
from filters.embedding import ClipEmbeddingParams, ClipEmbeddingScorer

TINY = "videocurate-test-tiny-vit"
CONFIG = {"embed_dim": 32,
          "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(clip checkpoint, aesthetic head) files of a random-init tiny model."""
    import open_clip

    folder = tmp_path_factory.mktemp("tiny_clip")
    (folder / f"{TINY}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None)
    clip_path = folder / "tiny_clip.pt"
    torch.save(model.state_dict(), clip_path)
    head_path = folder / "head.pth"
    torch.save(build_head(CONFIG["embed_dim"]).state_dict(), head_path)
    return str(clip_path), str(head_path)


@pytest.fixture(scope="module")
def clips(vids):
    return [vids("clip_a.mp4", [Shot("astronaut", 16, pan=(1, 0))]),
            vids("clip_b.mp4", [Shot("coffee", 16, zoom=1.01)])]


def test_aesthetic_identical_after_reload(weights, clips):
    clip_path, head_path = weights
    params = AestheticParams(model=TINY, pretrained=clip_path, head=head_path, frames=2)
    first, second = AestheticScorer(params), AestheticScorer(params)
    first.ensure_setup()
    second.ensure_setup()  # an independent load: equal scores prove the weights came from the files
    a = [first.score(frames_for(first, t))["aesthetic"] for t in clips]
    b = [second.score(frames_for(second, t))["aesthetic"] for t in clips]
    assert a == b and a[0] != a[1] and all(np.isfinite(a))


def test_clip_embedding_identical_after_reload(weights, clips):
    params = ClipEmbeddingParams(model=TINY, pretrained=weights[0], frames=2)
    first, second = ClipEmbeddingScorer(params), ClipEmbeddingScorer(params)
    first.ensure_setup()
    second.ensure_setup()
    for t in clips:
        x, y = (s.score(frames_for(s, t)) for s in (first, second))
        assert np.array_equal(x["embedding"], y["embedding"]) and x["embedding"].shape == (32,)
        assert abs(np.linalg.norm(x["embedding"]) - 1) < 1e-5
        assert x["embedding_model"] == f"open_clip:{TINY}:tiny_clip.pt"


def test_clip_embedding_column_is_fixed_size_list(weights, clips):
    stage = ClipEmbeddingScorer(ClipEmbeddingParams(model=TINY, pretrained=weights[0], frames=2))
    out = stage(table([clip_row(t) for t in clips]))
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert isinstance(out.column("embedding").chunk(0), pa.FixedSizeListArray)
    assert out.column("embedding").null_count == 0


def test_missing_weights_fail_fast_with_the_setting_named(weights):
    with pytest.raises(ConfigError, match=r"stage 'aesthetic'.*'head'"):
        AestheticScorer(AestheticParams(model=TINY, pretrained=weights[0])).ensure_setup()
    with pytest.raises(ConfigError, match=r"stage 'aesthetic'.*'pretrained'"):
        AestheticScorer(AestheticParams(model=TINY, head=weights[1])).ensure_setup()
    with pytest.raises(ConfigError, match=r"stage 'clip_embedding'.*'pretrained'"):
        ClipEmbeddingScorer(ClipEmbeddingParams(model=TINY)).ensure_setup()
    with pytest.raises(ConfigError, match="not a file"):
        ClipEmbeddingScorer(ClipEmbeddingParams(model=TINY, pretrained="/nowhere/clip.pt")).ensure_setup()
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        ClipEmbeddingScorer(ClipEmbeddingParams(model="no-such-model", pretrained=weights[0])).output_fields()
    with pytest.raises(ConfigError, match="cannot load"):  # a hub tag that is not cached, offline
        uncached = ClipEmbeddingParams(model="ViT-B-32", pretrained="laion2b_s34b_b79k")
        ClipEmbeddingScorer(uncached).ensure_setup()
    # In a group, a scorer without weights stops the worker at setup, before any clip is scored.
    with pytest.raises(ConfigError):
        ScoreGroup([AestheticScorer(AestheticParams(model=TINY))]).ensure_setup()


def test_head_width_must_match_clip(weights, tmp_path):
    wrong = tmp_path / "head768.pth"
    torch.save(build_head(768).state_dict(), wrong)
    with pytest.raises(ConfigError, match="768-d input"):
        AestheticScorer(AestheticParams(model=TINY, pretrained=weights[0], head=str(wrong))).ensure_setup()
