"""Near-duplicate clips by embedding: a global step over the committed `clips` table that joins clips whose
cosine similarity reaches a threshold into groups, keeps the best clip of each group and marks the rest.

Columns written to `clips` (rows with a null embedding are left null):
  dup_group     string  clip_id of the group's kept clip; a clip with no duplicate is its own group, so
                        `dup_group = clip_id`. Non-null means "already checked": the incremental test.
  is_duplicate  bool    false for the kept clip (and singletons), true for the others.
  dup_of        string  clip_id of the kept clip for duplicates, null for kept clips.

Candidate pairs come from one of two searches; the final decision is always an exact float32 cosine.
  exact   brute force in NumPy blocks (every new clip × every clip); `auto` picks it up to `exact_max_rows`.
  bucket  the streamed bucket join of curation.buckets: a seeded two-level k-means model stored in the lake
          (`dedup_buckets`, reused by incremental runs), each vector assigned to its `nprobes` nearest
          buckets, rows spilled by bucket range and joined range by range as Ray tasks (in this process
          when Ray is not running), so memory is bounded by a range, not by the table. Candidates are taken
          at the threshold minus the float16 error bound; the few whose float16 cosine lies within that
          bound of the threshold are re-scored from float32. Incremental runs join only pairs with a new
          clip on one side. (`index`, the former name, is accepted for `bucket`.)
Groups are the connected components of the duplicate graph (what union-find computes), so running
incrementally gives the same groups as one run over everything."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Literal

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curation.buckets import (
    BucketModel,
    bucket_join,
    load_model,
    run_tasks,
    sample_fragments,
    save_model,
    train_model,
    want_ray,
)
from curation.errors import ConfigError
from curation.lake import Lake
from curation.stage import Step, params
from curation.vectors import TABLE, check_table, quote, unit, vectors

KEY = "clip_id"
OUTPUT_COLUMNS = ("dup_group", "is_duplicate", "dup_of")
# |float16 dot - float32 dot| for unit vectors: each product carries <= 2 * 2**-11 relative error and
# sum |x_i y_i| <= 1 (Cauchy-Schwarz), so 2**-10 plus float32 accumulation; 2e-3 leaves room to spare.
FP16_MARGIN = 2e-3
# a stored bucket model is retrained when the table has grown this many times past what it was trained on
RETRAIN_GROWTH = 4


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
    # auto | exact (NumPy brute force) | bucket (streamed bucket join; `index` is its former name)
    method: Literal["auto", "exact", "bucket", "index"] = "auto"
    # auto: brute force when at most this many clips have embeddings (measured crossover, RESULTS_dedup.md)
    exact_max_rows: Annotated[int, Field(ge=0)] = 10_000
    nprobes: Annotated[int, Field(ge=1)] = 4  # buckets per vector in the join (its nearest fine buckets)
    bucket_rows: Annotated[int, Field(ge=8)] = 256  # target rows per bucket: n / bucket_rows buckets
    coarse_probes: Annotated[int, Field(ge=1)] = 12  # coarse cells searched for a vector's nearest buckets
    range_rows: Annotated[int, Field(ge=1)] = 262_144  # rows a join task holds (float16): its memory bound
    sample_per_bucket: Annotated[int, Field(ge=1)] = 32  # sample rows per bucket the model trains on
    max_sample: Annotated[int, Field(ge=1)] = 1_000_000  # at most this many (float16: n x d x 2 bytes of memory)
    seed: int = 0  # the model's k-means seed: the same seed and data give the same buckets and groups
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
        first = full or ds.schema.get_field_index("dup_group") < 0  # every row is decided afresh
        n = ds.count_rows(filter=f"{quote(p.column)} IS NOT NULL")
        m = n if first else ds.count_rows(filter=embedding_filter(p.column, ds, only_new=True))
        summary = {"step": self.name, "clips": n, "checked": m, "method": None, "candidate_pairs": 0,
                   "pairs": 0, "groups": 0, "duplicates": 0, "rows_written": 0}
        if m == 0:  # nothing new: a rerun stays cheap and writes nothing
            summary["seconds"] = round(time.perf_counter() - t0, 3)
            return summary
        method = "bucket" if p.method == "index" else p.method
        method = method if method != "auto" else ("exact" if n <= p.exact_max_rows else "bucket")
        timings: dict[str, float] = {}
        t = time.perf_counter()
        if method == "exact":
            cands = exact_pairs(ds, p, embedding_filter(p.column, ds, only_new=not first))
            timings["search"] = time.perf_counter() - t
        else:
            model, source = bucket_model(lake, ds, p, n, dim, full)
            timings["model"] = time.perf_counter() - t
            summary.update(model=source, nprobes=p.nprobes)
            cands = bucket_pairs(lake, ds, p, model, first, timings, summary)
        t = time.perf_counter()
        ra, rb, _ = cands.arrays()
        rows = np.unique(np.concatenate([ra, rb]))  # the rows in a pair: the only ones the driver looks at
        if not first:
            rows = np.union1d(rows, old_group_members(ds, rows))
        a, b = unique_pairs(np.searchsorted(rows, ra), np.searchsorted(rows, rb), len(rows))
        meta = load_meta(ds, p, rows, with_old=not first)
        comp = components(len(rows), a, b, meta["old_label"])
        decided, changed, n_groups, n_dups = decide(meta, comp, p.keep_by)
        timings["group"] = time.perf_counter() - t
        t = time.perf_counter()
        if first:
            written = write_all(lake, ds, p, decided, n)
        else:
            written = write_changes(lake, p, decided.filter(pa.array(changed)))
        self.record(lake)
        timings["write"] = time.perf_counter() - t
        summary.update(method=method, candidate_pairs=cands.scored, pairs=len(a), groups=n_groups,
                       duplicates=n_dups, rows_written=written, seconds=round(time.perf_counter() - t0, 3),
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


def take(ds, rowids: np.ndarray, columns: list[str], chunk: int = 65536) -> pa.Table:
    """Rows by Lance row id, in the order given."""
    parts = [ds._take_rows(pa.array(rowids[s:s + chunk], pa.uint64()), columns=columns)
             for s in range(0, len(rowids), chunk)]
    return pa.concat_tables(parts) if parts else ds.schema.empty_table().select(columns)


# ---- metadata -----------------------------------------------------------------------------------------
def load_meta(ds, p: DedupParams, rowids: np.ndarray, with_old: bool) -> dict:
    """Small columns of the rows in play (sorted row ids: the rows of pairs and of the old groups they
    touch): clip_id, keep-key columns and, on incremental runs, the previous dup columns."""
    names = set(ds.schema.names)
    cols = [KEY] + [c for c in key_columns(p.keep_by) if c in names]
    cols += [c for c in OUTPUT_COLUMNS if c in names and with_old]
    table = take(ds, rowids, list(dict.fromkeys(cols)))
    old = table.column("dup_group") if "dup_group" in table.column_names else pa.nulls(table.num_rows,
                                                                                     pa.string())
    return {"table": table, "rowid": rowids, "is_new": pc.is_null(old).to_numpy(zero_copy_only=False),
            "old_label": old}


def old_group_members(ds, rowids: np.ndarray, batch_rows: int = 262_144) -> np.ndarray:
    """Row ids of every member of the groups that earlier runs recorded for these rows (a new pair into
    an old group can change its kept clip), streamed: memory is the touched groups, not the table."""
    labels = pc.unique(take(ds, rowids, ["dup_group"]).column("dup_group").drop_null())
    if not len(labels):
        return np.zeros(0, np.uint64)
    found = []
    for batch in ds.to_batches(columns=["dup_group"], filter="dup_group IS NOT NULL", batch_size=batch_rows,
                               with_row_id=True):
        hit = pc.is_in(batch.column("dup_group"), value_set=labels)
        found.append(batch.column("_rowid").filter(hit).to_numpy())
    return np.concatenate(found).astype(np.uint64)


def key_columns(keep_by: tuple[str, ...]) -> list[str]:
    out = []
    for spec in keep_by:
        name, _ = parse_key(spec)
        out += ["width", "height", "content_box"] if name == "resolution" else [name]
    return out


# ---- candidate pairs -------------------------------------------------------------------------------
def exact_pairs(ds, p: DedupParams, new_filter: str) -> Candidates:
    """Brute force: every new clip against every clip, one (query block × table block) GEMM at a time.
    Memory is two blocks of vectors plus one block_rows × query_batch similarity matrix. Pairs of row ids."""
    out = Candidates()
    all_filter = f"{quote(p.column)} IS NOT NULL"
    for qb in stream(ds, [p.column], new_filter, p.query_batch):
        q = unit(vectors(qb, p.column))
        qid = qb.column("_rowid").to_numpy()
        for db in stream(ds, [p.column], all_filter, p.block_rows):
            x = unit(vectors(db, p.column))
            did = db.column("_rowid").to_numpy()
            s = q @ x.T
            out.scored += s.size
            i, j = np.nonzero(s >= p.threshold)
            keep = qid[i] != did[j]
            out.add(qid[i[keep]], did[j[keep]], s[i[keep], j[keep]])
    return out


# ---- the streamed bucket join (method "bucket") -------------------------------------------------------
def bucket_model(lake: Lake, ds, p: DedupParams, n: int, dim: int, full: bool) -> tuple[BucketModel, str]:
    """The lake's stored bucket model when it fits (same column and dimension, the table not grown past
    RETRAIN_GROWTH times what it was trained on), else a new one trained on a sample (as a Ray task when
    Ray runs: the sample is the largest allocation, kept off the driver) and stored."""
    model = None if full else load_model(lake)
    if (model is not None and model.info.get("column") == p.column and model.fine.shape[1] == dim
            and model.info.get("seed") == p.seed and n <= RETRAIN_GROWTH * model.info.get("trained_on", 0)):
        return model, "stored"
    want = max(1, round(n / p.bucket_rows))
    sample_rows = min(p.max_sample, want * p.sample_per_bucket)
    [model] = run_tasks(train_task, [(ds.uri, ds.version, p.column, sample_rows, n, p.bucket_rows, p.block_rows,
                                      p.seed, {"column": p.column, "dim": dim})], want_ray(n))
    save_model(lake, model)
    return model, "trained"


def train_task(uri: str, version: int, column: str, sample_rows: int, n: int, bucket_rows: int, block_rows: int,
               seed: int, info: dict) -> BucketModel:
    sample = sample_fragments(lance.dataset(uri, version=version), column, sample_rows, block_rows, np.float16)
    return train_model(sample, n, bucket_rows, seed, info)


def unique_pairs(a: np.ndarray, b: np.ndarray, n: int, s: np.ndarray | None = None):
    """Unordered pairs of positions < n without repeats (a pair is met once per shared bucket and in both
    directions), with the similarity of their first occurrence when `s` is given."""
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    code, first = np.unique(lo * n + hi, return_index=True)
    return (code // n, code % n) if s is None else (code // n, code % n, s[first])


def bucket_pairs(lake: Lake, ds, p: DedupParams, model: BucketModel, first: bool, timings: dict,
                 summary: dict) -> Candidates:
    """Method `bucket`: the streamed join at the threshold minus the float16 margin, then the unique pairs;
    those within the margin of the threshold are re-scored in float32 from the table. Pairs of row ids."""
    t = time.perf_counter()
    ra, rb, s16, stats = bucket_join(lake, ds, p.column, model, None if first else "dup_group IS NULL",
                                     p.threshold - FP16_MARGIN, p.nprobes, p.coarse_probes, p.range_rows,
                                     p.block_rows, p.query_batch)
    timings["join"] = time.perf_counter() - t
    summary.update(buckets=stats["buckets"], join=stats)
    t = time.perf_counter()
    rows = np.unique(np.concatenate([ra, rb]))
    a, b, s = unique_pairs(np.searchsorted(rows, ra), np.searchsorted(rows, rb), len(rows), s16)
    a, b = rows[a], rows[b]
    unsure = np.flatnonzero(s < p.threshold + FP16_MARGIN)
    if len(unsure):
        s = s.copy()
        s[unsure] = exact_similarity(ds, p.column, a[unsure], b[unsure])
    timings["rescore"] = time.perf_counter() - t
    ok = s >= p.threshold
    out = Candidates(scored=stats["products"])
    out.add(a[ok], b[ok], s[ok])
    return out


def exact_similarity(ds, column: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact float32 cosine of pairs of rows (Lance row ids), from the rows taken by row id."""
    need = np.unique(np.concatenate([a, b]))
    x = unit(vectors(take(ds, need, [column]), column))
    ia, ib = np.searchsorted(need, a), np.searchsorted(need, b)
    return np.einsum("ij,ij->i", x[ia], x[ib]).astype(np.float32)


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
    return connected(n, np.asarray(a, np.int64), np.asarray(b, np.int64))


