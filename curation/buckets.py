"""The streamed bucket join behind dedup's `bucket` method: all pairs of unit vectors with cosine >= lo,
in memory bounded by a range of buckets rather than by the table, as Ray tasks when Ray is running.

1. **Model** (`BucketModel`): seeded two-level spherical k-means on a sample read from evenly spaced
   fragments: `coarse` cells (~sqrt of the bucket count), then `fine` buckets trained inside each cell on
   its sample rows (~`bucket_rows` rows per bucket at full size; a bucket that gets more than 4× its share
   of the sample is split in two). Stored in the lake table `dedup_buckets` so incremental runs reuse the
   same buckets; the same seed gives the same model.
2. **Assign** (one task per group of fragments): each vector's `probes` nearest fine buckets, searched
   among the buckets of its `coarse_probes` nearest cells; rows are spilled as Arrow IPC files by bucket
   range — a range is a run of whole coarse cells holding ~`range_rows` rows — with the float16 vector,
   the row's primary bucket and its probed buckets inside that range. A row is written once per range it
   probes (cells are compact, so mostly once).
3. **Join** (one task per range, memory-mapped): per bucket b, the rows probing b against the rows whose
   primary bucket is b, in float32 GEMM blocks, keeping pairs with float16 cosine >= lo; pairs with a new
   row on at least one side only. A pair (i, j) is found when primary(j) is in probes(i) or the reverse,
   which is an IVF range search with nprobe = `probes`. Only the pairs come back.

The spill goes under the lake (`_spill/`), so on a cluster the lake's filesystem must be shared, as it is
for the tables."""

from __future__ import annotations

import math
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.vectors import lloyd, spherical_kmeans, unit, vectors

MODEL_TABLE = "dedup_buckets"
MODEL_KEY = "videocurate.dedup_buckets"
COARSE_SAMPLE = 65_536  # sample rows the coarse level trains on


