"""Near-duplicate dedup on planted duplicate groups: exact recovery on the brute-force and bucketed-join
paths (including groups planted on bucket boundaries), the keep rule, incremental runs and bad inputs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.buckets import load_model
from curation.dedup import DedupStep
from curation.errors import ConfigError
from curation.lake import Lake

DIM = 64


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted(rng: np.random.Generator, n_base: int, n_groups: int, prefix: str = "c"):
    """`n_base` random unit vectors, the first `n_groups` of which get 1-4 near-copies (cosine >= 0.97).
    Returns (ids, vectors, truth) with truth[i] = index of the group's original."""
    base = unit_rows(rng.standard_normal((n_base, DIM)))
    vecs, truth = [base], list(range(n_base))
    for g in range(n_groups):
        copies = rng.integers(1, 5)
        noise = rng.standard_normal((copies, DIM)) * 0.02
        vecs.append(unit_rows(base[g] + noise))
        truth += [g] * copies
    x = np.concatenate(vecs)
    ids = [f"{prefix}{i:06d}" for i in range(len(x))]
    return ids, x, np.array(truth)


def clips_table(ids, x, width=None, height=None, clarity=None) -> pa.Table:
    n = len(ids)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.astype(np.float32).ravel()), x.shape[1])
    return pa.table({
        "clip_id": pa.array(ids),
        "width": pa.array(width if width is not None else [640] * n, pa.int32()),
        "height": pa.array(height if height is not None else [360] * n, pa.int32()),
        "clarity": pa.array(clarity if clarity is not None else [0.5] * n, pa.float32()),
        "embedding": emb,
    })


def read(lake: Lake) -> dict[str, dict]:
    t = lake.dataset("clips").to_table(columns=["clip_id", "dup_group", "is_duplicate", "dup_of"])
    return {r["clip_id"]: r for r in t.to_pylist()}


def groups_of(rows: dict[str, dict]) -> set[frozenset[str]]:
    by: dict[str, set[str]] = {}
    for cid, r in rows.items():
        by.setdefault(r["dup_group"], set()).add(cid)
    return {frozenset(v) for v in by.values()}


def truth_groups(ids, truth) -> set[frozenset[str]]:
    by: dict[int, set[str]] = {}
    for cid, t in zip(ids, truth):
        by.setdefault(int(t), set()).add(cid)
    return {frozenset(v) for v in by.values()}


@pytest.mark.parametrize("method", ["exact", "bucket"])
def test_planted_groups_recovered_exactly(tmp_path, method):
    rng = np.random.default_rng(1)
    ids, x, truth = planted(rng, 3000, 150)
    lake = Lake(tmp_path)
    lake.append("clips", clips_table(ids, x))
    summary = DedupStep({"method": method, "threshold": 0.9}).run(lake)
    rows = read(lake)
    assert summary["method"] == method
    assert groups_of(rows) == truth_groups(ids, truth)
    n_dups = len(x) - 3000
    assert summary["duplicates"] == n_dups == sum(r["is_duplicate"] for r in rows.values())
    assert summary["groups"] == 150
    for cid, r in rows.items():
        # singletons are their own group; dup_of names the group's kept clip
        assert (r["dup_of"] is None) == (not r["is_duplicate"])
        assert r["dup_group"] == (r["dup_of"] or cid)


def test_keep_rule_resolution_then_clarity(tmp_path):
    rng = np.random.default_rng(2)
    base = unit_rows(rng.standard_normal((4, DIM)))
    x = np.concatenate([base, unit_rows(base[:2] + 0.01 * rng.standard_normal((2, DIM)))])
    ids = ["a_low", "b_orig", "c", "d", "a_high", "b_sharp"]
    lake = Lake(tmp_path)
    lake.append("clips", clips_table(ids, x, width=[640, 1280, 640, 640, 1920, 1280],
                                     height=[360, 720, 360, 360, 1080, 720],
                                     clarity=[0.9, 0.2, 0.5, 0.5, 0.1, 0.8]))
    DedupStep().run(lake)
    rows = read(lake)
    # a: higher resolution wins over higher clarity; b: equal resolution, clarity breaks the tie
    assert rows["a_low"]["dup_of"] == "a_high" and not rows["a_high"]["is_duplicate"]
    assert rows["b_orig"]["dup_of"] == "b_sharp" and not rows["b_sharp"]["is_duplicate"]
    assert rows["c"]["dup_group"] == "c" and rows["c"]["is_duplicate"] is False


