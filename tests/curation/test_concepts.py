"""Concept balancing on planted clusters: k-means recovers unequal Gaussian blobs, weights equalise the
concepts, duplicates are left out, caps work through concept_rank, and incremental runs are stable."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.concepts import ConceptStep, default_k
from curation.errors import ConfigError
from curation.lake import Lake

DIM = 32
SIZES = (1200, 600, 300, 150, 60)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(rng: np.random.Generator, sizes=SIZES, prefix="c"):
    centers = unit_rows(rng.standard_normal((len(sizes), DIM)))
    x = np.concatenate([unit_rows(c + 0.1 * rng.standard_normal((s, DIM))) for c, s in zip(centers, sizes)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    ids = [f"{prefix}{i:05d}" for i in range(len(x))]
    return ids, x, truth, centers


def table(ids, x, is_duplicate=None) -> pa.Table:
    cols = {"clip_id": pa.array(ids),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])}
    if is_duplicate is not None:
        cols["is_duplicate"] = pa.array(is_duplicate)
    return pa.table(cols)


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    def comb2(v):
        return (v * (v - 1) / 2).sum()
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    cont = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(cont, (ai, bi), 1)
    index, rows, cols = comb2(cont), comb2(cont.sum(1)), comb2(cont.sum(0))
    expected = rows * cols / comb2(np.array([len(a)]))
    return float((index - expected) / ((rows + cols) / 2 - expected))


def read(lake: Lake) -> dict[str, np.ndarray]:
    t = lake.dataset("clips").to_table().sort_by("clip_id")
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names if c != "embedding"}


def test_planted_blobs_recovered_and_weights_balance(tmp_path):
    rng = np.random.default_rng(0)
    ids, x, truth, _ = blobs(rng)
    lake = Lake(tmp_path)
    lake.append("clips", table(ids, x))
    summary = ConceptStep({"k": 5}).run(lake)
    got = read(lake)
    assert summary["k"] == 5 and summary["trained"]
    assert adjusted_rand(truth, got["concept"]) >= 0.95
    w = got["sample_weight"].astype(np.float64)
    assert abs(w.mean() - 1.0) < 1e-4
    per_concept = np.bincount(got["concept"], weights=w)
    assert per_concept.max() / per_concept.min() < 1.01  # every concept carries the same mass
    assert got["concept"].dtype == np.int32 and got["sample_weight"].dtype == np.float32
    # the centroid table agrees with the clips
    cents = lake.dataset("concepts").to_table().sort_by("concept")
    assert cents.column("size").to_pylist() == np.bincount(got["concept"], minlength=5).tolist()


def test_concept_rank_caps_every_concept(tmp_path):
    rng = np.random.default_rng(1)
    ids, x, _, _ = blobs(rng)
    lake = Lake(tmp_path)
    lake.append("clips", table(ids, x))
    ConceptStep({"k": 5}).run(lake)
    got = read(lake)
    for c in range(5):
        ranks = np.sort(got["concept_rank"][got["concept"] == c])
        assert ranks.tolist() == list(range(len(ranks)))  # 0..size-1, no gaps or repeats
    capped = np.bincount(got["concept"][got["concept_rank"] < 100])
    assert sorted(capped.tolist()) == sorted(min(100, s) for s in SIZES)


def test_duplicates_get_zero_weight_and_do_not_count(tmp_path):
    rng = np.random.default_rng(2)
    ids, x, truth, _ = blobs(rng)
    dup = np.zeros(len(ids), bool)
    dup[:600] = True  # half of the biggest blob are duplicates
    lake = Lake(tmp_path)
    lake.append("clips", table(ids, x, dup.tolist()))
    ConceptStep({"k": 5}).run(lake)
    got = read(lake)
    assert (got["sample_weight"][dup] == 0).all()
    assert abs(got["sample_weight"][~dup].astype(np.float64).mean() - 1.0) < 1e-4
    assert np.isnan(got["concept_rank"][dup].astype(float)).all()  # null rank: never inside a cap
    sizes = lake.dataset("concepts").to_table().column("size").to_pylist()
    assert sorted(sizes) == sorted([600, 600, 300, 150, 60])


def test_incremental_assigns_new_clips_and_rerun_is_a_no_op(tmp_path):
    rng = np.random.default_rng(3)
    ids, x, truth, centers = blobs(rng)
    lake = Lake(tmp_path)
    lake.append("clips", table(ids, x))
    ConceptStep({"k": 5}).run(lake)
    before = read(lake)
    concept_of_blob = [np.bincount(before["concept"][truth == b]).argmax() for b in range(5)]

    new_truth = rng.integers(0, 5, 100)
    new_x = unit_rows(centers[new_truth] + 0.1 * rng.standard_normal((100, DIM)))
    lake.append("clips", table([f"n{i:03d}" for i in range(100)], new_x))
    summary = ConceptStep({"k": 5}).run(lake)
    assert summary["new"] == 100 and not summary["trained"]  # 100 of 2410 < refit_fraction
    after = read(lake)
    old = np.isin(after["clip_id"], before["clip_id"])
    assert (after["concept"][old] == before["concept"]).all()
    assert (after["concept"][~old] == np.array(concept_of_blob)[new_truth]).all()
    assert abs(after["sample_weight"].astype(np.float64).mean() - 1.0) < 1e-4

    version = lake.dataset("clips").version
    again = ConceptStep({"k": 5}).run(lake)
    assert again["rows_written"] == 0 and lake.dataset("clips").version == version


def test_default_k_and_custom_column(tmp_path):
    assert default_k(2_000_000_000, 10_000) == 10_000
    assert default_k(20_000, 10_000) == 100
    rng = np.random.default_rng(4)
    ids, x, truth, _ = blobs(rng)
    t = table(ids, x).rename_columns(["clip_id", "vid_emb"])
    lake = Lake(tmp_path)
    lake.append("clips", t)
    summary = ConceptStep({"column": "vid_emb"}).run(lake)
    assert summary["k"] == default_k(len(ids), 10_000)
    assert lake.producers("clips")["concept"]["params"]["column"] == "vid_emb"


def test_null_embeddings_and_bad_inputs(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(ConfigError, match="concepts.*clips"):
        ConceptStep().run(lake)
    rng = np.random.default_rng(5)
    ids, x, _, _ = blobs(rng, sizes=(50, 50))
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM,
                                            mask=pa.array([i == 7 for i in range(len(ids))]))
    lake.append("clips", pa.table({"clip_id": ids, "embedding": emb}))
    with pytest.raises(ConfigError, match="concepts.*'emb2'"):
        ConceptStep({"column": "emb2"}).run(lake)
    with pytest.raises(ConfigError, match="no parameter"):
        ConceptStep({"kk": 3})
    ConceptStep({"k": 2}).run(lake)
    got = read(lake)
    assert got["concept"][7] is None or np.isnan(float(got["sample_weight"][7]))


@pytest.mark.parametrize("n", [5, 256, 257, 3000])
def test_cluster_sums_are_the_same_floats_either_way(n):
    """np.add.at (up to ADD_AT_ROWS points) and the sparse product sum clusters in row order: equal floats."""
    from scipy.sparse import csr_matrix

    from curation.vectors import cluster_sums

    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 48)).astype(np.float32)
    idx = rng.integers(0, 7, n)
    want = np.asarray(csr_matrix((np.ones(n, np.float32), (idx, np.arange(n))), shape=(7, n)) @ x)
    got = cluster_sums(x, idx, 7)
    assert got.dtype == np.float32 and np.array_equal(got, want)