@dataclass
class BucketModel:
    fine: np.ndarray  # (B, d) unit centroids
    cell: np.ndarray  # (B,) coarse cell of each fine bucket, cells contiguous: bucket ids sorted by cell
    coarse: np.ndarray  # (K, d) unit centroids
    size: np.ndarray  # (B,) sample rows per bucket (to plan ranges)
    info: dict  # column, dim, seed, trained_on

    def cells(self) -> list[np.ndarray]:
        """Fine bucket ids of every coarse cell."""
        bounds = np.searchsorted(self.cell, np.arange(len(self.coarse) + 1))
        return [np.arange(bounds[c], bounds[c + 1]) for c in range(len(self.coarse))]

    def assign(self, x: np.ndarray, probes: int, coarse_probes: int) -> np.ndarray:
        """(rows, probes) int32 nearest fine buckets by cosine, nearest first, among the buckets of each row's
        `coarse_probes` nearest cells (-1 pads rows whose cells hold fewer buckets)."""
        n = len(x)
        cq = min(coarse_probes, len(self.coarse))
        g = x @ self.coarse.T
        near = np.argpartition(-g, cq - 1, axis=1)[:, :cq] if cq < g.shape[1] else np.tile(np.arange(cq), (n, 1))
        best_s = np.full((n, probes), -np.inf, np.float32)
        best_i = np.full((n, probes), -1, np.int32)
        for c, members in enumerate(self.cells()):
            rows = np.flatnonzero((near == c).any(axis=1))
            if not len(rows) or not len(members):
                continue
            s = np.concatenate([best_s[rows], x[rows] @ self.fine[members].T], axis=1)
            ids = np.concatenate([best_i[rows], np.broadcast_to(members.astype(np.int32), (len(rows), len(members)))],
                                 axis=1)
            top = np.argpartition(-s, probes - 1, axis=1)[:, :probes] if s.shape[1] > probes else \
                np.broadcast_to(np.arange(s.shape[1]), s.shape)
            best_s[rows] = np.take_along_axis(s, top, axis=1)
            best_i[rows] = np.take_along_axis(ids, top, axis=1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        return np.take_along_axis(best_i, order, axis=1)


def train_model(sample: np.ndarray, n_total: int, bucket_rows: int, seed: int, info: dict,
                iterations: int = 10) -> BucketModel:
    """Two-level seeded spherical k-means on a sample of unit vectors (see the module docstring); the sample
    may be float16 (half the memory: it is the driver's largest allocation), each cell is trained in float32."""
    b_total = max(1, min(len(sample), round(n_total / bucket_rows)))
    k = max(1, min(len(sample), round(math.sqrt(b_total))))
    stride = max(1, len(sample) // COARSE_SAMPLE)  # ~sqrt(B) coarse cells need far fewer rows than B buckets
    coarse = spherical_kmeans(sample[::stride].astype(np.float32), k, iterations, seed=seed)
    home = np.concatenate([np.argmax(sample[s:s + 16384].astype(np.float32) @ coarse.T, axis=1)
                           for s in range(0, len(sample), 16384)])
    fine, cell, sizes = [], [], []
    rng = np.random.default_rng(seed)
    for c in range(k):
        rows = sample[home == c].astype(np.float32)
        if not len(rows):
            continue
        want = max(1, min(len(rows), round(b_total * len(rows) / len(sample))))
        cents = spherical_kmeans(rows, want, iterations, seed=seed + 1 + c) if want > 1 else unit(
            rows.mean(axis=0, keepdims=True))
        cents = _split_oversized(rows, cents, len(rows) / want, rng, iterations)
        fine.append(cents)
        cell += [c] * len(cents)
        sizes.append(np.bincount(np.argmax(rows @ cents.T, axis=1), minlength=len(cents)))
    return BucketModel(np.concatenate(fine).astype(np.float32), np.asarray(cell, np.int32), coarse.astype(np.float32),
                       np.concatenate(sizes).astype(np.int64), {**info, "seed": seed, "trained_on": int(n_total)})


def _split_oversized(rows: np.ndarray, cents: np.ndarray, share: float, rng: np.random.Generator,
                     iterations: int) -> np.ndarray:
    """Split buckets holding more than 4x their share of the sample in two (2-means on their members)."""
    idx = np.argmax(rows @ cents.T, axis=1)
    counts = np.bincount(idx, minlength=len(cents))
    out = [cents[counts <= 4 * share]]
    for b in np.flatnonzero(counts > 4 * share):
        members = rows[idx == b]
        two, _ = lloyd(members, members[rng.choice(len(members), 2, replace=False)], iterations)
        out.append(two)
    return np.concatenate(out)


# ---- model storage ------------------------------------------------------------------------------------
def save_model(lake, model: BucketModel) -> None:
    d = model.fine.shape[1]
    table = pa.table({"bucket": pa.array(np.arange(len(model.fine)), pa.int32()),
                      "cell": pa.array(model.cell, pa.int32()), "size": pa.array(model.size, pa.int64()),
                      "centroid": pa.FixedSizeListArray.from_arrays(pa.array(model.fine.ravel()), d)})
    lake.overwrite(MODEL_TABLE, table)
    lake.set_meta(MODEL_TABLE, MODEL_KEY, {**model.info, "coarse": model.coarse.tolist()})


def load_model(lake) -> BucketModel | None:
    if not lake.exists(MODEL_TABLE):
        return None
    info = lake.meta(MODEL_TABLE, MODEL_KEY)
    if not info:
        return None
    t = lake.dataset(MODEL_TABLE).to_table()
    coarse = np.asarray(info.pop("coarse"), np.float32)
    return BucketModel(vectors(t, "centroid"), t.column("cell").to_numpy().astype(np.int32), coarse,
                       t.column("size").to_numpy().astype(np.int64), info)


def sample_fragments(ds, column: str, rows: int, block_rows: int, dtype=np.float32) -> np.ndarray:
    """About `rows` unit vectors: the same number from each of up to `rows / 1024` evenly spaced fragments
    (their first rows, read with a limit), so a sample of a huge table reads only what it keeps;
    deterministic for a given table."""
    frags = ds.get_fragments()
    d = ds.schema.field(column).type.list_size
    if not frags or rows <= 0:
        return np.zeros((0, d), dtype)
    n_pick = max(1, min(len(frags), rows // 1024))
    pick = [frags[i] for i in np.unique(np.linspace(0, len(frags) - 1, n_pick).round().astype(int))]
    per = -(-rows // len(pick))
    parts = [unit(vectors(b, column)).astype(dtype) for f in pick
             for b in f.to_batches(columns=[column], filter=f"`{column}` IS NOT NULL", limit=per,
                                   batch_size=block_rows)]
    return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros((0, d), dtype)


# ---- ranges ------------------------------------------------------------------------------------------
def plan_ranges(model: BucketModel, probe_sample: np.ndarray, n_total: int, range_rows: int) -> np.ndarray:
    """Range id of every bucket: runs of whole coarse cells such that about `range_rows` rows are spilled
    into each. A row is spilled once into every range it probes, so a cell weighs the rows of a probe
    sample (`probe_sample`: the probed buckets of sample rows) that touch it, scaled to the table."""
    k = len(model.coarse)
    top = probe_sample[probe_sample[:, 0] >= 0] if len(probe_sample) else probe_sample
    if len(top):
        cells = np.where(top >= 0, model.cell[np.maximum(top, 0)], -1)
        rows = np.repeat(np.arange(len(top)), top.shape[1])
        flat = cells.ravel()
        touch = np.unique(rows[flat >= 0].astype(np.int64) * k + flat[flat >= 0])
        weight = np.bincount(touch % k, minlength=k) * (n_total / len(top))
    else:
        weight = np.bincount(model.cell, weights=model.size, minlength=k) * (n_total / max(1, model.size.sum()))
    cell_range = np.zeros(k, np.int32)
    r, acc = 0, 0.0
    for c, w in enumerate(weight):
        if acc and acc + w > range_rows:
            r, acc = r + 1, 0.0
        cell_range[c] = r
        acc += w
    return cell_range[model.cell]


# ---- tasks ----------------------------------------------------------------------------------------------
@dataclass
class JoinSpec:
    uri: str
    version: int
    column: str
    new_filter: str | None  # SQL of the rows that are new (None: every row is new)
    probes: int
    coarse_probes: int
    block_rows: int
    query_batch: int
    lo: float
    spill: str


def assign_task(spec: JoinSpec, model: BucketModel, bucket_range: np.ndarray, fragment_ids: list[int],
                task: int) -> dict:
    """Assign the rows of some fragments and spill them by range; returns rows seen per range."""
    import lance

    ds = lance.dataset(spec.uri, version=spec.version)
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    counts: dict[int, int] = {}
    d = model.fine.shape[1]
    schema = pa.schema([("rowid", pa.uint64()), ("new", pa.bool_()), ("primary", pa.int32()),
                        ("probes", pa.list_(pa.int32(), spec.probes)), ("vec", pa.list_(pa.float16(), d))])
    cols = [spec.column] + (["dup_group"] if spec.new_filter else [])
    try:
        for fid in fragment_ids:
            for b in ds.get_fragment(fid).to_batches(columns=cols, filter=f"`{spec.column}` IS NOT NULL",
                                                     batch_size=spec.block_rows, with_row_id=True):
                x = unit(vectors(b, spec.column))
                top = model.assign(x, spec.probes, spec.coarse_probes)
                new = pc.is_null(b.column("dup_group")).to_numpy(zero_copy_only=False) if spec.new_filter \
                    else np.ones(len(x), bool)
                rng = np.where(top >= 0, bucket_range[np.maximum(top, 0)], -1)
                x16 = x.astype(np.float16)
                rowid = b.column("_rowid")
                for r in np.unique(rng[rng >= 0]):
                    hit = (rng == r).any(axis=1)
                    sel = np.flatnonzero(hit)
                    probes = np.where(rng[sel] == r, top[sel], -1).astype(np.int32)
                    primary = np.where(rng[sel, 0] == r, top[sel, 0], -1).astype(np.int32)
                    batch = pa.record_batch([
                        rowid.take(pa.array(sel)), pa.array(new[sel]), pa.array(primary),
                        pa.FixedSizeListArray.from_arrays(pa.array(probes.ravel()), spec.probes),
                        pa.FixedSizeListArray.from_arrays(pa.array(x16[sel].ravel(), pa.float16()), d)],
                        schema=schema)
                    if r not in writers:
                        os.makedirs(os.path.join(spec.spill, f"r{r:05d}"), exist_ok=True)
                        writers[r] = pa.ipc.new_file(os.path.join(spec.spill, f"r{r:05d}", f"t{task:05d}.arrow"),
                                                     schema)
                    writers[r].write_batch(batch)
                    counts[int(r)] = counts.get(int(r), 0) + len(sel)
    finally:
        for w in writers.values():
            w.close()
    return {"counts": counts, "rss": _peak_rss()}


def join_task(spec: JoinSpec, range_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pairs (rowid a, rowid b, float16-approximate cosine) of one range; and the products computed."""
    folder = os.path.join(spec.spill, f"r{range_id:05d}")
    tables = [pa.ipc.open_file(pa.memory_map(os.path.join(folder, f))).read_all()
              for f in sorted(os.listdir(folder))]
    t = pa.concat_tables(tables).combine_chunks()
    n = t.num_rows
    d = t.schema.field("vec").type.list_size
    x16 = t.column("vec").chunk(0).values.to_numpy(zero_copy_only=False).reshape(n, d)
    new = t.column("new").to_numpy(zero_copy_only=False)
    primary = t.column("primary").to_numpy()
    probes = t.column("probes").chunk(0).values.to_numpy().reshape(n, -1)
    rows = np.arange(n)
    p_order = np.argsort(primary, kind="stable")
    p_b = primary[p_order]
    q_rows = np.repeat(rows, probes.shape[1])
    q_b = probes.ravel()
    keep = q_b >= 0
    q_rows, q_b = q_rows[keep], q_b[keep]
    q_order = np.argsort(q_b, kind="stable")
    q_rows, q_b = q_rows[q_order], q_b[q_order]
    out_a, out_b, out_s, scored = [], [], [], 0
    for b in np.unique(p_b[p_b >= 0]):
        prim = p_order[np.searchsorted(p_b, b, "left"):np.searchsorted(p_b, b, "right")]
        query = q_rows[np.searchsorted(q_b, b, "left"):np.searchsorted(q_b, b, "right")]
        q_new, p_new = new[query], new[prim]
        for left, right in ((query[q_new], prim), (query[~q_new], prim[p_new])):
            if len(left) and len(right):
                scored += _block(x16, left, right, spec, out_a, out_b, out_s)
    rowid = t.column("rowid").to_numpy()
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))  # noqa: E731
    a, bb = cat(out_a, np.int64), cat(out_b, np.int64)
    return rowid[a], rowid[bb], cat(out_s, np.float32), scored, _peak_rss()


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (a Ray worker's own, when run as a task)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _block(x16: np.ndarray, left: np.ndarray, right: np.ndarray, spec: JoinSpec, out_a: list, out_b: list,
           out_s: list) -> int:
    scored = 0
    for rs in range(0, len(right), spec.block_rows):
        r_rows = right[rs:rs + spec.block_rows]
        r = x16[r_rows].astype(np.float32)
        for ls in range(0, len(left), spec.query_batch):
            l_rows = left[ls:ls + spec.query_batch]
            s = x16[l_rows].astype(np.float32) @ r.T
            scored += s.size
            i, j = np.nonzero(s >= spec.lo)
            keep = l_rows[i] != r_rows[j]
            out_a.append(l_rows[i[keep]])
            out_b.append(r_rows[j[keep]])
            out_s.append(s[i[keep], j[keep]])
    return scored


RAY_STEP_ROWS = 1_000_000  # a step over at least this many rows runs its tasks on Ray, started if need be


def want_ray(rows: int) -> bool:
    """Whether a global step's tasks run on Ray: yes when Ray runs in this process; on a run without it
    (the local executor) only from RAY_STEP_ROWS rows, where an embedded Ray is started for them: its few
    seconds buy parallel tasks whose memory (a model's sample, a join's buckets) stays out of the driver,
    on a step of minutes (benchmarks/RESULTS_dedup.md: 10M rows, driver 1.48 GB)."""
    ray = sys.modules.get("ray")  # not imported: not running (importing it costs ~0.2 s)
    if ray is not None and ray.is_initialized():
        return True
    if rows < RAY_STEP_ROWS:
        return False
    from curation.runner import init_ray

    init_ray()
    return True


def run_tasks(fn: Callable, args: Iterable[tuple], remote: bool) -> list:
    """fn(*a) for every a, as Ray tasks (1 CPU each) when Ray is running, else in this process."""
    args = list(args)
    if not remote:
        return [fn(*a) for a in args]
    import ray

    task = ray.remote(num_cpus=1, max_retries=3)(fn)
    return ray.get([task.remote(*a) for a in args])


def bucket_join(lake, ds, column: str, model: BucketModel, new_filter: str | None, lo: float, probes: int,
                coarse_probes: int, range_rows: int, block_rows: int, query_batch: int,
                fragments_per_task: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """All pairs (rowid, rowid, approximate cosine >= lo) of the column, streamed (module docstring)."""
    import ray

    n = ds.count_rows(filter=f"`{column}` IS NOT NULL")
    remote = want_ray(n)
    probe_sample = model.assign(sample_fragments(ds, column, 20_000, block_rows), probes, coarse_probes)
    bucket_range = plan_ranges(model, probe_sample, n, range_rows)
    spill = os.path.join(lake.root, "_spill", f"dedup-{uuid.uuid4().hex[:12]}")
    spec = JoinSpec(ds.uri, ds.version, column, new_filter, probes, coarse_probes, block_rows, query_batch, lo,
                    spill)
    frag_ids = [f.fragment_id for f in ds.get_fragments()]
    groups = [frag_ids[i:i + fragments_per_task] for i in range(0, len(frag_ids), fragments_per_task)]
    try:
        if remote:
            model_ref, range_ref = ray.put(model), ray.put(bucket_range)
        else:
            model_ref, range_ref = model, bucket_range
        assigned = run_tasks(assign_task, [(spec, model_ref, range_ref, g, i) for i, g in enumerate(groups)],
                             remote)
        counts = [x["counts"] for x in assigned]
        ranges = sorted({r for c in counts for r in c})
        results = run_tasks(join_task, [(spec, r) for r in ranges], remote)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    a = np.concatenate([r[0] for r in results]) if results else np.zeros(0, np.uint64)
    b = np.concatenate([r[1] for r in results]) if results else np.zeros(0, np.uint64)
    s = np.concatenate([r[2] for r in results]) if results else np.zeros(0, np.float32)
    spilled = sum(sum(c.values()) for c in counts)
    stats = {"buckets": len(model.fine), "cells": len(model.coarse), "ranges": len(ranges), "tasks": len(groups),
             "spilled_rows": spilled, "replication": round(spilled / max(1, n), 3),
             "products": int(sum(r[3] for r in results)), "ray": remote,
             "task_peak_rss_mb": round(max([x["rss"] for x in assigned] + [r[4] for r in results]) / 2**20)}
    return a, b, s, stats
