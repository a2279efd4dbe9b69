"""Perceptual embedding: a re-encoded (resized, lower bitrate, slightly cropped) copy of a clip is
closer to its original than to any other clip."""

import numpy as np

from curation.synth import Shot
from filter_media import frames_for, reencode
from filters.embedding import PerceptualEmbeddingScorer

CLIPS = {
    "astro_pan": Shot("astronaut", 24, pan=(2.0, 0)),
    "astro_zoom": Shot("astronaut", 24, zoom=1.01),  # same photo, other move: a hard negative
    "coffee": Shot("coffee", 24, pan=(0, 1.0)),
    "chelsea": Shot("chelsea", 24, jitter=1.5),
    "rocket": Shot("rocket", 24, pan=(-1.5, 0)),
    "motorcycle": Shot("motorcycle", 24, zoom=0.99),
    "camera": Shot("camera", 24, pan=(1.0, 1.0)),
}


def _embed(scorer, truth) -> np.ndarray:
    out = scorer.score(frames_for(scorer, truth))
    emb = np.asarray(out["embedding"], np.float32)
    assert emb.shape == (scorer.dim,) and abs(np.linalg.norm(emb) - 1) < 1e-4
    assert out["embedding_model"] == f"perceptual-v2:{scorer.dim}"
    return emb


def test_reencoded_copy_is_nearest(vids, tmp_path):
    scorer = PerceptualEmbeddingScorer()
    names = list(CLIPS)
    originals = [vids(f"emb_{n}.mp4", [CLIPS[n]]) for n in names]
    orig = np.stack([_embed(scorer, t) for t in originals])
    variants = {
        "smaller_low_bitrate": {"size": (256, 144), "crf": 36},
        "larger": {"size": (480, 270), "crf": 28},
        "cropped_2pct": {"size": (320, 180), "crf": 30, "crop": 0.02},
    }
    for label, kw in variants.items():
        copies = np.stack([_embed(scorer, reencode(t, tmp_path / f"{label}_{n}.mp4", **kw))
                           for n, t in zip(names, originals)])
        sims = copies @ orig.T  # cosine (unit vectors)
        assert (sims.argmax(axis=1) == np.arange(len(names))).all(), (label, np.round(sims, 3))
        own = np.diag(sims)
        others = np.where(np.eye(len(names), dtype=bool), -1, sims).max(axis=1)
        assert (own > 0.97).all(), (label, own)
        # Other photos are far; the same photo under another camera move (astro_pan vs astro_zoom) is
        # a near-duplicate in content and only just below the true copy.
        assert (own[2:] - others[2:] > 0.3).all() and (own[:2] > others[:2]).all(), (label, own, others)
