"""Export: a tier table pointing at videos whose frames encode their index, exported as WebDataset shards
(read back with `webdataset`, decoded with PyAV) and as a Parquet manifest; resume and bad sources."""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import synth
from curation.cli import main
from curation.errors import ConfigError
from curation.export import export_tier, tier_size
from curation.lake import Lake
from curation.video import VideoReader

N = 40  # frames per source video
FPS = 24.0
A_BOX, B_BOX = (0, 8, 96, 56), (4, 0, 60, 96)  # picture inside black bars (display pixels)


def level_a(i: int) -> int:
    return 10 + 6 * i


def level_b(i: int) -> int:
    return 240 - 5 * i


def _display_frames(w: int, h: int, box, level) -> list[np.ndarray]:
    frames = []
    for i in range(N):
        f = np.zeros((h, w, 3), np.uint8)
        f[box[1]:box[3], box[0]:box[2]] = level(i)
        frames.append(f)
    return frames


# clip_id, video, start, end, crop box, clarity, caption
CLIPS = [
    ("a0", "A", 0, 10, A_BOX, 11.5, {"summary": "a gray wall", "objects": ["wall"]}),
    ("a1", "A", 10, 25, (1, 8, 96, 56), 22.0, None),  # odd crop width 95: one pixel dropped
    ("a2", "A", 25, 40, A_BOX, float("nan"), {"summary": "darkness falls"}),
    ("b0", "B", 3, 17, B_BOX, 30.0, {"summary": "rotated"}),
    ("b1", "B", 20, 33, None, 31.0, None),  # no crop suggestion: the whole frame
]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("export_src")
    a, b = str(folder / "a.mp4"), str(folder / "b.mp4")
    synth.write_video(a, _display_frames(96, 64, A_BOX, level_a), fps=FPS)
    # stored 96x64 with a 90° display rotation: shown 64 wide, 96 tall
    synth.write_video(b, [np.ascontiguousarray(np.rot90(f, k=1)) for f in _display_frames(64, 96, B_BOX, level_b)],
                      fps=FPS, rotation=90)
    return {"A": a, "B": b}


