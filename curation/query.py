"""SQL over the lake: a DuckDB connection on which every Lance table is a view of the same name
(`videos`, `clips`, `failures`, and nested ones as "tiers/256p" and tiers_256p).

Each view is a scan source that reads the table through Lance: DuckDB hands it the columns a query needs and
the filters it can take (comparisons, IN, IS NULL, AND/OR/NOT over bool, integer, float and string columns,
floats included), and Lance reads only those columns, evaluates the filter on the filter columns first and
fetches the wide columns (strings, lists, embeddings) only for the rows that pass. `print_query` is the
`videocurate sql` output: a bounded table, or CSV / JSON written by DuckDB itself and streamed."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import math
import os
import re
import select
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import IO, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds_mod

from curation.lake import Lake, btree_columns
from curation.sqlrewrite import head_sample, readable_type, top_k, without_order
from curation.sqlrewrite import quote_ident as _quote

try:  # duckdb >= 2.0: Python scan sources that take the filters they can evaluate
    from duckdb._sources import ArrowScanSource
    from duckdb._sources.nodes import Binary, Col, In, Lit, Postfix, Unary, Untranslatable, exact_value
    from duckdb._sources.to_arrow import to_arrow as arrow_predicate
except ImportError:  # older duckdb: the LanceDataset is registered as a pyarrow Dataset (see connect)
    ArrowScanSource = None

SCAN_BATCH_ROWS = 32768  # Lance batch size for DuckDB scans (vs Lance's 8192: the tier query at 10M rows 0.15 → 0.11 s)
# A wide column is fetched only for the rows a filter keeps (Lance late materialisation) when the filter keeps at most
# this share of the rows; else it is read whole. Measured at 10M rows: clip_id+uri late vs whole 0.10 / 0.59 s at
# 0.1 % kept, 0.25 / 0.32 s at 2 %, 0.48 / 0.32 s at 5 %, 1.07 / 0.36 s at 20 %; a float32[64] embedding
# 0.10 / 6.8 s at 0.1 %, 2.5 / 4.6 s at 5 %, 2.3 / 7.0 s at 20 %.
LATE_MAX_SELECTIVITY_STRINGS = 0.03
LATE_MAX_SELECTIVITY_LISTS = 0.25
# A filter is answered from BTREE indices (`videocurate index`) only when each predicate on an indexed column keeps
# at most this share of a sample of the rows: at 10M rows the index read 2 columns 23 vs 64 ms
# without at 0.01 % kept, 44 / 44 ms at 0.6 %, 175 / 50 ms at 5 %, 829 / 49 ms at 66 %.
INDEX_MAX_SELECTIVITY = 0.005
SELECTIVITY_SAMPLE_ROWS = 200_000  # rows of the first fragments the share is estimated on
COUNT_BUDGET_S = 1.5  # the table format counts the rest of the rows for at most this long
MAX_WIDTH = 48  # table cells longer than this are cut with "…"
SHORT_BLOB = 16  # blobs up to this many bytes print as hex, longer ones as <N bytes>


# ---- Lance tables as DuckDB scan sources ---------------------------------------------------------
_COMPARISONS = {"=", "!=", "<", "<=", ">", ">="}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ENGINE_TYPES = [
    (pa.types.is_boolean, "BOOLEAN"), (pa.types.is_int8, "TINYINT"), (pa.types.is_int16, "SMALLINT"),
    (pa.types.is_int32, "INTEGER"), (pa.types.is_int64, "BIGINT"), (pa.types.is_uint8, "UTINYINT"),
    (pa.types.is_uint16, "USMALLINT"), (pa.types.is_uint32, "UINTEGER"), (pa.types.is_float32, "FLOAT"),
    (pa.types.is_float64, "DOUBLE"), (pa.types.is_string, "VARCHAR"), (pa.types.is_large_string, "VARCHAR"),
]


def _engine_type(t: pa.DataType) -> str | None:
    """DuckDB's name for an Arrow column type whose predicates Lance evaluates as DuckDB does, else None."""
    return next((name for test, name in _ENGINE_TYPES if test(t)), None)


