"""Tiers: progressively stricter subsets of `clips` (HunyuanVideo: 256p → 360p → 540p → 720p → SFT)
materialised as Lance tables `tiers/<name>`. A tier is a list of named SQL predicates over the clips'
columns, evaluated by DuckDB on the parent tier's clips: scores are columns, decisions are SQL, so
re-tiering with new thresholds never recomputes a score. Each run reports how many clips every
predicate removed (the funnel)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import yaml

from curation.errors import ConfigError
from curation.lake import Lake
from curation.pipeline import find_yaml
from curation.query import connect, to_arrow
from curation.stage import Step, params

TIER_KEY = "videocurate.tier"  # a tier table's schema metadata: {"parent": name or null, "spec": path}
DROP_FROM_TIERS = ("embedding",)  # large columns a tier does not repeat (join clips on clip_id for them)
CROP_FIELDS = [pa.field(n, pa.int32()) for n in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")]


@dataclass
class TierSpec:
    """One tier: `filters` maps a name to a SQL predicate over clip columns; a clip enters the tier when
    it is in `parent` (all clips when None) and every predicate is true (NULL counts as false).
    `requires` lists columns without which the tier is skipped (e.g. `aesthetic` for SFT). `size` is the
    tier's training resolution (short side in pixels: what `export` writes); `keep` is the fraction of
    the parent's clips the tier should keep, the target of `tier --calibrate` (curation/calibrate.py)."""

    name: str
    filters: dict[str, str]
    parent: str | None = None
    requires: list[str] = field(default_factory=list)
    description: str = ""
    size: int | None = None
    keep: float | None = None
    calibration: dict | None = None  # set by `tier --calibrate`: original filters, target and kept share


@params
class TiersParams:
    spec: str = "tiers"  # a tier spec YAML: path, or the name of a bundled one in pipelines/
    only: list[str] | None = None  # materialise just these tiers (their parents must exist or be listed)


def load_specs(spec: str) -> list[TierSpec]:
    path = find_yaml(spec)
    if path is None:
        raise ConfigError(f"step 'tiers': no tier spec '{spec}' (a YAML path or a bundled name, e.g. 'tiers')")
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    specs, seen = [], set()
    for i, t in enumerate(doc.get("tiers") or []):
        unknown = set(t) - {f.name for f in dataclasses.fields(TierSpec)}
        if unknown or "name" not in t or not t.get("filters"):
            raise ConfigError(f"tier spec {path}: entry {i} needs 'name' and 'filters' (unknown keys: "
                              f"{sorted(unknown)})")
        s = TierSpec(**t)
        if s.parent is not None and s.parent not in seen:
            raise ConfigError(f"tier '{s.name}': parent '{s.parent}' must be defined before it")
        seen.add(s.name)
        specs.append(s)
    if not specs:
        raise ConfigError(f"tier spec {path} defines no tiers")
    return specs


def predicate(sql: str) -> str:
    """A tier filter as a SQL condition in which NULL counts as false."""
    return f"coalesce(({sql}), false)"


def _view(name: str) -> str:
    return f'"tier_{name}"'


def crop_boxes(table: pa.Table) -> list[pa.Array]:
    """Crop suggestion per clip in native pixels: the picture inside letterbox bars (`content_box`), cut
    above a persistent subtitle band (`subtitle_box`, normalised) when one was found."""
    n = table.num_rows
    w = np.asarray(table.column("width").to_numpy(zero_copy_only=False), np.float64)
    h = np.asarray(table.column("height").to_numpy(zero_copy_only=False), np.float64)
    boxes = np.stack([np.zeros(n), np.zeros(n), w, h], axis=1)
    if "content_box" in table.column_names:
        for i, b in enumerate(table.column("content_box").to_pylist()):
            if b is not None:
                boxes[i] = b
    if "subtitle_box" in table.column_names:
        for i, s in enumerate(table.column("subtitle_box").to_pylist()):
            if s is not None and s[1] * h[i] > boxes[i, 1] + 0.5 * (boxes[i, 3] - boxes[i, 1]):
                boxes[i, 3] = min(boxes[i, 3], np.floor(s[1] * h[i]))
    return [pa.array(boxes[:, j].astype(np.int32), pa.int32()) for j in range(4)]


