"""Tier calibration: move each tier's score thresholds until the tier keeps its target share (`keep`) of
its parent's clips, from the score distributions already in the lake (no score is recomputed).

Which filters move: a predicate of the form `EXPR OP NUMBER` (OP one of >=, >, <=, <) or
`EXPR between LO and HI` whose EXPR reads a float score column (one a scoring stage produced, e.g.
clarity, motion, text_area, aesthetic). Everything else (resolution, duration, duplicates, camera class,
concept caps) stays as written and is applied first.

The rule: one strictness level q in [0, 1] is shared by every movable bound of the tier. A lower bound
(>=, >) becomes the q-quantile of its expression over the parent's clips that pass the fixed filters,
an upper bound (<=, <) the (1-q)-quantile; `between` moves both ends. The kept share falls as q grows,
so q is found by bisection; thresholds are rounded to 3 significant digits and the share re-measured.
When the fixed filters alone keep less than the target, every movable bound is set loosest and the tier
is marked `unreachable`. Tiers are calibrated parent first, each on its calibrated parent's clips."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import yaml

from curation.errors import ConfigError
from curation.lake import Lake
from curation.query import connect, to_arrow
from curation.schema import ROW_BASE_FIELDS
from curation.tiers import TierSpec, load_specs, predicate

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CMP = re.compile(rf"^\s*(?P<expr>.+?)\s*(?P<op>>=|<=|>|<)\s*(?P<num>{_NUM})\s*$", re.S)
_BETWEEN = re.compile(rf"^\s*(?P<expr>.+?)\s+between\s+(?P<lo>{_NUM})\s+and\s+(?P<hi>{_NUM})\s*$", re.S | re.I)


@dataclass
class Bound:
    """One movable threshold of a filter: `lower` bounds keep values at or above the threshold."""

    filter: str
    expr: str
    op: str
    value: float

    @property
    def lower(self) -> bool:
        return self.op in (">=", ">")


def movable_bounds(name: str, predicate: str, score_columns: set[str]) -> list[Bound]:
    """The bounds of a filter that calibration may move ([] when the filter stays as written)."""
    m = _BETWEEN.match(predicate)
    if m:
        bounds = [Bound(name, m["expr"], ">=", float(m["lo"])), Bound(name, m["expr"], "<=", float(m["hi"]))]
        if re.search(r"\b(and|or)\b", m["expr"], re.I):
            return []
    elif (m := _CMP.match(predicate)) and not re.search(r"\b(and|or|not)\b", m["expr"], re.I):
        bounds = [Bound(name, m["expr"], m["op"], float(m["num"]))]
    else:
        return []
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", bounds[0].expr))
    return bounds if names & score_columns else []


def _rewrite(bounds: list[Bound]) -> str:
    if len(bounds) == 2:
        return f"{bounds[0].expr} between {_fmt(bounds[0].value)} and {_fmt(bounds[1].value)}"
    return f"{bounds[0].expr} {bounds[0].op} {_fmt(bounds[0].value)}"


def _fmt(x: float) -> str:
    return f"{float(f'{x:.3g}'):g}"


def _round(x: float) -> float:
    return float(f"{x:.3g}") if math.isfinite(x) and x != 0 else float(x)


def _passes(values: np.ndarray, op: str, thr: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return {">=": values >= thr, ">": values > thr, "<=": values <= thr, "<": values < thr}[op]


def score_columns(lake: Lake) -> set[str]:
    """Float columns of `clips` that are scores (the ones calibration may move): every float column but
    the split's and probe's own (fps, times, duration, start sharpness)."""
    base = {f.name for f in ROW_BASE_FIELDS}
    return {f.name for f in lake.dataset("clips").schema if pa.types.is_floating(f.type) and f.name not in base}


@dataclass
class TierCalibration:
    name: str
    target: float | None
    parent_clips: int
    kept: int
    original: dict[str, str]
    filters: dict[str, str]
    moved: list[str]
    status: str  # calibrated | unreachable | no target | nothing to move | empty parent

    @property
    def share(self) -> float | None:
        return self.kept / self.parent_clips if self.parent_clips else None


def _calibrate_tier(con, spec: TierSpec, source: str, scores: set[str]) -> tuple[TierCalibration, pa.Table]:
    bounds = {k: movable_bounds(k, v, scores) for k, v in spec.filters.items()}
    fixed = [predicate(v) for k, v in spec.filters.items() if not bounds[k]]
    exprs = [b.expr for bs in bounds.values() for b in bs]
    sel = ", ".join([*(f"({e})::double as e{i}" for i, e in enumerate(exprs)),
                     f"({' and '.join(fixed) or 'true'}) as fixed_ok", "clip_id"])
    try:
        t = to_arrow(con.sql(f"select {sel} from {source} order by clip_id"))
    except Exception as exc:  # noqa: BLE001 - duckdb's binder/parser errors
        raise ConfigError(f"tier '{spec.name}': a filter does not evaluate on the clips table ({exc})") from exc
    n = t.num_rows
    fixed_ok = t.column("fixed_ok").to_numpy(zero_copy_only=False).astype(bool)
    flat = [b for bs in bounds.values() for b in bs]
    vals = [t.column(f"e{i}").to_numpy(zero_copy_only=False).astype(np.float64) for i in range(len(flat))]

    def keep_mask(thresholds: list[float]) -> np.ndarray:
        mask = fixed_ok.copy()
        for b, v, thr in zip(flat, vals, thresholds):
            mask &= _passes(v, b.op, thr)
        return mask

    def thresholds_at(q: float) -> list[float]:
        out = []
        for b, v in zip(flat, vals):
            pool = v[fixed_ok & np.isfinite(v)]
            if pool.size == 0:
                out.append(b.value)
                continue
            # q = 0: every finite value passes (the loosest bound); q = 1: only the best one does
            lvl = q if b.lower else 1 - q
            out.append(float(np.quantile(pool, lvl, method="inverted_cdf" if lvl > 0 else "lower")))
        return out

    status = "calibrated"
    thresholds = [b.value for b in flat]
    if spec.keep is None:
        status = "no target"
    elif not flat:
        status = "nothing to move"
    elif n == 0:
        status = "empty parent"
    else:
        target = spec.keep * n
        if keep_mask(thresholds_at(0.0)).sum() < target:
            status, thresholds = "unreachable", thresholds_at(0.0)
        else:
            lo, hi = 0.0, 1.0
            for _ in range(40):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if keep_mask(thresholds_at(mid)).sum() >= target else (lo, mid)
            # the discrete share nearest the target, of the levels either side of it
            cands = [[_round(x) for x in thresholds_at(q)] for q in (lo, hi)]
            thresholds = min(cands, key=lambda th: abs(keep_mask(th).sum() - target))
    new_filters, moved, i = dict(spec.filters), [], 0
    for k, bs in bounds.items():
        if not bs:
            continue
        moved_bs = [dataclasses.replace(b, value=thresholds[i + j]) for j, b in enumerate(bs)]
        i += len(bs)
        if status in ("calibrated", "unreachable") and _rewrite(moved_bs) != _rewrite(bs):
            new_filters[k] = _rewrite(moved_bs)
            moved.append(k)
    kept_ids = t.column("clip_id").filter(pa.array(keep_mask(thresholds) if status in ("calibrated", "unreachable")
                                                   else keep_mask([b.value for b in flat])))
    cal = TierCalibration(spec.name, spec.keep, n, len(kept_ids), dict(spec.filters), new_filters, moved, status)
    return cal, pa.table({"clip_id": kept_ids})


def calibrate(lake: Lake, spec: str = "tiers") -> tuple[list[TierSpec], list[TierCalibration]]:
    """Calibrated copies of a spec's tiers (filters rewritten, `calibration` filled) and what each did."""
    if not lake.exists("clips"):
        raise ConfigError("tier --calibrate needs a clips table: run a pipeline first")
    specs = load_specs(spec)
    con = connect(lake)
    scores = score_columns(lake)
    columns = set(lake.dataset("clips").schema.names)
    out_specs, results, skipped = [], [], set()
    for s in specs:
        if set(s.requires) - columns or s.parent in skipped:
            skipped.add(s.name)
            out_specs.append(s)
            continue
        source = "clips" if s.parent is None else f'(select c.* from clips c join "cal_{s.parent}" p using (clip_id))'
        cal, kept = _calibrate_tier(con, s, source, scores)
        con.register(f"cal_{s.name}", kept)
        results.append(cal)
        info = {"target_keep": s.keep, "kept": cal.kept, "of": cal.parent_clips, "status": cal.status,
                "original_filters": cal.original}
        out_specs.append(dataclasses.replace(s, filters=cal.filters, calibration=info))
    return out_specs, results


def write_spec(specs: list[TierSpec], path: str, source: str) -> None:
    doc = {"tiers": [{k: v for k, v in dataclasses.asdict(s).items() if v not in (None, [], "")} for s in specs]}
    with open(path, "w") as f:
        f.write(f"# Calibrated from {source} by `videocurate tier --calibrate` (each tier's score thresholds\n"
                "# fitted to its `keep` share; `calibration` holds the original filters and the shares).\n")
        yaml.safe_dump(doc, f, sort_keys=False, allow_unicode=True)


def render_calibration(results: list[TierCalibration]) -> str:
    lines = ["tier       target   kept      status       moved filters"]
    for r in results:
        share = "-" if r.share is None else f"{r.share:.2f}"
        target = "-" if r.target is None else f"{r.target:.2f}"
        moved = "; ".join(f"{k}: {r.original[k]} → {r.filters[k]}" for k in r.moved) or "-"
        lines.append(f"{r.name:10s} {target:>6s}  {share:>5s} {r.kept:>6d}/{r.parent_clips:<6d} "
                     f"{r.status:12s} {moved}")
    return "\n".join(lines)
