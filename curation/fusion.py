"""How the split's detectors are fused into one list of cuts and transition spans — one rule:

1. Spans first. A span is a gradual transition's mixed frames [start, end]; its cut is end + 1 (the first
   frame of the new shot). The `gradual` detector's verified spans come first; a TransNetV2 span of 3 or
   more frames is added when it overlaps none of them (widened by `margin` frames).
2. Points second. A point is a detector's single cut frame (PySceneDetect's detectors, the gradual
   detector's hard cuts, TransNetV2 runs of 1-2 frames), after the flash check. A point inside a span or
   within `margin` frames of it is dropped: the span's cut replaces it (a content detector fires in a
   dissolve's middle or at a fade's start).
3. Spacing. Span cuts are all kept; a point closer than `min_gap` frames to a kept cut is dropped, and of
   two close points the earlier is kept.

The transitions reported are the spans, each with its cut in the result."""

from __future__ import annotations

from collections.abc import Sequence

from curation.transitions import Transition


def overlaps(a: Transition, b: Transition, margin: int) -> bool:
    return a.start - margin <= b.end and b.start - margin <= a.end


def fuse(points: Sequence[int], verified: Sequence[Transition], learned: Sequence[Transition], n_frames: int,
         min_gap: int, margin: int = 2) -> tuple[list[int], list[Transition]]:
    """(cuts, transitions) from point cuts, the gradual detector's spans and TransNetV2's spans."""
    spans = sorted(verified, key=lambda t: t.start)
    for t in learned:
        if t.end - t.start + 1 >= 3 and not any(overlaps(t, v, margin) for v in spans):
            spans.append(t)
    spans = sorted((t for t in spans if 0 < t.end + 1 < n_frames), key=lambda t: t.start)
    cuts = [t.end + 1 for t in spans]
    for c in sorted({int(c) for c in points}):
        inside = any(t.start - margin <= c <= t.end + 1 + margin for t in spans)
        if 0 < c < n_frames and not inside and all(abs(c - k) >= min_gap for k in cuts):
            cuts.append(c)
    return sorted(cuts), spans
