"""Rewrites of a query through DuckDB's own parser (`json_serialize_sql` / `json_deserialize_sql`) that keep
its answer and make it cheap on lake tables. Each returns the text unchanged when its pattern does not hold.

`top_k`: `select <columns> from T [where W] order by c [asc|desc] limit k [offset o]`. Over a native table or
Parquet DuckDB reads the sort key first and the other columns only for the k rows it keeps (late
materialisation), and pushes the running k-th value into the scan (a dynamic filter); a Python scan source
gets neither, so every selected column of every row passing W is read (strings of 9M rows for a top 20). The
rewrite does it in two steps: the k-th value v of c under W (a query that reads c and W's columns only),
then the query over `T where c >= v` (descending; `<=` ascending), a filter Lance evaluates first, so the
wide columns are read for the few rows that pass. Same answer: the k rows of the original all have c at
least v, so they are the top k of the filtered rows too (ties at v are broken arbitrarily by both). Used
when c is a plain numeric column, nulls sort last (DuckDB's default), and the query is a plain projection
(no aggregate, DISTINCT, window, join or CTE).

With a BTREE index on c (`videocurate index`, `Lake.index`) neither step scans: a bound t with a few times k
rows at or beyond it is found by counting rows in the index (~0.2 ms a count at 10M rows; the counts start
from a sample of c), those rows are read for c and W's columns with their row ids (an index-served filter),
the query's own filter and order pick k row ids among them, and the query runs over the k rows taken by id.
Same answer: when k rows at or beyond t pass W, the k-th value under W is at least t, so the whole answer is
among them. When fewer pass (a selective W) t is widened eightfold, and past CANDIDATES_MAX rows the scan
path is taken."""

from __future__ import annotations

import copy
import json
import math
import uuid
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.lake import btree_columns, unindexed_fragments

MAX_K = 100_000  # beyond this many rows a top-k reads enough rows that the two steps gain little
_NUMERIC = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "FLOAT",
            "DOUBLE"}
_VIEW = "_videocurate_topk"
CANDIDATES_MAX = 50_000  # rows read around an index bound before the scan path is cheaper
INDEX_MAX_UNINDEXED = 0.01  # the index path is taken while at most this share of rows is outside the index
SAMPLE_ROWS = 8_192  # rows of head_sample: what the bound search and the index rule start from


def readable_type(t: pa.DataType) -> pa.DataType:
    """The type DuckDB reads a column as: half floats (which DuckDB's Arrow scan refuses) become float32."""
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(readable_type(t.value_type)), t.list_size)
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(readable_type(t.value_type)))
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(readable_type(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(readable_type(f.type)) for f in t])
    return t


def parse(con: duckdb.DuckDBPyConnection, text: str) -> dict | None:
    """The parsed statement (DuckDB's JSON form), or None when it is not exactly one SELECT node."""
    try:
        ast = json.loads(con.execute("select json_serialize_sql(?)", [text]).fetchall()[0][0])
    except (duckdb.Error, ValueError, IndexError, TypeError):
        return None
    if ast.get("error") or len(ast.get("statements", [])) != 1:
        return None
    return ast if ast["statements"][0]["node"].get("type") == "SELECT_NODE" else None


def unparse(con: duckdb.DuckDBPyConnection, ast: dict) -> str:
    return con.execute("select json_deserialize_sql(?::json)", [json.dumps(ast)]).fetchall()[0][0]


def without_order(con: duckdb.DuckDBPyConnection, text: str) -> str:
    """The query without a top-level ORDER BY (when it has no LIMIT): DuckDB keeps the sort under a count(*)
    (select * from clips order by aesthetic: 2.8 s to count 10M rows, 0.02 s without)."""
    ast = parse(con, text)
    node = ast["statements"][0]["node"] if ast else {}
    if [m.get("type") for m in node.get("modifiers", [])] != ["ORDER_MODIFIER"]:
        return text
    node["modifiers"] = []
    try:
        return unparse(con, ast)
    except duckdb.Error:
        return text


def _constant_int(expr: Any) -> int | None:
    if not expr:
        return 0
    lit = expr.get("literal", {}) if expr.get("class") == "CONSTANT" else {}
    try:
        return int(lit["text"]) if lit.get("kind") in ("INTEGER", "BIGINT", "HUGEINT") else None
    except (KeyError, ValueError):
        return None


def _plain(expr: dict) -> bool:
    return expr.get("class") in ("COLUMN_REF", "STAR") and not expr.get("columns") and not expr.get("exclude_list")


def _literal(value: Any, type_name: str) -> str:
    text = repr(float(value)) if isinstance(value, float) else str(int(value))
    if isinstance(value, float) and math.isnan(value):
        text = "nan"
    return f"CAST('{text}' AS {type_name})"


