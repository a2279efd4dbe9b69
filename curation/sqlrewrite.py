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
(no aggregate, DISTINCT, window, join or CTE)."""

from __future__ import annotations

import copy
import json
import math
import uuid
from typing import Any

import duckdb

MAX_K = 100_000  # beyond this many rows a top-k reads enough rows that the two steps gain little
_NUMERIC = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "FLOAT",
            "DOUBLE"}
_VIEW = "_videocurate_topk"


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


def top_k(con: duckdb.DuckDBPyConnection, text: str) -> str:
    """`text` with its top-k answered over `T where c >= v` (module docstring), or `text` itself."""
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
        first = copy.deepcopy(ast)
        first["statements"][0]["node"]["select_list"] = [key]
        first["statements"][0]["node"]["modifiers"][1]["offset"] = None
        first["statements"][0]["node"]["modifiers"][1]["limit"] = {
            "class": "CONSTANT", "type": "VALUE_CONSTANT", "alias": "",
            "literal": {"kind": "INTEGER", "text": str(n + offset)}}
        values = [r[0] for r in con.execute(unparse(con, first)).fetchall()]
        if len(values) < n + offset or values[-1] is None:  # fewer rows than k: nothing to cut
            return text
        op = ">=" if order["type"] == "DESCENDING" else "<="
        view = f"{_VIEW}_{uuid.uuid4().hex[:12]}"
        con.execute(f"create temp view {quote_ident(view)} as select * from {quote_ident(name)} "
                    f"where {quote_ident(column)} {op} {_literal(values[-1], type_name)}")
        table["table_name"], table["alias"] = view, table.get("alias") or name
        table["qualified_name"] = {"path": [view]}
        return unparse(con, ast)
    except (duckdb.Error, KeyError, IndexError, TypeError, ValueError):
        return text


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
