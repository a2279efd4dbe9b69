"""Near-duplicate clips by embedding: a global step over the committed `clips` table that joins clips whose
cosine similarity reaches a threshold into groups, keeps the best clip of each group and marks the rest.

Columns written to `clips` (rows with a null embedding are left null):
  dup_group     string  clip_id of the group's kept clip; a clip with no duplicate is its own group, so
                        `dup_group = clip_id`. Non-null means "already checked": the incremental test.
  is_duplicate  bool    false for the kept clip (and singletons), true for the others.
  dup_of        string  clip_id of the kept clip for duplicates, null for kept clips.

Candidate pairs come from one of two searches; the final decision is always an exact float32 cosine.
  exact  brute force in NumPy blocks (every new clip × every clip); `auto` picks it up to `exact_max_rows`.
  index  a bucketed self-join driven by the IVF model of the Lance vector index on the column: every
         vector is assigned to its `nprobes` nearest centroids (primary bucket = nearest), and per bucket
         one float32 GEMM compares the vectors whose top-p list holds the bucket against the vectors whose
         primary bucket it is. A pair (i, j) is found when primary(j) is in top-p(i) or primary(i) in
         top-p(j); near-copies almost always share a bucket that way (recall in RESULTS_dedup.md).
         Vectors are held as one float16 copy (n × d × 2 bytes: 1 GB at 1M × 512), candidates are taken
         at the threshold minus the float16 error bound and re-scored from float32 in a second scan.
         Incremental runs compare only pairs with a new clip on one side.
Groups are the connected components of the duplicate graph (what union-find computes), so running
incrementally gives the same groups as one run over everything."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curation.errors import ConfigError
from curation.lake import Lake
from curation.stage import Step, params
from curation.vectors import TABLE, check_table, quote, spherical_kmeans, unit, vectors

KEY = "clip_id"
OUTPUT_COLUMNS = ("dup_group", "is_duplicate", "dup_of")
# |float16 dot - float32 dot| for unit vectors: each product carries <= 2 * 2**-11 relative error and
# sum |x_i y_i| <= 1 (Cauchy-Schwarz), so 2**-10 plus float32 accumulation; 2e-3 leaves room to spare.
FP16_MARGIN = 2e-3
# An existing index whose centroids are this much coarser than sqrt(n) makes buckets too big for the join
# (GEMM cost grows as n^2 / buckets); the step then trains its own centroids instead.
COARSE_FACTOR = 4


@params
class DedupParams:
    """Settings of the dedup step (defaults in brackets)."""

    column: str = "embedding"  # the fixed_size_list<float32>[d] embedding column
    # cosine similarity at or above which two clips are duplicates
    threshold: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.95
    # Which clip of a group is kept: "<column> asc|desc" in priority order; "resolution" = the picture's
    # area (inside content_box when the borders scorer ran, else width*height).
    # Missing columns are skipped, nulls sort last, clip_id ascending breaks the remaining ties.
    keep_by: tuple[str, ...] = ("resolution desc", "clarity desc", "aesthetic desc")
    # auto | exact (NumPy brute force) | index (bucketed join over the Lance IVF model's centroids)
    method: Literal["auto", "exact", "index"] = "auto"
    # auto: brute force when at most this many clips have embeddings (measured crossover, RESULTS_dedup.md)
    exact_max_rows: Annotated[int, Field(ge=0)] = 10_000
    nprobes: Annotated[int, Field(ge=1)] = 3  # buckets per vector in the join (top-p centroids)
    # IVF partitions when the step builds the index; None: ~sqrt(n)
    num_partitions: Annotated[int, Field(ge=1)] | None = None
    index_type: str = "IVF_FLAT"  # Lance index type built when none exists on the column
    query_batch: Annotated[int, Field(ge=1)] = 4096  # rows per brute-force query block / join GEMM side
    block_rows: Annotated[int, Field(ge=1)] = 16384  # rows per streamed block of the table
    full: bool = False  # recompute every clip, ignoring earlier results


@dataclass
class Candidates:
    """Pairs (a, b) of table positions with their exact cosine similarity."""

    a: list[np.ndarray] = field(default_factory=list)
    b: list[np.ndarray] = field(default_factory=list)
    sim: list[np.ndarray] = field(default_factory=list)
    scored: int = 0  # candidate pairs looked at before the threshold

    def add(self, a: np.ndarray, b: np.ndarray, sim: np.ndarray) -> None:
        self.a.append(a.astype(np.int64))
        self.b.append(b.astype(np.int64))
        self.sim.append(sim.astype(np.float32))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.a:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(self.a), np.concatenate(self.b), np.concatenate(self.sim)


class DedupStep(Step):
    """Global step `dedup`: marks near-duplicate clips in the lake's `clips` table. Usable from the runner
    and from Python: `DedupStep({"threshold": 0.97}).run(Lake(root))`."""

    name = "dedup"
    version = "1"
    Params = DedupParams
    semantic_params = ("column", "threshold", "keep_by")  # others change the speed, not the answer

    def __init__(self, params: dict | DedupParams | None = None):
        super().__init__(params)
        for spec in self.params.keep_by:
            parse_key(spec)

    def input_columns(self) -> list[str]:
        return [self.params.column]

    def output_columns(self) -> list[str]:
        return list(OUTPUT_COLUMNS)

    def run(self, lake: Lake) -> dict:
        t0 = time.perf_counter()
        p = self.params
        ds = lake.dataset(TABLE)
        dim = check_table(ds, p.column, self.name)
        stale = self.is_stale(lake)
        full = p.full or stale
        if not full and ds.count_rows(filter=embedding_filter(p.column, ds, only_new=True)) == 0:
            # nothing new: answer without reading the table (a rerun must stay cheap and write nothing)
            return {"step": self.name, "clips": ds.count_rows(filter=f"{quote(p.column)} IS NOT NULL"),
                    "checked": 0, "method": None, "candidate_pairs": 0, "pairs": 0, "groups": 0,
                    "duplicates": 0, "rows_written": 0, "seconds": round(time.perf_counter() - t0, 3)}
        meta = load_meta(ds, p, full)
        n = len(meta["rowid"])
        is_new = meta["is_new"]
        m = int(is_new.sum())
        summary = {"step": self.name, "clips": n, "checked": m, "method": None, "candidate_pairs": 0,
                   "pairs": 0, "groups": 0, "duplicates": 0, "rows_written": 0}
        if m == 0:
            summary["seconds"] = round(time.perf_counter() - t0, 3)
            return summary
        method = p.method if p.method != "auto" else ("exact" if n <= p.exact_max_rows else "index")
        timings = {"read_meta": time.perf_counter() - t0}
        if method == "exact":
            cands = exact_pairs(ds, p, embedding_filter(p.column, ds, only_new=not full), meta["rowid"])
            timings["search"] = time.perf_counter() - t0 - timings["read_meta"]
        else:
            t = time.perf_counter()
            centroids, source = ivf_centroids(lake, p, n, dim)
            timings["index"] = time.perf_counter() - t
            summary.update(buckets=len(centroids), centroids=source, nprobes=p.nprobes)
            cands = bucket_pairs(ds, p, meta["rowid"], is_new, centroids, timings)
        t = time.perf_counter()
        a, b, _ = cands.arrays()
        a, b = unique_pairs(a, b, n)  # `pairs` counts unordered pairs, whichever search found them
        comp = components(n, a, b, meta["old_label"])
        table, n_groups, n_dups = decide(meta, comp, p.keep_by)
        timings["group"] = time.perf_counter() - t
        t = time.perf_counter()
        if table.num_rows:
            lake.merge_columns(TABLE, table, on=KEY)
        if table.num_rows or stale:
            self.record(lake)
        timings["write"] = time.perf_counter() - t
        summary.update(method=method, candidate_pairs=cands.scored, pairs=len(a), groups=n_groups,
                       duplicates=n_dups, rows_written=table.num_rows,
                       seconds=round(time.perf_counter() - t0, 3),
                       timings={k: round(v, 3) for k, v in timings.items()})
        return summary


def parse_key(spec: str) -> tuple[str, bool]:
    """'clarity desc' → ('clarity', True). Default direction is descending (bigger is better)."""
    parts = spec.split()
    if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")):
        raise ConfigError(f"stage 'dedup': keep_by entry {spec!r} is not '<column> [asc|desc]'")
    return parts[0], len(parts) == 1 or parts[1].lower() == "desc"


def embedding_filter(column: str, ds, only_new: bool) -> str:
    cond = f"{quote(column)} IS NOT NULL"
    if only_new and ds.schema.get_field_index("dup_group") >= 0:
        cond += " AND dup_group IS NULL"
    return cond


def stream(ds, columns: list[str], where: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    return ds.to_batches(columns=columns, filter=where, batch_size=batch_size, with_row_id=True)


def positions(rowids: np.ndarray, sorted_rowids: np.ndarray) -> np.ndarray:
    """Table positions (index into the metadata arrays) of Lance row ids."""
    return np.searchsorted(sorted_rowids, rowids)


# ---- metadata -----------------------------------------------------------------------------------------
def load_meta(ds, p: DedupParams, full: bool) -> dict:
    """Small per-clip columns of every clip with an embedding: row id, clip_id, keep-key columns, the
    previous dup columns. Sorted by row id so row ids from searches map to positions by bisection."""
    names = set(ds.schema.names)
    cols = [KEY] + [c for c in key_columns(p.keep_by) if c in names]
    cols += [c for c in OUTPUT_COLUMNS if c in names and not full]
    table = ds.to_table(columns=cols, filter=f"{quote(p.column)} IS NOT NULL", with_row_id=True)
    order = pc.sort_indices(table, sort_keys=[("_rowid", "ascending")])
    table = table.take(order)
    old = table.column("dup_group") if "dup_group" in table.column_names else pa.nulls(table.num_rows,
                                                                                     pa.string())
    return {"table": table, "rowid": table.column("_rowid").to_numpy(),
            "is_new": pc.is_null(old).to_numpy(zero_copy_only=False), "old_label": old}


def key_columns(keep_by: tuple[str, ...]) -> list[str]:
    out = []
    for spec in keep_by:
        name, _ = parse_key(spec)
        out += ["width", "height", "content_box"] if name == "resolution" else [name]
    return out


# ---- candidate pairs -------------------------------------------------------------------------------
def exact_pairs(ds, p: DedupParams, new_filter: str, sorted_rowids: np.ndarray) -> Candidates:
    """Brute force: every new clip against every clip, one (query block × table block) GEMM at a time.
    Memory is two blocks of vectors plus one block_rows × query_batch similarity matrix."""
    out = Candidates()
    all_filter = f"{quote(p.column)} IS NOT NULL"
    for qb in stream(ds, [p.column], new_filter, p.query_batch):
        q = unit(vectors(qb, p.column))
        qpos = positions(qb.column("_rowid").to_numpy(), sorted_rowids)
        for db in stream(ds, [p.column], all_filter, p.block_rows):
            x = unit(vectors(db, p.column))
            dpos = positions(db.column("_rowid").to_numpy(), sorted_rowids)
            s = q @ x.T
            out.scored += s.size
            i, j = np.nonzero(s >= p.threshold)
            keep = qpos[i] != dpos[j]
            out.add(qpos[i[keep]], dpos[j[keep]], s[i[keep], j[keep]])
    return out


def vector_index(ds, column: str) -> str | None:
    """Name of a vector index on `column`, if any."""
    for desc in ds.describe_indices():
        if list(desc.field_names) == [column] and "IVF" in str(desc.index_type).upper():
            return desc.name
    return None


def create_index(ds, p: DedupParams, n: int, dim: int) -> None:
    """A cosine `index_type` index on the column with ~sqrt(n) partitions (or `num_partitions`)."""
    parts = p.num_partitions or default_partitions(n)
    kwargs = {"num_sub_vectors": max(1, dim // 8)} if "PQ" in p.index_type.upper() else {}
    ds.create_index(p.column, p.index_type, num_partitions=parts, metric="cosine", **kwargs)


# ---- bucketed join over the IVF model (method "index") ---------------------------------------------
def default_partitions(n: int) -> int:
    """~sqrt(n) buckets (at least 32 rows each): the join's GEMM work is ~ nprobes * n^2 * d / buckets
    while assigning rows to centroids costs n * buckets * d, so sqrt(n)-ish balances the two."""
    return max(1, min(int(round(math.sqrt(n))), n // 32 or 1))


def ivf_centroids(lake: Lake, p: DedupParams, n: int, dim: int) -> tuple[np.ndarray, str]:
    """Unit centroids of the Lance IVF index on the column (built when missing, as `index_type`), and where
    they came from. The index need not cover new rows: only its centroids are used, so no
    optimize_indices here. Falls back to our own spherical k-means on a sample when the index's model
    cannot be read back or is much coarser than sqrt(n) (an index built when the table was small)."""
    ds = lake.dataset(TABLE)
    name = vector_index(ds, p.column)
    if name is None:
        create_index(ds, p, n, dim)
        ds = lake.dataset(TABLE)
        name = vector_index(ds, p.column)
    want = p.num_partitions or default_partitions(n)
    try:
        raw = ds.centroids(index_name=name) if name else None
    except (ValueError, RuntimeError, OSError):  # e.g. an index type without an IVF model
        raw = None
    if raw is not None and len(raw) and len(raw) * COARSE_FACTOR >= want:
        return unit(vectors(pa.table({"c": raw}), "c")), "lance-index"
    return train_centroids(ds, p, want), "kmeans"


def train_centroids(ds, p: DedupParams, k: int, per_centroid: int = 64, iterations: int = 10) -> np.ndarray:
    """Seeded spherical k-means on an evenly strided sample of the streamed vectors."""
    total = ds.count_rows(filter=f"{quote(p.column)} IS NOT NULL")
    stride = max(1, total // max(1, k * per_centroid))
    parts = [unit(vectors(b, p.column))[::stride]
             for b in ds.to_batches(columns=[p.column], filter=f"{quote(p.column)} IS NOT NULL",
                                    batch_size=p.block_rows)]
    sample = np.concatenate(parts)
    return spherical_kmeans(sample, min(k, len(sample)), iterations, seed=0)


def top_buckets(x: np.ndarray, centroids: np.ndarray, probes: int) -> np.ndarray:
    """(rows, probes) int32 bucket ids of the nearest centroids by cosine, nearest first."""
    g = x @ centroids.T
    probes = min(probes, g.shape[1])
    if probes == g.shape[1]:
        part = np.broadcast_to(np.arange(probes), g.shape).copy()
    else:
        part = np.argpartition(-g, probes - 1, axis=1)[:, :probes]
    order = np.argsort(-np.take_along_axis(g, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int32)


def assign_all(ds, p: DedupParams, sorted_rowids: np.ndarray,
               centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One streamed scan: the float16 unit vector and the top-p buckets of every clip, by table position.
    float16 halves the resident copy (1 GB at 1M x 512); the GEMMs still run in float32 per bucket."""
    n, dim = len(sorted_rowids), centroids.shape[1]
    x16 = np.empty((n, dim), np.float16)
    top = np.empty((n, min(p.nprobes, len(centroids))), np.int32)
    for b in stream(ds, [p.column], f"{quote(p.column)} IS NOT NULL", p.block_rows):
        x = unit(vectors(b, p.column))
        pos = positions(b.column("_rowid").to_numpy(), sorted_rowids)
        x16[pos] = x
        top[pos] = top_buckets(x, centroids, top.shape[1])
    return x16, top


