"""Export a tier for other trainers: WebDataset tar shards (each clip cut to its frames, cropped to its crop
suggestion, resized to the tier's size and encoded as H.264, next to a JSON of its metadata) or a Parquet
manifest of the tier's rows without media. Resumable: shards are written under a temporary name and renamed
when complete, and `_export.json` records the settings and the finished shards, so a rerun does only the
missing ones. A clip whose source does not decode is a failure entry; the export goes on."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import ConfigError, VideoError, error_kind
from curation.lake import Lake
from curation.schema import CLIP_FIELDS, VIDEO_FIELDS
from curation.tiers import load_specs
from curation.video import VideoReader

FORMATS = ("webdataset", "parquet")
STATE, MANIFEST, FAILURES = "_export.json", "manifest.parquet", "failures.jsonl"
ENCODE = {"crf": "18", "preset": "fast"}  # libx264 settings of the exported clips
CROP = ("crop_x0", "crop_y0", "crop_x1", "crop_y1")
TOP = ("clip_id", "video_id", "uri", "start_frame", "end_frame", "start_s", "end_s", "fps")
NOT_SCORES = {f.name for f in (*CLIP_FIELDS, *VIDEO_FIELDS)} | set(CROP)  # the rest are stage-made columns


@dataclass
class ExportSummary:
    tier: str
    fmt: str
    out: str
    shards: int = 0
    clips_written: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    clips_skipped: int = 0
    failures: list[dict] = field(default_factory=list)  # this run's: clip_id, kind, message, ...
    seconds: float = 0.0

    def lines(self) -> list[str]:
        unit = "manifest" if self.fmt == "parquet" else "shards"
        out = [f"export of tier '{self.tier}' ({self.fmt}) into {self.out}: {self.shards} {unit}",
               f"  written:      {self.clips_written} clips in {self.shards_written} {unit}",
               f"  already done: {self.clips_skipped} clips in {self.shards_skipped} {unit} (skipped)",
               f"  failed:       {len(self.failures)} clips" + (f" (see {FAILURES})" if self.failures else "")]
        out += [f"    {f['clip_id']}: {f['kind']}: {f['message']}" for f in self.failures[:10]]
        if len(self.failures) > 10:
            out.append(f"    ... and {len(self.failures) - 10} more")
        return [*out, f"  seconds:      {self.seconds:.1f}"]


def export_tier(lake: str | os.PathLike | Lake, tier: str, fmt: str, out: str | os.PathLike, shard_size: int = 1000,
                size: int | None = None, progress: bool = True) -> ExportSummary:
    """Export `tiers/<tier>` of `lake` into folder `out` as `fmt` ('webdataset' or 'parquet'). `size` is the
    short side of the written clips (default: the tier's `size` in the bundled tier spec, else the cropped
    source size); clips are never upscaled and always have even dimensions."""
    t0 = time.monotonic()
    if fmt not in FORMATS:
        raise ConfigError(f"export: unknown format '{fmt}' (one of {', '.join(FORMATS)})")
    if shard_size < 1 or (size is not None and size < 2):
        raise ConfigError(f"export: shard_size must be >= 1 and size >= 2 (got {shard_size}, {size})")
    lake = lake if isinstance(lake, Lake) else Lake(lake, create=False)
    ds = lake.dataset(f"tiers/{tier}")
    if ds is None:
        have = [t.removeprefix("tiers/") for t in lake.tables() if t.startswith("tiers/")]
        raise ConfigError(f"export: no tier '{tier}' in {lake.root} (tiers there: {', '.join(have) or 'none'}; "
                          f"make them with `videocurate tier --lake {lake.root}`)")
    size = size if size is not None else tier_size(tier)
    table = ds.to_table().sort_by([("uri", "ascending"), ("start_frame", "ascending"), ("clip_id", "ascending")])
    out = os.path.abspath(os.fspath(out))
    args = {"lake": lake.root, "tier": tier, "format": fmt, "table_version": ds.version,
            "shard_size": shard_size, "size": size}
    state = _open_state(out, args)
    provenance = {"lake": lake.root, "table": f"tiers/{tier}", "table_version": ds.version,
                  "exported_at": state["started_at"]}
    geometry = _geometry(table, size)
    summary = ExportSummary(tier, fmt, out)
    if fmt == "parquet":
        _export_parquet(table, geometry, out, state, provenance, summary)
    else:
        _export_webdataset(table, geometry, out, state, provenance, summary, progress)
    summary.seconds = time.monotonic() - t0
    return summary


def tier_size(tier: str) -> int | None:
    """The tier's training size (short side) in the bundled tier spec, or None."""
    try:
        return next((s.size for s in load_specs("tiers") if s.name == tier), None)
    except (ConfigError, OSError):
        return None


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def sample_key(clip_id: str) -> str:
    """A WebDataset key: no dots (the key ends at the first one) and nothing a file name cannot hold."""
    return re.sub(r"[^\w-]", "_", clip_id)


