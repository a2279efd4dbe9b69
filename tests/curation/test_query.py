"""`videocurate sql` output (print_query) and the Lance scan source behind every lake view: filters pushed into
Lance answer exactly as DuckDB does, the table format fetches a bounded number of rows, csv/json are DuckDB's own
writers streamed through a pipe."""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import curation.query as q
import curation.sqlrewrite as sr
from curation.cli import main as cli_main
from curation.errors import ConfigError
from curation.lake import Lake
from curation.query import connect, print_query, query, render
from curation.sqlrewrite import top_k, without_order

NAN, INF = float("nan"), float("inf")

# Every awkward value a filter can meet: NULL, NaN, ±inf, -0.0, quotes, a backslash, non-ASCII, integer extremes.
F = [1.5, -0.0, 0.0, NAN, None, 5.0, INF, -INF, 9.5, 0.004000000189989805, 20.0, -3.25]
TYPES = pa.table({
    "id": pa.array(range(len(F)), pa.int64()),
    "f32": pa.array(F, pa.float32()),
    "f64": pa.array(F, pa.float64()),
    "i8": pa.array([-128, 127, 0, None, 1, 2, 3, 4, 5, 6, 7, -1], pa.int8()),
    "i32": pa.array([640, 1280, 1920, None, 360, 720, 1080, 2160, 0, -1, 2**31 - 1, -(2**31)], pa.int32()),
    "i64": pa.array([2**62, -(2**63), 2**63 - 1, None, 0, 1, 2, 3, 4, 5, 6, 7], pa.int64()),
    "u32": pa.array([0, 2**32 - 1, 5, None, 1, 2, 3, 4, 5, 6, 7, 8], pa.uint32()),
    "b": pa.array([True, False, None, True, False, True, None, False, True, True, False, False]),
    "s": pa.array(["static", "it's", "back\\slash", None, "", "pan_left", "Ünïcødé", "a%_b", "zoom",
                   "static", "STATIC", "pan"]),
    "order": pa.array(range(12), pa.int32()),  # a reserved word as a column name
    "Camel": pa.array(range(12), pa.int32()),
    "ts": pa.array([dt.datetime(2024, 1, 1 + i) for i in range(12)], pa.timestamp("us")),
    "h": pa.array([0.5, 1.5, None, 2.5, 0.0, 3.0, 1.0, 2.0, 4.0, 8.0, 16.0, 0.25], pa.float16()),
})

PREDICATES = [
    "f32 > 1", "f32 >= 5", "f32 < 5", "f32 <= 0", "f32 = 0", "f32 != 1.5", "f32 >= 0", "f32 between 0.004 and 0.6",
    "f32 >= 0.004000000189989805", "not f32 > 1", "f32 is null", "f32 is not null", "f32 in (0.0, 1.5)",
    "f64 > 9.5 or f64 < -1", "f64 <= 20", "isnan(f64)", "f64 = 'nan'::double", "f64 > 'inf'::double",
    "i8 >= 0", "i8 = -128", "i32 >= 1280", "i32 in (640, 1920, 0)", "i32 != 720", "i32 = 2147483647",
    "i64 = -9223372036854775808", "i64 > 4611686018427387904", "i64 < 3", "u32 > 5", "u32 = 4294967295",
    "b", "not b", "b = false", "b is null", "b is not true", "s = 'it''s'", "s = 'back\\slash'", "s < 'p'",
    "s in ('static', 'zoom', '')", "s like 'pan%'", "s = 'Ünïcødé'", "s > ''", "s is null", '"order" = 3',
    '"Camel" >= 10', "ts >= timestamp '2024-01-06'", "h > 1", "h is null",
    "f32 > 1 and (i32 >= 1080 or s = 'static') and not b", "(f32 < 5 or f64 > 9) and i8 != 2",
    "least(i32, 2000) >= 1280", "coalesce(f32, 0) <= 0.1", "i32 + 0 >= 1280 or f32 > 9",
]


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("query") / "lake")
    lake.overwrite("types", TYPES)
    lake.overwrite("sources", pa.table({"video_id": ["a", "b"], "uri": ["/v/a.mp4", "/v/b.mp4"],
                                        "width": pa.array([1920, 640], pa.int32())}))
    lake.overwrite("clips", pa.table({
        "clip_id": ["a-0", "a-1", "b-0"], "video_id": ["a", "a", "b"], "width": pa.array([1920, 1920, 640], pa.int32()),
        "aesthetic": pa.array([5.5, NAN, 0.3], pa.float32()),
        "digest": [bytes(range(16)), b"\x00" * 1000, None],
        "at": pa.array([dt.datetime(2024, 5, 6, 7, 8, 9, 500000), None, dt.datetime(2024, 1, 1)], pa.timestamp("us")),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array([0.5, 0.25, 1.0, NAN, -2.0, 3.0], pa.float32()), 2),
    }))
    n = 200_000
    lake.overwrite("big", pa.table({"clip_id": [f"c{i:06d}" for i in range(n)],
                                    "score": pa.array([(i * 7919) % n / n for i in range(n)], pa.float32()),
                                    "note": ["x" * 200] * n}))
    return lake


