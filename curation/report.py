"""The curation report: one self-contained HTML file (charts and thumbnails inline, no script, no
network) that shows what a run kept, what it cut and why, and where the thresholds sit.

Every number comes from SQL over the lake and is bounded: counts and histograms are aggregates,
thumbnails are drawn for a fixed number of sampled clips, so a report over millions of clips costs the
same few decodes as one over ten. Everything that comes from data (file names, OCR text, captions) goes
through Jinja2's autoescape."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from curation.calibrate import movable_bounds, score_columns
from curation.errors import ConfigError
from curation.lake import Lake
from curation.query import connect, to_arrow
from curation.tiers import TierSpec, crop_boxes, load_specs, predicate
from curation.writer import quoted

SAMPLES_PER_TIER = 8
DROPPED_PER_FILTER = 3
DUP_GROUPS = 4
CAPTIONS = 6
THUMB_H = 72
EXTRA_HISTOGRAMS = ("duration_clip_s", "start_sharpness")  # not a scorer's, but tiers filter on them


@dataclass
class TierView:
    """A tier evaluated in SQL without materialising it: `where` selects its clips from `clips`."""

    spec: TierSpec
    parent_where: str
    clips: int = 0
    parent_clips: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def where(self) -> str:
        return " and ".join([self.parent_where, *(predicate(p) for p in self.spec.filters.values())])


def tier_views(con, specs: list[TierSpec], columns: set[str]) -> list[TierView]:
    views: dict[str, TierView] = {}
    for s in specs:
        parent = views.get(s.parent) if s.parent else None
        view = TierView(s, parent.where if parent else "true")
        views[s.name] = view
        missing = sorted(set(s.requires) - columns)
        if missing or (parent and parent.skipped):
            view.skipped = f"needs column(s) {missing}" if missing else f"parent '{s.parent}' was skipped"
            continue
        preds = [predicate(p) for p in s.filters.values()]
        row = con.execute(f"select count(*), count(*) filter (where {' and '.join(preds)}), "
                          + ", ".join(f"count(*) filter (where not {p})" for p in preds)
                          + f" from clips where {view.parent_where}").fetchall()[0]
        view.parent_clips, view.clips = int(row[0]), int(row[1])
        view.drops = dict(zip(s.filters, (int(x) for x in row[2:])))
    return list(views.values())


# ---- pictures --------------------------------------------------------------------------------------
def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def funnel_chart(total: int, views: list[TierView]) -> str:
    plt = _plt()
    shown = [v for v in views if not v.skipped]
    names = ["all clips", *(v.spec.name for v in shown)]
    counts = [total, *(v.clips for v in shown)]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 0.8))
    ax.barh(names[::-1], counts[::-1], color="#4c78a8")
    for i, c in enumerate(counts[::-1]):
        ax.text(c, i, f" {c:,}", va="center", fontsize=9)
    ax.set_xlabel("clips")
    ax.set_xlim(0, max(counts + [1]) * 1.15)
    ax.set_title("tier funnel: clips in each tier")
    return _png(fig)


def drops_chart(view: TierView) -> str:
    plt = _plt()
    names = list(view.drops)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 0.9))
    ax.barh(names[::-1], [view.drops[n] for n in names][::-1], color="#e45756")
    ax.axvline(view.parent_clips, color="#888", lw=1, ls=":")
    ax.set_xlim(0, max(view.parent_clips, 1) * 1.05)
    ax.set_xlabel(f"clips of the parent's {view.parent_clips:,} each filter drops alone (kept {view.clips:,})")
    ax.set_title(f"{view.spec.name}: dropped by each filter")
    return _png(fig)


def histogram(con, column: str, lines: list[tuple[str, float, bool]], bins: int = 40) -> str | None:
    """A histogram of a column over all clips, with thresholds drawn: (label, value, calibrated)."""
    lo, hi, n = con.execute(f'select min("{column}"), max("{column}"), count("{column}") from clips '
                            f'where isfinite("{column}")').fetchall()[0]
    if not n:
        return None
    lo, hi = float(lo), float(hi)
    width = (hi - lo) / bins or 1.0
    rows = con.execute(f'select least(floor(("{column}" - {lo}) / {width}), {bins - 1})::int as b, count(*) '
                       f'from clips where isfinite("{column}") group by b order by b').fetchall()
    counts = np.zeros(bins)
    for b, c in rows:
        counts[b] = c
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 2.4))
    ax.bar(lo + width * (np.arange(bins) + 0.5), counts, width=width * 0.95, color="#72b7b2")
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, value, calibrated) in enumerate(lines):
        ax.axvline(value, color=palette[i % len(palette)], ls="--" if calibrated else "-", lw=1.2,
                   label=f"{label} {'calibrated ' if calibrated else ''}{value:.3g}")
    if lines:
        ax.legend(fontsize=6, loc="upper right")
    ax.set_title(f"{column} (n={int(n):,})", fontsize=9)
    ax.tick_params(labelsize=7)
    return _png(fig)


def bar_chart(counts: dict[str, int], title: str) -> str:
    plt = _plt()
    names = list(counts)
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(names) + 0.9))
    ax.barh(names[::-1], [counts[n] for n in names][::-1], color="#54a24b")
    ax.set_title(title)
    ax.set_xlabel("clips")
    return _png(fig)


def thumb_strip(row: dict, height: int = THUMB_H) -> tuple[str | None, str | None]:
    """First, middle and last frame of a clip inside its crop suggestion, side by side, as a JPEG data
    URI; (None, reason) when the source no longer decodes."""
    from PIL import Image

    from curation.video import VideoReader

    s, e = int(row["start_frame"]), int(row["end_frame"])
    try:
        frames = VideoReader(row["uri"]).read([s, (s + e - 1) // 2, max(s, e - 1)])
    except Exception as exc:  # noqa: BLE001 - a report shows what it cannot draw
        return None, f"{type(exc).__name__}: {exc}"
    box = [int(b[0].as_py()) for b in crop_boxes(pa.Table.from_pylist([row]))]
    x0, y0, x1, y1 = box
    tiles = []
    for f in frames:
        crop = f[max(0, y0): max(y0 + 1, y1), max(0, x0): max(x0 + 1, x1)]
        img = Image.fromarray(crop)
        tiles.append(img.resize((max(1, round(img.width * height / img.height)), height)))
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), height), (255, 255, 255))
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.width + 2
    buf = io.BytesIO()
    strip.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), None


# ---- the report -------------------------------------------------------------------------------------
CARD_COLUMNS = ("clip_id", "uri", "start_frame", "end_frame", "duration_clip_s", "width", "height", "clarity",
                "motion", "camera_motion", "text_area", "aesthetic", "content_box", "subtitle_box",
                "is_duplicate", "dup_group", "caption_status")


class Report:
    def __init__(self, lake: Lake, spec: str = "tiers", calibrated: str | None = None):
        if not lake.exists("clips") and not lake.exists("videos"):
            raise ConfigError(f"no curation run in {lake.root}: run a pipeline into it first")
        self.lake, self.con = lake, connect(lake)
        self.columns = set(lake.dataset("clips").schema.names) if lake.exists("clips") else set()
        self.spec_name = spec
        self.specs = load_specs(spec)
        path = calibrated or os.path.join(lake.root, "tiers.calibrated.yaml")
        self.calibrated = load_specs(path) if os.path.exists(path) else None
        self.calibrated_path = path if self.calibrated else None
        self._thumbs: dict[str, tuple[str | None, str | None]] = {}

    def rows(self, sql: str) -> list[dict]:
        return to_arrow(self.con.sql(sql)).to_pylist()

    def _card_select(self) -> str:
        return ", ".join(f'"{c}"' for c in CARD_COLUMNS if c in self.columns)

    def card(self, row: dict) -> dict:
        cid = row["clip_id"]
        if cid not in self._thumbs:
            self._thumbs[cid] = thumb_strip(row)
        img, err = self._thumbs[cid]
        facts = {k: row[k] for k in ("clarity", "motion", "camera_motion", "text_area", "aesthetic")
                 if row.get(k) is not None}
        return {"clip_id": cid, "name": os.path.basename(row["uri"]), "uri": row["uri"],
                "frames": f"{row['start_frame']}–{row['end_frame']}", "img": img, "error": err,
                "facts": {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in facts.items()}}

    def summary(self) -> dict:
        videos = self.rows("select status, count(*) as n from videos group by status order by n desc") \
            if self.lake.exists("videos") else []
        clips = self.con.execute("select count(*), coalesce(sum(duration_clip_s), 0) from clips").fetchall()[0] \
            if self.columns else (0, 0.0)
        kinds = []
        if self.lake.exists("failures"):
            for k in self.rows("select stage, kind, count(*) as n from failures group by all order by n desc"):
                ex = self.rows(f"select uri, message from failures where stage = {quoted([k['stage']])} and "
                               f"kind = {quoted([k['kind']])} order by uri limit 3")
                kinds.append({**k, "examples": ex})
        tables = [{"name": t, "rows": self.lake.count(t), "version": self.lake.dataset(t).version}
                  for t in self.lake.tables()]
        return {"videos": videos, "clips": int(clips[0]), "hours": float(clips[1]) / 3600, "failures": kinds,
                "tables": tables}

    def thresholds(self) -> dict[str, list[tuple[str, float, bool]]]:
        scores = score_columns(self.lake) | {c for c in EXTRA_HISTOGRAMS if c in self.columns}
        out: dict[str, list] = {}
        for specs, calibrated in ((self.specs, False), (self.calibrated or [], True)):
            for s in specs:
                for fname, pred in s.filters.items():
                    for b in movable_bounds(fname, pred, scores):
                        for col in set(re.findall(r"[A-Za-z_]\w*", b.expr)) & scores:
                            out.setdefault(col, []).append((s.name, b.value, calibrated))
        return out

    def tiers(self, views: list[TierView]) -> list[dict]:
        out = []
        for v in views:
            entry = {"name": v.spec.name, "description": v.spec.description, "skipped": v.skipped,
                     "filters": v.spec.filters, "size": v.spec.size, "keep": v.spec.keep}
            table = f"tiers/{v.spec.name}"
            entry["materialised"] = self.lake.count(table) if self.lake.exists(table) else None
            if not v.skipped:
                entry.update(clips=v.clips, parent_clips=v.parent_clips,
                             chart=drops_chart(v) if v.parent_clips else None)
                sel = self._card_select()
                entry["samples"] = [self.card(r) for r in self.rows(
                    f"select {sel} from clips where {v.where} order by hash(clip_id) limit {SAMPLES_PER_TIER}")]
                dropped = []
                for fname, pred in v.spec.filters.items():
                    if v.drops.get(fname):
                        rows = self.rows(f"select {sel} from clips where {v.parent_where} and not {predicate(pred)} "
                                         f"order by hash(clip_id) limit {DROPPED_PER_FILTER}")
                        dropped.append({"filter": fname, "predicate": pred, "count": v.drops[fname],
                                        "cards": [self.card(r) for r in rows]})
                entry["dropped"] = dropped
            out.append(entry)
        return out

    def duplicates(self) -> list[dict]:
        if "dup_group" not in self.columns:
            return []
        sel = self._card_select()
        groups = [r["dup_group"] for r in self.rows(
            "select dup_group, count(*) as n from clips where dup_group is not null group by 1 having n > 1 "
            f"order by n desc, dup_group limit {DUP_GROUPS}")]
        return [{"group": g, "cards": [{**self.card(r), "kept": not r["is_duplicate"]} for r in self.rows(
            f"select {sel} from clips where dup_group = {quoted([g])} order by is_duplicate, clip_id limit 6")]}
            for g in groups]

    def captions(self) -> dict | None:
        if "caption" not in self.columns:
            return None
        status = self.rows("select coalesce(caption_status, 'none') as status, count(*) as n from clips "
                           "group by 1 order by n desc")
        flags = self.rows("select flag, count(*) as n from (select unnest(caption_flags) as flag from clips) "
                          "group by 1 order by n desc") if "caption_flags" in self.columns else []
        samples = []
        for r in self.rows("select clip_id, uri, caption, caption_status, caption_flags from clips "
                           f"where caption is not null order by hash(clip_id) limit {CAPTIONS}"):
            try:
                text = json.dumps(json.loads(r["caption"]), indent=1, ensure_ascii=False)
            except (TypeError, ValueError):
                text = r["caption"]
            samples.append({**r, "name": os.path.basename(r["uri"]), "text": text})
        return {"status": status, "flags": flags, "samples": samples}

    def calibration(self) -> list[dict]:
        out = []
        for s in self.calibrated or []:
            info = s.calibration or {}
            orig = info.get("original_filters") or s.filters
            out.append({"name": s.name, "target": info.get("target_keep"), "kept": info.get("kept"),
                        "of": info.get("of"), "status": info.get("status", "-"),
                        "filters": [(k, orig.get(k, "-"), v) for k, v in s.filters.items()]})
        return out

    def context(self) -> dict:
        views = tier_views(self.con, self.specs, self.columns) if self.columns else []
        total = self.con.execute("select count(*) from clips").fetchall()[0][0] if self.columns else 0
        hist = []
        if self.columns:
            lines = self.thresholds()
            numeric = sorted(score_columns(self.lake) | {c for c in EXTRA_HISTOGRAMS if c in self.columns})
            for col in numeric:
                img = histogram(self.con, col, lines.get(col, []))
                if img:
                    hist.append({"column": col, "img": img})
        camera = {}
        if "camera_motion" in self.columns:
            camera = {r["c"]: r["n"] for r in self.rows(
                "select coalesce(camera_motion, 'no confident class') as c, count(*) as n from clips "
                "group by 1 order by n desc")}
        return {"lake": self.lake.root, "spec": self.spec_name, "calibrated_path": self.calibrated_path,
                "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "summary": self.summary(), "funnel": funnel_chart(total, views) if views else None,
                "tiers": self.tiers(views), "histograms": hist, "duplicates": self.duplicates(),
                "camera": camera, "camera_chart": bar_chart(camera, "camera motion classes") if camera else None,
                "captions": self.captions(), "calibration": self.calibration()}


def render(context: dict) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("curation", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(**context)


def write_report(lake: str | Lake, output: str | None = None, spec: str = "tiers") -> str:
    lake = lake if isinstance(lake, Lake) else Lake(lake, create=False)
    output = output or os.path.join(lake.root, "report.html")
    html = render(Report(lake, spec).context())
    tmp = output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(html)
    os.replace(tmp, output)
    return os.path.abspath(output)
