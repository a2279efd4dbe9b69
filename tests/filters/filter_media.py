"""Helpers for the filter tests: tiny synthetic videos with exact ground truth, clip rows, tables."""

from __future__ import annotations

import os

import pyarrow as pa

from curation import synth
from curation.frames import ClipFrames, decode_clips
from curation.schema import row_schema, rows_to_table
from curation.scoring import Scorer

SIZE = (320, 180)


def clip_row(truth: synth.Truth, start: int = 0, end: int | None = None, clip_id: str | None = None) -> dict:
    """A clip row as the splitter emits it (video columns + clip span)."""
    end = truth.frame_count if end is None else end
    name = os.path.basename(truth.path)
    return {"uri": truth.path, "video_id": name, "fps": truth.fps, "width": truth.size[0],
            "height": truth.size[1], "rotation": 0, "frame_count": truth.frame_count,
            "clip_id": clip_id or f"{name}:{start}-{end}", "start_frame": start, "end_frame": end,
            "failures": []}


def table(rows: list[dict]) -> pa.Table:
    return rows_to_table(rows, row_schema())


def frames_for(scorer: Scorer, truth: synth.Truth) -> ClipFrames:
    """Decode one whole-video clip as the sampler would for this scorer."""
    clip = decode_clips([clip_row(truth)], scorer.request())[0]
    assert not isinstance(clip, BaseException), clip
    return clip


def video(folder, name: str, shots: list[synth.Shot], size=SIZE, **encode) -> synth.Truth:
    return synth.make_video(os.path.join(folder, name), shots, size=size, **encode)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


def reencode(truth: synth.Truth, path, size: tuple[int, int] | None = None, crf: int = 18,
             crop: float = 0.0) -> synth.Truth:
    """The same video decoded, optionally cropped by `crop` of each side and resized, then re-encoded
    (a rendition ladder / re-upload), with the same frame numbering."""
    import cv2

    from curation.video import VideoReader

    size = size or truth.size

    def frames():
        for f in VideoReader(truth.path).iter_frames():
            h, w = f.shape[:2]
            dy, dx = int(h * crop), int(w * crop)
            f = f[dy:h - dy, dx:w - dx]
            yield cv2.resize(f, size, interpolation=cv2.INTER_AREA)

    n = synth.write_video(path, frames(), fps=truth.fps, crf=crf)
    return synth.Truth(path=os.fspath(path), fps=truth.fps, size=size, frame_count=n, cuts=truth.cuts,
                       shots=truth.shots, text_boxes=truth.text_boxes)


def draw_title(frame, lines: list[str], line_frac: float) -> list[tuple[int, int, int, int]]:
    """Burn a centred title of `lines` into `frame`, each line `line_frac` of the frame high (letters
    about 80 % of that), yellow with a black outline; return each line's box."""
    import cv2

    h, w = frame.shape[:2]
    font, lh = cv2.FONT_HERSHEY_TRIPLEX, line_frac * h
    top, boxes = (h - len(lines) * lh) / 2, []
    for i, text in enumerate(lines):
        (_, th), _ = cv2.getTextSize(text, font, 1.0, 2)
        scale = lh * 0.8 / th
        thick = max(2, int(scale * 2))
        (tw, th), base = cv2.getTextSize(text, font, scale, thick)
        x, y = (w - tw) // 2, int(top + (i + 1) * lh - (lh - th) / 2)
        cv2.putText(frame, text, (x, y), font, scale, (0, 0, 0), thick + 4, cv2.LINE_AA)
        cv2.putText(frame, text, (x, y), font, scale, (255, 230, 120), thick, cv2.LINE_AA)
        boxes.append((x, y - th, x + tw, y + base))
    return boxes