@pytest.fixture
def scans(monkeypatch) -> list[dict]:
    """Every Lance read behind a DuckDB scan: its columns, its filter, and how many rows DuckDB pulled."""
    seen: list[dict] = []
    real = q.scan

    def spy(ds, columns, where, late, use_index=False):
        reader = real(ds, columns, where, late, use_index)
        rec = {"columns": columns, "where": where, "late": late, "rows": 0, "index": use_index}
        seen.append(rec)

        def batches():
            for b in reader:
                rec["rows"] += b.num_rows
                yield b
        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    monkeypatch.setattr(q, "scan", spy)
    return seen


def _duckdb_reference() -> duckdb.DuckDBPyConnection:
    """The same rows as a DuckDB table, so DuckDB itself evaluates every predicate."""
    con = duckdb.connect()
    con.register("arrow_types", TYPES.set_column(TYPES.schema.get_field_index("h"), "h",
                                                 TYPES.column("h").cast(pa.float32())))
    con.execute("create table types as select * from arrow_types")
    return con


def test_pushed_filters_answer_as_duckdb_does(lake, scans):
    ref = _duckdb_reference()
    con = connect(lake)
    pushed = 0
    for p in PREDICATES:
        sql = f"select id from types where {p} order by id"
        want = [r[0] for r in ref.execute(sql).fetchall()]
        scans.clear()
        got = [r[0] for r in con.execute(sql).fetchall()]
        assert got == want, (p, got, want)
        pushed += any(s["where"] for s in scans)
    assert pushed >= 30  # most of them really ran inside Lance


def test_float_range_and_selective_filters_push_down(lake, scans):
    rows = query(lake, "select s from types where f32 between 0.001 and 20 and i32 >= 640 and s != 'x'")
    assert sorted(rows.column("s").to_pylist()) == ["STATIC", "pan_left", "static"]
    (scan,) = scans
    assert scan["columns"] == ["s"]  # the filter columns are read inside Lance only
    assert "(`f32` >= 0.0010000000474974513) AND (`f32` <= 20.0)" in scan["where"]  # the float32 constants
    assert "`i32` >= 640" in scan["where"] and "`s` != 'x'" in scan["where"]
    scans.clear()
    query(lake, "select clip_id, note from big where score > 0.999")
    (scan,) = scans
    assert scan["where"] == "(`score` > 0.9990000128746033)" and sorted(scan["late"]) == ["clip_id", "note"]
    score = pa.array([(i * 7919) % 200_000 / 200_000 for i in range(200_000)], pa.float32()).to_numpy()
    assert scan["rows"] == int((score > np.float32(0.999)).sum()) == 199  # only the matching rows left Lance
    scans.clear()
    query(lake, "select clip_id, note from big where score > 0.5")
    assert scans[0]["where"] == "(`score` > 0.5)" and scans[0]["late"] == []  # keeps half: read the strings whole