def lance_filter(node: Any, schema: pa.Schema) -> str:
    """A DuckDB filter predicate (duckdb._sources.nodes) as a Lance SQL filter with the same answer on every row,
    or Untranslatable. Measured on Lance 14: NaN compares above every number and equal to itself, -0.0 equals
    0.0, and NULL propagates through NOT and IN, as in DuckDB; dates, timestamps, nested fields, float IN lists,
    the int64 minimum, and columns whose names need quoting stay with DuckDB."""
    if isinstance(node, Binary) and node.op in ("AND", "OR"):
        return f"({lance_filter(node.left, schema)} {node.op} {lance_filter(node.right, schema)})"
    if isinstance(node, Unary) and node.op == "NOT":
        return f"(NOT {lance_filter(node.operand, schema)})"
    if isinstance(node, Postfix) and node.op in ("IS NULL", "IS NOT NULL") and isinstance(node.operand, Col):
        return f"({_lance_column(node.operand, schema)[0]} {node.op})"
    if isinstance(node, Binary) and node.op in _COMPARISONS and isinstance(node.left, Col):
        name, t = _lance_column(node.left, schema)
        return f"({name} {node.op} {_lance_literal(node.right, t)})"
    if isinstance(node, In) and isinstance(node.operand, Col) and node.values:
        name, t = _lance_column(node.operand, schema)
        if pa.types.is_floating(t):  # a hashed IN list may tell -0.0 from 0.0
            raise Untranslatable(node)
        return f"({name} IN ({', '.join(_lance_literal(v, t) for v in node.values)}))"
    raise Untranslatable(node)


def _lance_column(col: Any, schema: pa.Schema) -> tuple[str, pa.DataType]:
    if len(col.parts) != 1 or not _IDENT.match(col.parts[0]) or schema.get_field_index(col.parts[0]) < 0:
        raise Untranslatable(col)
    t = schema.field(col.parts[0]).type
    if _engine_type(t) is None:
        raise Untranslatable(col)
    return f"`{col.parts[0]}`", t


def _lance_literal(lit: Any, t: pa.DataType) -> str:
    if not isinstance(lit, Lit) or lit.type != _engine_type(t) or not exact_value(lit):
        raise Untranslatable(lit)
    v = lit.value
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int) and abs(v) < 2**63:  # Lance reads -2**63 as a float
        return str(v)
    if isinstance(v, float) and math.isfinite(v):
        return repr(v)  # a FLOAT constant is exactly a float32 value, so Lance's cast to the column type is exact
    if isinstance(v, str) and "\x00" not in v:
        return "'" + v.replace("'", "''") + "'"
    raise Untranslatable(lit)


def _filter_columns(node: Any) -> set[str]:
    found, stack = set(), [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Col):
            found.add(n.parts[0])
        stack.extend(n._children())
    return found


def _wide(t: pa.DataType) -> bool:
    """Columns worth reading only for the rows a filter keeps (Lance late materialisation)."""
    narrow = (pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t)
              or pa.types.is_decimal(t) or (pa.types.is_fixed_size_binary(t) and t.byte_width <= 16))
    return not narrow


def _late_limit(t: pa.DataType) -> float:
    nested = pa.types.is_nested(t) or pa.types.is_fixed_size_list(t)
    return LATE_MAX_SELECTIVITY_LISTS if nested else LATE_MAX_SELECTIVITY_STRINGS


def scan(ds: Any, columns: list[str] | None, where: str | None, late: list[str] | None,
         use_index: bool = False) -> pa.RecordBatchReader:
    """The one Lance read behind every DuckDB scan of a lake table (a seam the tests watch)."""
    kwargs: dict[str, Any] = {"batch_size": SCAN_BATCH_ROWS, "use_scalar_index": use_index}
    if where is not None:
        kwargs["late_materialization"] = late or False
    return ds.scanner(columns=columns, filter=where, **kwargs).to_reader()


