"""Concept balancing: spherical k-means over clip embeddings (HunyuanVideo: ~10K centroids) so that tiers
and the trainer can rebalance over-represented concepts. A global step over the committed `clips` table.

Columns written to `clips` (rows with a null embedding are left null):
  concept           int32    index of the nearest centroid (cosine)
  concept_distance  float32  1 - cosine to that centroid (large = atypical of its concept)
  concept_rank      int32    0-based rank of the clip inside its concept in a fixed pseudo-random order
                             (hash of clip_id): `WHERE concept_rank < 100` caps every concept at 100
                             clips; null for duplicates
  sample_weight     float32  ∝ concept_size^-weight_power, mean 1 over non-duplicates, 0 for duplicates;
                             with power 1 every concept carries the same total weight
The centroids go to the lake table `concepts` (concept, centroid, size, weight).

Training is Lloyd's algorithm on a streamed Bernoulli sample of at most `sample_size` rows (memory
sample_size × d × 4 bytes: 200k × 512 → 400 MB); assignment streams the table in blocks. Later runs assign
only new clips to the stored centroids unless they are more than `refit_fraction` of the table."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curation.buckets import run_tasks, want_ray
from curation.lake import Lake
from curation.stage import Step, params
from curation.vectors import TABLE, check_table, nearest, quote, spherical_kmeans, unit, vectors

CENTROIDS = "concepts"
KEY = "clip_id"
OUTPUT_COLUMNS = ("concept", "concept_distance", "concept_rank", "sample_weight")


@params
class ConceptParams:
    """Settings of the concepts step (defaults in brackets)."""

    column: str = "embedding"  # the fixed_size_list<float32>[d] embedding column
    k: Annotated[int, Field(ge=1)] | None = None  # number of concepts; None: round(sqrt(n / 2)), at most max_k
    max_k: Annotated[int, Field(ge=1)] = 10_000
    sample_size: Annotated[int, Field(ge=1)] = 200_000  # rows k-means trains on
    iterations: Annotated[int, Field(ge=1)] = 25  # Lloyd iterations (stops earlier when < 0.1 % of the sample moves)
    restarts: Annotated[int, Field(ge=1)] = 5  # independent seedings, best kept; only for k <= 256 (k-means++)
    seed: int = 0
    # weight ∝ size^-power: 1 = equal mass per concept, 0.5 = softer, 0 = none
    weight_power: Annotated[float, Field(ge=0)] = 1.0
    skip_duplicates: bool = True  # rows with is_duplicate = true neither train, count nor get weight
    refit_fraction: Annotated[float, Field(ge=0)] = 0.2  # retrain when new clips exceed this share of the table
    block_rows: Annotated[int, Field(ge=1)] = 65536  # rows per streamed block
    full: bool = False  # retrain and reassign everything


class ConceptStep(Step):
    """Global step `concepts`: k-means concepts and balancing weights for the lake's clips. From Python:
    `ConceptStep({"k": 1000}).run(Lake(root))`."""

    name = "concepts"
    version = "1"
    Params = ConceptParams
    semantic_params = ("column", "k", "max_k", "sample_size", "iterations", "restarts", "seed", "weight_power",
                       "skip_duplicates")

    def input_columns(self) -> list[str]:
        return [self.params.column]

    def output_columns(self) -> list[str]:
        return list(OUTPUT_COLUMNS)

    def run(self, lake: Lake) -> dict:
        t0 = time.perf_counter()
        p = self.params
        ds = lake.dataset(TABLE)
        check_table(ds, p.column, self.name)
        has = ds.schema.get_field_index("concept") >= 0
        with_emb = f"{quote(p.column)} IS NOT NULL"
        n = ds.count_rows(filter=with_emb)
        new = ds.count_rows(filter=f"{with_emb} AND concept IS NULL") if has else n
        stale = self.is_stale(lake)
        summary = {"step": self.name, "clips": n, "new": new, "trained": False, "k": None,
                   "rows_written": 0}
        if n == 0 or (new == 0 and not stale and not p.full):
            summary["seconds"] = round(time.perf_counter() - t0, 3)
            return summary
        centroids = None if (p.full or stale or not has) else load_centroids(lake)
        if centroids is None or new > p.refit_fraction * n:
            sample = draw_sample(ds, p, n)
            k = p.k or default_k(len(sample), p.max_k)
            k = min(k, len(sample))
            centroids = spherical_kmeans(sample, k, p.iterations, p.seed, p.restarts if k <= 256 else 1)
            summary["trained"] = True
            reassign_all = True
        else:
            reassign_all = False
        assigned = assign(ds, p, centroids, only_new=not reassign_all)
        table, sizes, weights = balance(ds, p, assigned, len(centroids))
        if table.num_rows:
            lake.merge_columns(TABLE, table, on=KEY)
        lake.overwrite(CENTROIDS, centroid_table(centroids, sizes, weights))
        self.record(lake)
        summary.update(k=len(centroids), rows_written=table.num_rows, empty_concepts=int((sizes == 0).sum()),
                       seconds=round(time.perf_counter() - t0, 3))
        return summary


def default_k(n: int, max_k: int) -> int:
    return max(1, min(max_k, int(round(math.sqrt(n / 2)))))


def train_filter(p: ConceptParams, ds) -> str:
    cond = f"{quote(p.column)} IS NOT NULL"
    if p.skip_duplicates and ds.schema.get_field_index("is_duplicate") >= 0:
        cond += " AND (is_duplicate IS NULL OR NOT is_duplicate)"
    return cond


def draw_sample(ds, p: ConceptParams, n: int) -> np.ndarray:
    """Unit vectors of a Bernoulli sample of about `sample_size` rows, streamed block by block."""
    rng = np.random.default_rng(p.seed)
    rate = min(1.0, p.sample_size / max(n, 1))
    parts = []
    for b in ds.to_batches(columns=[p.column], filter=train_filter(p, ds), batch_size=p.block_rows):
        x = vectors(b, p.column)
        pick = rng.random(len(x)) < rate if rate < 1.0 else slice(None)
        parts.append(unit(x[pick]))
    sample = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
    return sample[: p.sample_size]


# ---- assignment and weights ---------------------------------------------------------------------------
def assign(ds, p: ConceptParams, centroids: np.ndarray, only_new: bool) -> pa.Table:
    """clip_id, concept, concept_distance for every clip with an embedding, streamed fragment by fragment
    (as Ray tasks when Ray is running); when `only_new`, clips that already have a concept keep it (read
    back, not recomputed)."""
    with_emb = f"{quote(p.column)} IS NOT NULL"
    where = f"{with_emb} AND concept IS NULL" if only_new else with_emb
    frags = [f.fragment_id for f in ds.get_fragments()]
    groups = [frags[i:i + 4] for i in range(0, len(frags), 4)]
    remote = want_ray(ds.count_rows())
    if remote:
        import ray  # only from RAY_STEP_ROWS rows on: importing it costs ~0.2 s
    ref = ray.put(centroids) if remote else centroids
    parts = [t for t in run_tasks(assign_fragments, [(ds.uri, ds.version, g, p, ref, where) for g in groups],
                                  remote) if t.num_rows]
    if only_new:
        old = ds.to_table(columns=[KEY, "concept", "concept_distance"],
                          filter=f"{with_emb} AND concept IS NOT NULL")
        parts.append(old.cast(parts[0].schema) if parts else old)
    return pa.concat_tables(parts) if parts else pa.table({KEY: pa.array([], pa.string()),
                                                          "concept": pa.array([], pa.int32()),
                                                          "concept_distance": pa.array([], pa.float32())})


def assign_fragments(uri: str, version: int, fragment_ids: list[int], p: ConceptParams, centroids: np.ndarray,
                     where: str) -> pa.Table:
    """The nearest concept of every row of some fragments (a task of `assign`)."""
    import lance

    ds = lance.dataset(uri, version=version)
    parts = []
    for fid in fragment_ids:
        for b in ds.get_fragment(fid).to_batches(columns=[KEY, p.column], filter=where, batch_size=p.block_rows):
            idx, sim = nearest(unit(vectors(b, p.column)), centroids)
            parts.append(pa.table({KEY: b.column(0), "concept": pa.array(idx.astype(np.int32)),
                                   "concept_distance": pa.array((1.0 - sim).astype(np.float32))}))
    schema = pa.schema([(KEY, pa.string()), ("concept", pa.int32()), ("concept_distance", pa.float32())])
    return pa.concat_tables([t.cast(schema) for t in parts]) if parts else schema.empty_table()


def hash_order(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed pseudo-random number per clip_id, independent of row order and of the other clips."""
    return np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") >> 1
                     for s in ids.to_pylist()], dtype=np.int64)


