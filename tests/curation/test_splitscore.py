"""Decode once (curation.splitscore): the split and the CPU scorers after it share each video's decode,
and the lake is the one the two stages write apart, whichever way each clip got its samples."""

from __future__ import annotations

import threading

import pytest

from curation import frames as frames_module
from curation import scoring, splitscore, synth
from curation.inputs import discover
from curation.local import run_chain
from curation.pipeline import load_pipeline
from curation.runner import input_blocks, output_fields, row_schema
from curation.scoring import fuse
from curation.split import SplitParams, SplitStage
from curation.splitscore import SplitScoreStage
from curation.stage import Stage


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """The demo videos plus a long take (two 10 s windows and a short tail), cuts on both sides of it, an
    edit with dissolves, fades, wipes and slides, a portrait video, a rotated one, a 60 fps one and one
    with a variable frame rate."""
    folder = tmp_path_factory.mktemp("once")
    synth.demo_set(folder)
    synth.make_video(folder / "long.mp4", [synth.Shot("coffee", 60, pan=(1, 0)),
                                           synth.Shot("astronaut", 560, pan=(0.5, 0.3), text="A long take"),
                                           synth.Shot("rocket", 70, zoom=1.004)], size=(320, 180))
    synth.edit_with_transitions(str(folder / "edit.mp4"))
    synth.make_video(folder / "tall.mp4", [synth.Shot("chelsea", 80, pan=(0, 1)), synth.Shot("camera", 70)],
                     size=(180, 320))
    synth.make_video(folder / "fast.mp4", [synth.Shot("motorcycle", 200, pan=(2, 0)), synth.Shot("page", 150)],
                     size=(320, 180), fps=60)
    synth.make_video(folder / "turned.mp4", [synth.Shot("retina", 70, pan=(1, 1)), synth.Shot("coffee", 60)],
                     size=(240, 160), rotation=90)  # stored landscape, shown portrait
    import media

    media.vfr_video(str(folder / "vfr.mkv"))  # variable frame rate: clip times from the timeline
    return folder


def _plans(overrides=()):
    built = load_pipeline("default", list(overrides)).build(available=[])
    once = fuse([b for b in built if isinstance(b, Stage)])
    apart = [x for s in once for x in ((s.split, s.group) if isinstance(s, SplitScoreStage) else (s,))]
    return once, apart


def _run(stages, folder) -> list[dict]:
    files, _ = discover([str(folder)], None, exclude=[])
    blocks = input_blocks(files, row_schema(output_fields(stages)))
    rows = [r for b in blocks for r in run_chain(stages, b).to_pylist()]
    return sorted(rows, key=lambda r: (r["uri"], r.get("clip_id") or ""))


@pytest.fixture
def decodes(monkeypatch):
    """Clip rows decoded again by the scorers (decode_clips)."""
    seen: list[str] = []
    real = scoring.decode_clips

    def counting(rows, request, threads=None):
        seen.extend(r["clip_id"] for r in rows)
        return real(rows, request, threads)

    monkeypatch.setattr(scoring, "decode_clips", counting)
    return seen


def test_the_default_plan_splits_and_scores_on_one_decode():
    once, _ = _plans()
    fused = [s for s in once if isinstance(s, SplitScoreStage)]
    assert len(fused) == 1 and [type(s).__name__ for s in once][:2] == ["ProbeStage", "SplitScoreStage"]
    assert {s.name for s in fused[0].group.scorers} == {"clarity", "motion", "ocr", "borders", "embedding"}
    # TransNetV2 decides at the end of a video, and decord cannot share its decode: those stay apart
    for override in ("split.detectors=[content,transnetv2]", "split.backend=decord"):
        assert not any(isinstance(s, SplitScoreStage) for s in _plans([override])[0])