def test_keep_rule_custom_key_and_missing_columns(tmp_path):
    rng = np.random.default_rng(3)
    v = unit_rows(rng.standard_normal((1, DIM)))
    x = np.concatenate([v, unit_rows(v + 0.01 * rng.standard_normal((1, DIM)))])
    lake = Lake(tmp_path)
    lake.append("clips", clips_table(["x1", "x2"], x, clarity=[0.9, 0.1]))
    # "aesthetic" is absent from the table and skipped; ascending clarity keeps the blurrier clip
    DedupStep({"keep_by": ["aesthetic desc", "clarity asc"]}).run(lake)
    assert read(lake)["x1"]["dup_of"] == "x2"


@pytest.mark.parametrize("method", ["exact", "bucket"])
def test_incremental_new_clips_join_old_groups_and_rerun_is_a_no_op(tmp_path, method):
    rng = np.random.default_rng(4)
    ids, x, _ = planted(rng, 1500, 40)
    lake = Lake(tmp_path)
    lake.append("clips", clips_table(ids, x))
    DedupStep({"method": method}).run(lake)
    before = read(lake)
    kept_of = {cid: r["dup_of"] or cid for cid, r in before.items()}

    # new clips: copies of 20 old clips (lower resolution) and 30 unrelated ones
    targets = [ids[i] for i in range(0, 40, 2)]
    olds = x[[ids.index(t) for t in targets]]
    new_x = np.concatenate([unit_rows(olds + 0.01 * rng.standard_normal(olds.shape)),
                            unit_rows(rng.standard_normal((30, DIM)))])
    new_ids = [f"n{i:03d}" for i in range(len(new_x))]
    lake.append("clips", clips_table(new_ids, new_x, width=[320] * 50, height=[180] * 50))
    summary = DedupStep({"method": method}).run(lake)
    after = read(lake)
    assert summary["checked"] == 50
    for nid, t in zip(new_ids[:20], targets):
        assert after[nid]["is_duplicate"] and after[nid]["dup_of"] == kept_of[t]
    for nid in new_ids[20:]:
        assert after[nid]["dup_group"] == nid and not after[nid]["is_duplicate"]
    assert all(after[c] == before[c] for c in before)  # old decisions unchanged

    version = lake.dataset("clips").version
    again = DedupStep({"method": method}).run(lake)
    assert again["checked"] == 0 and again["rows_written"] == 0
    assert lake.dataset("clips").version == version
    assert read(lake) == after


def test_better_new_copy_takes_over_the_group(tmp_path):
    rng = np.random.default_rng(5)
    v = unit_rows(rng.standard_normal((2, DIM)))
    lake = Lake(tmp_path)
    x = np.concatenate([v[:1], unit_rows(v[:1] + 0.01), v[1:]])
    lake.append("clips", clips_table(["o1", "o2", "o3"], x))
    DedupStep().run(lake)
    assert read(lake)["o2"]["dup_of"] == "o1"
    lake.append("clips", clips_table(["hd"], unit_rows(v[:1] + 0.005), width=[3840], height=[2160]))
    DedupStep().run(lake)
    rows = read(lake)
    # the same answer a single run over all four clips gives: the 4K copy is kept
    assert rows["o1"]["dup_of"] == "hd" and rows["o2"]["dup_of"] == "hd" and rows["hd"]["dup_of"] is None
    assert {rows[c]["dup_group"] for c in ("o1", "o2", "hd")} == {"hd"}


