"""The curation report: a real run (demo videos, one renamed to hostile HTML, one non-video), the HTML
checked for its sections and numbers, then loaded in headless Chromium with no console message."""

from __future__ import annotations

import html.parser
import os
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pytest

from curation import synth
from curation.lake import Lake
from curation.report import thumb_strip, write_report
from curation.runner import run_pipeline
from curation.tiers import TierStep

HOSTILE = "<img src=x onerror=alert(1)>.mp4"
HOSTILE_BAD = "<b>not a video<b> & 'x'.mp4"


@pytest.fixture(scope="module")
def report(ray_local, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report_inputs")
    truths = synth.demo_set(str(folder))
    os.rename(truths[-1].path, folder / HOSTILE)
    (folder / HOSTILE_BAD).write_bytes(b"this is text, not a video\n" * 40)
    lake = str(tmp_path_factory.mktemp("report") / "lake")
    run_pipeline("default", [str(folder)], lake, num_cpus=2, progress=False)
    path = write_report(lake)
    with open(path, encoding="utf-8") as f:
        return lake, path, f.read()


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _tags(text: str) -> list[tuple[str, dict]]:
    p = _Tags()
    p.feed(text)
    return p.tags


def test_report_sections_numbers_and_escaping(report):
    lake, path, text = report
    assert path == os.path.join(lake, "report.html")
    tags = _tags(text)
    ids = {a.get("id") for _, a in tags}
    assert {"summary", "funnel", "scores", "tiers", "duplicates", "camera", "captions"} <= ids
    imgs = [a for t, a in tags if t == "img"]
    assert imgs and all(a["src"].startswith("data:image/") for a in imgs)  # self-contained, nothing fetched
    assert not any(t in ("script", "link", "iframe") for t, _ in tags)
    assert not any("onerror" in a for _, a in tags)
    # data stays text: the hostile names appear escaped, as a failure and as a clip's file name
    assert "&lt;img src=x onerror=alert(1)&gt;.mp4" in text
    assert "&lt;b&gt;not a video&lt;b&gt; &amp; &#39;x&#39;.mp4" in text
    # the funnel numbers are the tier step's
    funnel = TierStep({"spec": "tiers"}).run(Lake(lake, create=False))["tiers"]
    assert f"{funnel['256p']['clips']:,} of {funnel['256p']['from']:,} clips kept" in text
    # a thumbnail strip for every sampled clip of the 256p tier, one per camera class in the table
    alts = [a.get("alt", "") for a in imgs]
    assert sum(a.startswith("first, middle and last frame of") for a in alts) >= funnel["256p"]["clips"]
    assert "histogram of clarity" in " ".join(alts) and "tier funnel" in alts


def test_report_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (the README's test command installs it)")
    _, path, _ = report
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "report.png"
    run = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2400", f"file://{path}"],
                         capture_output=True, text=True, timeout=120)
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    assert console == []  # no script error, no blocked fetch (the page's policy forbids any)
    dom = subprocess.run([*flags, "--dump-dom", f"file://{path}"], capture_output=True, text=True, timeout=120)
    tags = _tags(dom.stdout)
    assert {"summary", "tiers", "captions"} <= {a.get("id") for _, a in tags}
    assert not any(t == "img" and a.get("src") == "x" for t, a in tags)
    assert "&lt;img src=x onerror=alert(1)&gt;.mp4" in dom.stdout
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.shape == (2400, 1280) and pixels.std() > 20  # a page with pictures, not a blank one


def test_thumbnails_are_inside_the_crop_suggestion(tmp_path):
    """A letterboxed clip's strip shows the picture, not the bars."""
    path = str(tmp_path / "boxed.mp4")
    synth.make_video(path, [synth.Shot("chelsea", 24, letterbox=(0, 30))], size=(320, 180))
    row = {"clip_id": "a", "uri": path, "start_frame": 0, "end_frame": 24, "width": 320, "height": 180,
           "content_box": [0, 30, 320, 150]}
    img, err = thumb_strip(row, height=60)
    assert err is None
    import base64
    import io

    from PIL import Image

    strip = np.asarray(Image.open(io.BytesIO(base64.b64decode(img.split(",", 1)[1]))).convert("L"), np.float32)
    assert strip.shape[0] == 60 and strip.shape[1] == 3 * 160 + 4  # three 120x320 crops at 60 px high
    assert strip[:3].mean() > 40 and strip[-3:].mean() > 40  # no black bar at the top or bottom
    bars = thumb_strip({**row, "content_box": None}, height=60)[0]
    uncropped = np.asarray(Image.open(io.BytesIO(base64.b64decode(bars.split(",", 1)[1]))).convert("L"))
    assert uncropped[:3].mean() < 20  # without the crop the bar shows
    missing = thumb_strip({**row, "uri": str(tmp_path / "gone.mp4")})
    assert missing[0] is None and missing[1]


@pytest.mark.broken_lake  # a bare videos table, no failure rows: not a lake a run would write
def test_report_of_a_lake_without_clips(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.append("videos", pa.table({"video_id": ["v"], "uri": ["/x.mp4"], "status": ["failed"]}))
    text = open(write_report(lake.root)).read()
    assert "no clips" in text and "failed" in text
