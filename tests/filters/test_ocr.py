"""Burned-in text: found where it was rendered (IoU >= 0.5), flagged as a subtitle band, and absent
text gives text_area 0."""

from curation.synth import Shot
from filter_media import frames_for, iou
from filters.ocr import OcrParams, OcrScorer

OCR = OcrScorer(OcrParams(frames=3))  # module-level: the ONNX engine loads once for these tests


def test_rendered_text_found(vids):
    truth = vids("text.mp4", [Shot("astronaut", 24, pan=(1.0, 0), text="Hello subtitles here")])
    w, h = truth.size
    x0, y0, x1, y1 = truth.text_boxes[0]
    want = (x0 / w, y0 / h, x1 / w, y1 / h)
    OCR.ensure_setup()
    out = OCR.score(frames_for(OCR, truth))
    assert out["text_area"] > 0
    assert max(iou(b, want) for b in out["text_boxes"]) >= 0.5, (out, want)
    assert out["subtitle_box"] is not None and iou(out["subtitle_box"], want) >= 0.5


def test_no_text_means_zero_area(vids):
    OCR.ensure_setup()
    for photo in ("coffee", "chelsea"):
        out = OCR.score(frames_for(OCR, vids(f"notext_{photo}.mp4", [Shot(photo, 24, pan=(1.0, 0))])))
        assert out["text_area"] == 0 and out["text_boxes"] == [] and out["subtitle_box"] is None, out


def test_recognition_reads_the_text(vids):
    truth = vids("text_big.mp4", [Shot("chelsea", 12, text="A cat sits")], size=(640, 360))
    scorer = OcrScorer(OcrParams(frames=1, recognize=True))
    scorer.ensure_setup()
    assert "ocr_text" in [f.name for f in scorer.output_fields()]
    assert "A cat sits" in (scorer.score(frames_for(scorer, truth))["ocr_text"] or "")


def _still(photo: str, size=(320, 180)):
    import cv2
    import numpy as np

    from curation.frames import ClipFrames
    from curation.synth import photo as load

    frame = cv2.resize(load(photo), size, interpolation=cv2.INTER_AREA)
    return frame, lambda f: ClipFrames(np.stack([f] * 3), np.arange(3), 24.0, f.shape[1], f.shape[0])


def test_large_titles_count_as_text():
    """Titles whose lines are taller than max_line_height (0.3 of the frame): one word 45 % high, two
    lines 37 % high each, two words 40 % high. The detector finds them; recognition confirms them."""
    from filter_media import draw_title

    OCR.ensure_setup()
    for lines, frac, photo in ((["FIN"], 0.45, "astronaut"), (["GRAND", "FINALE"], 0.37, "coffee"),
                               (["THE END"], 0.4, "chelsea")):
        frame, clip = _still(photo)
        boxes = draw_title(frame, lines, frac)
        out = OCR.score(clip(frame))
        rendered = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes) / (320 * 180)
        assert out["text_title"] and out["text_area"] >= 0.8 * rendered, (lines, out, rendered)


def test_a_tall_box_over_two_lines_is_read_line_by_line():
    from filter_media import draw_title

    OCR.ensure_setup()
    frame, _ = _still("astronaut")
    (a, b) = draw_title(frame, ["THE LAST", "HARBOUR"], 0.28)
    block = (min(a[0], b[0]) / 320, a[1] / 180, max(a[2], b[2]) / 320, b[3] / 180)  # one box over both
    lines = OCR._verify_tall(frame, block)
    assert [t.replace(" ", "") for _, t in lines] == ["THELAST", "HARBOUR"]


def test_a_banding_that_reads_clearly_beats_one_that_merely_reads(monkeypatch):
    """The recognizer's scores for crops of a tall box, by crop height: the whole box reads as garbage just
    over title_min_score (what some CPUs score the two-line block above), its halves read clearly, its
    thirds worse. The halves win; a clear whole-box read stops at one read; a box nothing reads in stays out."""
    import numpy as np

    from filters.ocr import OcrScorer

    ocr = OcrScorer()
    frame = np.zeros((180, 320, 3), np.uint8)
    reads = {90: ("THRLOUT", 0.85), 45: ("HARBOUR", 0.999), 30: ("THE", 0.9)}  # by crop height (30 or 31)
    asked: list[int] = []

    def read(crop):
        asked.append(crop.shape[0] - crop.shape[0] % 15)
        return reads.get(asked[-1], ("", 0.0))

    monkeypatch.setattr(ocr, "_read", read)
    box = (0.1, 0.25, 0.9, 0.75)  # 90 rows of 180
    assert [t for _, t in ocr._verify_tall(frame, box)] == ["HARBOUR", "HARBOUR"] and asked == [90, 45, 45]
    reads[90] = ("FIN", 0.9996)
    asked.clear()
    assert [t for _, t in ocr._verify_tall(frame, box)] == ["FIN"] and asked == [90]
    reads.clear()
    asked.clear()
    assert ocr._verify_tall(frame, box) == [] and asked == [90, 45, 45, 30, 30, 30]


def test_large_structures_that_are_not_text_stay_out():
    """At 480x270 the detector fires on the coffee photo's cup with a full-height box; a fence of stripes
    and a grid of windows are large regular structures too. None of them is text."""
    import numpy as np

    OCR.ensure_setup()
    frame, clip = _still("coffee", (480, 270))
    assert any(b[3] - b[1] > 0.3 for b, _, _ in OCR._detect(frame, False))  # the tall false detection
    fence = np.full((180, 320, 3), 180, np.uint8)
    fence[:, np.arange(320) % 12 < 5] = 30
    windows = np.full((180, 320, 3), 200, np.uint8)
    for y in range(10, 160, 30):
        for x in range(10, 300, 24):
            windows[y:y + 20, x:x + 14] = (40, 40, 60)
    for f in (frame, fence, windows):
        out = OCR.score(clip(f))
        assert out["text_area"] == 0 and not out["text_title"], out