def make_lake(root, videos: dict[str, str], tier: str = "x") -> Lake:
    dims = {"A": (96, 64, 0), "B": (64, 96, 90)}
    rows = []
    for cid, vid, s, e, box, clarity, caption in CLIPS:
        w, h, rot = dims[vid]
        rows.append({"clip_id": cid, "video_id": vid, "uri": videos[vid], "fps": FPS, "width": w, "height": h,
                     "rotation": rot, "start_frame": s, "end_frame": e, "start_s": s / FPS, "end_s": e / FPS,
                     "clarity": clarity, "camera_motion": "static", "is_duplicate": False,
                     "caption": None if caption is None else json.dumps(caption),
                     "caption_status": "ok" if caption else "skipped",
                     **dict(zip(("crop_x0", "crop_y0", "crop_x1", "crop_y1"), box or (None,) * 4))})
    schema = pa.schema([("clip_id", pa.string()), ("video_id", pa.string()), ("uri", pa.string()),
                        ("fps", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
                        ("rotation", pa.int16()), ("start_frame", pa.int64()), ("end_frame", pa.int64()),
                        ("start_s", pa.float64()), ("end_s", pa.float64()), ("clarity", pa.float32()),
                        ("camera_motion", pa.string()), ("is_duplicate", pa.bool_()), ("caption", pa.string()),
                        ("caption_status", pa.string()),
                        *[(c, pa.int32()) for c in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")]])
    lake = Lake(root)
    lake.overwrite(f"tiers/{tier}", pa.Table.from_pylist(rows, schema=schema))
    return lake


def read_shards(out) -> dict[str, dict]:
    import webdataset as wds

    urls = sorted(glob.glob(os.path.join(out, "shard-*.tar")))
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}


def decode(data: bytes) -> tuple[np.ndarray, float]:
    with av.open(io.BytesIO(data)) as c:
        rate = float(c.streams.video[0].average_rate)
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]), rate


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def nearest_source_frame(path: str, box, frame: np.ndarray, around: int) -> int:
    """Which source frame near `around` the exported frame shows (by mean level of the crop)."""
    x0, y0, x1, y1 = box or (0, 0, None, None)
    near = [k for k in (around - 1, around, around + 1) if 0 <= k < N]
    ref = VideoReader(path).read(near)[:, y0:y1, x0:x1].mean(axis=(1, 2, 3))
    assert abs(ref - frame.mean()).min() < 2.5
    return near[int(np.argmin(abs(ref - frame.mean())))]


def test_webdataset_shards_hold_the_cut_cropped_clips_and_their_metadata(tmp_path, videos):
    lake = make_lake(tmp_path / "lake", videos)
    out = tmp_path / "wds"
    summary = export_tier(str(tmp_path / "lake"), "x", "webdataset", str(out), shard_size=2, size=32, progress=False)
    assert (summary.shards, summary.shards_written, summary.clips_written, summary.failures) == (3, 3, 5, [])
    assert sorted(os.listdir(out)) == ["_export.json", "failures.jsonl", "manifest.parquet", "shard-000000.tar",
                                       "shard-000001.tar", "shard-000002.tar"]
    samples = read_shards(out)
    assert sorted(samples) == ["a0", "a1", "a2", "b0", "b1"]
    expect_size = {"a0": (64, 32), "a1": (64, 32), "a2": (64, 32), "b0": (32, 54), "b1": (32, 48)}
    version = lake.dataset("tiers/x").version
    for cid, vid, s, e, box, clarity, caption in CLIPS:
        frames, rate = decode(samples[cid]["mp4"])
        assert len(frames) == e - s and rate == FPS
        assert frames.shape[1:3] == expect_size[cid][::-1]
        assert nearest_source_frame(videos[vid], box, frames[0], s) == s  # not s ± 1 (5-6 levels off)
        assert nearest_source_frame(videos[vid], box, frames[-1], e - 1) == e - 1
        meta = json.loads(samples[cid]["json"])
        assert (meta["clip_id"], meta["video_id"], meta["uri"]) == (cid, vid, videos[vid])
        assert (meta["start_frame"], meta["end_frame"], meta["num_frames"]) == (s, e, e - s)
        assert (meta["width"], meta["height"]) == expect_size[cid]
        assert meta["caption"] == caption and meta["caption_status"] == ("ok" if caption else "skipped")
        assert meta["scores"]["clarity"] == (None if np.isnan(clarity) else pytest.approx(clarity))
        assert meta["scores"]["camera_motion"] == "static" and meta["scores"]["is_duplicate"] is False
        assert meta["tier"] == "x" and meta["provenance"]["table_version"] == version
        assert meta["provenance"]["lake"] == lake.root and meta["fps"] == FPS
    assert json.loads(samples["b1"]["json"])["crop"] == [0, 0, 64, 96]
    b0 = decode(samples["b0"]["mp4"])[0][0]
    assert b0.min() > level_b(3) - 8  # the pillarbox bars of the rotated source are cut away
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    where = {k: s["__url__"].rsplit("/", 1)[1] for k, s in samples.items()}
    assert {r["key"]: r["shard"] for r in manifest} == where
    assert {r["key"]: (r["width"], r["height"]) for r in manifest} == expect_size


def test_native_size_keeps_the_crop_with_even_dims(tmp_path, videos):
    make_lake(tmp_path / "lake", videos)
    export_tier(tmp_path / "lake", "x", "webdataset", tmp_path / "wds", shard_size=10, progress=False)
    samples = read_shards(tmp_path / "wds")
    assert {k: decode(s["mp4"])[0].shape[1:3] for k, s in samples.items()} == {
        "a0": (48, 96), "a1": (48, 94), "a2": (48, 96), "b0": (96, 56), "b1": (96, 64)}
    a1 = decode(samples["a1"]["mp4"])[0]
    assert nearest_source_frame(videos["A"], A_BOX, a1[0], 10) == 10 and a1[0].min() > level_a(10) - 8  # no bar


def test_parquet_manifest_and_cli(tmp_path, videos, capsys):
    lake = make_lake(tmp_path / "lake", videos, tier="360p")
    assert tier_size("360p") == 360 and tier_size("nope") is None
    rc = main(["export", "--lake", str(tmp_path / "lake"), "--tier", "360p", "--format", "parquet",
               "--out", str(tmp_path / "pq"), "--size", "32", "--no-progress"])
    assert rc == 0 and "written:      5 clips" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "pq")) == ["_export.json", "manifest.parquet"]
    table = pq.read_table(tmp_path / "pq" / "manifest.parquet")
    assert table.num_rows == 5
    assert set(lake.dataset("tiers/360p").schema.names) | {"export_width", "export_height"} == set(table.column_names)
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    assert (rows["b0"]["export_width"], rows["b0"]["export_height"]) == (32, 54)
    assert json.loads(rows["a0"]["caption"]) == CLIPS[0][6] and rows["a0"]["start_frame"] == 0
    assert json.loads(table.schema.metadata[b"videocurate.export"])["table"] == "tiers/360p"
    again = export_tier(tmp_path / "lake", "360p", "parquet", tmp_path / "pq", size=32, progress=False)
    assert (again.shards_skipped, again.clips_written) == (1, 0)


