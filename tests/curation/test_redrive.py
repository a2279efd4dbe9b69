"""Redrive: a fixed input and a rescored clip become resolved; a still-broken input keeps failing, and
the failure rows keep their history."""

from __future__ import annotations

import datetime as dt
import os
import shutil

import pyarrow as pa
import pytest

from curation.cli import main
from curation.lake import Lake
from curation.query import query
from curation.schema import FAILURES_SCHEMA
from curation.writer import failure_rows

pytestmark = pytest.mark.usefixtures("ray_local")


def _failures(lake: Lake) -> list[dict]:
    return query(lake, "select regexp_extract(uri, '[^/]+$') as name, clip_id, stage, kind, attempt, "
                       "resolved_at is not null as resolved from failures order by name, attempt").to_pylist()


def test_redrive_resolves_what_now_succeeds(demo_videos, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "later.mp4").write_bytes(b"not yet a video\n" * 50)  # fixed below: replaced by a real video
    (folder / "empty.mp4").write_bytes(b"")  # stays broken
    shutil.copy(demo_videos[2].path, folder / "good.mp4")
    lake = Lake(tmp_path / "lake")
    assert main(["run", "default", "--input", str(folder), "--lake", lake.root, "--no-progress"]) == 0
    before = _failures(lake)
    assert {(f["name"], f["resolved"]) for f in before} == {("later.mp4", False), ("empty.mp4", False)}

    shutil.copy(demo_videos[1].path, folder / "later.mp4")  # the "codec fix"
    clip = query(lake, "select clip_id, uri, video_id from clips order by clip_id limit 1").to_pylist()[0]
    lake.append("failures", pa.Table.from_pylist(failure_rows(  # a scorer once failed on this clip
        [{**clip, "failures": [{"stage": "clarity", "kind": "decode_error", "message": "x",
                                "clip_id": clip["clip_id"]}]}], 1, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)),
        schema=FAILURES_SCHEMA))
    lake.dataset("clips").update({"clarity": "NULL"}, where=f"clip_id = '{clip['clip_id']}'")

    assert main(["redrive", "--lake", lake.root, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "reran 2 input(s), 1 clip(s) of clarity" in out and "resolved 2, still failing 1" in out
    after = _failures(lake)
    assert [(f["name"], f["kind"], f["attempt"], f["resolved"]) for f in after if f["name"] != "good.mp4"] == [
        ("empty.mp4", "empty_file", 1, False), ("empty.mp4", "empty_file", 2, False),
        ("later.mp4", "not_a_video", 1, True)]
    assert [(f["stage"], f["resolved"]) for f in after if f["name"] == "good.mp4"] == [("clarity", True)]
    rows = query(lake, "select uri, status from videos").to_pylist()
    status = {os.path.basename(r["uri"]): r["status"] for r in rows}
    assert status == {"later.mp4": "ok", "empty.mp4": "failed", "good.mp4": "ok"}
    rescored = query(lake, f"select clarity from clips where clip_id = '{clip['clip_id']}'").column(0)[0].as_py()
    assert rescored is not None and rescored > 0
    # only what is still unresolved is selected next time; --kind narrows it
    assert main(["redrive", "--lake", lake.root, "--kind", "decode_error", "--no-progress"]) == 0
    assert "0 unresolved failure row(s) selected" in capsys.readouterr().out
