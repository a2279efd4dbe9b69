"""The lake writer: gathers the clip rows streaming out of the stages, completes each video, and
commits chunks of videos to `failures`, `clips` and `videos` — in that order, so a `videos` row marks
a video as fully committed. A crash loses at most the chunk in flight; `recover()` removes its
partial clips before a rerun, so nothing is ever duplicated."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa

from curation.lake import Lake
from curation.schema import (
    FAILURES_SCHEMA,
    ROW_BASE_FIELDS,
    VIDEO_FIELDS,
    clip_schema,
    rows_to_table,
    video_schema,
)

_BASE_NAMES = {f.name for f in ROW_BASE_FIELDS}


@dataclass
class WriteStats:
    videos: Counter = field(default_factory=Counter)  # by status
    clips: int = 0
    failures: int = 0
    commits: int = 0


class LakeWriter:
    def __init__(self, lake: Lake, extra_fields: list[pa.Field], commit_every: int = 16,
                 commit_seconds: float = 30.0, attempts: dict[str, int] | None = None,
                 known_ids: dict[str, str] | None = None):
        self.lake = lake
        self.extra_fields = [f for f in extra_fields if f.name not in _BASE_NAMES]
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self.attempts = attempts or {}
        self.stats = WriteStats()
        self._open: dict[str, list[dict]] = {}  # uri → rows received so far
        self.seen: set[str] = set()  # uris with at least one row received
        self._ready: list[list[dict]] = []  # complete videos waiting for a commit
        self._last_commit = time.monotonic()
        self._known_ids = dict(known_ids or {})  # video_id → uri of committed ok videos

    def add(self, row: dict) -> str | None:
        """Take one row; return the uri of the video it completed, if any."""
        uri = row["uri"]
        self.seen.add(uri)
        rows = self._open.setdefault(uri, [])
        rows.append(row)
        if len(rows) < max(1, row.get("n_clips") or 0):
            return None
        self._ready.append(self._open.pop(uri))
        if len(self._ready) >= self.commit_every or time.monotonic() - self._last_commit > self.commit_seconds:
            self.commit()
        return uri

    def pending_uris(self) -> list[str]:
        return list(self._open)

    def fail(self, uri: str, kind: str, message: str, fields: dict | None = None) -> None:
        """Complete a video as failed (dropping any partial clip rows)."""
        partial = self._open.pop(uri, None)
        base = {**(partial[0] if partial else {"uri": uri}), **(fields or {})}
        self.add({**base, "clip_id": None, "n_clips": 0, "status": "failed", "error": message,
                  "failures": [{"stage": "runner", "kind": kind, "message": message, "clip_id": None}]})

    def commit(self) -> None:
        if not self._ready:
            return
        with self.lake.lock():  # another run may be committing into this lake: take turns, then look again
            self._commit_locked()

    def _commit_locked(self) -> None:
        now = datetime.now(timezone.utc)
        videos, clips, failures = [], [], []
        ready = sorted(self._ready, key=lambda rs: rs[0]["uri"])  # deterministic duplicate choice
        done = self._committed_since_start([rs[0] for rs in ready])
        for rows in ready:
            video = self._video_row(rows[0])
            if (video["uri"], video["size_bytes"], video["mtime_ns"]) in done:
                self.stats.videos["committed by another run"] += 1
                continue
            if video["status"] == "ok" and video["video_id"] in self._known_ids:
                first = self._known_ids[video["video_id"]]
                video.update(status="duplicate", n_clips=0, dup_of_uri=first,
                             error=f"byte-identical to {first}")
                rows = [{**video, "failures": [{"stage": "ingest", "kind": "duplicate_file", "clip_id": None,
                                                "message": video["error"]}]}]
            elif video["status"] == "ok":
                self._known_ids[video["video_id"]] = video["uri"]
                clips.extend(r for r in rows if r.get("clip_id") is not None)
            videos.append(video)
            failures.extend(failure_rows(rows, self.attempts.get(video["uri"], 1), now))
        if not videos:
            self._ready = []
            return
        if failures:
            self.lake.append("failures", rows_to_table(failures, FAILURES_SCHEMA))
        if clips:
            self.lake.append("clips", rows_to_table(clips, clip_schema(self.extra_fields)))
        self.lake.append("videos", rows_to_table(videos, video_schema()))
        for v in videos:
            self.stats.videos[v["status"]] += 1
        self.stats.clips += len(clips)
        self.stats.failures += len(failures)
        self.stats.commits += 1
        self._ready = []
        self._last_commit = time.monotonic()

    def _committed_since_start(self, rows: list[dict]) -> set[tuple]:
        """Inputs of this chunk that a concurrent run committed meanwhile (they are dropped here), and the
        content ids it committed (byte-identical inputs of this chunk become duplicates of those)."""
        if not self.lake.exists("videos"):
            return set()
        uris = sorted({r["uri"] for r in rows})
        ids = sorted({r["video_id"] for r in rows if r.get("video_id")} - set(self._known_ids))
        done = set()
        where = f"uri IN ({quoted(uris)})" + (f" OR (status = 'ok' AND video_id IN ({quoted(ids)}))" if ids else "")
        for b in self.lake.scan("videos", columns=["uri", "size_bytes", "mtime_ns", "status", "video_id"],
                                where=where):
            for uri, size, mtime, status, vid in zip(*(b.column(i).to_pylist() for i in range(5))):
                if uri in uris:
                    done.add((uri, size, mtime))
                if status == "ok" and vid:
                    self._known_ids.setdefault(vid, uri)
        return done

    @staticmethod
    def _video_row(row: dict) -> dict:
        video = {f.name: row.get(f.name) for f in VIDEO_FIELDS}
        if video["status"] is None:
            video["status"] = "failed"
        return video


def failure_rows(rows: list[dict], attempt: int = 1, now: datetime | None = None) -> list[dict]:
    """`failures` table rows from the failure items carried by in-flight rows."""
    now = now or datetime.now(timezone.utc)
    return [{"uri": r["uri"], "video_id": r.get("video_id"), **f, "attempt": attempt, "at": now}
            for r in rows for f in r.get("failures") or []]


def quoted(values: list[str]) -> str:
    """SQL string literals, comma-separated, for an IN list."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def recover(lake: Lake) -> int:
    """Delete clips and failures of videos that have no `videos` row (a chunk cut off by a crash),
    so a rerun can redo them without duplicates. Returns the number of videos cleaned up."""
    if not lake.exists("videos"):
        done_ids, done_uris = set(), set()
    else:
        done_ids, done_uris = set(), set()
        for b in lake.scan("videos", columns=["video_id", "uri"]):
            done_ids.update(v for v in b.column(0).to_pylist() if v)
            done_uris.update(b.column(1).to_pylist())
    cleaned = 0
    for table, column, done in (("clips", "video_id", done_ids), ("failures", "uri", done_uris)):
        orphans = sorted({v for b in lake.scan(table, columns=[column]) for v in b.column(0).to_pylist()
                          if v is not None} - done)
        for i in range(0, len(orphans), 500):
            lake.delete(table, f"{column} IN ({quoted(orphans[i:i + 500])})")
        cleaned += len(orphans)
    return cleaned