if ArrowScanSource is not None:

    class LanceSource(ArrowScanSource):
        """A Lance dataset (one version) as a DuckDB scan source with projection and filter pushdown."""

        schema_is_stable = True

        def __init__(self, ds: Any, first: str | None = None):
            """`first`: the column declared first (the table's own order is kept by the view over the source)."""
            super().__init__(ds)
            self.stored = ds.schema
            fields = [f.with_type(readable_type(f.type)) for f in self.stored]
            if first is not None:
                fields.sort(key=lambda f: f.name != first)
            self.schema = pa.schema(fields)
            self._cast = any(f.type != self.stored.field(f.name).type for f in self.schema)
            self._rows: int | None = None
            self._selectivity: dict[str, float] = {}
            self._indexed: set[str] | None = None

        def __arrow_c_schema__(self) -> object:
            return self.schema.__arrow_c_schema__()

        def rows(self) -> int | None:
            if self._rows is None:
                self._rows = self.obj.count_rows()  # from the manifest: no data is read
            return self._rows

        def selectivity(self, where: str) -> float:
            """The share of rows `where` keeps, counted on the first fragments (Lance reads only the filter's
            columns; a fragment is at most ~1M rows as Lance writes them), cached per filter."""
            if where not in self._selectivity:
                n = kept = 0
                for frag in self.obj.get_fragments():
                    n += frag.count_rows()
                    kept += frag.count_rows(where)
                    if n >= SELECTIVITY_SAMPLE_ROWS:
                        break
                self._selectivity[where] = kept / n if n else 1.0
            return self._selectivity[where]

        def use_index(self, filters: Sequence[Any]) -> bool:
            """Whether Lance should answer `filters` from BTREE indices: only when every predicate on an indexed
            column keeps at most INDEX_MAX_SELECTIVITY of the rows of a sample (reading a large share through an
            index costs several times a scan, and so does counting it there)."""
            if self._indexed is None:
                self._indexed = btree_columns(self.obj)
            on_index = [p for p in filters if _filter_columns(p) & self._indexed]
            if not on_index:
                return False
            try:
                sample = head_sample(self.obj, sorted(set().union(*(_filter_columns(p) for p in on_index))))
                kept = [ds_mod.dataset(sample).count_rows(filter=arrow_predicate(p, sample.schema)) for p in on_index]
            except Exception:  # noqa: BLE001 - a predicate pyarrow cannot evaluate: scan, which is always right
                return False
            return all(k <= INDEX_MAX_SELECTIVITY * max(1, sample.num_rows) for k in kept)

        def accepts(self, predicate: Any) -> bool:
            try:
                lance_filter(predicate, self.stored)
            except Untranslatable:
                return False
            except Exception:  # noqa: BLE001 - anything unexpected stays with DuckDB, which is always right
                return False
            return True

        def stream(self, columns: Sequence[int] | None, filters: Sequence[Any]) -> tuple[object, bool]:
            names = list(self.schema.names) if columns is None else [self.schema.names[i] for i in columns]
            where, late = None, None
            if filters:
                where = " AND ".join(lance_filter(p, self.stored) for p in filters)
                used = set().union(*(_filter_columns(p) for p in filters))
                late = [n for n in names if n not in used and _wide(self.schema.field(n).type)]
                if late:
                    share = self.selectivity(where)
                    late = [n for n in late if share <= _late_limit(self.schema.field(n).type)]
            reader = scan(self.obj, names, where, late, bool(filters) and self.use_index(filters))
            if self._cast:
                target = pa.schema([self.schema.field(n) for n in names])
                reader = pa.RecordBatchReader.from_batches(target, (b.cast(target) for b in reader))
            return reader.__arrow_c_stream__(), True


def _cheapest(schema: pa.Schema) -> str | None:
    """The narrowest fixed-width column: what DuckDB reads when a query needs no column (count(*))."""
    widths = [(f.type.bit_width, i, f.name) for i, f in enumerate(schema)
              if (pa.types.is_primitive(f.type) or pa.types.is_fixed_size_binary(f.type)) and f.type.bit_width > 0]
    return min(widths)[2] if widths else None


def _register(con: duckdb.DuckDBPyConnection, names: list[str], ds: Any) -> None:
    """Every name in `names` reads the Lance dataset `ds`.

    DuckDB asks a source for its first column when a query needs none (count(*), or a count whose filter
    went into Lance), and the first column of a lake table is a string (clip_id, uri): 0.18-0.3 s at 10M
    rows for a count. So the source declares the narrowest fixed-width column first, and each name is a
    view that restores the table's own column order (a projection, which filters and column pruning cross)."""
    if ArrowScanSource is None or not hasattr(con, "_register_arrow_source"):
        for name in names:  # a LanceDataset is a pyarrow Dataset: projections and int/string filters push down
            con.register(name, ds)
        return
    first = _cheapest(ds.schema)
    if first is None or first == ds.schema.names[0]:
        for name in names:
            con._register_arrow_source(name, LanceSource(ds))
        return
    source = f"__lance_{names[0]}"
    con._register_arrow_source(source, LanceSource(ds, first=first))
    columns = ", ".join(_quote(n) for n in ds.schema.names)
    for name in names:
        con.execute(f"create temp view {_quote(name)} as select {columns} from {_quote(source)}")


_DATASETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection → {view name: Lance dataset}


def lake_datasets(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The Lance dataset behind each lake view of a `connect` connection (the pinned versions)."""
    return _DATASETS.get(con, {})


def connect(lake: Lake | str) -> duckdb.DuckDBPyConnection:
    lake = lake if isinstance(lake, Lake) else Lake(lake, create=False)
    con = duckdb.connect()
    con.execute("set enable_progress_bar = false")  # DuckDB draws it on stdout, inside csv/json output
    with lake.lock(shared=True):  # pin every table's version between two commits: one consistent snapshot
        datasets = {name: lake.dataset(name) for name in lake.tables()}
    views = {}
    for name, ds in datasets.items():
        alias = name.replace("/", "_").replace("-", "_")
        _register(con, [name] if alias == name else [name, alias], ds)
        views.update({name: ds, alias: ds})
    _DATASETS[con] = views
    return con


def to_arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    """A relation's rows as an Arrow table (duckdb 2 renamed `arrow()` to `to_arrow_table()`)."""
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    return fetch()


def query(lake: Lake | str, sql: str) -> pa.Table:
    con = connect(lake)
    rel = con.sql(top_k(con, sql, lake_datasets(con)))
    if rel is None:  # a statement with no result (e.g. SET)
        return pa.table({})
    return to_arrow(rel)


# ---- formatting values ---------------------------------------------------------------------------
def _f32(v: float) -> float:
    """The shortest decimal that reads back as the same float32 (0.3, not 0.30000001192092896)."""
    return float(str(np.float32(v))) if math.isfinite(v) else v


def _jsonable(v: Any, f32: bool = False) -> Any:
    if isinstance(v, float):
        return None if not math.isfinite(v) else _f32(v) if f32 else v
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, dict):
        return {str(k): _jsonable(x, f32) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x, f32) for x in v]
    return v


_CONTROL = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _cell(v: Any, f32: bool = False, max_width: int = MAX_WIDTH) -> str:
    """One table cell: NULL, short blobs as hex and long ones as <N bytes>, lists/structs as JSON, one line."""
    if v is None:
        s = "NULL"
    elif isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        s = b.hex() if len(b) <= SHORT_BLOB else f"<{len(b):,} bytes>"
    elif isinstance(v, float):
        s = str(_f32(v) if f32 else v)
    elif isinstance(v, (list, tuple, dict)):
        s = json.dumps(_jsonable(v, f32), ensure_ascii=False)
    else:
        s = str(v)
    s = s.translate(_CONTROL)
    return s if len(s) <= max_width else s[: max_width - 1] + "…"


def _is_f32_arrow(t: pa.DataType) -> bool:
    if pa.types.is_float32(t) or pa.types.is_float16(t):
        return True
    return any(_is_f32_arrow(t.field(i).type) for i in range(t.num_fields))


def _is_f32_duckdb(type_text: str) -> bool:
    return re.search(r"\bFLOAT\b", type_text) is not None and re.search(r"\bDOUBLE\b", type_text) is None


def _aligned(names: Sequence[str], cells: list[list[str]], footer: str) -> str:
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(names)]
    line = lambda vals: " │ ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(names), "─┼─".join("─" * w for w in widths), *(line(r) for r in cells), footer])


def _plural(n: int) -> str:
    return f"({n:,} row{'s' if n != 1 else ''})"


def unique_names(names: Iterable[str]) -> list[str]:
    """Column names made unique the way DuckDB's COPY does it: a, a_1, a_2."""
    seen: set[str] = set()
    out = []
    for n in names:
        cand, k = n, 0
        while cand in seen:
            k += 1
            cand = f"{n}_{k}"
        seen.add(cand)
        out.append(cand)
    return out


def render(table: pa.Table, fmt: str = "table", max_width: int = MAX_WIDTH) -> str:
    """Format a small result as an aligned text table, CSV, or one JSON array of row objects. Columns go by
    position, so duplicate names (a `select *` over a join) keep their own values."""
    names = table.column_names
    rows = list(zip(*(c.to_pylist() for c in table.columns))) if names else []
    f32 = [_is_f32_arrow(f.type) for f in table.schema]
    if fmt == "json":
        keys = unique_names(names)
        return json.dumps([{k: _jsonable(v, f) for k, v, f in zip(keys, r, f32)} for r in rows], ensure_ascii=False)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        for r in rows:
            w.writerow(["" if v is None else json.dumps(_jsonable(v, f)) if isinstance(v, (list, tuple, dict))
                        else bytes(v).hex() if isinstance(v, (bytes, bytearray, memoryview)) else v
                        for v, f in zip(r, f32)])
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format '{fmt}' (table, csv, json)")
    cells = [[_cell(v, f, max_width) for v, f in zip(r, f32)] for r in rows]
    return _aligned(names, cells, _plural(len(rows)))