# ---- state -----------------------------------------------------------------------------------------------
def _open_state(out: str, args: dict) -> dict:
    path = os.path.join(out, STATE)
    if os.path.exists(path):
        with open(path) as f:
            state = json.load(f)
        changed = [f"{k}: {state['args'].get(k)!r} then, {v!r} now" for k, v in args.items()
                   if state["args"].get(k) != v]
        if changed:
            raise ConfigError(f"export: {out} holds an export made with other settings ({'; '.join(changed)}); "
                              f"export into an empty folder, or delete this one to start over")
        return state
    if os.path.isdir(out) and os.listdir(out):
        raise ConfigError(f"export: {out} is not empty and holds no {STATE}: export into an empty folder")
    os.makedirs(out, exist_ok=True)
    return {"args": args, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "shards": {}}


def _save_state(out: str, state: dict) -> None:
    tmp = os.path.join(out, STATE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, os.path.join(out, STATE))


# ---- geometry --------------------------------------------------------------------------------------------
def _geometry(table: pa.Table, size: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per clip: the crop box (n, 4) inside the frame (no crop columns or nulls: the whole frame), and the
    written width and height: the crop scaled so its short side is `size` (never up), rounded to even."""
    w = table.column("width").to_numpy(zero_copy_only=False).astype(np.int64)
    h = table.column("height").to_numpy(zero_copy_only=False).astype(np.int64)
    full = {"crop_x0": 0, "crop_y0": 0, "crop_x1": w, "crop_y1": h}
    box = np.stack([np.broadcast_to(full[c], w.shape) if c not in table.column_names else
                    pc.coalesce(table.column(c).cast(pa.int64()), pa.array(np.broadcast_to(full[c], w.shape)))
                    .to_numpy(zero_copy_only=False) for c in CROP], axis=1).astype(np.int64)
    box[:, 0], box[:, 1] = np.clip(box[:, 0], 0, w - 2), np.clip(box[:, 1], 0, h - 2)
    box[:, 2], box[:, 3] = np.clip(box[:, 2], box[:, 0] + 2, w), np.clip(box[:, 3], box[:, 1] + 2, h)
    cw, ch = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    scale = np.ones(len(w)) if size is None else np.minimum(1.0, size / np.minimum(cw, ch))
    ow = np.minimum(cw // 2 * 2, np.maximum(2, np.round(cw * scale / 2) * 2)).astype(np.int64)
    oh = np.minimum(ch // 2 * 2, np.maximum(2, np.round(ch * scale / 2) * 2)).astype(np.int64)
    return box, ow, oh


@dataclass
class _Cut:
    row: dict
    key: str
    box: tuple[int, int, int, int]
    width: int
    height: int

    def picture(self, frame: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        crop = frame[y0:y1, x0:x1]
        if crop.shape[1] // 2 * 2 == self.width and crop.shape[0] // 2 * 2 == self.height:
            return np.ascontiguousarray(crop[: self.height, : self.width])  # no scaling: drop an odd pixel
        return cv2.resize(crop, (self.width, self.height), interpolation=cv2.INTER_AREA)


# ---- parquet ---------------------------------------------------------------------------------------------
def _export_parquet(table: pa.Table, geometry: tuple, out: str, state: dict, provenance: dict,
                    summary: ExportSummary) -> None:
    """The tier's rows (no media) plus the size an export would write them at: one unit of work."""
    summary.shards = 1
    if MANIFEST in state["shards"] and os.path.exists(os.path.join(out, MANIFEST)):
        summary.shards_skipped, summary.clips_skipped = 1, table.num_rows
        return
    w, h = (pa.array(a, pa.int32()) for a in geometry[1:])
    _write_parquet(table.append_column("export_width", w).append_column("export_height", h), out, provenance)
    state["shards"][MANIFEST] = {"clips": table.num_rows, "failed": []}
    _save_state(out, state)
    summary.shards_written, summary.clips_written = 1, table.num_rows


# ---- webdataset ------------------------------------------------------------------------------------------
def _export_webdataset(table: pa.Table, geometry: tuple, out: str, state: dict, provenance: dict,
                       summary: ExportSummary, progress: bool) -> None:
    from tqdm import tqdm

    per = state["args"]["shard_size"]
    summary.shards = n_shards = math.ceil(table.num_rows / per)
    for stale in os.listdir(out):  # what a killed run left half-written
        if stale.startswith(".work-"):
            shutil.rmtree(os.path.join(out, stale), ignore_errors=True)
        elif stale.endswith(".tmp"):
            os.remove(os.path.join(out, stale))
    done = {n for n in state["shards"] if os.path.exists(os.path.join(out, n))}
    todo = [i for i in range(n_shards) if shard_name(i) not in done]
    summary.shards_skipped = n_shards - len(todo)
    summary.clips_skipped = sum(state["shards"][n]["clips"] for n in done)
    mtime = datetime.fromisoformat(state["started_at"]).timestamp()
    total = sum(min(per, table.num_rows - i * per) for i in todo)
    box, ow, oh = geometry
    with tqdm(total=total, unit="clip", desc=f"export {summary.tier}", file=sys.stderr, dynamic_ncols=True,
              disable=not progress or total == 0) as bar:
        for i in todo:
            lo, rows = i * per, table.slice(i * per, per).to_pylist()
            cuts = [_Cut(r, sample_key(r["clip_id"]), tuple(int(v) for v in box[lo + j]), int(ow[lo + j]),
                         int(oh[lo + j])) for j, r in enumerate(rows)]
            failed = _write_shard(os.path.join(out, shard_name(i)), cuts, provenance, mtime, bar)
            state["shards"][shard_name(i)] = {"clips": len(cuts) - len(failed), "failed": failed}
            _save_state(out, state)
            summary.shards_written += 1
            summary.clips_written += len(cuts) - len(failed)
            summary.failures += failed
    _write_results(table, geometry, out, state, provenance)


def _write_shard(path: str, cuts: list[_Cut], provenance: dict, mtime: float, bar) -> list[dict]:
    """Write one shard under a temporary name, renamed when complete; return its failures."""
    failed: list[dict] = []
    out = os.path.dirname(path)
    with tempfile.TemporaryDirectory(dir=out, prefix=".work-") as work, tarfile.open(path + ".tmp", "w") as tar:
        for uri, group in itertools.groupby(cuts, key=lambda c: c.row["uri"]):
            for cut, result in _cut_video(uri, list(group), work):
                if isinstance(result, BaseException):
                    failed.append({"clip_id": cut.row["clip_id"], "video_id": cut.row.get("video_id"), "uri": uri,
                                   "shard": os.path.basename(path), "kind": error_kind(result),
                                   "message": str(result)})
                else:
                    with open(result, "rb") as f:
                        _add(tar, f"{cut.key}.mp4", f.read(), mtime)
                    os.remove(result)
                    _add(tar, f"{cut.key}.json", _sample_json(cut, provenance), mtime)
                bar.update(1)
    os.replace(path + ".tmp", path)
    return failed


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    tar.addfile(info, io.BytesIO(data))


def _cut_video(uri: str, cuts: list[_Cut], work: str) -> Iterator[tuple[_Cut, str | BaseException]]:
    """Decode one source once, front to back, and write every clip of `cuts` (sorted by start) as it passes:
    (cut, mp4 path) or (cut, the error)."""
    for cut in [c for c in cuts if c.row["end_frame"] <= c.row["start_frame"]]:
        yield cut, VideoError(f"empty clip span [{cut.row['start_frame']}, {cut.row['end_frame']})", kind="too_short")
    cuts = [c for c in cuts if c.row["end_frame"] > c.row["start_frame"]]
    if not cuts:
        return
    active: list[tuple[_Cut, _Encoder]] = []
    nxt, index = 0, -1
    try:
        reader = VideoReader(uri.removeprefix("file://"))
        info, row = reader.info, cuts[0].row
        times = reader.timeline() if info.vfr else None  # a VFR clip keeps its frames' timing
        if (info.width, info.height) != (row["width"], row["height"]):
            raise VideoError(f"the source is {info.width}x{info.height} now, the lake says {row['width']}x"
                             f"{row['height']}: it changed since it was curated", kind="source_changed")
        for index, frame in enumerate(reader.iter_frames()):
            while nxt < len(cuts) and cuts[nxt].row["start_frame"] <= index:
                path = os.path.join(work, f"{cuts[nxt].key}.mp4")
                start_s = None if times is None else times.seconds(cuts[nxt].row["start_frame"])
                active.append((cuts[nxt], _Encoder(path, cuts[nxt].width, cuts[nxt].height, info.fps, start_s)))
                nxt += 1
            at_s = None if times is None else times.seconds(index)  # once a frame, for every clip holding it
            for cut, enc in active:
                enc.add(cut.picture(frame), at_s)
            for cut, enc in [a for a in active if index + 1 >= a[0].row["end_frame"]]:
                path = enc.close()
                active = [a for a in active if a[1] is not enc]
                yield cut, path
            if nxt == len(cuts) and not active:
                return
        raise VideoError(f"the source ends at frame {index + 1}, before the clip does", kind="too_short")
    except Exception as exc:  # noqa: BLE001 - every clip not written yet fails with it; the export goes on
        for _, enc in active:
            enc.abort()
        yield from ((cut, exc) for cut in [*(a[0] for a in active), *cuts[nxt:]])


class _Encoder:
    """One clip's H.264 yuv420p mp4 (no audio, moov first so it streams), written frame by frame."""

    TICKS = Fraction(1, 90000)  # time base of a variable-rate clip's timestamps

    def __init__(self, path: str, width: int, height: int, fps: float, start_s: float | None = None):
        """`start_s`: the source time of the clip's first frame, when each frame is added with its own
        time (variable frame rate); None: frames follow each other at `fps`."""
        import av

        self.path, self.frames, self.start_s = path, 0, start_s
        self.out = av.open(path, "w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.options = dict(ENCODE)
        if start_s is not None:
            self.stream.time_base = self.stream.codec_context.time_base = self.TICKS

    def add(self, rgb: np.ndarray, at_s: float | None = None) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        if self.start_s is not None and at_s is not None:
            frame.pts, frame.time_base = round((at_s - self.start_s) / self.TICKS), self.TICKS
        for packet in self.stream.encode(frame):
            self.out.mux(packet)
        self.frames += 1

    def close(self) -> str:
        for packet in self.stream.encode():
            self.out.mux(packet)
        self.out.close()
        return self.path

    def abort(self) -> None:
        try:
            self.out.close()
        except Exception:  # noqa: BLE001 - a half-written clip is thrown away anyway
            pass
        if os.path.exists(self.path):
            os.remove(self.path)


# ---- metadata --------------------------------------------------------------------------------------------
def _plain(v: object) -> object:
    """A JSON-safe value: NaN/inf → None, bytes dropped, nested lists and dicts cleaned."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (bytes, bytearray)):
        return None
    return v if v is None or isinstance(v, (str, int, bool)) else str(v)


def _sample_json(cut: _Cut, provenance: dict) -> bytes:
    r = cut.row
    doc = {"key": cut.key, **{k: r.get(k) for k in TOP}, "num_frames": r["end_frame"] - r["start_frame"],
           "width": cut.width, "height": cut.height, "crop": list(cut.box),
           "source": {"width": r["width"], "height": r["height"], "rotation": r.get("rotation") or 0},
           "scores": {k: v for k, v in r.items() if k not in NOT_SCORES and not k.startswith("caption")}}
    for k in sorted(c for c in r if c.startswith("caption")):
        doc[k] = r[k]
    if isinstance(doc.get("caption"), str):
        try:
            doc["caption"] = json.loads(doc["caption"])
        except ValueError:
            pass  # a plain-text caption stays a string
    doc["tier"], doc["provenance"] = provenance["table"].removeprefix("tiers/"), provenance
    return json.dumps(_plain(doc), ensure_ascii=False, allow_nan=False).encode()


def _write_parquet(table: pa.Table, out: str, provenance: dict) -> None:
    meta = {**(table.schema.metadata or {}), b"videocurate.export": json.dumps(provenance).encode()}
    tmp = os.path.join(out, MANIFEST + ".tmp")
    pq.write_table(table.replace_schema_metadata(meta), tmp)
    os.replace(tmp, os.path.join(out, MANIFEST))


def _write_results(table: pa.Table, geometry: tuple, out: str, state: dict, provenance: dict) -> None:
    """`failures.jsonl` of every finished shard and `manifest.parquet`: the shard and key of every written clip."""
    failed = [f for n in sorted(state["shards"]) for f in state["shards"][n]["failed"]]
    with open(os.path.join(out, FAILURES + ".tmp"), "w") as f:
        f.writelines(json.dumps(x) + "\n" for x in failed)
    os.replace(os.path.join(out, FAILURES + ".tmp"), os.path.join(out, FAILURES))
    size, (_, ow, oh) = state["args"]["shard_size"], geometry
    shards = [shard_name(i // size) for i in range(table.num_rows)]
    manifest = pa.table({
        "key": [sample_key(c) for c in table.column("clip_id").to_pylist()], "shard": shards,
        **{c: table.column(c) for c in ("clip_id", "video_id", "uri", "start_frame", "end_frame")},
        "num_frames": pc.subtract(table.column("end_frame"), table.column("start_frame")),
        "width": pa.array(ow, pa.int32()), "height": pa.array(oh, pa.int32())})
    bad = {f["clip_id"] for f in failed}
    keep = [s in state["shards"] and c not in bad for s, c in zip(shards, table.column("clip_id").to_pylist())]
    _write_parquet(manifest.filter(pa.array(keep)), out, provenance)