def test_null_embeddings_are_skipped(tmp_path):
    rng = np.random.default_rng(6)
    x = unit_rows(rng.standard_normal((3, DIM)))
    t = clips_table(["a", "b", "c"], x)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM, mask=pa.array([False, True, False]))
    t = t.set_column(t.schema.get_field_index("embedding"), "embedding", emb)
    lake = Lake(tmp_path)
    lake.append("clips", t)
    summary = DedupStep().run(lake)
    rows = read(lake)
    assert summary["clips"] == 2
    assert rows["b"] == {"clip_id": "b", "dup_group": None, "is_duplicate": None, "dup_of": None}
    assert rows["a"]["dup_group"] == "a"


def test_changed_threshold_recomputes(tmp_path):
    rng = np.random.default_rng(7)
    v = unit_rows(rng.standard_normal((1, DIM)))
    far = unit_rows(v + 0.08 * rng.standard_normal((1, DIM)))  # cosine ~0.85 with v
    lake = Lake(tmp_path)
    lake.append("clips", clips_table(["p", "q"], np.concatenate([v, far])))
    assert DedupStep({"threshold": 0.95}).run(lake)["duplicates"] == 0
    summary = DedupStep({"threshold": 0.5}).run(lake)
    assert summary["checked"] == 2 and summary["duplicates"] == 1
    assert lake.producers("clips")["dup_of"]["params"]["threshold"] == 0.5


def test_bad_inputs_name_step_and_column(tmp_path):
    lake = Lake(tmp_path)
    with pytest.raises(ConfigError, match="dedup.*clips"):
        DedupStep().run(lake)
    lake.append("clips", pa.table({"clip_id": ["a"], "width": pa.array([1], pa.int32())}))
    with pytest.raises(ConfigError, match="dedup.*'clip_emb'"):
        DedupStep({"column": "clip_emb"}).run(lake)
    with pytest.raises(ConfigError, match="no parameter"):
        DedupStep({"treshold": 0.9})
    with pytest.raises(ConfigError, match="method"):
        DedupStep({"method": "magic"})


def test_custom_column_name_and_provenance(tmp_path):
    rng = np.random.default_rng(8)
    ids, x, truth = planted(rng, 200, 10)
    t = clips_table(ids, x).rename_columns(["clip_id", "width", "height", "clarity", "clip_emb"])
    lake = Lake(tmp_path)
    lake.append("clips", t)
    DedupStep({"column": "clip_emb"}).run(lake)
    assert groups_of(read(lake)) == truth_groups(ids, truth)
    prov = lake.producers("clips")
    assert set(prov) >= {"dup_group", "is_duplicate", "dup_of"}
    assert prov["dup_group"]["stage"] == "dedup" and prov["dup_group"]["params"]["column"] == "clip_emb"


def boundary_planted(rng: np.random.Generator, n_centers: int = 40, per_center: int = 75, n_groups: int = 150):
    """Clustered vectors plus `n_groups` originals placed halfway between two cluster centres (a distinct
    pair each), each with 1-4 near-copies (cosine ~0.98): the copies of one group tend to fall into
    different IVF buckets. Returns (ids, vectors, truth) like `planted`."""
    centers = unit_rows(rng.standard_normal((n_centers, DIM)))
    members = unit_rows(np.repeat(centers, per_center, axis=0)
                        + 0.15 * rng.standard_normal((n_centers * per_center, DIM)))
    pairs = [(a, b) for a in range(n_centers) for b in range(a + 1, n_centers)]
    chosen = rng.choice(len(pairs), n_groups, replace=False)
    mids = unit_rows(np.stack([centers[pairs[i][0]] + centers[pairs[i][1]] for i in chosen])
                     + 0.03 * rng.standard_normal((n_groups, DIM)))
    vecs, truth = [members, mids], list(range(len(members) + n_groups))
    for g in range(n_groups):
        copies = rng.integers(1, 5)
        vecs.append(unit_rows(mids[g] + 0.02 * rng.standard_normal((copies, DIM))))
        truth += [len(members) + g] * copies
    x = np.concatenate(vecs)
    return [f"b{i:06d}" for i in range(len(x))], x, np.array(truth)