def top_k(con: duckdb.DuckDBPyConnection, text: str, datasets: dict[str, Any] | None = None) -> str:
    """`text` with its top-k answered over the k rows taken by id when `datasets` (view name → its Lance
    dataset) holds T with a BTREE index on c, else over `T where c >= v` (module docstring), or `text` itself."""
    ast = parse(con, text)
    if ast is None:
        return text
    node = ast["statements"][0]["node"]
    table, mods = node.get("from_table") or {}, node.get("modifiers", [])
    if (table.get("type") != "BASE_TABLE" or table.get("sample") or table.get("at_clause") or table.get("schema_name")
            or table.get("catalog_name") or node.get("group_expressions") or node.get("having")
            or node.get("qualify") or node.get("sample") or node.get("cte_map", {}).get("map")
            or [m.get("type") for m in mods] != ["ORDER_MODIFIER", "LIMIT_MODIFIER"]
            or not all(_plain(e) for e in node.get("select_list", []))):
        return text
    order, limit = mods[0]["orders"][0], mods[1]
    key = order.get("expression", {})
    n, offset = _constant_int(limit.get("limit")), _constant_int(limit.get("offset"))
    if (key.get("class") != "COLUMN_REF" or order.get("null_order") not in ("ORDER_DEFAULT", "NULLS LAST", "NULLS_LAST")
            or order.get("type") not in ("ASCENDING", "DESCENDING", "ORDER_DEFAULT") or limit.get("limit_type",
            "ROW_COUNT") != "ROW_COUNT" or n is None or offset is None or not 0 < n + offset <= MAX_K):
        return text
    name = table["table_name"]
    column = key["column_names"][-1]
    if len(key["column_names"]) > 2:
        return text
    try:
        type_name = str(con.sql(f"select {quote_ident(column)} from {quote_ident(name)} limit 0").types[0])
        if type_name not in _NUMERIC:
            return text
        ds = (datasets or {}).get(name)
        rows = None if ds is None else _indexed_rows(con, ast, ds, column, order["type"] == "DESCENDING", n + offset)
        if rows is not None:
            con.register(_retarget(ast), rows)
            return unparse(con, ast)
        values = [r[0] for r in con.execute(unparse(con, _first_rows(ast, key, n + offset))).fetchall()]
        if len(values) < n + offset or values[-1] is None:  # fewer rows than k: nothing to cut
            return text
        op = ">=" if order["type"] == "DESCENDING" else "<="
        con.execute(f"create temp view {quote_ident(_retarget(ast))} as select * from {quote_ident(name)} "
                    f"where {quote_ident(column)} {op} {_literal(values[-1], type_name)}")
        return unparse(con, ast)
    except (duckdb.Error, KeyError, IndexError, TypeError, ValueError):
        return text


def _indexed_rows(con: duckdb.DuckDBPyConnection, ast: dict, ds: Any, key: str, descending: bool,
                  want: int) -> pa.Table | None:
    """The `want` rows of `ds` the top-k query `ast` keeps, with every column it names, found through a BTREE
    index on `key` (module docstring); None when there is no such index or the bound holds too many rows."""
    node = ast["statements"][0]["node"]
    names = {f.name.lower(): f.name for f in ds.schema}  # DuckDB's identifiers are case-insensitive
    column = names.get(key.lower())
    kind = None if column is None else ds.schema.field(column).type
    if kind is None or pa.types.is_uint64(kind) or not (pa.types.is_integer(kind) or pa.types.is_float32(kind)
                                                         or pa.types.is_float64(kind)):
        return None
    refs = [names.get(r.lower()) for r in _column_refs(node)]
    where = [names.get(r.lower()) for r in _column_refs(node.get("where_clause"))]
    if None in refs or None in where or not _index_covers(ds, column):
        return None
    star = any(e.get("class") == "STAR" for e in node["select_list"])
    op = ">=" if descending else "<="
    target, sample = 2 * want + 16, _sample(ds, column)
    sample = sample[::-1] if descending else sample  # in the query's order
    while target <= CANDIDATES_MAX:
        found = _bound(ds, column, op, target, sample)
        if found is None or found[1] > CANDIDATES_MAX:
            return None
        ids = _pick(con, ast, _candidates(ds, column, op, found[0], where), want)
        if len(ids) == want:
            wide = [f.name for f in ds.schema if star or f.name in refs]
            return _readable(ds._take_rows(ids, columns=wide))  # by row id (pylance 14 has no public take by id)
        target *= 8
    return None


def _candidates(ds: Any, column: str, op: str, bound: Any, where: list[str]) -> pa.Table:
    """The rows with `column op bound`, with row ids, the key and the filter's columns. The rows beyond the bound
    are read with their key; the rows equal to it (ties, often most of them where scores are capped) without,
    the bound filled in (reading a float by row id costs ~6 µs, a boolean <1 µs)."""
    narrow = [f.name for f in ds.schema if f.name in {column, *where}]
    beyond = ds.to_table(columns=narrow, filter=f"`{column}` {op[0]} {_lance_value(bound)}", with_row_id=True)
    tied = ds.to_table(columns=[c for c in narrow if c != column], filter=f"`{column}` = {_lance_value(bound)}",
                       with_row_id=True)
    key = pa.array(np.full(tied.num_rows, bound), ds.schema.field(column).type)
    tied = tied.add_column(0, column, key).select(beyond.schema.names)
    return _readable(pa.concat_tables([beyond, tied]))


