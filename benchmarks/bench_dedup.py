"""Benchmark of near-duplicate dedup at scale: N × 512 unit embeddings with planted duplicate groups in a
Lance `clips` table; our DedupStep (method auto -> `bucket`: the streamed bucket join of curation.buckets,
each vector in its top-`nprobes` buckets, as Ray tasks with --ray) against faiss-cpu IndexIVFFlat range
search with the same number of probed lists on the same data in the same run, and pair recall of both
against exact brute force on a subset.

Each measured phase runs in its own subprocess so that ru_maxrss is that phase's peak memory.

    python benchmarks/bench_dedup.py --n 100000          # ~2.5 minutes on 2 cores (most of it the exact reference)
    python benchmarks/bench_dedup.py --n 1000000         # the headline run (RESULTS_dedup.md)
    python benchmarks/bench_dedup.py --n 10000000 --ray --no-faiss --keep /tmp/dedup10m   # past memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from curation.dedup import DedupStep, components, quote, unit, vectors  # noqa: E402
from curation.lake import Lake  # noqa: E402

DIM = 512
BATCH = 65536
THRESHOLD = 0.95


# ---- data ---------------------------------------------------------------------------------------------
def make_batches(n: int, seed: int, dup_rate: float):
    """Clustered unit vectors (2,000 concepts, same-concept cosine ~0.45) where `dup_rate` of rows are
    near-copies (cosine ~0.98) of an earlier row of the same or previous batch, so groups of 2-5 form.
    Yields record batches; never holds more than two batches of vectors."""
    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((2000, DIM)).astype(np.float32))
    prev = None
    for start in range(0, n, BATCH):
        m = min(BATCH, n - start)
        noise = rng.standard_normal((m, DIM)).astype(np.float32) * 0.05
        x = unit(centers[rng.integers(0, len(centers), m)] + noise)
        pool = x if prev is None else np.concatenate([prev, x])
        copies = np.flatnonzero(rng.random(m) < dup_rate)
        copies = copies[copies > 0]
        offset = 0 if prev is None else len(prev)
        # a source strictly before the copy: chains of copies make groups of 2-5
        src = np.array([rng.integers(0, offset + c) for c in copies], dtype=np.int64)
        x[copies] = unit(pool[src] + rng.standard_normal((len(copies), DIM)).astype(np.float32) * 0.009)
        prev = x
        ids = pa.array([f"clip{i:08d}" for i in range(start, start + m)])
        side = rng.choice([(640, 360), (1280, 720), (1920, 1080)], size=m)
        yield pa.record_batch({
            "clip_id": ids,
            "width": pa.array(side[:, 0], pa.int32()),
            "height": pa.array(side[:, 1], pa.int32()),
            "clarity": pa.array(rng.random(m).astype(np.float32)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM),
        })


def phase_write(lake_dir: str, n: int, seed: int) -> dict:
    lake = Lake(lake_dir)
    for batch in make_batches(n, seed, dup_rate=0.05):
        lake.append("clips", pa.Table.from_batches([batch]))
    return {"rows": lake.count("clips")}


# ---- ours ---------------------------------------------------------------------------------------------
def phase_ours(lake_dir: str, params: dict) -> dict:
    return DedupStep({**params, "full": True}).run(Lake(lake_dir))  # full: a kept lake is redone from scratch


def phase_incremental(lake_dir: str, n: int, seed: int, params: dict) -> dict:
    """Append 1 % new clips (5 % of them copies of their own batch) and dedup again, then a no-op rerun."""
    lake = Lake(lake_dir)
    new = max(1, n // 100)
    for batch in make_batches(new, seed + 1, dup_rate=0.05):
        ids = pa.array([f"new{i:08d}" for i in range(batch.num_rows)])
        lake.append("clips", pa.Table.from_batches([batch]).set_column(0, "clip_id", ids))
    t0 = time.perf_counter()
    inc = DedupStep(params).run(lake)
    t1 = time.perf_counter()
    again = DedupStep(params).run(lake)
    return {"incremental": inc, "incremental_s": t1 - t0, "noop": again,
            "noop_s": time.perf_counter() - t1}


# ---- faiss peer ------------------------------------------------------------------------------------
def phase_faiss(lake_dir: str, out_labels: str, nprobe: int) -> dict:
    """faiss IndexIVFFlat (inner product on unit vectors), range search at the threshold, connected
    components on the pairs. Reads the vectors from the same Lance table (faiss must hold them all)."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    ds = Lake(lake_dir).dataset("clips")
    x = np.empty((ds.count_rows(), DIM), np.float32)
    order = np.empty(len(x), np.int64)  # table row order -> clip number (dedup's write reorders rows)
    i = 0
    for b in ds.to_batches(columns=["clip_id", "embedding"], batch_size=BATCH):
        v = unit(vectors(b, "embedding"))
        x[i:i + len(v)] = v
        order[i:i + len(v)] = [int(c[4:]) for c in b.column(0).to_pylist()]
        i += len(v)
    t_read = time.perf_counter()
    nlist = int(round(np.sqrt(len(x))))
    quant = faiss.IndexFlatIP(DIM)
    index = faiss.IndexIVFFlat(quant, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = x[np.random.default_rng(0).choice(len(x), min(len(x), 64 * nlist), replace=False)]
    index.train(sample)
    index.add(x)
    index.nprobe = nprobe
    t_build = time.perf_counter()
    a_all, b_all = [], []
    for s in range(0, len(x), 16384):
        lims, _, labels = index.range_search(x[s:s + 16384], THRESHOLD)
        q = np.repeat(np.arange(s, s + len(lims) - 1), np.diff(lims).astype(np.int64))
        keep = labels != q
        a_all.append(q[keep])
        b_all.append(labels[keep])
    a, b = np.concatenate(a_all), np.concatenate(b_all)
    comp = components(len(x), a, b, pa.nulls(len(x), pa.string()))
    t_end = time.perf_counter()
    labels = np.empty_like(comp)
    labels[order] = comp
    np.save(out_labels, labels)  # indexed by clip number
    return {"read_s": t_read - t0, "build_s": t_build - t_read, "search_group_s": t_end - t_build,
            "pairs": int(len(a)), "nprobe": nprobe, "nlist": nlist}


# ---- exact reference ---------------------------------------------------------------------------------
def phase_exact(lake_dir: str, subset: int, faiss_labels: str) -> dict:
    """Exact pairs (cosine >= threshold) among the first `subset` clips by brute force; the fraction of
    them that ours (same dup_group) and faiss (same component) put in one group."""
    ds = Lake(lake_dir).dataset("clips")
    t = ds.to_table(columns=["clip_id", "dup_group", "embedding"],
                    filter=f"{quote('embedding')} IS NOT NULL AND clip_id < 'clip{subset:08d}'")
    x = unit(vectors(t, "embedding"))
    ours = np.asarray(t.column("dup_group").to_pylist(), dtype=object)
    pos = np.array([int(c[4:]) for c in t.column("clip_id").to_pylist()])
    theirs = np.load(faiss_labels)[pos] if os.path.exists(faiss_labels) else None
    a_all, b_all = [], []
    for s in range(0, len(x), 2048):
        sim = x[s:s + 2048] @ x.T
        i, j = np.nonzero(sim >= THRESHOLD)
        keep = (i + s) < j
        a_all.append(i[keep] + s)
        b_all.append(j[keep])
    a, b = np.concatenate(a_all), np.concatenate(b_all)
    res = {"subset": len(x), "exact_pairs": int(len(a)),
           "ours_recall": float(np.mean(ours[a] == ours[b])) if len(a) else 1.0}
    if theirs is not None:
        res["faiss_recall"] = float(np.mean(theirs[a] == theirs[b])) if len(a) else 1.0
    return res


# ---- driver -------------------------------------------------------------------------------------------
def run_phase(args: list[str]) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"phase {args[1]} failed:\n{out.stderr[-4000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    return res


def child(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", required=True)
    ap.add_argument("--lake")
    ap.add_argument("--n", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", default="{}")
    ap.add_argument("--labels")
    ap.add_argument("--subset", type=int)
    ap.add_argument("--nprobe", type=int, default=3)
    ap.add_argument("--ray", action="store_true")
    a = ap.parse_args(argv)
    params = json.loads(a.params)
    if a.ray and a.phase in ("ours", "incremental"):
        from curation.runner import init_ray

        init_ray(num_cpus=os.cpu_count())
    if a.phase == "write":
        res = phase_write(a.lake, a.n, a.seed)
    elif a.phase == "ours":
        res = phase_ours(a.lake, params)
    elif a.phase == "incremental":
        res = phase_incremental(a.lake, a.n, a.seed, params)
    elif a.phase == "faiss":
        res = phase_faiss(a.lake, a.labels, a.nprobe)
    else:
        res = phase_exact(a.lake, a.subset, a.labels)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    res["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    # CPU seconds next to wall: the 2 cores are shared, so wall time alone depends on the neighbours
    res["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    print(json.dumps(res, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="rows of 512-d embeddings")
    ap.add_argument("--subset", type=int, default=100_000, help="rows for the exact recall reference")
    ap.add_argument("--params", default="{}", help="JSON DedupStep params, e.g. '{\"nprobes\": 4}'")
    # 3 = DedupStep's default nprobes for the join: both sides then look at the same number of lists
    ap.add_argument("--nprobe", type=int, default=3, help="faiss nprobe")
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--no-incremental", action="store_true", help="skip the +1 %% incremental phase")
    ap.add_argument("--keep", help="lake directory to keep (default: a temp dir, removed); reused when it holds "
                    "the N clips already (the incremental phase's rows are removed first)")
    ap.add_argument("--ray", action="store_true", help="run the join as Ray tasks (an embedded Ray, all cores); "
                    "per-task peak RSS is reported")
    args = ap.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="bench_dedup_")
    labels = os.path.join(root, "faiss_labels.npy")
    params = json.dumps({"threshold": THRESHOLD, **json.loads(args.params)})
    report: dict = {"n": args.n, "dim": DIM, "threshold": THRESHOLD, "cpus": os.cpu_count()}
    try:
        lake = Lake(root)
        if lake.exists("clips"):
            lake.delete("clips", "clip_id LIKE 'new%'")
        if lake.count("clips") == args.n:
            report["write"] = {"reused": root}
        else:
            shutil.rmtree(os.path.join(root, "clips.lance"), ignore_errors=True)
            report["write"] = run_phase(["--phase", "write", "--lake", root, "--n", str(args.n)])
        print("write", report["write"], flush=True)
        ray_flag = ["--ray"] if args.ray else []
        report["ours"] = run_phase(["--phase", "ours", "--lake", root, "--params", params, *ray_flag])
        print("ours", report["ours"], flush=True)
        if not args.no_faiss:
            report["faiss"] = run_phase(["--phase", "faiss", "--lake", root, "--labels", labels,
                                         "--nprobe", str(args.nprobe)])
            print("faiss", report["faiss"], flush=True)
            report["faiss_over_ours"] = round(report["faiss"]["wall_s"] / report["ours"]["wall_s"], 3)
        report["exact"] = run_phase(["--phase", "exact", "--lake", root, "--subset", str(args.subset),
                                     "--labels", labels])
        print("exact", report["exact"], flush=True)
        if not args.no_incremental:
            report["incremental"] = run_phase(["--phase", "incremental", "--lake", root, "--n", str(args.n),
                                               "--params", params, *ray_flag])
            print("incremental", report["incremental"], flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    if "--phase" in sys.argv:
        child(sys.argv[1:])
    else:
        main()
