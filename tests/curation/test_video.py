"""Probe and decode: both backends agree, rotation is applied, bad files raise typed errors."""

from __future__ import annotations

import numpy as np
import pytest

from curation import synth
from curation.errors import VideoError
from curation.video import VideoInfo, VideoReader, fit_size, header_rate, i420_luma, i420_to_rgb, probe


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "pan.mp4"
    return synth.make_video(path, [synth.Shot("astronaut", 40, pan=(2, 0)), synth.Shot("coffee", 30)],
                            size=(160, 96), fps=25)


def test_probe_reports_stream_facts(clip):
    info = probe(clip.path)
    assert (info.width, info.height, info.codec, info.rotation) == (160, 96, "h264", 0)
    assert info.fps == pytest.approx(25)
    assert info.frame_count == 70
    assert info.duration_s == pytest.approx(70 / 25, abs=0.05)
    assert info.size_bytes > 0 and not info.has_audio
    assert info.vfr is False  # one frame interval throughout (tests/curation/test_vfr.py: the other kind)


def test_info_from_a_row_keeps_vfr(clip):
    info = probe(clip.path)
    row = {"uri": info.path, **{k: v for k, v in info.as_dict().items() if k not in ("path", "notes")}}
    assert VideoInfo.from_row(row) == info
    assert VideoInfo.from_row({**row, "vfr": True}).vfr is True
    assert VideoInfo.from_row({k: v for k, v in row.items() if k != "vfr"}).vfr is None  # an older lake: unknown


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_stream_every_frame_at_analysis_size(clip, backend):
    frames = list(VideoReader(clip.path, backend=backend).iter_frames((80, 48)))
    assert len(frames) == 70
    assert frames[0].shape == (48, 80, 3) and frames[0].dtype == np.uint8


def test_backends_agree_on_random_access(clip):
    idx = [0, 69, 5, 40, 40]
    a = VideoReader(clip.path, backend="decord").read(idx, (80, 48)).astype(int)
    b = VideoReader(clip.path, backend="pyav").read(idx, (80, 48)).astype(int)
    assert a.shape == (5, 48, 80, 3)
    assert np.abs(a - b).mean() < 3  # same frames (scalers differ by a few levels)
    # frame 40 is in the second shot (coffee), frame 5 in the first: they must differ a lot
    assert np.abs(a[3] - a[2]).mean() > 20


def test_stream_matches_random_access(clip):
    frames = list(VideoReader(clip.path, backend="pyav").iter_frames((80, 48)))
    picked = VideoReader(clip.path, backend="pyav").read([3, 50], (80, 48))
    assert np.array_equal(frames[3], picked[0]) and np.array_equal(frames[50], picked[1])


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_rotation_is_applied(tmp_path, backend):
    img = synth.photo("astronaut")[:96, :160]
    path = tmp_path / "rot.mp4"
    synth.write_video(path, [img] * 5, rotation=90, crf=10)
    info = probe(path)
    assert (info.rotation, info.width, info.height) == (90, 96, 160)
    frame = VideoReader(path, backend=backend).read([2])[0].astype(int)
    assert frame.shape == (160, 96, 3)
    expected = np.rot90(img, k=-1).astype(int)  # clockwise
    assert np.abs(frame - expected).mean() < 6
    assert np.abs(frame - np.rot90(img, k=1)).mean() > 20
    small = VideoReader(path, backend=backend).read([1], (48, 80))[0]
    assert small.shape == (80, 48, 3)


@pytest.mark.parametrize("rotation", [0, 90])
def test_i420_luma_is_the_grey_of_the_rgb_picture(tmp_path, rotation):
    """The grey scorers' luma straight from the Y plane equals the grey of the RGB picture made from the
    same planes (to a level, bar saturated colours), in display orientation."""
    import cv2

    img = synth.photo("astronaut")[:96, :160]
    path = tmp_path / f"rot{rotation}.mp4"
    synth.write_video(path, [img] * 3, rotation=rotation, crf=10)
    reader = VideoReader(path)
    size = (reader.info.width // 2, reader.info.height // 2)
    planes = reader.read_i420([1], size)[0]
    luma, grey = i420_luma(planes, rotation), cv2.cvtColor(i420_to_rgb(planes, rotation), cv2.COLOR_RGB2GRAY)
    assert luma.shape == grey.shape == (size[1], size[0])
    diff = np.abs(luma.astype(int) - grey)
    assert diff.mean() < 0.5 and np.mean(diff <= 1) > 0.98
    assert np.abs(luma.astype(int) - np.rot90(grey, 2)).mean() > 10  # the orientation matters
    rgb = reader.read([1], size)[0]
    assert np.abs(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int) - luma).mean() < 2  # the RGB read's grey


