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
