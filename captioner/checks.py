"""Cross-checks of a caption against what the curation pipeline measured on the same clip. Each
disagreement becomes a flag in `caption_flags`, so SQL can report disagreement rates per model or
prompt and a tier can leave flagged captions out:

- `camera_disagrees`: the caption's camera_movement differs from a confident measured `camera_motion`
  (pan up/tilt up and pan down/tilt down count as one: without depth they look the same);
- `text_missed`: OCR found text covering at least `text_area_present` of the frame, the caption says
  there is none (`text_in_frame` "");
- `text_invented`: the caption transcribes text where OCR found none (`text_area` below `text_area_absent`);
- `static_disagrees`: "static shot" while the measured motion is at least `moving_motion`, or a moving
  camera class while the motion is below `still_motion`.
A field the caption leaves null, or a measurement missing, raises no flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from captioner.schema import Caption

SAME_LOOK = {"pan up": "tilt up", "pan down": "tilt down"}
STILL_CLASSES = {"static shot", "handheld shot"}


@dataclass(frozen=True)
class CheckConfig:
    min_camera_confidence: float = 0.6
    text_area_present: float = 0.01
    text_area_absent: float = 0.0005
    moving_motion: float = 0.03
    still_motion: float = 0.002


def _camera(label: str) -> str:
    return SAME_LOOK.get(label, label)


def cross_check(caption: Caption, row: dict, config: CheckConfig = CheckConfig()) -> list[str]:
    """The flags of one caption given its clip's measured columns (`row`)."""
    flags = []
    cam, measured, conf = caption.camera_movement, row.get("camera_motion"), row.get("camera_motion_confidence")
    if cam and measured and conf is not None and conf >= config.min_camera_confidence and _camera(cam) != _camera(
            measured):
        flags.append("camera_disagrees")
    area = row.get("text_area")
    if caption.text_in_frame is not None and area is not None:
        if caption.text_in_frame == "" and area >= config.text_area_present:
            flags.append("text_missed")
        elif caption.text_in_frame and area < config.text_area_absent:
            flags.append("text_invented")
    motion = row.get("motion")
    if cam and motion is not None:
        if (cam == "static shot" and motion >= config.moving_motion) or (
                cam not in STILL_CLASSES and motion < config.still_motion):
            flags.append("static_disagrees")
    return flags