# ---- videocurate sql -----------------------------------------------------------------------------
def print_query(lake: Lake | str, sql: str, fmt: str = "table", max_rows: int = 40, out: IO[str] | None = None,
                count_budget_s: float = COUNT_BUDGET_S) -> None:
    """Run `sql` on the lake and write the result to `out` (default stdout).

    table: the first `max_rows` rows (only those are fetched; the query streams), aligned, and a footer with the
    total row count, taken by a `count(*)` over the query for at most `count_budget_s` seconds.
    csv / json: every row, written by DuckDB's own COPY writer into a pipe that is copied to `out` as it fills,
    so memory stays bounded on any result size. CSV is DuckDB's (duplicate names become a, a_1; blobs \\x..
    escaped; lists [1, 2]); JSON is one array of row objects with NaN/inf as null, blobs as hex, timestamps ISO."""
    if fmt not in ("table", "csv", "json"):
        raise ValueError(f"unknown format '{fmt}' (table, csv, json)")
    out = sys.stdout if out is None else out
    con = connect(lake)
    try:
        statements = con.extract_statements(sql)
        if not statements:
            raise ValueError("no SQL statement given")
        for stmt in statements[:-1]:
            con.execute(stmt.query)
        last = statements[-1]
        text = last.query.strip().rstrip(";").rstrip()
        is_select = last.type.name == "SELECT"
        if is_select:
            text = top_k(con, text, lake_datasets(con))  # a top-k reads wide columns for k rows (curation.sqlrewrite)
        if fmt == "table" and last.type.name == "EXPLAIN":  # the plan, drawn as DuckDB draws it
            out.write("".join(f"{value.rstrip()}\n" for _, value in con.execute(text).fetchall()))
        elif fmt == "table":
            _print_table(con, text, is_select, max(0, max_rows), out, count_budget_s)
        else:
            _print_copy(con, text, is_select, fmt, out)
    finally:
        con.close()


def _print_table(con: duckdb.DuckDBPyConnection, text: str, is_select: bool, max_rows: int, out: IO[str],
                 budget: float) -> None:
    if is_select:
        # A LIMIT over the query: DuckDB stops reading once it has the rows, and an ORDER BY becomes a top-N
        # (select * from clips order by aesthetic at 10M rows: 1.1 GB instead of a 5.3 GB full sort).
        names = con.sql(text).columns  # the query's own names: a subquery would rename duplicates a, a_1
        con.execute(f"select * from ({text}\n) as _videocurate_rows limit {max_rows + 1}")
    else:  # PRAGMA, CALL, SET ...: a streaming result, fetched as far as needed
        con.execute(text)
        names = None
    desc = con.description
    if desc is None:
        return
    rows = con.fetchmany(max_rows + 1)
    names = names or [d[0] for d in desc]
    f32 = [_is_f32_duckdb(str(d[1])) for d in desc]
    more = len(rows) > max_rows
    rows = rows[:max_rows]
    cells = [[_cell(v, f) for v, f in zip(r, f32)] for r in rows]
    if not more:
        footer = _plural(len(rows))
    else:
        total = _count_rest(con, text, is_select, len(rows) + 1, budget)
        hint = "--max-rows N for more"
        footer = (f"({len(rows):,} of {total:,} rows shown; {hint})" if total is not None else
                  f"({len(rows):,} rows shown of more, not counted within {budget:g} s; {hint})")
    out.write(_aligned(names, cells, footer) + "\n")