def _frames_with_and_without_text():
    """480x270 frames (1080p footage at the detector's size) of every bundled photo: plain, blurred, dark,
    and with subtitles 2-6 % of the height (sharp, blurred, dark)."""
    import cv2

    from curation.synth import PHOTOS, draw_text, photo

    small = lambda f: cv2.resize(f, (480, 270), interpolation=cv2.INTER_AREA)  # noqa: E731
    for name in PHOTOS[::2]:
        base = cv2.resize(photo(name), (1920, 1080), interpolation=cv2.INTER_AREA)
        yield small(base)
        yield small(cv2.GaussianBlur(base, (0, 0), 6))
        for scale in (0.8, 1.05, 1.5, 2.4):
            sub = base.copy()
            draw_text(sub, "The harbour at dawn", scale)
            yield from (small(sub), small(cv2.GaussianBlur(sub, (0, 0), 4)), small((sub * 0.3).astype("uint8")))


def test_the_text_gate_keeps_every_frame_the_detector_reads_text_in():
    """The gate may only skip frames where the detector finds nothing: on subtitles of every size the
    detector reads at 480 px (sharp, blurred, dark) the ungated scorer and the gated one agree exactly,
    and the gate does skip some textless frames (blurred photos: 2 of the 22 textless frames here; it is
    conservative on purpose)."""
    from filters.text_gate import text_possible

    plain = OcrScorer(OcrParams(frames=3, gate_contrast=None))
    plain.ensure_setup()
    OCR.ensure_setup()
    found = skipped = 0
    for frame in _frames_with_and_without_text():
        want = plain.read_frame(frame)
        assert OCR.read_frame(frame) == want
        found += bool(want.boxes)
        skipped += not text_possible(frame, OCR.params.gate_contrast)
        assert want.boxes == [] or text_possible(frame, OCR.params.gate_contrast)
    assert found >= 40 and skipped >= 2, (found, skipped)


def test_the_text_gate_says_no_on_smooth_frames_and_yes_on_strokes():
    import numpy as np
    import pytest

    from filters.text_gate import text_possible

    flat = np.full((270, 480, 3), 90, np.uint8)
    ramp = np.repeat(np.linspace(0, 255, 480, dtype=np.uint8)[None, :, None], 270, 0).repeat(3, 2)
    assert not text_possible(flat, 30) and not text_possible(ramp, 30)
    word = flat.copy()
    import cv2

    cv2.putText(word, "ok", (200, 140), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    assert text_possible(word, 30)
    assert not text_possible(word, 250)  # the strokes' contrast is ~165 grey levels
    with pytest.raises(ValueError, match="RGB frame"):
        text_possible(flat[..., 0], 30)


def test_gate_contrast_is_checked_and_can_be_turned_off():
    import pytest

    from curation.errors import ConfigError

    with pytest.raises(ConfigError, match="gate_contrast.*<= 255"):
        OcrScorer({"gate_contrast": 300})
    off = OcrScorer({"gate_contrast": None})
    assert off.params.gate_contrast is None and off.provenance()["version"] == "4"


def test_denormals_are_flushed_only_inside_the_block():
    import platform

    import numpy as np
    import pytest

    from filters.ocr import no_denormals

    tiny = np.float32(1e-39)  # sub-normal
    if platform.machine() != "x86_64" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the flush is set through glibc's fenv on x86-64 only")
    with no_denormals():
        assert tiny * np.float32(1) == 0
    assert tiny * np.float32(1) == tiny


def test_flushing_denormals_and_pool_threads_change_no_result(monkeypatch):
    """The flush (and, with threads > 1, sessions whose pool threads flush and do not spin) only makes
    the detector cheaper (~100 -> ~30 ms CPU a 480 px frame): frames read the same as without it."""
    import contextlib

    import filters.ocr as ocr

    frames = list(_frames_with_and_without_text())[::13]  # 12 frames: 7 with subtitles, 1 with a title
    OCR.ensure_setup()
    fast = [OCR.read_frame(f) for f in frames]
    pooled = OcrScorer(OcrParams(frames=3, threads=2))
    pooled.ensure_setup()
    assert [pooled.read_frame(f) for f in frames] == fast
    monkeypatch.setattr(ocr, "no_denormals", contextlib.nullcontext)
    assert [OCR.read_frame(f) for f in frames] == fast
    assert sum(bool(f.boxes) for f in fast) >= 6 and any(f.title for f in fast)


def test_the_model_list_keeps_what_rapidocr_reads():
    """The model list the scorer's set-up parses (libyaml, other engines' sections left out) is OmegaConf's
    own parse of every section kept, and the engine set up from it finds its models."""
    import importlib.util
    import os

    from omegaconf import OmegaConf

    from filters.ocr import OTHER_ENGINES, model_list

    path = os.path.join(os.path.dirname(importlib.util.find_spec("rapidocr").origin), "default_models.yaml")
    full, ours = OmegaConf.to_container(OmegaConf.load(path)), OmegaConf.to_container(model_list(path))
    assert "onnxruntime" in ours and "model_routes" in ours
    assert set(ours) == set(full) - set(OTHER_ENGINES)
    assert all(ours[k] == full[k] for k in ours)
    OCR.ensure_setup()
    assert OCR.engine is not None