def test_half_float_columns_are_readable(lake):
    rows = query(lake, "select id, h from types where h >= 4 order by id").to_pylist()
    assert rows == [{"id": 8, "h": 4.0}, {"id": 9, "h": 8.0}, {"id": 10, "h": 16.0}]


def _out(lake, sql, fmt="table", **kw) -> str:
    buf = io.StringIO()
    print_query(lake, sql, fmt, out=buf, **kw)
    return buf.getvalue()


def test_table_keeps_duplicate_columns_and_prints_bytes(lake):
    text = _out(lake, "select * from clips c join sources s on c.video_id = s.video_id order by clip_id")
    lines = text.splitlines()
    assert [c.strip() for c in lines[0].split("│")] == ["clip_id", "video_id", "width", "aesthetic", "digest", "at",
                                                        "embedding", "video_id", "uri", "width"]
    first = [c.strip() for c in lines[2].split("│")]
    assert first == ["a-0", "a", "1920", "5.5", bytes(range(16)).hex(), "2024-05-06 07:08:09.500000", "[0.5, 0.25]",
                     "a", "/v/a.mp4", "1920"]
    second = [c.strip() for c in lines[3].split("│")]
    assert second[3:5] == ["nan", "<1,000 bytes>"] and second[6] == "[1.0, null]" and second[5] == "NULL"
    assert [c.strip() for c in lines[4].split("│")][3] == "0.3"  # float32 printed short, not 0.30000001192092896
    assert lines[-1] == "(3 rows)"
    assert _out(lake, "select 1 as a, 2 as a").splitlines() == ["a │ a", "──┼──", "1 │ 2", "(1 row)"]


def test_csv_duplicate_columns_do_not_shift(lake):
    text = _out(lake, "select c.clip_id, s.width, c.width from clips c join sources s using (video_id) "
                      "order by clip_id", "csv")
    assert text.splitlines() == ["clip_id,width,width_1", "a-0,1920,1920", "a-1,1920,1920", "b-0,640,640"]
    assert _out(lake, "select 1 as a, 2 as a, 'x' as a", "csv").splitlines() == ["a,a_1,a_2", "1,2,x"]


def test_max_rows_footer_counts_the_rest(lake):
    lines = _out(lake, "select clip_id, score from big", max_rows=5).splitlines()
    assert len(lines) == 2 + 5 + 1
    assert lines[-1] == "(5 of 200,000 rows shown; --max-rows N for more)"
    assert [r.split("│")[0].strip() for r in lines[2:-1]] == [f"c{i:06d}" for i in range(5)]
    assert _out(lake, "select * from big limit 3", max_rows=3).splitlines()[-1] == "(3 rows)"
    assert _out(lake, "select * from big limit 4", max_rows=3).splitlines()[-1] == \
        "(3 of 4 rows shown; --max-rows N for more)"


def test_order_by_and_limit_are_respected(lake):
    sql = "select clip_id, score from big where score < 0.5 order by score desc, clip_id limit 7"
    want = [(r["clip_id"], r["score"]) for r in query(lake, sql).to_pylist()]
    assert len(want) == 7 and want == sorted(want, key=lambda r: (-r[1], r[0]))
    lines = _out(lake, sql, max_rows=5).splitlines()
    assert [r.split("│")[0].strip() for r in lines[2:-1]] == [c for c, _ in want[:5]]
    assert lines[-1] == "(5 of 7 rows shown; --max-rows N for more)"
    assert [r.split(",")[0] for r in _out(lake, sql, "csv").splitlines()[1:]] == [c for c, _ in want]
    assert [r["clip_id"] for r in json.loads(_out(lake, sql, "json"))] == [c for c, _ in want]
    top = query(lake, "select clip_id from big order by score desc, clip_id limit 3").column("clip_id").to_pylist()
    lines = _out(lake, "select clip_id from big order by score desc, clip_id", max_rows=3).splitlines()
    assert lines[2:] == [*top, "(3 of 200,000 rows shown; --max-rows N for more)"]
    con = connect(lake)  # the count drops a top-level ORDER BY (DuckDB would sort to count), never a LIMIT
    assert without_order(con, "select * from big where score > 0.5 order by score") == \
        "SELECT * FROM big WHERE (score > 0.5)"
    assert without_order(con, sql) == sql and without_order(con, "show tables") == "show tables"