def test_decode_once_writes_what_the_stages_write_apart(footage, decodes, monkeypatch):
    threads: list[str] = []

    def recording(*args):
        threads.append(threading.current_thread().name)
        return real(*args)

    real = splitscore.run_scorers
    monkeypatch.setattr(splitscore, "run_scorers", recording)
    monkeypatch.setattr(splitscore, "spare_cpu", lambda: True)  # as in a local worker with a core to spare
    once, apart = _plans()
    fused = next(s for s in once if isinstance(s, SplitScoreStage))
    together = _run(once, footage)
    # the clips decided while the video decodes are scored on the worker's second thread
    assert threads and all(name.startswith("score") for name in threads)
    again = len(decodes)
    separate = _run(apart, footage)
    clips = [r for r in separate if r["clip_id"]]
    assert len(clips) >= 20 and len(decodes) - again == len(clips)  # apart: every clip decoded twice
    assert together == separate  # every column of every row, scores and failures included
    # together: clips scored while the split still decoded (those ending more than lag() = 121 frames
    # before a video's end: 8 of 22 on these short videos), the rest from the tap at the end; none decoded
    # again (no detection changed more than lag() frames back)
    assert again == 0 and fused.sources["decoded again"] == 0
    assert fused.sources["on the way"] >= 6 and sum(fused.sources.values()) == len(clips)
    assert {"vfr.mkv", "turned.mp4", "tall.mp4", "fast.mp4"} <= {r["uri"].rsplit("/", 1)[-1] for r in clips}
    long_take = [r for r in clips if "long" in r["uri"]]
    assert {300, 540, 620} <= {r["end_frame"] for r in long_take}  # two 10 s windows and the tail
    assert any(r["text_area"] > 0 for r in long_take)
    monkeypatch.setattr(splitscore, "spare_cpu", lambda: False)  # no core to spare: scored inline, the same
    threads.clear()
    assert _run(once, footage) == together and threads and all(n == "MainThread" for n in threads)


