"""Embedding vectors in the lake: checks of a vector column, zero-copy NumPy views of it, unit rows,
and seeded spherical k-means (cosine). Shared by the dedup and concepts steps."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from curation.errors import ConfigError

TABLE = "clips"


def check_table(ds, column: str, step: str) -> int:
    """Validate that `clips` exists and `column` is a float vector column; return its dimension."""
    if ds is None:
        raise ConfigError(f"step '{step}': the lake has no '{TABLE}' table; run the split and embedding "
                          f"stages first")
    idx = ds.schema.get_field_index(column)
    if idx < 0:
        raise ConfigError(f"step '{step}': table '{TABLE}' has no embedding column '{column}' (set the "
                          f"step's `column` parameter, or run an embedding stage first)")
    typ = ds.schema.field(column).type
    if not (pa.types.is_fixed_size_list(typ) and pa.types.is_floating(typ.value_type)):
        raise ConfigError(f"step '{step}': column '{column}' must be fixed_size_list<float32>[d], got {typ}")
    return typ.list_size


def quote(column: str) -> str:
    return f"`{column}`"


def vectors(batch: pa.RecordBatch | pa.Table, column: str) -> np.ndarray:
    """(rows, d) float32 view of a fixed_size_list column of one batch (no Python lists)."""
    arr = batch.column(batch.schema.get_field_index(column))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    d = arr.type.list_size
    flat = arr.flatten() if arr.offset or arr.null_count else arr.values
    return flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, d)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), so a dot product is a cosine."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]  # ~4x faster than np.linalg.norm on (n, 512)
    return x / np.maximum(norms, 1e-12)


def nearest(x: np.ndarray, c: np.ndarray, block: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Index of and cosine to the nearest centroid for unit rows x (blocked GEMM)."""
    idx = np.empty(len(x), np.int64)
    sim = np.empty(len(x), np.float32)
    for s in range(0, len(x), block):
        g = x[s:s + block] @ c.T
        idx[s:s + block] = g.argmax(axis=1)
        sim[s:s + block] = g[np.arange(len(g)), idx[s:s + block]]
    return idx, sim


def init_centroids(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (best of 2 + log k draws per centre, as scikit-learn does) on a subsample
    for k <= 256, where it costs k passes; random distinct rows above that, where Lloyd's iterations and
    empty-cluster reseeding do the work (as faiss does)."""
    if k > 256:
        return x[rng.choice(len(x), k, replace=False)].copy()
    sub = x[rng.choice(len(x), min(len(x), max(50 * k, 4096)), replace=False)]
    trials = 2 + int(math.log(k))
    centers = [sub[rng.integers(len(sub))]]
    dist = np.maximum(1.0 - sub @ centers[0], 0) ** 2
    for _ in range(1, k):
        total = dist.sum()
        if total <= 0:
            cand = rng.integers(len(sub), size=trials)
        else:
            cand = rng.choice(len(sub), size=trials, p=dist / total)
        new = np.minimum(dist[None, :], np.maximum(1.0 - sub[cand] @ sub.T, 0) ** 2)
        best = int(new.sum(axis=1).argmin())
        centers.append(sub[cand[best]])
        dist = new[best]
    return np.stack(centers)


def spherical_kmeans(x: np.ndarray, k: int, iterations: int, seed: int, restarts: int = 1) -> np.ndarray:
    """Lloyd's algorithm on unit vectors with unit centroids (cosine k-means); the best of `restarts` runs
    by total cosine to the centroids (seeding can put two centres in one big cluster and leave a small one
    unserved, a local optimum Lloyd cannot leave)."""
    rng = np.random.default_rng(seed)
    best, best_score = None, -np.inf
    for _ in range(max(1, restarts)):
        c, score = lloyd(x, init_centroids(x, k, rng), iterations)
        if score > best_score:
            best, best_score = c, score
    return best


ADD_AT_ROWS = 256  # up to this many points np.add.at sums clusters, beyond it a SciPy sparse product


def cluster_sums(x: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """(k, d) sums of the rows of x by cluster `idx`, accumulated in row order (the same floats either way):
    np.add.at for the few points of a small run (no SciPy import on the driver, ~0.13 CPU-s), a sparse
    one-hot product for more (10x faster than add.at at 20,000 x 512)."""
    if len(x) <= ADD_AT_ROWS:
        sums = np.zeros((k, x.shape[1]), np.result_type(np.float32, x.dtype))
        np.add.at(sums, idx, x)
        return sums
    from scipy.sparse import csr_matrix

    onehot = csr_matrix((np.ones(len(x), np.float32), (idx, np.arange(len(x)))), shape=(k, len(x)))
    return np.asarray(onehot @ x)


def lloyd(x: np.ndarray, c: np.ndarray, iterations: int) -> tuple[np.ndarray, float]:
    """Lloyd's iterations from centroids c. Empty clusters are reseeded with the points worst served by
    their centroid. Returns the centroids and the total cosine of the points to them."""
    k = len(c)
    prev = None
    for _ in range(iterations):
        idx, sim = nearest(x, c)
        sums = cluster_sums(x, idx, k)
        counts = np.bincount(idx, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            sums[empty] = x[np.argsort(sim)[: len(empty)]]
        c = unit(sums).astype(np.float32)
        if prev is not None and np.mean(prev != idx) < 1e-3 and not len(empty):
            break
        prev = idx
    return c, float(nearest(x, c)[1].sum())