def test_bucket_path_recovers_groups_straddling_buckets(tmp_path):
    rng = np.random.default_rng(9)
    ids, x, truth = boundary_planted(rng)
    lake = Lake(tmp_path)
    lake.append("clips", clips_table(ids, x))
    # small buckets and ranges: many buckets, several spill ranges, so pairs straddle both
    params = {"method": "bucket", "threshold": 0.9, "bucket_rows": 32, "range_rows": 800}
    summary = DedupStep(params).run(lake)
    assert summary["method"] == "bucket" and summary["model"] == "trained"
    assert summary["join"]["ranges"] >= 3 and summary["buckets"] >= 50
    assert groups_of(read(lake)) == truth_groups(ids, truth)

    # the planted pairs really do straddle buckets: many copies have another primary bucket than their
    # original, so only the top-p assignment (not the primary bucket alone) can have joined them
    model = load_model(lake)
    primary = model.assign(x, 1, 4)[:, 0]
    copies = np.flatnonzero(truth != np.arange(len(x)))
    straddling = int((primary[copies] != primary[truth[copies]]).sum())
    assert straddling >= 5, straddling


def test_bucket_model_is_seeded_stored_and_reused(tmp_path):
    rng = np.random.default_rng(10)
    ids, x, truth = planted(rng, 3000, 100)
    lakes = []
    for name in ("a", "b"):
        lake = Lake(tmp_path / name)
        lake.append("clips", clips_table(ids, x))
        DedupStep({"method": "bucket", "threshold": 0.9, "bucket_rows": 64}).run(lake)
        lakes.append(lake)
        assert groups_of(read(lake)) == truth_groups(ids, truth)
    m0, m1 = load_model(lakes[0]), load_model(lakes[1])
    assert np.array_equal(m0.fine, m1.fine) and np.array_equal(m0.cell, m1.cell)  # same seed, same buckets
    # an incremental run reuses the stored model: its new clips join their originals' groups
    extra = unit_rows(x[:20] + 0.01 * rng.standard_normal((20, DIM)))
    lakes[0].append("clips", clips_table([f"n{i}" for i in range(20)], extra))
    summary = DedupStep({"method": "bucket", "threshold": 0.9, "bucket_rows": 64}).run(lakes[0])
    assert summary["model"] == "stored" and summary["checked"] == 20
    rows = read(lakes[0])
    assert all(rows[f"n{i}"]["dup_group"] == rows[ids[i]]["dup_group"] for i in range(20))


def test_oversized_buckets_are_split_and_spill_is_removed(tmp_path):
    rng = np.random.default_rng(11)
    ids, x, truth = planted(rng, 2000, 50)
    hot = unit_rows(np.tile(x[:1], (1500, 1)) + 0.3 * rng.standard_normal((1500, DIM)))  # one dense blob
    ids += [f"h{i:05d}" for i in range(1500)]
    x = np.concatenate([x, hot])
    lake = Lake(tmp_path)
    lake.append("clips", clips_table(ids, x))
    summary = DedupStep({"method": "bucket", "threshold": 0.9, "bucket_rows": 64}).run(lake)
    model = load_model(lake)
    share = len(x) / len(model.fine)
    assert model.size.max() * len(x) / model.size.sum() < 8 * share  # no bucket holds the whole blob
    assert summary["join"]["spilled_rows"] >= len(x)
    assert not any((tmp_path / "_spill").iterdir()) if (tmp_path / "_spill").exists() else True


def test_bucket_join_runs_as_ray_tasks(ray_local, tmp_path):
    rng = np.random.default_rng(12)
    ids, x, truth = planted(rng, 3000, 100)
    lake = Lake(tmp_path)
    lake.append("clips", clips_table(ids, x))
    summary = DedupStep({"method": "bucket", "threshold": 0.9, "bucket_rows": 64, "range_rows": 1500}).run(lake)
    assert summary["join"]["ray"] is True and summary["join"]["ranges"] >= 2
    assert groups_of(read(lake)) == truth_groups(ids, truth)


def test_nprobes_must_be_positive():
    with pytest.raises(ConfigError, match="nprobes"):
        DedupStep({"nprobes": 0})


