"""Test media made by code: bad inputs of every kind a real corpus holds, next to good ones."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

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