def test_fit_size_keeps_aspect_and_even():
    assert fit_size(1920, 1080, target_width=256) == (256, 144)
    assert fit_size(100, 60, target_width=256) == (100, 60)  # never upscales
    assert fit_size(1080, 1920, max_side=320) == (180, 320)


def test_bad_files_raise_typed_errors(bad_folder, tmp_path):
    folder, made = bad_folder
    expected = {"empty.mp4": "empty_file", "random.mp4": "not_a_video", "image.mp4": "not_a_video",
                "audio_only.mp4": "audio_only", "no_moov.mp4": "corrupt"}
    for name, kind in expected.items():
        with pytest.raises(VideoError) as err:
            probe(f"{folder}/{name}")
        assert err.value.kind == kind, name
        assert name in str(err.value)
    with pytest.raises(VideoError) as err:
        probe(tmp_path / "missing.mp4")
    assert err.value.kind == "not_found"
    with pytest.raises(VideoError) as err:
        probe(folder + "/folder.mp4")
    assert err.value.kind == "not_a_file"


def test_header_rate_states_seconds_and_pixels_without_decoding_and_zero_for_what_does_not_open(
        clip, bad_folder, tmp_path):
    """What the local executor orders videos by (curation.runner.expected_work)."""
    import os

    seconds, pixels = header_rate(clip.path)
    assert seconds == pytest.approx(70 / 25, abs=0.05) and pixels == pytest.approx(160 * 96 * 25)
    folder, _ = bad_folder
    for name in ("empty.mp4", "random.mp4", "audio_only.mp4", "no_moov.mp4", "folder.mp4", "missing.mp4"):
        assert header_rate(f"{folder}/{name}") == (0.0, 0.0), name
    os.mkfifo(tmp_path / "pipe.mp4")  # opening a FIFO would wait for a writer
    assert header_rate(str(tmp_path / "pipe.mp4")) == (0.0, 0.0)


def test_truncated_file_decodes_what_it_has(bad_folder):
    folder, _ = bad_folder
    info = probe(f"{folder}/truncated.mp4")
    frames = list(VideoReader(info.path).iter_frames((80, 48)))
    assert 10 < len(frames) < info.frame_count


@pytest.mark.parametrize("name,codec", [("c.mp4", "libx264"), ("c.mkv", "libx264"), ("c.webm", "libvpx"),
                                        ("c.avi", "mpeg4")])
def test_decord_is_frame_exact_where_trusted(tmp_path, name, codec):
    # every frame differs (a fast pan), so an off-by-one read shows
    truth = synth.make_video(tmp_path / name, [synth.Shot("astronaut", 90, pan=(3, 1))], size=(160, 96),
                             codec=codec, bit_rate=3_000_000)
    idx = [0, 37, 38, 89, 12]
    a = VideoReader(truth.path, backend="decord").read(idx, (80, 48)).astype(int)
    b = VideoReader(truth.path, backend="pyav").read(idx, (80, 48)).astype(int)
    diffs = [np.abs(x - y).mean() for x, y in zip(a, b)]
    assert max(diffs) < 4, diffs
    assert np.abs(a[1] - a[2]).mean() > 2 * max(diffs)  # neighbouring frames are told apart


def test_mpeg_ts_goes_through_pyav(tmp_path):
    truth = synth.make_video(tmp_path / "t.ts", [synth.Shot("coffee", 30)], size=(160, 96), fps=25,
                             codec="mpeg2video", bit_rate=2_000_000)
    assert VideoReader(truth.path)._decord is None


def test_edit_list_trimmed_mp4_counts_like_ffmpeg(tmp_path):
    import media

    src = synth.make_video(tmp_path / "src.mp4", [synth.Shot("astronaut", 48, pan=(3, 0)),
                                                  synth.Shot("coffee", 48, pan=(0, 2))], size=(160, 96))
    cut = str(tmp_path / "cut.mp4")
    media._run("-ss", "0.5", "-i", src.path, "-c", "copy", cut)  # starts mid-GOP: an edit list trims 12
    frames = list(VideoReader(cut).iter_frames((80, 48)))
    assert len(frames) == 84  # what FFmpeg presents (decord alone would say 96, padding the tail)
    first = VideoReader(src.path, backend="pyav").read([12], (80, 48))[0].astype(int)
    assert np.abs(frames[0].astype(int) - first).mean() < 4


def _ffmpeg_frames(path: str) -> int:
    """How many frames the ffmpeg CLI decodes from `path`."""
    import re
    import subprocess

    import media

    out = subprocess.run([media.ffmpeg(), "-i", path, "-map", "0:v", "-f", "null", "-"], capture_output=True,
                         text=True).stderr
    return int(re.findall(r"frame=\s*(\d+)", out)[-1])