NUMPY_GRAPH_NODES = 200_000  # up to this many clips components are found in NumPy, beyond it by SciPy


def connected(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component id (0, 1, ... in the order of each component's lowest node) of nodes 0..n-1 joined by the
    undirected edges (a[i], b[i]), as scipy's connected_components numbers them. Up to NUMPY_GRAPH_NODES
    without SciPy, whose import is ~0.25 CPU-s of a small run's start-up: union by the lower root, all
    edges at once, every node pointed at its root between rounds (a component's root is its lowest node).
    Beyond, SciPy (4x faster at 2M nodes: 0.23 vs 0.92 s)."""
    if n > NUMPY_GRAPH_NODES:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        return connected_components(coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n)), directed=False)[1]
    root = np.arange(n, dtype=np.int64)
    while True:
        while True:  # compress: every node points at its root
            up = root[root]
            if np.array_equal(up, root):
                break
            root = up
        ra, rb = root[a], root[b]
        differ = ra != rb
        if not differ.any():
            break
        ra, rb = ra[differ], rb[differ]
        lo = np.minimum(ra, rb)
        np.minimum.at(root, ra, lo)  # a root only ever moves to a lower root: no cycles
        np.minimum.at(root, rb, lo)
    return np.unique(root, return_inverse=True)[1]


def decide(meta: dict, comp: np.ndarray, keep_by: tuple[str, ...]) -> tuple[pa.Table, np.ndarray, int, int]:
    """Elect the kept clip of every component touched by a new clip: the decided rows (with `_rowid`), which
    of them change, and the number of multi-clip groups and of duplicates among the touched components."""
    table: pa.Table = meta["table"]
    touched = np.zeros(comp.max() + 1 if len(comp) else 0, bool)
    touched[comp[meta["is_new"]]] = True
    rows = np.flatnonzero(touched[comp])
    if not len(rows):
        empty = pa.table({"_rowid": pa.array([], pa.uint64()), KEY: pa.array([], pa.string()),
                          "dup_group": pa.array([], pa.string()), "is_duplicate": pa.array([], pa.bool_()),
                          "dup_of": pa.array([], pa.string())})
        return empty, np.zeros(0, bool), 0, 0
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
    out = pa.table({"_rowid": pa.array(meta["rowid"][rows], pa.uint64()), KEY: ids, "dup_group": group,
                    "is_duplicate": pa.array(is_dup), "dup_of": dup_of})
    return out, changed, n_groups, int(is_dup.sum())


# ---- writing ------------------------------------------------------------------------------------------
def write_all(lake: Lake, ds, p: DedupParams, decided: pa.Table, n: int) -> int:
    """First (or full) run: the dup columns of every row as new column files, computed fragment by fragment
    from clip_id and row id — the decided rows take their decision, every other row with an embedding is
    its own group — so no row is rewritten and the driver holds only the decided rows. `n`: rows with an
    embedding (the rest stay null; they are looked up only when there are any)."""
    order = np.argsort(decided.column("_rowid").to_numpy())
    rowids = decided.column("_rowid").to_numpy()[order]
    group, is_dup, dup_of = (decided.column(c).take(pa.array(order)).combine_chunks() for c in OUTPUT_COLUMNS)
    is_dup = is_dup.to_numpy(zero_copy_only=False)
    no_vec = np.zeros(0, np.uint64)
    if ds.count_rows() > n:  # reading the embedding column's validity costs a scan: only when needed
        no_vec = ds.to_table(columns=[KEY], filter=f"{quote(p.column)} IS NULL", with_row_id=True)
        no_vec = np.sort(no_vec.column("_rowid").to_numpy())
    schema = pa.schema([("dup_group", pa.string()), ("is_duplicate", pa.bool_()), ("dup_of", pa.string())])

    def member(rid: np.ndarray, sorted_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.minimum(np.searchsorted(sorted_ids, rid), max(0, len(sorted_ids) - 1))
        return pos, (sorted_ids[pos] == rid) if len(sorted_ids) else np.zeros(len(rid), bool)

    @lance.batch_udf(output_schema=schema)
    def fill(batch: pa.RecordBatch) -> pa.RecordBatch:
        rid, ids = batch.column("_rowid").to_numpy(), batch.column(KEY)
        g, dup, of = ids, pa.array(np.zeros(len(rid), bool)), pa.nulls(len(rid), pa.string())  # singletons
        pos, hit = member(rid, rowids)
        if hit.any():
            at, where = pa.array(pos), pa.array(hit)
            g, dup, of = (pc.if_else(where, group.take(at), g), pa.array(hit & is_dup[pos]),
                          pc.if_else(where, dup_of.take(at), of))
        _, empty = member(rid, no_vec)
        if empty.any():  # no embedding: left null, not checked
            g, dup, of = (pc.if_else(pa.array(empty), pa.scalar(None, v.type), v) for v in (g, dup, of))
        return pa.record_batch([g, dup, of], schema=schema)

    lake.add_computed_columns(TABLE, fill, read_columns=[KEY, "_rowid"], replace=list(OUTPUT_COLUMNS),
                              batch_size=p.block_rows * 4)
    return n


def write_changes(lake: Lake, p: DedupParams, changed: pa.Table) -> int:
    """Incremental run: the decided rows whose values change (merged on clip_id), then every other new row
    (still null) becomes its own group with one SQL update."""
    if changed.num_rows:
        lake.merge_columns(TABLE, changed.drop_columns(["_rowid"]), on=KEY)
    singles = lake.update(TABLE, {"dup_group": KEY, "is_duplicate": "false", "dup_of": "CAST(NULL AS STRING)"},
                          where=f"dup_group IS NULL AND {quote(p.column)} IS NOT NULL")
    return changed.num_rows + singles


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