def balance(ds, p: ConceptParams, assigned: pa.Table, k: int) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Per-clip rank and weight from the concept sizes; returns the rows whose values change, the
    concept sizes and per-concept weights."""
    names = ds.schema.names
    extra = [c for c in ("is_duplicate", *OUTPUT_COLUMNS) if c in names]
    current = ds.to_table(columns=[KEY, *extra], filter=f"{quote(p.column)} IS NOT NULL")
    current = current.rename_columns([KEY, *(f"old_{c}" for c in extra)])
    t = assigned.join(current, KEY, join_type="left outer").combine_chunks()
    concept = t.column("concept").to_numpy()
    dup = np.zeros(t.num_rows, bool)
    if p.skip_duplicates and "old_is_duplicate" in t.column_names:
        dup = pc.fill_null(t.column("old_is_duplicate"), False).to_numpy(zero_copy_only=False)
    sizes = np.bincount(concept[~dup], minlength=k)
    used = sizes > 0
    per_concept = np.zeros(k, np.float64)
    per_concept[used] = sizes[used].astype(np.float64) ** -p.weight_power
    weight = np.where(dup, 0.0, per_concept[concept])
    live = ~dup
    if live.any():
        weight[live] /= weight[live].mean()  # mean 1 over non-duplicates
    rank = np.full(t.num_rows, -1, np.int64)
    order = np.lexsort((hash_order(t.column(KEY)), concept))
    order = order[live[order]]
    c_sorted = concept[order]
    starts = np.r_[0, np.flatnonzero(c_sorted[1:] != c_sorted[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank[order] = np.arange(len(order)) - run_start
    new = {"concept": t.column("concept"), "concept_distance": t.column("concept_distance"),
           "concept_rank": pa.array(rank.astype(np.int32), mask=rank < 0),
           "sample_weight": pa.array(weight.astype(np.float32))}
    changed = np.zeros(t.num_rows, bool)
    for name, arr in new.items():
        old = f"old_{name}"
        if old not in t.column_names:
            changed[:] = True
            break
        eq = pc.fill_null(pc.equal(t.column(old), arr), False)
        both_null = pc.and_(pc.is_null(t.column(old)), pc.is_null(arr))
        changed |= ~pc.or_(eq, both_null).to_numpy(zero_copy_only=False)
    out = pa.table({KEY: t.column(KEY), **new}).filter(pa.array(changed))
    w_concept = np.zeros(k, np.float32)
    if live.any():
        w_concept[used] = (per_concept[used] / per_concept[concept[live]].mean()).astype(np.float32)
    return out, sizes, w_concept


def centroid_table(centroids: np.ndarray, sizes: np.ndarray, weights: np.ndarray) -> pa.Table:
    k, d = centroids.shape
    return pa.table({"concept": pa.array(np.arange(k, dtype=np.int32)),
                     "centroid": pa.FixedSizeListArray.from_arrays(pa.array(centroids.ravel()), d),
                     "size": pa.array(sizes.astype(np.int64)), "weight": pa.array(weights)})


def load_centroids(lake: Lake) -> np.ndarray | None:
    ds = lake.dataset(CENTROIDS)
    if ds is None:
        return None
    t = ds.to_table(columns=["concept", "centroid"]).sort_by("concept")
    return vectors(t, "centroid")
