"""Test media made by code: bad inputs of every kind a real corpus holds, next to good ones."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from curation import synth


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(*args: str) -> None:
    subprocess.run([ffmpeg(), "-v", "error", "-y", *args], check=True)


def good_video(path: str, size=(160, 96), seconds=(3, 3), fps=24.0, **encode) -> synth.Truth:
    shots = [synth.Shot(name, int(s * fps), pan=(1, 0)) for name, s in zip(("coffee", "astronaut"), seconds)]
    return synth.make_video(path, shots, size=size, fps=fps, **encode)


def bad_inputs(folder: str) -> dict[str, str]:
    """Write a folder of bad and odd inputs; return {file name: what it is}. Every regular file must end
    in `videos` (status ok) or in `failures` with a specific kind."""
    os.makedirs(folder, exist_ok=True)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    made: dict[str, str] = {}

    open(p("empty.mp4"), "wb").close()
    made["empty.mp4"] = "empty_file"

    with open(p("random.mp4"), "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    made["random.mp4"] = "not_a_video"

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(synth.photo("astronaut")).save(buf, format="PNG")
    with open(p("image.mp4"), "wb") as f:
        f.write(buf.getvalue())
    made["image.mp4"] = "not_a_video"

    _run("-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:a", "aac", p("audio_only.mp4"))
    made["audio_only.mp4"] = "audio_only"

    synth.write_video(p("one_frame.mp4"), [synth.photo("coffee")[:96, :160]], fps=24)
    made["one_frame.mp4"] = "too_short"

    # moov at the end (the default), then cut off: "moov atom not found".
    good_video(p("no_moov_src.mp4"))
    data = open(p("no_moov_src.mp4"), "rb").read()
    os.remove(p("no_moov_src.mp4"))
    with open(p("no_moov.mp4"), "wb") as f:
        f.write(data[: len(data) // 2])
    made["no_moov.mp4"] = "corrupt"

    # moov first (faststart), then the media data cut off: a truncated but partly playable file.
    good_video(p("full.mp4"), seconds=(3, 3))
    _run("-i", p("full.mp4"), "-c", "copy", "-movflags", "+faststart", p("faststart.mp4"))
    data = open(p("faststart.mp4"), "rb").read()
    os.remove(p("faststart.mp4"))
    os.remove(p("full.mp4"))
    with open(p("truncated.mp4"), "wb") as f:
        f.write(data[: int(len(data) * 0.6)])
    made["truncated.mp4"] = "ok"

    os.makedirs(p("folder.mp4"), exist_ok=True)  # a directory named like a video: not an input itself

    odd = "we'ird \"name\" ñandú 视频.mp4"
    good_video(p(odd))
    made[odd] = "ok"

    synth.make_video(p("tiny_64.mp4"), [synth.Shot("chelsea", 72, pan=(1, 1))], size=(64, 64))
    made["tiny_64.mp4"] = "ok"

    good_video(p("rotated.mp4"), rotation=90)
    made["rotated.mp4"] = "ok"

    shutil.copy(p(odd), p("copy_of_odd.mp4"))
    made["copy_of_odd.mp4"] = "duplicate"
    return made


def _ogg_crc(data: bytes) -> int:
    """Ogg's page checksum: CRC-32, polynomial 0x04C11DB7, not reflected, initial value 0."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def ogg_with_repeats(src: str, dst: str, packets: set[int]) -> int:
    """Copy an Ogg file, turning the data packets numbered `packets` (0 = the first packet after the three
    Theora headers) into zero-length packets: Theora's "show the previous frame again", which encoders
    write for unchanged frames. Only packets that begin and end on one page are changed. Returns how
    many were."""
    data, out, pos, number, changed = open(src, "rb").read(), bytearray(), 0, -3, 0
    continued = False  # the previous page ended inside a packet
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS", "not an Ogg page"
        nseg = data[pos + 26]
        lacing = list(data[pos + 27:pos + 27 + nseg])
        body_at = pos + 27 + nseg
        body = data[body_at:body_at + sum(lacing)]
        new_lacing, new_body, at, i = [], bytearray(), 0, 0
        while i < nseg:  # one packet (or packet piece) at a time
            j = i
            while j < nseg and lacing[j] == 255:
                j += 1
            complete = j < nseg  # its last lacing value (< 255) is on this page
            size = sum(lacing[i:j + 1]) if complete else sum(lacing[i:j])
            whole = complete and not (i == 0 and continued)
            if whole and number in packets:
                new_lacing.append(0)
                changed += 1
            else:
                new_lacing += lacing[i:j + 1] if complete else lacing[i:j]
                new_body += body[at:at + size]
            if complete:
                number += 1
            at, i = at + size, j + 1
        continued = lacing[-1] == 255 if lacing else False
        header = bytearray(data[pos:pos + 27])
        header[26] = len(new_lacing)
        header[22:26] = b"\0\0\0\0"
        page = header + bytes(new_lacing) + new_body
        page[22:26] = _ogg_crc(bytes(page)).to_bytes(4, "little")
        out += page
        pos = body_at + sum(lacing)
    with open(dst, "wb") as f:
        f.write(out)
    return changed


