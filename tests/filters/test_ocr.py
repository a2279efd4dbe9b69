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