def _pick(con: duckdb.DuckDBPyConnection, ast: dict, candidates: pa.Table, want: int) -> list[int]:
    """Row ids of the first `want` candidates under the query's own filter and order."""
    first = _first_rows(ast, {"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": "", "column_names": ["_rowid"]},
                        want)
    view = _retarget(first)
    con.register(view, candidates)
    try:
        return [r[0] for r in con.execute(unparse(con, first)).fetchall()]
    finally:
        con.unregister(view)


def _first_rows(ast: dict, select: dict, limit: int) -> dict:
    """A copy of the top-k query `ast` that selects only `select` for its first `limit` rows (no offset)."""
    first = copy.deepcopy(ast)
    node = first["statements"][0]["node"]
    node["select_list"] = [select]
    node["modifiers"][1]["offset"] = None
    node["modifiers"][1]["limit"] = {"class": "CONSTANT", "type": "VALUE_CONSTANT", "alias": "",
                                     "literal": {"kind": "INTEGER", "text": str(limit)}}
    return first


def _retarget(ast: dict) -> str:
    """Point the query's FROM at a new view name (returned; the caller makes the view), keeping the table's
    name as its alias so qualified column references still resolve."""
    table = ast["statements"][0]["node"]["from_table"]
    view = f"{_VIEW}_{uuid.uuid4().hex[:12]}"
    table["table_name"], table["alias"] = view, table.get("alias") or table["table_name"]
    table["qualified_name"] = {"path": [view]}
    return view


def _column_refs(expr: Any) -> set[str]:
    """The column names (last part) of every column reference inside a parsed expression tree."""
    found, stack = set(), [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, dict):
            if e.get("class") == "COLUMN_REF":
                found.add(e["column_names"][-1])
            stack.extend(e.values())
        elif isinstance(e, list):
            stack.extend(e)
    return found


def _index_covers(ds: Any, column: str) -> bool:
    """Whether a BTREE index on `column` covers all but INDEX_MAX_UNINDEXED of the rows (Lance scans the rest
    on every count, so a large unindexed share makes each probe a scan)."""
    if column not in btree_columns(ds):
        return False
    outside = sum(f.count_rows() for f in unindexed_fragments(ds, column))
    return outside <= INDEX_MAX_UNINDEXED * max(1, ds.count_rows())


def _bound(ds: Any, column: str, op: str, target: int, sample: np.ndarray) -> tuple[Any, int] | None:
    """(t, rows with `column op t`): a value of the key with at least `target` rows at or beyond it (`op` is >=
    for a descending order, <= ascending) and at most 8x that many, or with fewer than `target` strictly beyond
    it (ties: no bound is tighter). Searched over `sample`, values of the key sorted in the query's order,
    counting in the index: a gallop from the sample rank `target` should have, then bisection (a loose count
    costs time in proportion to the rows it counts). None when the sample's loosest value holds too few."""
    if not len(sample):
        return None

    def count(o: str, v: Any) -> int:
        return ds.count_rows(f"`{column}` {o} {_lance_value(v)}")

    lo, hi, best, step = 0, len(sample) - 1, None, 1  # the answer's sample rank lies in [lo, hi]
    j = min(hi, max(0, math.ceil(2 * target * len(sample) / max(1, ds.count_rows())) - 1))
    tight = loose = False  # seen a value holding too few rows / enough rows
    for _ in range(40):
        n = count(op, sample[j])
        if n >= target:
            best, loose, hi = (sample[j], n), True, j - 1
            if n <= 8 * target or count(op[0], sample[j]) < target:
                break
        else:
            tight, lo = True, j + 1
        if lo > hi:
            break
        j = (lo + hi) // 2 if tight and loose else max(lo, min(hi, j + step if n < target else j - step))
        step *= 2
    return best


def head_sample(ds: Any, columns: list[str], rows: int = SAMPLE_ROWS) -> pa.Table:
    """`columns` of the first rows of up to 4 fragments spread over the table (~2 ms): a sample that reads
    no more than a few pages, wherever in the table the values drift."""
    fragments = ds.get_fragments()
    picked = fragments[:: max(1, len(fragments) // 4)][:4]
    per = max(1, rows // max(1, len(picked)))
    parts = [f.to_table(columns=columns, limit=per) for f in picked]
    return pa.concat_tables(parts) if parts else ds.schema.empty_table().select(columns)


def _sample(ds: Any, column: str) -> np.ndarray:
    """Finite values of `column` from `head_sample`, sorted ascending."""
    values = pc.drop_null(head_sample(ds, [column]).column(0)).to_numpy()
    return np.sort(values[np.isfinite(values)] if values.dtype.kind == "f" else values)


def _lance_value(v: Any) -> str:
    """A key value as a Lance SQL literal that casts back to the same value (float32 values are exact doubles)."""
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(int(v))


def _readable(table: pa.Table) -> pa.Table:
    target = pa.schema([f.with_type(readable_type(f.type)) for f in table.schema])
    return table if target == table.schema else table.cast(target)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
