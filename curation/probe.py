"""Probe stage: content id and container metadata for each input file, or a failure row saying why
the file is not a usable video (its kind: see curation.errors.VideoError), including what discovery let
through on purpose: broken symlinks, symlink loops, FIFOs, unreadable files, names that are not UTF-8.

The file must still have the size and mtime discovery saw, before and after it is hashed and probed:
otherwise it fails `changed_during_read` (the message holds both stats) and, its stat being new, the next
run takes it again. The row keeps the discovery stat, so that works; later readers (split, the scorers)
check the file against it too (curation.video.VideoReader)."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from curation.schema import INPUT_FIELDS, VIDEO_FIELDS
from curation.stage import Resources, Stage, failure
from curation.video import check_file, os_error, probe

_CHUNK = 1 << 20


def content_id(path: str) -> str:
    """Video id: BLAKE2b-128 of the file's bytes (byte-identical files share it)."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise os_error(path, exc) from exc
    return h.hexdigest()


class ProbeStage(Stage):
    """Input rows (uri, size_bytes, mtime_ns) → video rows with metadata and status ok/failed."""

    name = "probe"
    version = "1"
    resources = Resources(num_cpus=1, batch_size=1)  # one input per task: a crash loses only that input

    def input_columns(self) -> list[str]:
        return [f.name for f in INPUT_FIELDS]

    def output_columns(self) -> list[str]:
        return [f.name for f in VIDEO_FIELDS]

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist([self.probe_row(r) for r in batch.to_pylist()], schema=batch.schema)

    def probe_row(self, row: dict) -> dict:
        path = row["uri"]
        out = {**row, "failures": list(row.get("failures") or []), "n_clips": 0}
        seen = (row.get("size_bytes"), row.get("mtime_ns"))
        since = seen if None not in seen else None
        try:
            check_file(path, since)  # typed kinds before anything opens it (a FIFO would block)
            out["video_id"] = content_id(path)
            info = probe(path, since)
        except Exception as exc:  # noqa: BLE001 - becomes a failure row
            out.update(status="failed", error=str(exc))
            out["failures"].append(failure(self.name, exc))
            return out
        out["failures"] += [{"stage": self.name, "kind": kind, "message": message, "clip_id": None}
                            for kind, message in info.notes]  # worked around: warnings on an ok video
        out.update(container=info.container, codec=info.codec, duration_s=info.duration_s, fps=info.fps,
                   frame_count=info.frame_count, width=info.width, height=info.height,
                   rotation=info.rotation, has_audio=info.has_audio, vfr=info.vfr, status="ok")
        return out
