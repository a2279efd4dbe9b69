"""The lake: one directory of Lance datasets (`videos`, `clips`, `failures`, `tiers/<name>`), each a
versioned, ACID, append-friendly table that DuckDB queries and the trainer reads."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
from collections.abc import Iterator

import lance
import pyarrow as pa

from curation.errors import ConfigError

PRODUCERS_KEY = "videocurate.producers"


_HELD: dict[str, list] = {}  # lake root → [fd, depth, exclusive] of the lock this process holds


def _locked(method):
    """Run a write method under the lake's exclusive lock (creating or widening a table races otherwise)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock():
            return method(self, *args, **kwargs)

    return wrapper


def btree_columns(ds: lance.LanceDataset) -> set[str]:
    """The columns of a Lance dataset with a BTREE index."""
    return {f for d in ds.describe_indices() if d.type_url.endswith("BTreeIndexDetails") for f in d.field_names}


def unindexed_fragments(ds: lance.LanceDataset, column: str) -> list:
    """The fragments no segment of a BTREE index on `column` covers (all of them when there is none)."""
    covered: set[int] = set()
    for index in ds.list_indices():
        if index.get("type") == "BTree" and list(index.get("fields", [])) == [column]:
            covered |= set(index["fragment_ids"])
    return [f for f in ds.get_fragments() if f.fragment_id not in covered]


def _keeps_indices(method):
    """A locked write that changes rows of `table` (its first argument): afterwards the table's BTREE indices
    cover every row again (new fragments joined in, an index a rewrite dropped made again)."""

    @functools.wraps(method)
    def wrapper(self, table, *args, **kwargs):
        with self.lock():
            before = self.indexed_columns(table)
            out = method(self, table, *args, **kwargs)
            if before:
                self._reindex(table, before)
            return out

    return wrapper


