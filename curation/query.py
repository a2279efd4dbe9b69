"""SQL over the lake: a DuckDB connection on which every Lance table is a view of the same name
(`videos`, `clips`, `failures`, and nested ones as "tiers/256p" and tiers_256p)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from typing import Any

import duckdb
import pyarrow as pa

from curation.lake import Lake


def connect(lake: Lake | str) -> duckdb.DuckDBPyConnection:
    lake = lake if isinstance(lake, Lake) else Lake(lake, create=False)
    con = duckdb.connect()
    for name in lake.tables():
        ds = lake.dataset(name)
        con.register(name, ds)  # a LanceDataset is a pyarrow Dataset: projections/filters push down
        alias = name.replace("/", "_").replace("-", "_")
        if alias != name:
            con.register(alias, ds)
    return con


def to_arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    """A relation's rows as an Arrow table (duckdb 2 renamed `arrow()` to `to_arrow_table()`)."""
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow
    return fetch()


def query(lake: Lake | str, sql: str) -> pa.Table:
    rel = connect(lake).sql(sql)
    if rel is None:  # a statement with no result (e.g. SET)
        return pa.table({})
    return to_arrow(rel)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def render(table: pa.Table, fmt: str = "table", max_width: int = 48) -> str:
    """Format a result as an aligned text table, CSV, or one JSON array of row objects."""
    rows = table.to_pylist()
    if fmt == "json":
        return json.dumps([_jsonable(r) for r in rows], ensure_ascii=False)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(table.column_names)
        for r in rows:
            w.writerow([json.dumps(_jsonable(v)) if isinstance(v, (list, dict)) else v for v in r.values()])
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format '{fmt}' (table, csv, json)")

    def cell(v: Any) -> str:
        s = "NULL" if v is None else json.dumps(_jsonable(v)) if isinstance(v, (list, dict)) else str(v)
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    cells = [[cell(v) for v in r.values()] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(table.column_names)]
    line = lambda vals: " │ ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    out = [line(table.column_names), "─┼─".join("─" * w for w in widths), *(line(r) for r in cells)]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)
