"""The `signals` backend: no VLM. A partial caption from what the curation pipeline measured, with the
VLM fields (descriptions, background, style, shot type, lighting, atmosphere) left null.

- camera_movement: the hint `camera_motion` when it is one of the 14 classes and its
  `camera_motion_confidence` is at least `min_camera_confidence` (a label without a confidence is not
  used: HunyuanVideo lets only high-confidence predictions into the caption);
- text_in_frame: the OCR text (`ocr_text`) cleaned to the field's pattern; "" when `text_area` says no
  text was found; null when text was found but not read, or when OCR did not run;
- tags: source from `source`; quality from `motion` (static / slow / moderate / fast motion),
  `text_area` (on-screen text) and `subtitle_box` (subtitles); other stays empty.
"""

from __future__ import annotations

from dataclasses import dataclass

from captioner.backend import Captioner, CaptionRequest, CaptionResult
from captioner.prompt import speed_word
from captioner.schema import CAMERA_CLASSES, LIMITS, TAG_CHARS, TAG_ITEMS, Caption, Tags, clean_text


@dataclass
class SignalsConfig:
    min_camera_confidence: float = 0.6
    min_text_area: float = 0.001  # share of the frame below which "no text"


class SignalsCaptioner(Captioner):
    name = "signals"

    def __init__(self, config: SignalsConfig | None = None):
        self.config = config or SignalsConfig()

    def caption(self, hints: dict) -> Caption:
        h = {k: v for k, v in hints.items() if v is not None}
        conf = h.get("camera_motion_confidence")
        camera = h.get("camera_motion")
        confident = camera in CAMERA_CLASSES and conf is not None and conf >= self.config.min_camera_confidence
        text = None
        if h.get("ocr_text"):
            text = clean_text(h["ocr_text"], LIMITS["text_in_frame"][0])
        elif "text_area" in h and h["text_area"] < self.config.min_text_area:
            text = ""
        quality = []
        if "motion" in h:
            quality.append(f"{speed_word(h['motion'])} motion")
        if h.get("text_area", 0) >= self.config.min_text_area:
            quality.append("on-screen text")
        if h.get("subtitle_box") is not None:
            quality.append("subtitles")
        source = [clean_text(h["source"], TAG_CHARS)] if h.get("source") else []
        tags = Tags(source=[s for s in source if s][: TAG_ITEMS["source"]], quality=quality[: TAG_ITEMS["quality"]])
        return Caption(camera_movement=camera if confident else None, text_in_frame=text, tags=tags)

    def caption_batch(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        return [CaptionResult(r.clip_id, "ok", caption=self.caption(r.hints).model_dump_json(), attempts=0,
                              source=self.source(r)) for r in requests]
