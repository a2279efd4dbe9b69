"""Arrow schemas of the lake tables and of the rows that flow between stages.

Between stages a row is one clip (or, for a video with no clips, one row with a null clip_id) that
carries its video's columns, the clip's columns, every score column added so far and a `failures` list.
The writer splits such rows into the `videos`, `clips` and `failures` tables."""

from __future__ import annotations

import pyarrow as pa

# A failure recorded on an in-flight row; clip_id is null for failures of the whole video.
FAILURE_ITEM = pa.struct([("stage", pa.string()), ("kind", pa.string()), ("message", pa.string()),
                          ("clip_id", pa.string())])

# Columns that describe the input file, known before any decode.
INPUT_FIELDS = [
    pa.field("uri", pa.string()),
    pa.field("size_bytes", pa.int64()),
    pa.field("mtime_ns", pa.int64()),
]

VIDEO_FIELDS = [
    pa.field("video_id", pa.string()),
    *INPUT_FIELDS,
    pa.field("container", pa.string()),
    pa.field("codec", pa.string()),
    pa.field("duration_s", pa.float64()),
    pa.field("fps", pa.float64()),
    pa.field("frame_count", pa.int64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("rotation", pa.int16()),
    pa.field("has_audio", pa.bool_()),
    pa.field("vfr", pa.bool_()),  # variable frame rate: frame numbers map to times through the timestamps
    pa.field("status", pa.string()),  # ok | failed | no_clips | duplicate
    pa.field("error", pa.string()),
    pa.field("cuts", pa.list_(pa.int64())),  # frames where the detector found a new shot
    # gradual transitions (dissolve, fade, wipe) as inclusive frame spans; their frames are in no clip
    pa.field("transitions", pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64()),
                                                ("kind", pa.string())]))),
    pa.field("n_clips", pa.int32()),
    pa.field("dup_of_uri", pa.string()),  # byte-identical to an earlier video
]

CLIP_FIELDS = [
    pa.field("clip_id", pa.string()),
    pa.field("start_frame", pa.int64()),  # inclusive
    pa.field("end_frame", pa.int64()),  # exclusive
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("duration_clip_s", pa.float64()),
    pa.field("shot_index", pa.int32()),
    pa.field("shot_start_frame", pa.int64()),
    pa.field("shot_end_frame", pa.int64()),
    pa.field("start_sharpness", pa.float32()),  # Laplacian variance of the chosen first frame
]

# Video columns repeated on every clip row of the `clips` table, so clips can be queried alone.
CLIP_VIDEO_COLUMNS = ["video_id", "uri", "fps", "width", "height", "rotation"]

FAILURE_FIELDS = [
    pa.field("uri", pa.string()),
    pa.field("video_id", pa.string()),
    pa.field("clip_id", pa.string()),
    pa.field("stage", pa.string()),
    pa.field("kind", pa.string()),
    pa.field("message", pa.string()),
    pa.field("attempt", pa.int32()),
    pa.field("at", pa.timestamp("us", tz="UTC")),
    pa.field("resolved_at", pa.timestamp("us", tz="UTC")),  # set by `redrive` when a retry succeeded
]
FAILURES_SCHEMA = pa.schema(FAILURE_FIELDS)

ROW_BASE_FIELDS = [*VIDEO_FIELDS, *CLIP_FIELDS, pa.field("failures", pa.list_(FAILURE_ITEM))]


def row_schema(extra: list[pa.Field] = ()) -> pa.Schema:
    """The in-flight row schema: base fields plus the output fields of every scoring stage."""
    return pa.schema([*ROW_BASE_FIELDS, *extra])


def video_schema() -> pa.Schema:
    return pa.schema(VIDEO_FIELDS)


def clip_schema(extra: list[pa.Field] = ()) -> pa.Schema:
    by_name = {f.name: f for f in VIDEO_FIELDS}
    return pa.schema([CLIP_FIELDS[0], *(by_name[c] for c in CLIP_VIDEO_COLUMNS), *CLIP_FIELDS[1:], *extra])


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly `schema` from row dicts (missing keys become nulls)."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(cols, schema=schema)
