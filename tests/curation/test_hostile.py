"""Hostile inputs (issue 14 item 7): symlink loops, a dangling symlink, a FIFO, folders and files the
pipeline may not read, names with a newline, a tab, a leading dash or bytes that are not UTF-8, files that
change while being read, and containers that claim 10^9 frames or 100,000 x 100,000 pixels. Each ends as
a clear failure row (or, for what is not a file, a problem line of the run summary), with nothing else
lost, in bounded time and memory.

The media are made here: small H.264 files from curation.synth, patched where a lie is wanted (an MP4
`stts` sample count, a Matroska `Duration`, a Y4M header's W/H — the only place those files say it, so
FFmpeg really reads the lie; each test checks that it does before checking the pipeline)."""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest

from curation import runner, synth
from curation.check import check_lake
from curation.errors import VideoError
from curation.lake import Lake
from curation.probe import ProbeStage
from curation.query import query
from curation.split import SplitStage
from curation.video import MAX_PIXELS, VideoReader, probe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FPS = 24
FRAMES = 96  # each made video: two shots of 48 frames (2 s, the default min_clip_s)


def _video(path: str, first: str = "coffee", second: str = "astronaut") -> str:
    synth.make_video(path, [synth.Shot(first, 48, pan=(1, 0)), synth.Shot(second, 48, pan=(0, 1))],
                     size=(160, 96), fps=FPS)
    return path


# ---- lies, made by patching real files -----------------------------------------------------------
def mp4_boxes(data: bytes, start: int = 0, end: int | None = None, path: tuple = ()):
    """(path of box types, offset, header length, size) of every MP4 box, depth first."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[start + 8:start + 16])[0], 16
        elif size == 0:
            size = end - start
        yield (*path, kind), start, header, size
        if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"):
            yield from mp4_boxes(data, start + header, start + size, (*path, kind))
        start += size


def mp4_claiming_frames(src: str, dst: str, frames: int = 10**9) -> None:
    """Copy an MP4 whose time-to-sample table (`stts`, one entry: every frame the same duration) then says
    `frames` samples: FFmpeg reports that as the stream's frame count (it holds FRAMES)."""
    data = bytearray(open(src, "rb").read())
    (at, header), = [(pos, hdr) for p, pos, hdr, _ in mp4_boxes(data) if p[-1] == b"stts"]
    body = at + header
    assert struct.unpack(">I", data[body + 4:body + 8])[0] == 1  # one (count, delta) entry
    data[body + 8:body + 12] = struct.pack(">I", frames)
    open(dst, "wb").write(data)


def mkv_claiming_duration(src: str, dst: str, frames: int = 10**9) -> None:
    """Copy a Matroska file whose Segment Info `Duration` (element 0x4489, a float in TimecodeScale units,
    ms as FFmpeg writes them) then says `frames` frames at FPS; without a frame count in the container,
    FFmpeg's duration x fps is the count."""
    data = bytearray(open(src, "rb").read())
    at = data.index(b"\x44\x89")
    assert data[at + 2] == 0x88, "an 8-byte float"
    data[at + 3:at + 11] = struct.pack(">d", frames / FPS * 1000)
    open(dst, "wb").write(data)