def _count_rest(con: duckdb.DuckDBPyConnection, text: str, is_select: bool, seen: int, budget: float) -> int | None:
    """The result's row count, or None when it takes longer than `budget` seconds. A SELECT is counted by
    DuckDB as `count(*)` over it (which reads only what the count needs); anything else (PRAGMA, EXPLAIN) by
    reading the rest of its (small) open result."""
    if not is_select:
        n, t0 = seen, time.monotonic()
        while chunk := con.fetchmany(10_000):
            n += len(chunk)
            if time.monotonic() - t0 > budget:
                return None
        return n
    done = threading.Event()

    def stop_when_over_budget() -> None:
        if not done.wait(budget):
            while not done.wait(0.05):  # again until it lands: one sent while the last result closes is lost
                con.interrupt()

    counted = without_order(con, text)
    stopper = threading.Thread(target=stop_when_over_budget, name="videocurate-sql-count", daemon=True)
    stopper.start()
    try:
        return int(con.execute(f"select count(*) from ({counted}\n) as _videocurate_count").fetchone()[0])
    except duckdb.InterruptException:
        return None
    finally:
        done.set()
        stopper.join()  # it holds the connection: were it the last holder at interpreter exit, the connection's
        # C++ destructor would run on a daemon thread during finalisation and abort the process


def _json_expr(ref: str, t: Any) -> str | None:
    """A projection that gives `ref` the JSON format `render` has always written, or None to keep DuckDB's."""
    tid = t.id
    if tid == "blob":
        return f"lower(hex({ref}))"
    if tid in ("float", "double"):
        return f"CASE WHEN isfinite({ref}) THEN {ref} END"
    if tid.startswith("timestamp"):
        return f"replace(CAST({ref} AS VARCHAR), ' ', 'T')"
    if tid in ("list", "array") and dict(t.children)["child"].id in ("float", "double"):
        return f"list_transform({ref}, lambda x: CASE WHEN isfinite(x) THEN x END)"
    return None


def _print_copy(con: duckdb.DuckDBPyConnection, text: str, is_select: bool, fmt: str, out: IO[str]) -> None:
    if not is_select:  # PRAGMA, EXPLAIN, SET ...: a small result, held and copied like a table
        rel = con.sql(text)
        if rel is None:
            return
        con.register("_videocurate_result", to_arrow(rel))
        text = "select * from _videocurate_result"
    rel = con.sql(text)  # binds only (names and types of the result): errors name the user's SQL, not the COPY
    if fmt == "json":
        exprs = [_json_expr(f"_c{i}", t) for i, t in enumerate(rel.types)]
        if any(e is not None for e in exprs):
            refs = ", ".join(f"_c{i}" for i in range(len(exprs)))
            items = ", ".join(f"{e or f'_c{i}'} AS {_quote(n)}" for i, (e, n) in enumerate(zip(exprs, rel.columns)))
            text = f"select {items} from ({text}\n) as _videocurate_q({refs})"
    else:
        rel.columns  # noqa: B018 - the bind
    options = "(FORMAT csv, HEADER)" if fmt == "csv" else "(FORMAT json, ARRAY true)"
    _copy_streaming(con, f"COPY ({text}\n) TO '{{path}}' {options}", out)


def _copy_streaming(con: duckdb.DuckDBPyConnection, copy_sql: str, out: IO[str]) -> None:
    """Run a COPY ... TO '{path}' whose target is a named pipe, copying what DuckDB writes to `out` as it
    comes: DuckDB blocks while the pipe is full, so memory stays bounded whatever the result size."""
    folder = tempfile.mkdtemp(prefix="videocurate-sql-")
    path = os.path.join(folder, "out")
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # open before DuckDB does, so its open never blocks
    errors: list[BaseException] = []

    def run() -> None:
        try:
            con.execute(copy_sql.format(path=path.replace("'", "''")))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=run, name="videocurate-sql-copy", daemon=True)
    decoder = codecs.getincrementaldecoder("utf-8")()
    worker.start()
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:  # DuckDB has the pipe open but wrote nothing yet
                select.select([fd], [], [], 0.1)
                continue
            if chunk:
                out.write(decoder.decode(chunk))
            elif worker.is_alive():  # no writer: DuckDB has not opened the pipe yet, or is finishing
                time.sleep(0.002)
            else:
                while chunk := _read_nowait(fd):
                    out.write(decoder.decode(chunk))
                break
        out.write(decoder.decode(b"", final=True))
        if errors:
            raise errors[0]
    finally:
        if worker.is_alive():  # we stopped early (an error writing `out`, Ctrl-C): stop DuckDB too
            con.interrupt()
        os.close(fd)  # a writer still writing gets EPIPE and fails
        if worker.is_alive():
            worker.join(0.5)
        if worker.is_alive():  # DuckDB blocked opening a pipe nobody reads: let the open through
            unblock = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            worker.join(5)
            os.close(unblock)
        shutil.rmtree(folder, ignore_errors=True)


def _read_nowait(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""