# Variable frame rate: (frames, rate) runs, as a phone or a screen recorder writes them
VFR_RUNS = ((100, 30), (200, 10), (120, 60))
VFR_TICKS = 1200  # the time base of the fixture's timestamps: every frame interval above is whole ticks


@dataclass
class VfrTruth:
    """A variable-frame-rate video with hard cuts at known frames: `times[i]` is when frame i is shown
    (seconds), `times[-1]` the end of the last frame; `source` is the same frames at a constant rate."""

    path: str
    source: str
    cuts: list[int]
    times: list[float]


def vfr_times(runs=VFR_RUNS) -> list[float]:
    """Presentation time of every frame of `runs`, then the end of the last one."""
    times, t = [], Fraction(0)
    for frames, rate in runs:
        for _ in range(frames):
            times.append(float(t))
            t += Fraction(1, rate)
    return [*times, float(t)]


def vfr_video(path: str, shots: list[synth.Shot] | None = None, runs=VFR_RUNS) -> VfrTruth:
    """Render `shots` (default: three panning shots, cuts at frames 130 and 350, the second cut inside the
    60 fps run) at a constant rate, then re-time every frame with ffmpeg's setpts to the rates of `runs`
    (`-fps_mode vfr` keeps each frame once). The container follows the extension (mp4, mkv, ...)."""
    shots = shots or [synth.Shot("astronaut", 130, pan=(2, 0)), synth.Shot("coffee", 220, pan=(0, 1)),
                      synth.Shot("chelsea", 70, pan=(-2, 0))]
    assert sum(s.frames for s in shots) == sum(n for n, _ in runs), "shots and runs must hold as many frames"
    source = os.path.splitext(path)[0] + "_cfr.mp4"
    truth = synth.make_video(source, shots, size=(160, 96), fps=30, crf=8)
    expr, first = "0", 0  # built from the last run backwards: if(lt(N,end), start + (N - first) * step, ...)
    starts, t = [], 0
    for frames, rate in runs:
        starts.append((first, first + frames, t, VFR_TICKS // rate))
        first, t = first + frames, t + frames * (VFR_TICKS // rate)
    for lo, hi, t0, step in reversed(starts):
        expr = f"if(lt(N,{hi}),{t0}+(N-{lo})*{step},{expr})"
    _run("-i", source, "-vf", f"settb=1/{VFR_TICKS},setpts='{expr}'", "-enc_time_base", f"1/{VFR_TICKS}",
         "-fps_mode", "vfr", "-c:v", "libx264", "-crf", "8", "-preset", "veryfast", path)
    return VfrTruth(path, source, truth.cuts, vfr_times(runs))