def test_table_format_fetches_a_bounded_number_of_rows(lake, scans, monkeypatch):
    monkeypatch.setattr(q, "SCAN_BATCH_ROWS", 4096)
    lines = _out(lake, "select * from big").splitlines()
    assert len(lines) == 2 + 40 + 1 and lines[-1] == "(40 of 200,000 rows shown; --max-rows N for more)"
    shown, counted = scans  # the rows shown, then the count
    assert sorted(shown["columns"]) == ["clip_id", "note", "score"] and shown["rows"] < 100_000  # DuckDB stopped
    assert counted["columns"] == ["score"] and counted["rows"] == 200_000  # the count reads the narrowest column


def test_count_reads_the_narrowest_column_and_select_star_keeps_the_table_order(lake, scans):
    n = query(lake, "select count(*) as n from types where f32 > 1").to_pylist()
    assert n == [{"n": 6}]  # 1.5, NaN, 5, inf, 9.5, 20
    assert scans[0]["columns"] == ["b"] and scans[0]["where"] == "(`f32` > 1.0)"  # a bool, not the int64 id
    assert query(lake, "select * from types limit 1").column_names == TYPES.column_names


def test_count_gives_up_after_its_budget(lake):
    sql = "select i from range(3000000000) t(i) where i % 7 = 1"
    lines = _out(lake, sql, max_rows=2, count_budget_s=0.05).splitlines()
    assert lines[2:4] == ["1", "8"]
    assert lines[-1] == "(2 rows shown of more, not counted within 0.05 s; --max-rows N for more)"


def _duckdb_copy(lake, sql: str, options: str, tmp_path) -> str:
    path = str(tmp_path / "ref.out")
    connect(lake).execute(f"COPY ({sql}) TO '{path}' {options}")
    return open(path, encoding="utf-8").read()


def test_csv_and_json_are_what_duckdb_writes(lake, tmp_path):
    sql = "select id, i32, s, b, f64 from types where id < 3 or id > 8 order by id"
    assert _out(lake, sql, "csv") == _duckdb_copy(lake, sql, "(FORMAT csv, HEADER)", tmp_path)
    plain = "select id, i32, s, b, \"order\" from types order by id"  # no NaN/blob/timestamp: nothing to convert
    assert _out(lake, plain, "json") == _duckdb_copy(lake, plain, "(FORMAT json, ARRAY true)", tmp_path)
    assert json.loads(_out(lake, plain, "json"))[1] == {"id": 1, "i32": 1280, "s": "it's", "b": False, "order": 1}


def test_json_keeps_the_documented_value_format(lake):
    rows = json.loads(_out(lake, "select clip_id, aesthetic, digest, \"at\", embedding from clips order by clip_id",
                           "json"))
    assert rows[0] == {"clip_id": "a-0", "aesthetic": 5.5, "digest": bytes(range(16)).hex(),
                       "at": "2024-05-06T07:08:09.5", "embedding": [0.5, 0.25]}
    assert rows[1]["aesthetic"] is None and rows[1]["digest"] == "00" * 1000 and rows[1]["at"] is None
    assert rows[1]["embedding"] == [1.0, None]  # NaN → null, also inside lists
    assert dt.datetime.fromisoformat(rows[0]["at"]) == dt.datetime(2024, 5, 6, 7, 8, 9, 500000)
    assert json.loads(_out(lake, "select 1 as a where false", "json")) == []