class Lake:
    """A lake directory. Tables are created on first write; reads of a missing table return None.

    Writers that must see and change several tables as one (a commit of videos with their clips and
    failures, crash recovery, a global step) hold the lake's exclusive lock (`with lake.lock():`, an
    flock on LAKE/.lock, so processes on one machine or a shared POSIX filesystem take turns); readers
    that open several tables take it shared for the moment they pin the versions."""

    def __init__(self, root: str | os.PathLike, create: bool = True):
        self.root = os.path.abspath(os.fspath(root))
        if create:
            os.makedirs(self.root, exist_ok=True)
        elif not os.path.isdir(self.root):
            raise ConfigError(f"no lake at {self.root} (run a pipeline into it first)")

    @contextlib.contextmanager
    def lock(self, shared: bool = False) -> Iterator[None]:
        """Hold the lake's lock (re-entrant within a process; a shared holder cannot take it exclusive)."""
        held = _HELD.get(self.root)
        if held is not None:
            if not shared and not held[2]:
                raise RuntimeError("the lake's shared lock is held: it cannot be taken exclusive inside it")
            held[1] += 1
            try:
                yield
            finally:
                held[1] -= 1
            return
        try:
            fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            if not shared:
                raise
            yield  # a read-only lake: nobody writes it, nothing to wait for
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            _HELD[self.root] = [fd, 1, not shared]
            yield
        finally:
            _HELD.pop(self.root, None)
            os.close(fd)

    def path(self, table: str) -> str:
        return os.path.join(self.root, f"{table}.lance")

    def exists(self, table: str) -> bool:
        return os.path.isdir(os.path.join(self.path(table), "_versions"))

    def dataset(self, table: str) -> lance.LanceDataset | None:
        return lance.dataset(self.path(table)) if self.exists(table) else None

    def tables(self) -> list[str]:
        """Every table in the lake, including nested ones such as `tiers/256p`."""
        found = []
        for dirpath, dirnames, _ in os.walk(self.root):
            for d in list(dirnames):
                if d.endswith(".lance"):
                    rel = os.path.relpath(os.path.join(dirpath, d), self.root)
                    found.append(rel[: -len(".lance")].replace(os.sep, "/"))
                    dirnames.remove(d)
        return sorted(found)

    def count(self, table: str, where: str | None = None) -> int:
        ds = self.dataset(table)
        return 0 if ds is None else ds.count_rows(filter=where)

    # ---- writes ----------------------------------------------------------------------------------
    @_keeps_indices
    def append(self, table: str, data: pa.Table) -> None:
        """Append rows, creating the table if needed. New columns in `data` are added to the table
        (null for old rows); columns missing from `data` are filled with nulls."""
        if data.num_rows == 0 and self.exists(table):
            return
        ds = self.dataset(table)
        if ds is None:
            os.makedirs(os.path.dirname(self.path(table)), exist_ok=True)
            lance.write_dataset(data, self.path(table), mode="create")
            return
        data = self._conform(ds, data)
        lance.write_dataset(data, self.path(table), mode="append")

    def _conform(self, ds: lance.LanceDataset, data: pa.Table) -> pa.Table:
        have = ds.schema
        new = [f for f in data.schema if have.get_field_index(f.name) < 0]
        if new:
            ds.add_columns(new)
            have = lance.dataset(ds.uri).schema
        cols = []
        for f in have:
            if data.schema.get_field_index(f.name) >= 0:
                cols.append(data.column(f.name).cast(f.type))
            else:
                cols.append(pa.nulls(data.num_rows, f.type))
        return pa.Table.from_arrays(cols, schema=pa.schema([pa.field(f.name, f.type) for f in have]))

    @_keeps_indices
    def overwrite(self, table: str, data: pa.Table) -> None:
        os.makedirs(os.path.dirname(self.path(table)), exist_ok=True)
        lance.write_dataset(data, self.path(table), mode="overwrite")

    @_keeps_indices
    def delete(self, table: str, where: str) -> None:
        ds = self.dataset(table)
        if ds is not None:
            ds.delete(where)

    @_keeps_indices
    def merge_columns(self, table: str, data: pa.Table, on: str) -> None:
        """Set columns of existing rows from `data`, matched on key `on`.

        Columns the table has never had are joined in as new column files (`LanceDataset.merge`): no
        existing row is rewritten, row order and vector indices stay valid. Columns it already has are
        updated with merge_insert, which rewrites the matched rows."""
        ds = self.dataset(table)
        if ds is None or data.num_rows == 0:
            return
        new = [f.name for f in data.schema if f.name != on and ds.schema.get_field_index(f.name) < 0]
        old = [f.name for f in data.schema if f.name != on and f.name not in new]
        if new:
            ds.merge(data.select([on, *new]), left_on=on)
            ds = self.dataset(table)
        if old:
            ds.merge_insert(on).when_matched_update_all().execute(data.select([on, *old]))

    @_keeps_indices
    def add_computed_columns(self, table: str, udf, read_columns: list[str], replace: list[str] = (),
                             batch_size: int | None = None) -> None:
        """Add columns computed fragment by fragment by a `lance.batch_udf` from `read_columns` (which may
        name `_rowid`): new column files, no existing row rewritten. Columns in `replace` that exist are
        dropped first (a metadata-only change)."""
        ds = self.dataset(table)
        drop = [c for c in replace if ds.schema.get_field_index(c) >= 0]
        if drop:
            ds.drop_columns(drop)
            ds = self.dataset(table)
        ds.add_columns(udf, read_columns=read_columns, batch_size=batch_size)

    @_keeps_indices
    def update(self, table: str, values: dict[str, str], where: str) -> int:
        """Set columns to SQL expressions on the rows matching `where`; the number of rows updated."""
        ds = self.dataset(table)
        if ds is None:
            return 0
        return int(ds.update(values, where=where)["num_rows_updated"])

    def scan(self, table: str, columns: list[str] | None = None, where: str | None = None,
             batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
        """Stream a table in batches (never materialises the whole table)."""
        ds = self.dataset(table)
        if ds is None:
            return iter(())
        return ds.to_batches(columns=columns, filter=where, batch_size=batch_size)

    # ---- scalar indices --------------------------------------------------------------------------
    def indexed_columns(self, table: str) -> list[str]:
        """The columns of `table` with a BTREE index (what `videocurate index` makes)."""
        ds = self.dataset(table)
        return [] if ds is None else sorted(btree_columns(ds))

    @_locked
    def index(self, table: str, columns: list[str]) -> None:
        """Give each column a BTREE index (replacing one it has): range filters and top-k queries on it are
        answered from the index instead of a scan (curation.sqlrewrite). Every later write keeps it whole."""
        ds = self.dataset(table)
        if ds is None:
            raise ConfigError(f"no table {table!r} in {self.root}")
        missing = [c for c in columns if ds.schema.get_field_index(c) < 0]
        if missing:
            raise ConfigError(f"table {table!r} has no column {', '.join(map(repr, missing))}")
        for column in columns:
            ds.create_scalar_index(column, "BTREE", replace=True)

    def _reindex(self, table: str, columns: list[str]) -> None:
        ds = self.dataset(table)
        if ds is None:
            return
        have = btree_columns(ds)
        lost = [c for c in columns if c not in have and ds.schema.get_field_index(c) >= 0]
        if any(unindexed_fragments(ds, c) for c in have):
            ds.optimize.optimize_indices()  # rows written since: each index takes in the new fragments (ms)
        for column in lost:  # an overwrite or a dropped column took the index with it
            ds.create_scalar_index(column, "BTREE", replace=True)

    # ---- provenance ------------------------------------------------------------------------------
    def meta(self, table: str, key: str):
        """A JSON value kept in a table's schema metadata (None when the table or key is missing)."""
        ds = self.dataset(table)
        raw = None if ds is None else (ds.schema.metadata or {}).get(key.encode())
        return json.loads(raw) if raw else None

    @_locked
    def set_meta(self, table: str, key: str, value) -> None:
        ds = self.dataset(table)
        if ds is not None:
            ds.update_schema_metadata({key: json.dumps(value, sort_keys=True, default=str)})

    def producers(self, table: str = "clips") -> dict[str, dict]:
        """column name → {stage, version, params} of the stage that produced it."""
        return self.meta(table, PRODUCERS_KEY) or {}

    def record_producers(self, table: str, producers: dict[str, dict]) -> None:
        if producers:
            self.set_meta(table, PRODUCERS_KEY, {**self.producers(table), **producers})