CONTAINERS = [  # (file, ffmpeg encoder arguments, frame rate)
    ("theora.ogg", ["-c:v", "libtheora", "-q:v", "6"], "30000/1001"),
    ("sorenson.flv", ["-c:v", "flv"], "25"),
    ("h263.3gp", ["-c:v", "h263", "-s", "176x144"], "15"),
    ("mpeg2.mpg", ["-c:v", "mpeg2video", "-f", "vob"], "25"),
    ("vp9.webm", ["-c:v", "libvpx-vp9", "-b:v", "200k", "-deadline", "realtime"], "25"),
    ("av1.mkv", ["-c:v", "libaom-av1", "-cpu-used", "8", "-b:v", "100k"], "24"),
]


@pytest.mark.parametrize("name,args,rate", CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_every_container_decodes_every_frame_ffmpeg_decodes(tmp_path, name, args, rate):
    import media

    path = str(tmp_path / name)
    media._run("-f", "lavfi", "-i", f"testsrc2=size=160x96:rate={rate}:duration=3", *args, path)
    info = probe(path)
    n = sum(1 for _ in VideoReader(path, info=info).iter_frames((64, 40)))
    assert n == _ffmpeg_frames(path) and abs(info.frame_count - n) <= 2


def test_theora_repeated_frames_do_not_end_the_video(tmp_path):
    """Theora in Ogg writes a zero-length packet for "the previous frame again" (still scenes). PyAV took
    the first one as end of stream: a held-aside 249-frame film read as 56 frames and `truncated`."""
    import media

    src, path = str(tmp_path / "src.ogg"), str(tmp_path / "repeats.ogg")
    media._run("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=30000/1001:duration=4", "-c:v", "libtheora", src)
    assert media.ogg_with_repeats(src, path, set(range(30, 40)) | {80}) == 11
    assert _ffmpeg_frames(path) == _ffmpeg_frames(src) - 11  # ffmpeg drops the repeats, and goes on
    info = probe(path)
    frames = list(VideoReader(path, info=info).iter_frames((64, 40)))
    assert len(frames) == _ffmpeg_frames(src)  # every frame, repeats shown as the previous picture again
    same = [i for i in range(1, len(frames)) if np.array_equal(frames[i], frames[i - 1])]
    assert same == [*range(30, 40), 80]
    picked = VideoReader(path, info=info).read([29, 35, 41, 80, 110], size=(64, 40))
    assert all(np.array_equal(p, frames[i]) for p, i in zip(picked, [29, 35, 41, 80, 110]))


def test_exact_halving_is_swscales_area_average(tmp_path):
    """A YUV 4:2:0 frame scaled to exactly half its size (a 720p source's 640 px samples) goes through
    OpenCV's 2x2 mean: swscale's area-averaged luma bit for bit, chroma within a few levels at colour edges
    (swscale sites chroma samples its own way); other sizes and formats still go through swscale."""
    import av
    from av.video.reformatter import VideoReformatter

    from curation.video import _scaler

    path = tmp_path / "half.mp4"
    synth.make_video(path, [synth.Shot("astronaut", 4, pan=(2, 0))], size=(320, 180), fps=25)
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
    ours = _scaler((160, 90), "yuv420p", "AREA")(frame).to_ndarray().astype(int)
    theirs = VideoReformatter().reformat(frame, format="yuv420p", width=160, height=90, interpolation="AREA")
    theirs = theirs.to_ndarray().astype(int)
    assert ours.shape == theirs.shape == (135, 160)
    chroma = np.abs(ours[90:] - theirs[90:])
    assert np.array_equal(ours[:90], theirs[:90]) and chroma.mean() < 0.5 and chroma.max() <= 8
    assert chroma.max() > 0  # OpenCV's path was taken, not swscale's
    planes = frame.to_ndarray()  # the 2x2 mean of the source's luma, by hand
    y = planes[:180].reshape(90, 2, 160, 2).astype(int).sum(axis=(1, 3))
    assert np.abs(ours[:90] - (y + 2) // 4).max() <= 1
    frame.colorspace, frame.color_range = 1, 1  # tagged BT.709, limited range: the half keeps the tags
    half = _scaler((160, 90), "yuv420p", "AREA")(frame)
    assert (half.colorspace, half.color_range) == (1, 1)
    other = _scaler((128, 72), "yuv420p", "AREA")(frame)  # not a halving: swscale's
    assert (other.width, other.height) == (128, 72)
    rgb = frame.reformat(format="rgb24")
    assert _scaler((160, 90), "yuv420p", "AREA")(rgb).format.name == "yuv420p"  # an RGB source: swscale's