def test_csv_streams_a_large_result_through_the_pipe(lake):
    text = _out(lake, "select clip_id, score from big", "csv")
    lines = text.splitlines()
    assert len(lines) == 200_001 and lines[0] == "clip_id,score" and lines[1].startswith("c000000,")
    assert lines[-1].startswith("c199999,")


def test_errors_propagate_and_leave_no_pipe_behind(lake, tmp_path, monkeypatch):
    monkeypatch.setattr(q.tempfile, "tempdir", str(tmp_path))
    with pytest.raises(duckdb.BinderException):
        _out(lake, "select nope from clips", "csv")
    with pytest.raises(duckdb.InvalidInputException, match="boom"):  # fails after rows were written
        _out(lake, "select case when i = 150000 then error('boom') else i end from range(200000) t(i)", "csv")

    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError("reader went away")
    with pytest.raises(BrokenPipeError):
        print_query(lake, "select * from big", "csv", out=Closed())
    assert os.listdir(tmp_path) == []


def test_scripts_and_statements_without_rows(lake):
    assert _out(lake, "create view top as select clip_id from clips where aesthetic > 1; "
                      "select * from top order by clip_id").splitlines()[2:] == ["a-0", "a-1", "(2 rows)"]  # NaN > 1
    assert _out(lake, "pragma version", "csv").splitlines()[0] == "library_version,source_id,codename"
    assert _out(lake, "show tables", "json").count('"name"') >= 4
    plan = _out(lake, "explain select clip_id from big where score > 0.5")
    assert "score" in plan and "\\n" not in plan and len(plan.splitlines()) > 5  # the plan, not one escaped cell


def test_render_of_an_arrow_table_keeps_duplicates_and_hex(lake):
    t = pa.Table.from_arrays([pa.array([1]), pa.array([2]), pa.array([b"\x01\x02"])], names=["a", "a", "b"])
    assert render(t).splitlines() == ["a │ a │ b", "──┼───┼─────", "1 │ 2 │ 0102", "(1 row)"]
    assert render(t, "csv").splitlines() == ["a,a,b", "1,2,0102"]
    assert json.loads(render(t, "json")) == [{"a": 1, "a_1": 2, "b": "0102"}]


TOP_K = [
    "select clip_id, note, score from big order by score desc limit 20",
    "select * from big where score < 0.5 order by score limit 7 offset 3",
    "select big.clip_id, big.score from big where clip_id > 'c1' order by big.score asc nulls last limit 5",
    "select clip_id, tied from ties order by tied desc limit 4",
    "select clip_id, tied from ties where tied is not null order by tied limit 3",
    "select clip_id, f from ties order by f desc limit 2",
    "select clip_id, f from ties order by f limit 7",
    "select clip_id, i from ties order by i desc limit 3",
]


