"""`videocurate check`: the lake's invariants, each a SQL query that lists what breaks it. Checks are
aggregates and anti-joins in DuckDB, so they run at any lake size; each reports a count and a few
examples."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa

from curation.lake import Lake
from curation.query import connect
from curation.schema import ROW_BASE_FIELDS
from curation.tiers import TIER_KEY

EXAMPLES = 5


@dataclass
class Problem:
    check: str
    count: int
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.check}: {self.count} — e.g. " + "; ".join(self.examples)


# name → (tables it needs, SQL selecting one text column `bad`, one row per offender)
CHECKS: dict[str, tuple[tuple[str, ...], str]] = {
    "clip ids are unique": (("clips",), "select clip_id as bad from clips group by clip_id having count(*) > 1"),
    "each input has one videos row": (("videos",), "select uri as bad from videos group by uri, size_bytes, "
                                      "mtime_ns having count(*) > 1"),
    "ok videos have unique ids": (("videos",), "select video_id as bad from videos where status = 'ok' "
                                  "group by video_id having count(*) > 1"),
    "every clip's video is ok": (("clips", "videos"), "select c.clip_id as bad from clips c where not exists "
                                 "(select 1 from videos v where v.video_id = c.video_id and v.status = 'ok')"),
    "ok videos have their n_clips clips": (("clips", "videos"), "select v.uri || ' (' || v.n_clips || ' vs ' || "
                                           "coalesce(c.n, 0) || ')' as bad from videos v left join (select video_id, "
                                           "count(*) as n from clips group by 1) c using (video_id) where v.status = "
                                           "'ok' and coalesce(c.n, 0) <> v.n_clips"),
    "failed videos have a failure row": (("videos",), "select v.uri as bad from videos v where v.status = 'failed' "
                                         "and not exists (select 1 from failures f where f.uri = v.uri)"),
    "failures belong to an input": (("failures", "videos"), "select distinct f.uri as bad from failures f where "
                                    "not exists (select 1 from videos v where v.uri = f.uri)"),
}


def _run(con, name: str, sql: str) -> Problem | None:
    n = con.execute(f"select count(*) from ({sql})").fetchall()[0][0]
    if not n:
        return None
    ex = [str(r[0]) for r in con.execute(f"select bad from ({sql}) order by 1 limit {EXAMPLES}").fetchall()]
    return Problem(name, int(n), ex)


def check_lake(lake: Lake | str, inputs: Iterable[str] | None = None) -> list[Problem]:
    """Every broken invariant (an empty list: the lake is sound). With `inputs`, also that every file
    they name is accounted for in `videos`."""
    lake = lake if isinstance(lake, Lake) else Lake(lake, create=False)
    con = connect(lake)
    tables = set(lake.tables())
    if "failures" not in tables:  # no failure recorded yet
        con.register("failures", pa.table({"uri": pa.array([], pa.string())}))
    problems: list[Problem] = []
    for name, (needs, sql) in CHECKS.items():
        if set(needs) <= tables:
            p = _run(con, name, sql)
            if p:
                problems.append(p)
    if "clips" in tables:
        base = {f.name for f in ROW_BASE_FIELDS}
        recorded = lake.producers("clips")
        missing = [c for c in lake.dataset("clips").schema.names if c not in base and c not in recorded]
        if missing:
            problems.append(Problem("score columns have a recorded producer", len(missing), missing[:EXAMPLES]))
    problems += _tiers(lake, con, tables)
    if inputs is not None:
        problems += _inputs(lake, con, inputs)
    return problems


def _tiers(lake: Lake, con, tables: set[str]) -> list[Problem]:
    out = []
    for t in sorted(x for x in tables if x.startswith("tiers/")):
        meta = lake.meta(t, TIER_KEY) or {}
        parent = f'"tiers/{meta["parent"]}"' if meta.get("parent") else "clips"
        if parent != "clips" and parent.strip('"') not in tables:
            out.append(Problem("tiers are subsets of their parents", 1, [f"{t}: parent {parent} is missing"]))
            continue
        if "clips" not in tables:
            continue
        p = _run(con, "tiers are subsets of their parents", f"select '{t}: ' || clip_id as bad from \"{t}\" x "
                 f"where not exists (select 1 from {parent} p where p.clip_id = x.clip_id)")
        if p:
            out.append(p)
    return out


def _inputs(lake: Lake, con, inputs: Iterable[str]) -> list[Problem]:
    from curation.inputs import discover

    files, _ = discover(list(inputs), exclude=[lake.root])
    con.register("given_inputs", pa.table({"uri": [f.uri for f in files]}))
    has_videos = lake.exists("videos")
    sql = ("select uri as bad from given_inputs g where not exists (select 1 from videos v where v.uri = g.uri)"
           if has_videos else "select uri as bad from given_inputs")
    p = _run(con, "every input is accounted for", sql)
    return [p] if p else []


def render(problems: list[Problem], lake: str) -> str:
    if not problems:
        return f"lake {lake}: every invariant holds"
    return "\n".join([f"lake {lake}: {len(problems)} invariant(s) broken", *("  " + p.line() for p in problems)])