def members(bucket_of: np.ndarray, rows: np.ndarray, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by bucket as one int array plus offsets: bucket b holds rows[start[b]:start[b+1]]."""
    order = np.argsort(bucket_of, kind="stable")
    start = np.zeros(n_buckets + 1, np.int64)
    np.cumsum(np.bincount(bucket_of, minlength=n_buckets), out=start[1:])
    return rows[order].astype(np.int64), start


def block_pairs(x16: np.ndarray, left: np.ndarray, right: np.ndarray, lo: float, p: DedupParams,
                out: Candidates) -> None:
    """Pairs (left row, right row) with float16-approximate cosine >= lo, in query_batch × block_rows
    float32 GEMMs (bounds the similarity matrix however skewed a bucket is)."""
    for rs in range(0, len(right), p.block_rows):
        r_rows = right[rs:rs + p.block_rows]
        r = x16[r_rows].astype(np.float32)
        for ls in range(0, len(left), p.query_batch):
            l_rows = left[ls:ls + p.query_batch]
            s = x16[l_rows].astype(np.float32) @ r.T
            out.scored += s.size
            i, j = np.nonzero(s >= lo)
            keep = l_rows[i] != r_rows[j]
            out.add(l_rows[i[keep]], r_rows[j[keep]], s[i[keep], j[keep]])


def join_buckets(x16: np.ndarray, top: np.ndarray, is_new: np.ndarray, n_buckets: int, lo: float,
                 p: DedupParams) -> Candidates:
    """Per bucket b: Q_b (rows with b in their top-p) against P_b (rows whose primary bucket is b),
    restricted to pairs with a new clip on at least one side (all clips are new on a full run)."""
    n = len(top)
    rows = np.arange(n, dtype=np.int64)
    p_rows, p_start = members(top[:, 0], rows, n_buckets)
    q_rows, q_start = members(top.ravel(), np.repeat(rows, top.shape[1]), n_buckets)
    out = Candidates()
    for b in range(n_buckets):
        prim = p_rows[p_start[b]:p_start[b + 1]]
        query = q_rows[q_start[b]:q_start[b + 1]]
        if not len(prim) or not len(query):
            continue
        q_new, p_new = is_new[query], is_new[prim]
        # new × all primaries, then old × new primaries: each needed pair once, old × old never
        if q_new.any():
            block_pairs(x16, query[q_new], prim, lo, p, out)
        if p_new.any() and not q_new.all():
            block_pairs(x16, query[~q_new], prim[p_new], lo, p, out)
    return out


def unique_pairs(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs without repeats (a pair is met once per shared bucket and in both directions)."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    code = np.unique(lo * n + hi)
    return code // n, code % n


def exact_similarity(ds, p: DedupParams, sorted_rowids: np.ndarray, dim: int, a: np.ndarray,
                     b: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Exact float32 cosine of pairs of positions: a second sequential scan keeps the float32 unit vectors
    of just the rows that occur in a pair (a scan reads faster than random takes of scattered rows)."""
    need = np.unique(np.concatenate([a, b]))
    slot = np.full(len(sorted_rowids), -1, np.int64)
    slot[need] = np.arange(len(need))
    x = np.empty((len(need), dim), np.float32)
    if len(need):
        for batch in stream(ds, [p.column], f"{quote(p.column)} IS NOT NULL", p.block_rows):
            pos = positions(batch.column("_rowid").to_numpy(), sorted_rowids)
            hit = slot[pos] >= 0
            if hit.any():
                x[slot[pos[hit]]] = unit(vectors(batch, p.column)[hit])
    sim = np.empty(len(a), np.float32)
    for s in range(0, len(a), chunk):
        sim[s:s + chunk] = np.einsum("ij,ij->i", x[slot[a[s:s + chunk]]], x[slot[b[s:s + chunk]]])
    return sim


def bucket_pairs(ds, p: DedupParams, sorted_rowids: np.ndarray, is_new: np.ndarray, centroids: np.ndarray,
                 timings: dict) -> Candidates:
    """Method `index`: assign, join per bucket at the threshold minus the float16 margin, keep the unique
    pairs whose exact cosine reaches the threshold."""
    t = time.perf_counter()
    x16, top = assign_all(ds, p, sorted_rowids, centroids)
    dim = x16.shape[1]
    timings["assign"] = time.perf_counter() - t
    t = time.perf_counter()
    approx = join_buckets(x16, top, is_new, len(centroids), p.threshold - FP16_MARGIN, p)
    del x16
    a, b, _ = approx.arrays()
    a, b = unique_pairs(a, b, len(sorted_rowids))
    timings["join"] = time.perf_counter() - t
    t = time.perf_counter()
    sim = exact_similarity(ds, p, sorted_rowids, dim, a, b)
    timings["rescore"] = time.perf_counter() - t
    ok = sim >= p.threshold
    out = Candidates(scored=approx.scored)
    out.add(a[ok], b[ok], sim[ok])
    return out


# ---- groups and decisions ---------------------------------------------------------------------------
def components(n: int, a: np.ndarray, b: np.ndarray, old_label: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Component id per position over the new pairs plus the groups recorded by earlier runs."""
    labelled = np.flatnonzero(pc.is_valid(old_label).to_numpy(zero_copy_only=False))
    if len(labelled):
        codes = pc.dictionary_encode(old_label.take(pa.array(labelled))).combine_chunks().indices
        codes = codes.to_numpy()
        first = np.full(codes.max() + 1, -1, np.int64)
        first[codes[::-1]] = labelled[::-1]  # first position carrying each old label
        a = np.concatenate([a, labelled])
        b = np.concatenate([b, first[codes]])
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    return comp


def decide(meta: dict, comp: np.ndarray, keep_by: tuple[str, ...]) -> tuple[pa.Table, int, int]:
    """Elect the kept clip of every component touched by a new clip and return the rows whose values
    change, plus the number of multi-clip groups and duplicates among the touched components."""
    table: pa.Table = meta["table"]
    touched = np.zeros(comp.max() + 1, bool)
    touched[comp[meta["is_new"]]] = True
    rows = np.flatnonzero(touched[comp])
    sub = table.take(pa.array(rows))
    sort_cols, sort_keys = {"comp": pa.array(comp[rows])}, [("comp", "ascending", "at_end")]
    for i, spec in enumerate(keep_by):
        name, desc = parse_key(spec)
        col = key_array(sub, name)
        if col is not None:
            sort_cols[f"k{i}"] = col
            sort_keys.append((f"k{i}", "descending" if desc else "ascending", "at_end"))
    sort_cols[KEY] = sub.column(KEY)
    sort_keys.append((KEY, "ascending", "at_end"))
    order = pc.sort_indices(pa.table(sort_cols), sort_keys=sort_keys).to_numpy()
    c_sorted = comp[rows][order]
    starts = np.r_[True, c_sorted[1:] != c_sorted[:-1]]
    keeper_idx = order[np.flatnonzero(starts)][np.cumsum(starts) - 1]  # per sorted row: its keeper
    keeper = np.empty(len(rows), np.int64)
    keeper[order] = keeper_idx
    ids = sub.column(KEY)
    group = ids.take(pa.array(keeper))
    is_dup = keeper != np.arange(len(rows))
    dup_of = pc.if_else(pa.array(is_dup), group, pa.scalar(None, pa.string()))
    sizes = np.bincount(c_sorted)
    n_groups = int((sizes[np.unique(c_sorted)] > 1).sum())
    changed = changed_mask(sub, group, is_dup, dup_of)
    out = pa.table({KEY: ids, "dup_group": group, "is_duplicate": pa.array(is_dup), "dup_of": dup_of})
    return out.filter(pa.array(changed)), n_groups, int(is_dup.sum())


def key_array(sub: pa.Table, name: str) -> pa.Array | None:
    """Values of one keep-key column, or None when the table lacks it. `resolution` is the picture's area:
    inside `content_box` when known (a letterboxed copy's bars are not resolution), else width*height."""
    names = sub.column_names
    if name == "resolution":
        if "width" not in names or "height" not in names:
            return None
        area = pc.multiply(sub.column("width").cast(pa.int64()), sub.column("height").cast(pa.int64()))
        if "content_box" not in names:
            return area
        box = sub.column("content_box")
        side = [pc.subtract(pc.list_element(box, hi).cast(pa.int64()), pc.list_element(box, lo).cast(pa.int64()))
                for lo, hi in ((0, 2), (1, 3))]
        return pc.if_else(pc.is_null(box), area, pc.multiply(*side))
    return sub.column(name) if name in names else None


def changed_mask(sub: pa.Table, group: pa.Array, is_dup: np.ndarray, dup_of: pa.Array) -> np.ndarray:
    """Rows whose stored dup columns differ from the new decision (all rows on a first run)."""
    if "dup_group" not in sub.column_names:
        return np.ones(sub.num_rows, bool)
    same = pa.array(np.ones(sub.num_rows, bool))
    for name, new in (("dup_group", group), ("is_duplicate", pa.array(is_dup)), ("dup_of", dup_of)):
        if name not in sub.column_names:
            return np.ones(sub.num_rows, bool)
        old = sub.column(name)
        eq = pc.fill_null(pc.equal(old, new), False)
        both_null = pc.and_(pc.is_null(old), pc.is_null(new))
        same = pc.and_(same, pc.or_(eq, both_null))
    return ~same.to_numpy(zero_copy_only=False)