def test_top_k_reads_wide_columns_for_the_k_rows_only_and_answers_as_duckdb(lake, scans):
    """A top-k over a lake table first finds the k-th value of the key (reading the key and the filter's
    columns), then reads the other columns only where the key reaches it: same rows as DuckDB on a native copy
    (ties, NaN, NULL and offsets included), and the 200-byte `note` strings of 5 rows, not 200,000."""
    ties = pa.table({"clip_id": [f"t{i}" for i in range(8)],
                     "tied": pa.array([3.0, 1.0, 3.0, None, 3.0, 2.0, 3.0, 0.5], pa.float32()),
                     "f": pa.array([NAN, 1.0, NAN, None, 2.0, -1.0, 0.0, 5.0], pa.float64()),
                     "i": pa.array([5, 5, 7, None, 5, 1, 2, 5], pa.int64())})
    lake.overwrite("ties", ties)
    ref = duckdb.connect()
    big = lake.dataset("big").to_table()
    ref.register("a_big", big)
    ref.register("a_ties", ties)
    ref.execute("create table big as select * from a_big; create table ties as select * from a_ties")
    con = connect(lake)
    def keys(rows, i):
        return ["nan" if isinstance(r[i], float) and math.isnan(r[i]) else r[i] for r in rows]

    for sql in TOP_K:
        rewritten = top_k(con, sql)
        assert rewritten != sql, sql
        got, want = con.sql(rewritten).fetchall(), ref.sql(sql).fetchall()
        if "ties" in sql:  # tied keys: the same key values in the same order (which tied row is DuckDB's choice)
            assert keys(got, 1) == keys(want, 1), sql
        else:  # unique keys: the very same rows
            assert got == want, sql
    # NaN sorts above every number in DuckDB: the two NaN rows first, then 5.0
    assert [r[0] for r in con.sql(top_k(con, TOP_K[5])).fetchall()] == ["t0", "t2"]
    scans.clear()
    rows = query(lake, "select clip_id, note, score from big order by score desc limit 5").to_pylist()
    assert [r["score"] for r in rows] == sorted(big.column("score").to_pylist(), reverse=True)[:5]
    wide = [s for s in scans if "note" in s["columns"]]
    assert len(wide) == 1 and wide[0]["rows"] == 5 and wide[0]["where"].startswith("(`score` >=")
    # not rewritten: aggregates, DISTINCT, joins, expressions as key, no limit, k beyond the cap
    for sql in ["select count(*) from big order by 1 limit 3", "select distinct score from big order by score limit 3",
                "select * from big join ties on true order by score limit 2",
                "select clip_id from big order by score * 2 limit 3", "select * from big order by score",
                "select clip_id from big order by clip_id limit 3", "select * from big order by score limit 1000000",
                "select * from big order by score nulls first limit 3"]:
        assert top_k(con, sql) == sql, sql
    # fewer rows than k: the query as given
    assert top_k(con, "select * from ties where i = 7 order by i limit 5") == \
        "select * from ties where i = 7 order by i limit 5"


INDEXED = [
    "select clip_id, note, capped from scores where not dup order by capped desc limit 20",
    "select * from scores where not dup order by capped desc limit 5 offset 30",
    "select clip_id, capped from scores order by capped asc limit 9",
    "select scores.clip_id, scores.Unique_Key from scores where scores.dup order by scores.unique_key desc limit 25",
    "select clip_id, unique_key from scores where unique_key < 0.5 and note like 'n1%' order by unique_key limit 40",
    "select clip_id, rank from scores where rank % 3 = 0 order by rank desc limit 12",
    "select clip_id, nanny from scores order by nanny desc limit 6",
    "select clip_id, capped from scores where clip_id = 's000007' order by capped desc limit 3",
]