def test_rerun_writes_only_the_missing_shard_and_refuses_other_settings(tmp_path, videos):
    make_lake(tmp_path / "lake", videos)
    out = tmp_path / "wds"
    export_tier(tmp_path / "lake", "x", "webdataset", out, shard_size=2, progress=False)
    shards = sorted(glob.glob(str(out / "shard-*.tar")))
    before = {p: (os.stat(p).st_mtime_ns, open(p, "rb").read()) for p in shards}
    os.remove(shards[1])  # as if killed while writing it: its temp file and work folder are left behind
    open(shards[1] + ".tmp", "wb").write(b"half a tar")
    os.makedirs(out / ".work-dead")
    again = export_tier(tmp_path / "lake", "x", "webdataset", out, shard_size=2, progress=False)
    assert (again.shards_written, again.clips_written, again.shards_skipped, again.clips_skipped) == (1, 2, 2, 3)
    after = {p: (os.stat(p).st_mtime_ns, open(p, "rb").read()) for p in shards}
    assert after[shards[0]] == before[shards[0]] and after[shards[2]] == before[shards[2]]  # untouched
    old, new = (tar_members(data) for data in (before[shards[1]][1], after[shards[1]][1]))
    assert list(old) == list(new) == ["a2.mp4", "a2.json", "b0.mp4", "b0.json"]  # rewritten, the same content
    assert old["a2.json"] == new["a2.json"] and old["b0.json"] == new["b0.json"]
    for name in ("a2.mp4", "b0.mp4"):  # libx264 is not always bit-exact across runs: compare the pictures
        (a, _), (b, _) = decode(old[name]), decode(new[name])
        assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() < 0.5
    assert not glob.glob(str(out / "*.tmp")) and not glob.glob(str(out / ".work-*"))
    assert len(read_shards(out)) == 5
    with pytest.raises(ConfigError, match="size: None then, 32 now"):
        export_tier(tmp_path / "lake", "x", "webdataset", out, shard_size=2, size=32, progress=False)
    make_lake(tmp_path / "lake", videos)  # a new version of the tier
    with pytest.raises(ConfigError, match="table_version"):
        export_tier(tmp_path / "lake", "x", "webdataset", out, shard_size=2, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        export_tier(tmp_path / "lake", "x", "webdataset", tmp_path / "other", progress=False)


def test_a_bad_source_is_a_failure_and_the_rest_exports(tmp_path, videos):
    broken = tmp_path / "a.mp4"
    data = open(videos["A"], "rb").read()
    broken.write_bytes(data[: len(data) // 2])  # cut off: the index (moov) at the end is gone
    make_lake(tmp_path / "lake", {"A": str(broken), "B": videos["B"]})
    out = tmp_path / "wds"
    summary = export_tier(tmp_path / "lake", "x", "webdataset", out, shard_size=2, progress=False)
    assert summary.clips_written == 2 and sorted(f["clip_id"] for f in summary.failures) == ["a0", "a1", "a2"]
    assert {f["kind"] for f in summary.failures} == {"corrupt"}
    assert any("a0: corrupt: damaged mp4/mov" in line for line in summary.lines())
    assert sorted(read_shards(out)) == ["b0", "b1"]
    logged = [json.loads(line) for line in open(out / "failures.jsonl")]
    assert sorted(f["clip_id"] for f in logged) == ["a0", "a1", "a2"] and logged[0]["uri"] == str(broken)
    assert sorted(pq.read_table(out / "manifest.parquet").column("key").to_pylist()) == ["b0", "b1"]


def test_an_empty_clip_or_one_past_the_end_of_its_source_fails_alone(tmp_path, videos):
    lake = make_lake(tmp_path / "lake", videos)
    table = lake.dataset("tiers/x").to_table()
    end = table.column("end_frame").to_pylist()
    end[0], end[4] = 0, N + 5  # a0 is empty, b1 runs past the last frame
    lake.overwrite("tiers/x", table.set_column(table.schema.get_field_index("end_frame"), "end_frame",
                                               pa.array(end, pa.int64())))
    summary = export_tier(tmp_path / "lake", "x", "webdataset", tmp_path / "wds", progress=False)
    assert [(f["clip_id"], f["kind"]) for f in summary.failures] == [("a0", "too_short"), ("b1", "too_short")]
    assert sorted(read_shards(tmp_path / "wds")) == ["a1", "a2", "b0"]


def test_missing_tier_names_the_tiers_there(tmp_path, videos):
    make_lake(tmp_path / "lake", videos, tier="256p")
    with pytest.raises(ConfigError, match=r"no tier 'sft'.*tiers there: 256p"):
        export_tier(tmp_path / "lake", "sft", "webdataset", tmp_path / "wds", progress=False)