@pytest.mark.parametrize("method", ["exact", "bucket"])
def test_driver_reads_only_rows_in_pairs_and_rewrites_no_row(tmp_path, monkeypatch, method):
    """Memory flat in N: the metadata the driver loads is that of the rows in a pair (plus, incrementally,
    the old groups they touch); every other row becomes its own group through column files computed per
    fragment, so row ids and the embedding's data files stay as they were."""
    import curation.dedup as dedup

    rng = np.random.default_rng(11)
    ids, x, truth = planted(rng, 2000, 40)
    lake = Lake(tmp_path)
    for s in range(0, len(ids), 700):  # several fragments
        lake.append("clips", clips_table(ids[s:s + 700], x[s:s + 700]))
    before = lake.dataset("clips").to_table(columns=["clip_id"], with_row_id=True)
    files = {f.fragment_id: [d.path for d in f.data_files()] for f in lake.dataset("clips").get_fragments()}
    loaded = []
    real = dedup.load_meta
    monkeypatch.setattr(dedup, "load_meta", lambda ds, p, rowids, with_old: loaded.append(len(rowids))
                        or real(ds, p, rowids, with_old))
    DedupStep({"method": method, "threshold": 0.9, "exact_max_rows": 10**6}).run(lake)
    in_pairs = sum(len(g) for g in truth_groups(ids, truth) if len(g) > 1)
    assert loaded == [in_pairs] and in_pairs < len(ids) / 10
    rows = read(lake)
    assert groups_of(rows) == truth_groups(ids, truth)
    after = lake.dataset("clips").to_table(columns=["clip_id"], with_row_id=True)
    assert after.equals(before)  # same rows, same row ids, same order
    for f in lake.dataset("clips").get_fragments():
        assert set(files[f.fragment_id]) <= {d.path for d in f.data_files()}  # old files kept, new ones added
    # incremental: one new copy of a grouped clip loads that pair plus the old group, not the table
    g0 = next(g for g in truth_groups(ids, truth) if len(g) > 1)
    src = ids.index(sorted(g0)[0])
    lake.append("clips", clips_table(["new0", "new1"], np.concatenate([x[src:src + 1],
                                                                         unit_rows(rng.standard_normal((1, DIM)))])))
    loaded.clear()
    summary = DedupStep({"method": method, "threshold": 0.9, "exact_max_rows": 10**6}).run(lake)
    assert loaded == [len(g0) + 1] and summary["checked"] == 2
    rows = read(lake)
    assert rows["new1"]["dup_group"] == "new1" and rows["new1"]["is_duplicate"] is False
    assert rows["new0"]["dup_group"] == rows[sorted(g0)[0]]["dup_group"]
    # a changed threshold (a full rerun) that only the exact copy reaches: the other former duplicates are
    # their own groups again
    DedupStep({"method": method, "threshold": 0.9999, "exact_max_rows": 10**6}).run(lake)
    rows = read(lake)
    assert {g for g in groups_of(rows) if len(g) > 1} == {frozenset({ids[src], "new0"})}
    assert sum(r["is_duplicate"] for r in rows.values()) == 1


@pytest.mark.parametrize("seed", range(4))
def test_connected_numbers_components_as_scipy_does(seed, monkeypatch):
    """The NumPy union (small runs, no SciPy import) and the SciPy path give the same component ids: random
    graphs, a long chain in random order (the worst case for joining by the lower root), isolated nodes."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    import curation.dedup as dedup

    rng = np.random.default_rng(seed)
    n = 3000
    chain = rng.permutation(n)
    graphs = [(rng.integers(0, n, m), rng.integers(0, n, m)) for m in (0, 50, 1500, 6000)]
    graphs.append((chain[:-1], chain[1:]))
    for a, b in graphs:
        want = connected_components(coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n)), directed=False)[1]
        assert np.array_equal(dedup.connected(n, a, b), want)
        monkeypatch.setattr(dedup, "NUMPY_GRAPH_NODES", 0)
        assert np.array_equal(dedup.connected(n, a, b), want)
        monkeypatch.setattr(dedup, "NUMPY_GRAPH_NODES", 200_000)
    assert dedup.connected(n, *graphs[-1]).max() == 0