def test_top_k_from_a_btree_index_answers_as_duckdb_without_a_scan(tmp_path, scans, capsys):
    """With a BTREE index on the key (Lake.index, `videocurate index`) a top-k reads no table scan: bounds are
    counted in the index and the k rows taken by id. Same rows as DuckDB on a native copy — ties at a capped
    value, NaN (above every number), NULL (last), offsets, a float and an integer key, a filter keeping half the
    rows, one keeping a tenth, and one keeping a single row (index bound widened until it falls back to the scan
    path); the indices stay whole through appends, updates and an overwrite."""
    n = 200_000
    rng = np.random.default_rng(7)
    capped = np.minimum(rng.uniform(0, 12, n), 10.0).astype(np.float32)  # a sixth of the rows tie at 10
    nanny = rng.normal(size=n)
    nanny[rng.choice(n, 50, replace=False)] = np.nan
    rows = pa.table({"clip_id": [f"s{i:06d}" for i in range(n)],
                     "capped": pa.array(capped, mask=rng.random(n) < 0.01),
                     "Unique_Key": pa.array(rng.permutation(n) / n, pa.float64()),
                     "rank": pa.array(rng.permutation(n), pa.int32()),
                     "nanny": pa.array(nanny, pa.float64()),
                     "dup": pa.array(rng.random(n) < 0.5),
                     "note": [f"n{i % 1000}" + "x" * 100 for i in range(n)]})
    lake = Lake(tmp_path / "lake")
    lake.overwrite("scores", rows)
    assert cli_main(["index", "capped", "Unique_Key", "rank", "nanny", "--lake", str(lake.root), "-t", "scores"]) == 0
    assert capsys.readouterr().out == "scores: BTREE on Unique_Key, capped, nanny, rank\n"
    assert cli_main(["tables", "--lake", str(lake.root)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("BTREE on Unique_Key, capped, nanny, rank")
    with pytest.raises(ConfigError, match="no column 'nope'"):
        lake.index("scores", ["nope"])

    def check(table: pa.Table, expect_index: int) -> None:
        ref = duckdb.connect()
        ref.register("arrow_scores", table)
        ref.execute("create table scores as select * from arrow_scores")
        con = connect(lake)
        used = 0
        for sql in INDEXED:
            scans.clear()
            rewritten = top_k(con, sql, q.lake_datasets(con))
            got, want = con.sql(rewritten).fetchall(), ref.sql(sql).fetchall()
            order = sql.split(" order by ")[1].split()[0].split(".")[-1].lower()
            key = [c.lower() for c in ref.sql(sql).columns].index(order)
            as_keys = [["nan" if isinstance(r[key], float) and math.isnan(r[key]) else r[key] for r in x]
                       for x in (got, want)]
            assert as_keys[0] == as_keys[1], sql
            if "capped" not in sql and "nanny" not in sql:  # unique keys: the very same rows
                assert got == want, sql
            if not scans:  # answered from the index: nothing scanned
                used += 1
                assert "_videocurate_topk" in rewritten
        assert used == expect_index
    check(rows, len(INDEXED) - 1)  # the single-row filter falls back to the scan path
    # a plain filter reads through the index only where each indexed predicate keeps few rows
    con = connect(lake)
    for where, index in [("capped >= 5 and not dup", False), ("rank < 100 and not dup", True),
                         ("rank < 100 and capped >= 5", False), ("rank < 100 or clip_id = 'x'", True)]:
        scans.clear()
        got = con.sql(f"select count(*), sum(rank) from scores where {where}").fetchall()
        ref = duckdb.sql(f"select count(*), sum(rank) from rows where {where}").fetchall()
        assert got == ref and [s["index"] for s in scans] == [index], where
    # appended rows (a new fragment, above every old key), updated keys and an overwrite keep the index whole
    more = rows.slice(0, 1000).set_column(0, "clip_id", pa.array([f"t{i:06d}" for i in range(1000)]))
    more = more.set_column(1, "capped", pa.array(np.full(1000, 11.0, np.float32)))
    more = more.set_column(2, "Unique_Key", pa.array(1 + np.arange(1000) / 1000))  # keys stay unique
    more = more.set_column(3, "rank", pa.array(n + np.arange(1000), pa.int32()))
    lake.append("scores", more)
    assert sr._index_covers(lake.dataset("scores"), "capped")
    lake.merge_columns("scores", pa.table({"clip_id": ["s000001"], "capped": pa.array([99.0], pa.float32())}),
                       on="clip_id")
    assert sr._index_covers(lake.dataset("scores"), "capped")
    check(lake.dataset("scores").to_table(), len(INDEXED) - 1)
    lake.overwrite("scores", rows.slice(0, 50_000))
    assert lake.indexed_columns("scores") == ["Unique_Key", "capped", "nanny", "rank"]
    check(rows.slice(0, 50_000), len(INDEXED) - 1)