class TierStep(Step):
    """Global step `tiers`: (re)materialise every tier of a spec as `tiers/<name>` (tables, not columns:
    cheap, so every run rewrites them). From Python: `TierStep({"spec": "tiers"}).run(Lake(root))`; from
    the CLI: `videocurate tier --lake L`."""

    name = "tiers"
    version = "1"
    Params = TiersParams

    def __init__(self, params: dict | TiersParams | None = None):
        super().__init__(params)
        self.specs = load_specs(self.params.spec)

    def input_columns(self) -> list[str]:
        return ["clip_id", "width", "height"]

    def run(self, lake: Lake) -> dict:
        t0 = time.monotonic()
        if not lake.exists("clips"):
            raise ConfigError("step 'tiers' needs a clips table: run a pipeline first")
        con = connect(lake)
        columns = set(lake.dataset("clips").schema.names)
        wanted = set(self.params.only or [s.name for s in self.specs])
        funnel: dict[str, dict] = {}
        total = lake.count("clips")
        for spec in self.specs:
            missing = sorted(set(spec.requires) - columns)
            if missing:
                funnel[spec.name] = {"skipped": f"needs column(s) {missing}"}
                continue
            source = "clips" if spec.parent is None else _view(spec.parent)
            if spec.parent is not None and spec.parent in funnel and "skipped" in funnel[spec.parent]:
                funnel[spec.name] = {"skipped": f"parent '{spec.parent}' was skipped"}
                continue
            table, drops = self._select(con, spec, source)
            con.register(_view(spec.name).strip('"'), table)
            parent_n = total if spec.parent is None else funnel[spec.parent]["clips"]
            funnel[spec.name] = {"from": parent_n, "clips": table.num_rows, "dropped_by": drops}
            if spec.name in wanted:
                keep = [c for c in table.column_names if c not in DROP_FROM_TIERS]
                out = table.select(keep)
                for f, arr in zip(CROP_FIELDS, crop_boxes(out)):
                    out = out.append_column(f, arr)
                lake.overwrite(f"tiers/{spec.name}", out)
                lake.set_meta(f"tiers/{spec.name}", TIER_KEY, {"parent": spec.parent, "spec": self.params.spec})
        return {"step": self.name, "tiers": funnel, "seconds": round(time.monotonic() - t0, 3)}

    @staticmethod
    def _select(con: duckdb.DuckDBPyConnection, spec: TierSpec, source: str) -> tuple[pa.Table, dict[str, int]]:
        preds = {k: predicate(v) for k, v in spec.filters.items()}
        try:
            drops = con.execute("select " + ", ".join(f"count(*) filter (where not {p})" for p in preds.values())
                                + f" from {source}").fetchall()[0]
            rel = con.sql(f"select * from {source} where " + " and ".join(preds.values()) + " order by clip_id")
        except duckdb.Error as exc:
            raise ConfigError(f"tier '{spec.name}': a filter does not evaluate on the clips table ({exc})") from exc
        return to_arrow(rel), dict(zip(preds, (int(d) for d in drops)))


def render_funnel(result: dict) -> str:
    lines = ["tier        clips    from   dropped by (each filter alone, on the parent's clips)"]
    for name, t in result["tiers"].items():
        if "skipped" in t:
            lines.append(f"{name:10s}  skipped: {t['skipped']}")
            continue
        drops = ", ".join(f"{k} {v}" for k, v in t["dropped_by"].items())
        lines.append(f"{name:10s} {t['clips']:6d}  {t['from']:6d}   {drops}")
    return "\n".join(lines)