def y4m_claiming_size(path: str, width: int, height: int, frames: int = 3) -> None:
    """A YUV4MPEG2 stream whose header says width x height, with a few 16x16 frames of data: the header
    is all FFmpeg knows of the size."""
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + bytes(16 * 16 * 3 // 2))


# ---- the hostile folder, run once through the real pipeline -------------------------------------
NAMES = {"newline": "new\nline.mp4", "tab": "tab\there.mp4", "dash": "-dash.mp4",
         "quote": "it's \"quoted\" %d.mp4"}
LATIN1 = b"caf\xe9.mp4"  # a Latin-1 name: not UTF-8


def make_hostile(folder: str, outside: str) -> dict[str, str]:
    """Write the hostile folder; return {case: path}."""
    p = lambda *parts: os.path.join(folder, *parts)  # noqa: E731
    for sub in ("loops", "names", "lies", "changing"):
        os.makedirs(p(sub))
    made = {"good": _video(p("good.mp4"))}
    # symlinks: a loop of two file links, a dangling link, a link to a real file outside, folder loops
    os.symlink("b.mp4", p("loops", "a.mp4"))
    os.symlink("a.mp4", p("loops", "b.mp4"))
    os.symlink("missing.mp4", p("loops", "dangling.mp4"))
    made["outside"] = _video(os.path.join(outside, "real.mp4"), "chelsea", "rocket")
    os.symlink(made["outside"], p("loops", "outside.mp4"))
    os.makedirs(p("loops", "sub"))
    made["nested"] = _video(p("loops", "sub", "nested.mp4"), "hubble_deep_field", "camera")
    os.symlink("..", p("loops", "sub", "up"))  # a folder symlink to its parent
    os.symlink(".", p("loops", "self"))  # and to itself
    os.mkfifo(p("loops", "fifo.mp4"))  # opening it would block for ever
    # odd names
    for i, (case, name) in enumerate(NAMES.items()):
        made[case] = _video(p("names", name), synth.PHOTOS[4 + i], synth.PHOTOS[9 + i])
    shutil.copy(made["good"], os.fsencode(p("names")) + b"/" + LATIN1)
    # metadata lies
    src, mkv = _video(p("src.mp4"), "moon", "coffee"), p("src.mkv")
    subprocess.run([_ffmpeg(), "-v", "error", "-i", src, "-c", "copy", mkv], check=True)
    made["frames_1e9"] = p("lies", "frames_1e9.mp4")
    mp4_claiming_frames(src, made["frames_1e9"])
    made["duration_1e9"] = p("lies", "duration_1e9.mkv")
    mkv_claiming_duration(mkv, made["duration_1e9"])
    os.remove(src)
    os.remove(mkv)
    made["px_1e10"] = p("lies", "huge_100000x100000.y4m")
    y4m_claiming_size(made["px_1e10"], 100_000, 100_000)
    made["px_2.6e8"] = p("lies", "big_16000x16000.y4m")
    y4m_claiming_size(made["px_2.6e8"], 16_000, 16_000)
    # files that change after discovery (see _changing)
    made["grows"] = _video(p("changing", "grows.mp4"), "coins", "brick")
    made["shrinks"] = _video(p("changing", "shrinks.mp4"), "clock", "grass")
    made["rewritten"] = _video(p("changing", "rewritten.mp4"), "gravel", "cell")
    return made


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _changing(made: dict[str, str]) -> None:
    """What happens to the `changing` files between discovery and the probe: one grows (a download still
    being written), one is cut short, one is rewritten with the same bytes (same size, newer mtime)."""
    with open(made["grows"], "ab") as f:
        f.write(bytes(4096))
    with open(made["shrinks"], "r+b") as f:
        f.truncate(os.path.getsize(made["shrinks"]) // 2)
    data = open(made["rewritten"], "rb").read()
    st = os.stat(made["rewritten"])
    with open(made["rewritten"], "wb") as f:
        f.write(data)
    os.utime(made["rewritten"], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _snapshot(lake: Lake) -> SimpleNamespace:
    videos = {r["uri"]: r for r in query(lake, "select * from videos").to_pylist()}
    failures: dict[str, list[dict]] = {}
    for r in query(lake, "select uri, stage, kind, message from failures").to_pylist():
        failures.setdefault(r["uri"], []).append(r)
    return SimpleNamespace(videos=videos, failures=failures,
                           kinds={u: {f["kind"] for f in fs} for u, fs in failures.items()})


def _run_bounded(folder: str, lake: Lake, seconds: float):
    """run_pipeline with a watchdog: a hang dumps every thread's stack and ends the test process."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        t0 = time.monotonic()
        summary = runner.run_pipeline("default", [folder], lake, num_cpus=2, progress=False)
        return summary, time.monotonic() - t0
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, ray_local):
    folder = str(tmp_path_factory.mktemp("hostile"))
    made = make_hostile(folder, str(tmp_path_factory.mktemp("outside")))
    lake = Lake(str(tmp_path_factory.mktemp("lake") / "lake"))
    real = runner.discover

    def discover_then_change(*args, **kwargs):
        found = real(*args, **kwargs)
        _changing(made)
        return found

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "discover", discover_then_change)
        summary, seconds = _run_bounded(folder, lake, 240)
    return SimpleNamespace(folder=folder, made=made, lake=lake, summary=summary, seconds=seconds,
                           **vars(_snapshot(lake)))


def _uri(path: str) -> str:
    return os.path.abspath(path)


def test_every_hostile_input_ends_as_a_row(hostile):
    """Every name in the folder (links, the FIFO and the non-UTF-8 name included) has a `videos` row;
    each failed one a failure row; the lake's invariants hold; the run finished in bounded time."""
    loops = os.path.join(hostile.folder, "loops")
    expected = {_uri(p) for p in hostile.made.values() if p.startswith(hostile.folder)}
    expected |= {os.path.join(loops, n) for n in ("a.mp4", "b.mp4", "dangling.mp4", "outside.mp4", "fifo.mp4")}
    expected.add(os.path.join(hostile.folder, "names", "caf\\xe9.mp4"))  # the stand-in uri
    assert set(hostile.videos) == expected
    for uri, v in hostile.videos.items():
        assert v["status"] in ("ok", "failed"), uri
        if v["status"] == "failed":
            assert hostile.failures.get(uri), uri
    assert not check_lake(hostile.lake)
    assert hostile.seconds < 240


def test_symlink_loops_terminate_and_are_reported(hostile):
    """Folder symlinks back to a folder being walked are problem lines, not followed (the walk visits each
    real folder once); a file symlink loop and a dangling symlink are failure rows; a symlink to a real
    file outside the input folder is followed (uri: the link's path)."""
    loops = os.path.join(hostile.folder, "loops")
    lines = [p for p in hostile.summary.problems if p.startswith("symlink loop")]
    assert sorted(lines) == sorted([
        f"symlink loop: {loops}/self -> . leads back to {loops}, a folder being walked; not followed",
        f"symlink loop: {loops}/sub/up -> .. leads back to {loops}, a folder being walked; not followed"])
    assert "warning: " + lines[0] in hostile.summary.lines()
    assert hostile.kinds[f"{loops}/a.mp4"] == hostile.kinds[f"{loops}/b.mp4"] == {"symlink_loop"}
    assert "symlink loop" in hostile.videos[f"{loops}/a.mp4"]["error"]
    assert hostile.kinds[f"{loops}/dangling.mp4"] == {"broken_symlink"}
    assert "'missing.mp4' does not exist" in hostile.videos[f"{loops}/dangling.mp4"]["error"]
    assert hostile.kinds[f"{loops}/fifo.mp4"] == {"not_a_file"}
    assert "FIFO" in hostile.videos[f"{loops}/fifo.mp4"]["error"]
    nested = [u for u in hostile.videos if u.endswith("nested.mp4")]
    assert nested == [hostile.made["nested"]]  # once, not again under self/ or sub/up/
    for case in ("nested", "outside"):
        uri = hostile.made[case] if case == "nested" else f"{loops}/outside.mp4"
        assert hostile.videos[uri]["status"] == "ok" and hostile.videos[uri]["n_clips"] == 2, case
    assert hostile.made["outside"] not in hostile.videos  # the target is not walked, only the link


def test_discovery_walks_each_real_folder_once(tmp_path):
    """Folder symlinks are followed (one to a folder outside the input too), each real folder walked once:
    loops and a second link to a walked folder are problem lines. A `**` glob over the same tree ends and
    finds each file once (Python's glob follows the two loops here for ever: 100,000 matches in 8 s and
    counting). The walk is iterative: 1,100 nested folders are no problem."""
    from curation.inputs import discover

    root, outside = tmp_path / "in", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for f in (root / "a.mp4", root / "sub" / "b.mp4", outside / "c.mp4"):
        f.write_bytes(b"x")
    os.symlink(".", root / "self")
    os.symlink("..", root / "sub" / "up")
    os.symlink(outside, root / "ext")
    os.symlink(outside, root / "ext2")
    deep = str(root)
    for _ in range(1100):  # os.makedirs itself recurses too deep for this
        deep = os.path.join(deep, "d")
        os.mkdir(deep)
    open(os.path.join(deep, "deep.mp4"), "wb").close()
    want = {f"{root}/a.mp4", f"{root}/sub/b.mp4", f"{root}/ext/c.mp4", f"{deep}/deep.mp4"}
    lines = [f"{root}/ext2 -> {outside} is the folder {root}/ext again; walked once",
             f"symlink loop: {root}/self -> . leads back to {root}, a folder being walked; not followed",
             f"symlink loop: {root}/sub/up -> .. leads back to {root}, a folder being walked; not followed"]
    try:
        for given in ([str(root)], [f"{root}/**/*.mp4"]):
            t0 = time.monotonic()
            files, problems = discover(given)
            assert time.monotonic() - t0 < 10
            assert {f.uri for f in files} == want and sorted(problems) == lines, given
        files, _ = discover([f"{root}/**/sub"])  # a folder that matches: what is under it
        assert {f.uri for f in files} == {f"{root}/sub/b.mp4"}
    finally:  # bottom up: pytest's clean-up (and the lake check's rglob) recurse too deep for it
        os.remove(os.path.join(deep, "deep.mp4"))
        while deep != str(root):
            os.rmdir(deep)
            deep = os.path.dirname(deep)


def test_odd_names_round_trip(hostile):
    """A newline, a tab, a leading dash, quotes and a printf pattern in a name: processed like any file,
    the uri stored exactly (and found again by SQL). A name that is not UTF-8 cannot be a uri (Arrow and
    Lance keep UTF-8): it is listed under a stand-in with \\x escapes and fails `bad_file_name`."""
    for case in NAMES:
        uri = hostile.made[case]
        v = hostile.videos[uri]
        assert v["status"] == "ok" and v["n_clips"] == 2 and v["frame_count"] == FRAMES, case
        quoted = uri.replace("'", "''")
        assert query(hostile.lake, f"select count(*) as n from clips where uri = '{quoted}'").to_pylist() == [{"n": 2}]
    stand_in = os.path.join(hostile.folder, "names", "caf\\xe9.mp4")
    assert hostile.kinds[stand_in] == {"bad_file_name"}
    assert "not valid UTF-8 (b'caf\\xe9.mp4')" in hostile.videos[stand_in]["error"]


def test_files_changed_after_discovery_fail_then_are_read_again(hostile):
    """A file whose size or mtime moved between discovery and the probe fails `changed_during_read`, the
    message giving both stats; the row keeps the discovery stat, so the next run takes the file again (its
    stat is new) and reads it as it now is, while every unchanged input is skipped."""
    for case in ("grows", "shrinks", "rewritten"):
        uri = hostile.made[case]
        assert hostile.kinds[uri] == {"changed_during_read"}, case
        now = os.stat(uri)
        msg = hostile.videos[uri]["error"]
        seen = (hostile.videos[uri]["size_bytes"], hostile.videos[uri]["mtime_ns"])
        assert f"at discovery size_bytes={seen[0]} mtime_ns={seen[1]}" in msg
        assert f"when probed size_bytes={now.st_size} mtime_ns={now.st_mtime_ns}" in msg
    summary, seconds = _run_bounded(hostile.folder, hostile.lake, 240)
    assert summary.inputs - summary.skipped == 3 and seconds < 240
    after = _snapshot(hostile.lake)
    rows = query(hostile.lake, "select uri, status, mtime_ns from videos where uri like '%/changing/%' "
                 "order by uri, mtime_ns").to_pylist()
    final = {r["uri"]: r["status"] for r in rows if r["mtime_ns"] == os.stat(r["uri"]).st_mtime_ns}
    assert final == {hostile.made["grows"]: "ok", hostile.made["rewritten"]: "ok",
                     hostile.made["shrinks"]: "failed"}
    assert "corrupt" in {f["kind"] for f in after.failures[hostile.made["shrinks"]]}  # half an MP4: no moov
    assert not check_lake(hostile.lake)


def test_metadata_lies_end_as_rows(hostile):
    """10^9 frames claimed (an MP4 `stts` count, a Matroska duration): the claim is dropped with an
    `implausible_metadata` warning row and the video is processed from what decodes (96 frames, 2 clips).
    100,000 x 100,000 and 16,000 x 16,000 pixels: `too_large`, refused before a frame is decoded."""
    for case in ("frames_1e9", "duration_1e9"):
        v = hostile.videos[hostile.made[case]]
        assert v["status"] == "ok" and v["frame_count"] == FRAMES and v["n_clips"] == 2, case
        assert v["duration_s"] == pytest.approx(FRAMES / FPS)
        assert hostile.kinds[hostile.made[case]] == {"implausible_metadata"}, case
    for case, size in (("px_1e10", "100000x100000"), ("px_2.6e8", "16000x16000")):
        v = hostile.videos[hostile.made[case]]
        assert v["status"] == "failed" and hostile.kinds[hostile.made[case]] == {"too_large"}, case
        assert f"frame size {size}" in v["error"]


def test_ffmpeg_reads_the_lies(hostile):
    """The patched files lie to FFmpeg itself (else the tests above would prove nothing)."""
    import av

    av.logging.set_level(av.logging.PANIC)  # as curation.video does: FFmpeg's last error is kept on the error
    try:
        with av.open(hostile.made["frames_1e9"]) as c:
            assert c.streams.video[0].frames == 10**9
        with av.open(hostile.made["duration_1e9"]) as c:
            assert c.duration / 1e6 * FPS == pytest.approx(1e9, rel=1e-3)
        with av.open(hostile.made["px_2.6e8"]) as c:
            assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (16000, 16000)
        with pytest.raises(av.error.FFmpegError) as err:
            av.open(hostile.made["px_1e10"])
        assert "Picture size 100000x100000 is invalid" in err.value.log[2]  # FFmpeg's own limit, 2^28 pixels
    finally:
        av.logging.set_level(None)  # as curation.video does after opening (the callback can deadlock decoders)


# ---- bounded memory: the stages' own code in a subprocess under an address-space limit --------------
BOUNDED = textwrap.dedent("""
    import json, resource, sys, time
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from curation.probe import ProbeStage
    from curation.split import SplitStage
    out = {}
    for path in sys.argv[2:]:
        t0 = time.monotonic()
        st = __import__("os").stat(path)
        row = ProbeStage().probe_row({"uri": path, "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
                                      "failures": []})
        rows = SplitStage().split_row(row)
        out[path] = {"status": rows[0]["status"], "kinds": sorted({f["kind"] for f in rows[0]["failures"]}),
                     "frames": rows[0].get("frame_count"), "clips": sum(r.get("clip_id") is not None for r in rows),
                     "seconds": time.monotonic() - t0}
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out))
""")


def test_metadata_lies_stay_bounded_in_memory(tmp_path):
    """The probe and the split stage's decode of every lie, in one process limited to 3 GiB of address
    space: each ends as its row, peak RSS under 2 GiB (about 0.2 GiB is seen), within the timeout. (Before,
    decord took the Matroska claim and died of std::bad_alloc: in the pipeline a lost worker.)"""
    made = {"good": _video(str(tmp_path / "good.mp4"))}
    src, mkv = _video(str(tmp_path / "src.mp4"), "moon", "coffee"), str(tmp_path / "src.mkv")
    subprocess.run([_ffmpeg(), "-v", "error", "-i", src, "-c", "copy", mkv], check=True)
    made["frames_1e9"], made["duration_1e9"] = str(tmp_path / "f.mp4"), str(tmp_path / "d.mkv")
    mp4_claiming_frames(src, made["frames_1e9"])
    mkv_claiming_duration(mkv, made["duration_1e9"])
    for name, (w, h) in {"px_1e10": (100_000, 100_000), "px_2.6e8": (16_000, 16_000), "wide": (60_000, 16),
                         "limit": (16_384, 8_200)}.items():
        made[name] = str(tmp_path / f"{name}.y4m")
        y4m_claiming_size(made[name], w, h)
    assert 16_384 * 8_200 > MAX_PIXELS
    proc = subprocess.run([sys.executable, "-c", BOUNDED, str(3 << 30), *made.values()], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out[made["good"]] == {**out[made["good"]], "status": "ok", "kinds": [], "frames": FRAMES, "clips": 2}
    for case in ("frames_1e9", "duration_1e9"):
        r = out[made[case]]
        assert (r["status"], r["kinds"], r["frames"], r["clips"]) == ("ok", ["implausible_metadata"], FRAMES, 2)
    for case in ("px_1e10", "px_2.6e8", "wide", "limit"):
        assert (out[made[case]]["status"], out[made[case]]["kinds"]) == ("failed", ["too_large"]), case
    assert out["peak_rss_bytes"] < 2 << 30, out


# ---- permissions: for real, checked by the kernel -------------------------------------------------
UNPRIVILEGED = textwrap.dedent("""
    import json, sys
    from curation.inputs import discover
    from curation.probe import ProbeStage
    files, problems = discover([sys.argv[1]])
    rows = [ProbeStage().probe_row({"uri": f.uri, "size_bytes": f.size_bytes, "mtime_ns": f.mtime_ns,
                                    "failures": []}) for f in files]
    print(json.dumps({"problems": problems, "rows": {r["uri"]: [r["status"], [f["kind"] for f in r["failures"]],
                                                                 r.get("error")] for r in rows}}))
""")


def _without_dac_override() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so a
    root process gets neither after exec and the kernel checks permissions on it as on anyone: on files
    root owns, the owner's bits (0 here). (Dropping to `nobody` would lock it out of this interpreter.)"""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_folder_and_file_are_reported_and_the_rest_goes_on(tmp_path):
    """A folder without read permission is a problem line ("cannot read directory ...: Permission
    denied"); a file without read permission a `permission_denied` row; the readable video next to them is
    probed as usual. Run for real: discovery and the probe stage in a subprocess for which the kernel checks
    permissions (root, which the tests run as, would read anything: it runs without the capabilities that
    let it)."""
    folder = str(tmp_path / "perm")
    os.makedirs(folder)
    good = _video(os.path.join(folder, "good.mp4"))
    secret = shutil.copy(good, os.path.join(folder, "secret.mp4"))
    locked = os.path.join(folder, "locked")
    os.makedirs(locked)
    _video(os.path.join(locked, "inside.mp4"), "rocket", "coffee")
    os.chmod(secret, 0o000)
    os.chmod(locked, 0o000)
    try:
        proc = subprocess.run([sys.executable, "-c", UNPRIVILEGED, folder], capture_output=True, text=True, timeout=60,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                              preexec_fn=_without_dac_override if os.geteuid() == 0 else None)
    except subprocess.SubprocessError as exc:  # no CAP_SETPCAP to drop them with
        pytest.skip(f"cannot run a subprocess that permissions apply to: {exc}")
    finally:
        os.chmod(locked, 0o755)
        os.chmod(secret, 0o644)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["problems"] == [f"cannot read directory {locked}: Permission denied"]
    assert out["rows"][good][:2] == ["ok", []]
    assert out["rows"][secret][:2] == ["failed", ["permission_denied"]]
    assert "may not read" in out["rows"][secret][2]
    assert set(out["rows"]) == {good, secret}


# ---- a file that changes under the split stage, or mid-decode ------------------------------------------
def test_file_cut_short_between_probe_and_split(tmp_path):
    """Probed whole, then truncated before the split stage decodes it: `changed_during_read`, not the clips
    of half a file (the reader checks the file against the probe's size and mtime before decoding)."""
    path = _video(str(tmp_path / "v.mp4"))
    st = os.stat(path)
    row = ProbeStage().probe_row({"uri": path, "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "failures": []})
    assert row["status"] == "ok"
    with open(path, "r+b") as f:
        f.truncate(st.st_size * 2 // 3)
    rows = SplitStage().split_row(row)
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    assert [f["kind"] for f in rows[0]["failures"]] == ["changed_during_read"]
    assert f"when probed size_bytes={st.st_size}" in rows[0]["error"]


def test_file_changing_during_decode_is_refused_at_the_end(tmp_path):
    """A file rewritten while its frames stream out: the reader notices when the stream ends (and a random
    read before or after its decode), so no stage keeps frames of two different files."""
    path = _video(str(tmp_path / "v.mp4"))
    info = probe(path)
    frames = VideoReader(path, info=info).iter_frames((80, 48))
    assert [next(frames).shape for _ in range(10)][-1] == (48, 80, 3)
    os.utime(path, ns=(info.mtime_ns, info.mtime_ns + 1))  # e.g. the same bytes copied over it again
    with pytest.raises(VideoError) as err:
        list(frames)
    assert err.value.kind == "changed_during_read" and "after decoding" in str(err.value)
    with pytest.raises(VideoError, match="before decoding"):
        VideoReader(path, info=info).read([0, 5])