def test_clips_the_tap_lost_are_decoded_again_to_the_same_scores(footage, decodes, monkeypatch):
    """A tap that holds ~12 frames (the cap) keeps almost nothing a clip needs: those clips decode again,
    with the same pixels, so the lake is the same."""
    monkeypatch.setattr(frames_module, "TAP_BYTES", 12 * 640 * 360 * 3 // 2)
    once, apart = _plans()
    fused = next(s for s in once if isinstance(s, SplitScoreStage))
    together = _run(once, footage)
    assert fused.sources["decoded again"] > 10 and len(decodes) == fused.sources["decoded again"]
    assert together == _run(apart, footage)


def test_a_scoring_thread_that_raises_leaves_its_clips_to_be_decoded_again(footage, decodes, monkeypatch):
    """A batch whose scoring fails beside the decode (not a scorer's error, which run_scorers records on the
    clip: anything else) is not lost: its clips decode again at the video's end, to the same lake."""
    failed: list[int] = []

    def failing(scorers, clips, *rest):
        if not failed:
            failed.append(len(clips))
            raise MemoryError("the scoring thread could not allocate its samples")
        return real(scorers, clips, *rest)

    real = splitscore.run_scorers
    monkeypatch.setattr(splitscore, "run_scorers", failing)
    monkeypatch.setattr(splitscore, "spare_cpu", lambda: True)
    once, apart = _plans()
    fused = next(s for s in once if isinstance(s, SplitScoreStage))
    together = _run(once, footage)
    monkeypatch.undo()
    assert failed and fused.sources["decoded again"] >= failed[0] and len(decodes) == fused.sources["decoded again"]
    assert together == _run(apart, footage)


def test_a_late_change_of_the_detections_is_caught(footage, monkeypatch):
    """settle() guesses; a guess the final fusion overturns must not keep its scores. With lag() 0 every
    clip is decided on the newest frame, so shots end where the next frame merely has not cut yet: their
    spans differ from the final ones, are not used, and the lake stays the same."""
    monkeypatch.setattr("curation.split.ShotDetector.lag", lambda self: 0)
    once, apart = _plans()
    fused = next(s for s in once if isinstance(s, SplitScoreStage))
    together = _run(once, footage)
    monkeypatch.undo()
    assert together == _run(apart, footage)
    assert fused.sources["decoded again"] > 5


def test_a_subclassed_split_keeps_its_own_stage():
    from filters.clarity import ClarityScorer

    class Mine(SplitStage):
        def split_row(self, row):
            return super().split_row(row)

    assert [type(s) for s in fuse([Mine(SplitParams()), ClarityScorer()])] == [Mine, scoring.ScoreGroup]
    assert [type(s) for s in fuse([SplitStage(), ClarityScorer()])] == [SplitScoreStage]


@pytest.fixture(scope="module")
def one_video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one")
    synth.make_video(folder / "two_shots.mp4", [synth.Shot("coffee", 60, pan=(1, 0), text="Hello there"),
                                                synth.Shot("rocket", 60)], size=(320, 180))
    return folder


def test_the_scorers_set_up_while_the_split_decodes(one_video, monkeypatch):
    """A worker's first video starts decoding at once: the scorers' models load on a thread beside it (the
    OCR engine is most of a worker's start-up), and the first clip scored waits for them. Here the OCR
    set-up waits for the split's first frame: set up first, as before, it would wait in vain."""
    from curation.split import ShotDetector
    from filters.ocr import OcrScorer

    decoding, waited = threading.Event(), []
    real_setup, real_process = OcrScorer.setup, ShotDetector.process

    def setup(self):
        waited.append(decoding.wait(60))
        real_setup(self)

    def process(self, bgr):
        decoding.set()
        real_process(self, bgr)

    monkeypatch.setattr(OcrScorer, "setup", setup)
    monkeypatch.setattr(ShotDetector, "process", process)
    once, apart = _plans()
    together = _run(once, one_video)
    monkeypatch.undo()
    assert waited == [True]
    assert together == _run(apart, one_video) and any(r["text_area"] for r in together)


def test_a_set_up_that_fails_fails_that_video_and_is_tried_again_with_the_next(one_video, monkeypatch):
    from filters.ocr import OcrScorer

    calls, real_setup = [], OcrScorer.setup

    def setup(self):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("model file unreadable")
        real_setup(self)

    monkeypatch.setattr(OcrScorer, "setup", setup)
    once, apart = _plans()
    with pytest.raises(OSError, match="model file unreadable"):
        _run(once, one_video)
    together = _run(once, one_video)  # the same stages: set up again, synchronously
    monkeypatch.undo()
    assert len(calls) == 2 and together == _run(apart, one_video)


def test_a_stage_forked_while_it_set_up_sets_up_again_in_the_child(one_video, monkeypatch):
    """A stage whose set-up thread was still running when the process forked (a driver that ran it, then
    started local workers with the same objects): the child has no such thread, so it sets up itself
    instead of waiting for one forever."""
    import multiprocessing as mp

    from filters.ocr import OcrScorer

    release, real_setup = threading.Event(), OcrScorer.setup

    def setup(self):
        if not release.wait(60):
            raise TimeoutError("never released")
        real_setup(self)

    monkeypatch.setattr(OcrScorer, "setup", setup)
    once, _ = _plans()
    fused = next(s for s in once if isinstance(s, SplitScoreStage))
    fused.ensure_setup()  # its thread now waits on `release`
    ctx = mp.get_context("fork")
    out = ctx.Queue()

    def child():
        release.set()  # this process's copy of the event: the parent's thread stays blocked
        rows = _run(once, one_video)
        out.put(sum(r["text_area"] is not None for r in rows))

    p = ctx.Process(target=child)
    p.start()
    p.join(120)
    if p.is_alive():  # it waited for the parent's thread
        p.kill()
        p.join()
    scored = out.get(timeout=5) if p.exitcode == 0 else None
    release.set()
    fused.scorers_ready()
    assert p.exitcode == 0 and scored and scored > 0
