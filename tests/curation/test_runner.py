"""End to end on the embedded Ray: good and bad inputs, resume, overrides, crash recovery."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

from curation import synth
from curation.cli import main
from curation.errors import ConfigError
from curation.lake import Lake
from curation.query import query
from curation.runner import run_pipeline
from curation.writer import recover

pytestmark = pytest.mark.usefixtures("ray_local")


def _counts(lake: Lake) -> tuple[int, int, int]:
    return lake.count("videos"), lake.count("clips"), lake.count("failures")


def test_demo_videos_cuts_and_clips(demo_videos, tmp_path):
    lake = Lake(tmp_path / "lake")
    summary = run_pipeline("default", [os.path.dirname(demo_videos[0].path)], lake, progress=False)
    assert summary.stats.videos["ok"] == 3
    rows = {r["uri"]: r for r in query(lake, "select uri, cuts, status, frame_count from videos").to_pylist()}
    for t in demo_videos:
        assert rows[t.path]["cuts"] == t.cuts
        assert rows[t.path]["frame_count"] == t.frame_count
    clips = query(lake, "select * from clips order by uri, start_frame").to_pylist()
    assert len(clips) == sum(len(t.shots) for t in demo_videos)  # every demo shot is 2-10 s
    for c in clips:
        assert c["shot_start_frame"] <= c["start_frame"] < c["end_frame"] <= c["shot_end_frame"]
        assert c["clip_id"] == f"{c['video_id']}_{c['start_frame']}_{c['end_frame']}"
        assert c["start_s"] == pytest.approx(c["start_frame"] / c["fps"])
    # a rerun adds nothing
    again = run_pipeline("default", [os.path.dirname(demo_videos[0].path)], lake, progress=False)
    assert again.skipped == 3 and _counts(lake) == (3, len(clips), 0)


def test_bad_inputs_end_as_rows_not_crashes(bad_folder, tmp_path):
    folder, made = bad_folder
    lake = Lake(tmp_path / "lake")
    run_pipeline("default", [folder], lake, progress=False)
    videos = {os.path.basename(r["uri"]): r for r in query(lake, "select * from videos").to_pylist()}
    kinds = {}
    for r in query(lake, "select uri, kind from failures").to_pylist():
        kinds.setdefault(os.path.basename(r["uri"]), set()).add(r["kind"])
    assert set(videos) == set(made)  # every regular file is accounted for; the folder.mp4 dir is not
    odd = 'we\'ird "name" ñandú 视频.mp4'
    for name, expect in made.items():
        if expect == "ok" and name != odd:
            assert videos[name]["status"] == "ok", name
            assert videos[name]["n_clips"] >= 1, name
        elif expect == "duplicate":
            # byte-identical files: one keeps its clips, the other points at it
            pair = {videos[name]["status"], videos[odd]["status"]}
            assert pair == {"ok", "duplicate"}
            assert "duplicate_file" in kinds.get(name, set()) | kinds.get(odd, set())
        elif expect != "ok":
            assert expect in kinds.get(name, set()), (name, kinds.get(name))
    assert videos["rotated.mp4"]["width"] == 96 and videos["rotated.mp4"]["height"] == 160
    assert "truncated" in kinds["truncated.mp4"]
    before = _counts(lake)
    run_pipeline("default", [folder], lake, progress=False)
    assert _counts(lake) == before


def test_overrides_reach_the_stage(demo_videos, tmp_path):
    lake = Lake(tmp_path / "lake")
    run_pipeline("default", [demo_videos[0].path], lake, overrides=["split.max_clip_s=1.5",
                                                                    "split.min_clip_s=1.0"], progress=False)
    lengths = [r["n"] for r in query(lake, "select end_frame - start_frame as n from clips").to_pylist()]
    assert lengths and max(lengths) <= 36 and min(lengths) >= 24
    with pytest.raises(ConfigError, match="no parameter"):
        run_pipeline("default", [demo_videos[0].path], lake, overrides=["split.nope=1"], progress=False)
    with pytest.raises(ConfigError, match="not in pipeline"):
        run_pipeline("default", [demo_videos[0].path], lake, overrides=["aesthetic.x=1"], progress=False)


def test_crash_leftovers_are_cleaned_before_rerun(demo_videos, tmp_path):
    lake = Lake(tmp_path / "lake")
    run_pipeline("default", [demo_videos[0].path], lake, progress=False)
    clips = lake.dataset("clips").to_table()
    # a chunk that wrote its clips but died before its videos row: orphans of an unknown video
    orphan = clips.set_column(clips.schema.get_field_index("video_id"), "video_id",
                              pa.array(["deadbeef"] * clips.num_rows))
    lake.append("clips", orphan)
    assert recover(lake) == 1
    assert lake.count("clips") == clips.num_rows


def test_retry_failed_reprocesses_and_counts_attempts(bad_folder, tmp_path):
    folder, _ = bad_folder
    lake = Lake(tmp_path / "lake")
    run_pipeline("default", [f"{folder}/empty.mp4", f"{folder}/tiny_64.mp4"], lake, progress=False)
    run_pipeline("default", [f"{folder}/empty.mp4"], lake, progress=False, retry_failed=True)
    attempts = sorted(r["attempt"] for r in query(lake, "select attempt from failures").to_pylist())
    assert attempts == [1, 2]
    assert lake.count("videos") == 2


def test_cli_run_and_sql_json(demo_videos, tmp_path, capsys):
    lake = str(tmp_path / "lake")
    assert main(["run", "default", "--input", demo_videos[1].path, "--lake", lake, "--no-progress"]) == 0
    assert "videos ok 1" in capsys.readouterr().out
    assert main(["sql", "--lake", lake, "--format", "json", "select uri, cuts from videos"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"uri": demo_videos[1].path, "cuts": demo_videos[1].cuts}]
    assert main(["sql", "--lake", lake, "-f", "csv", "select count(*) as n from clips"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", str(len(demo_videos[1].shots))]
    assert main(["run", "nope.yaml", "--input", lake, "--lake", lake]) == 2
    assert "no pipeline file" in capsys.readouterr().err
    assert main(["tables", "--lake", lake, "--producers"]) == 0
    out = capsys.readouterr().out
    assert "videos" in out and "clips" in out and "clarity                    clarity v1" in out
    assert main(["sql", "--lake", str(tmp_path / "typo"), "select 1"]) == 2  # no lake is created by a query
    assert "no lake at" in capsys.readouterr().err and not (tmp_path / "typo").exists()


def _with(stages: list[dict]) -> dict:
    return {"name": "t", "stages": [{"stage": "probe"}, {"stage": "split"}, *stages]}


def test_changed_scorer_recomputes_only_its_columns(demo_videos, tmp_path):
    lake = Lake(tmp_path / "lake")
    inputs = [demo_videos[0].path]
    run_pipeline(_with([]), inputs, lake, progress=False)
    n = lake.count("clips")
    # a new scorer in the pipeline: old clips get its column, nothing is re-split
    s = run_pipeline(_with([{"stage": "clarity"}]), inputs, lake, progress=False)
    assert s.skipped == 1 and s.steps["rescore"]["clips"] == n
    assert lake.count("clips", "clarity IS NULL") == 0 and lake.count("clips") == n
    assert lake.producers()["clarity"]["params"]["frames"] == 8
    before = {r["clip_id"]: r["clarity"] for r in query(lake, "select clip_id, clarity from clips").to_pylist()}
    # same pipeline again: nothing to do
    assert "rescore" not in run_pipeline(_with([{"stage": "clarity"}]), inputs, lake, progress=False).steps
    # a parameter change recomputes that scorer only
    s = run_pipeline(_with([{"stage": "clarity", "params": {"frames": 3}}]), inputs, lake, progress=False)
    assert s.steps["rescore"]["stages"] == ["clarity"] and lake.producers()["clarity"]["params"]["frames"] == 3
    after = {r["clip_id"]: r["clarity"] for r in query(lake, "select clip_id, clarity from clips").to_pylist()}
    assert after.keys() == before.keys() and after != before


def test_model_stage_without_weights_fails_before_any_work(demo_videos, tmp_path):
    lake = Lake(tmp_path / "lake")
    with pytest.raises(ConfigError, match="'clip_embedding' needs CLIP weights"):
        run_pipeline("hunyuan", [demo_videos[0].path], lake, progress=False)
    assert not lake.exists("videos")
    (tmp_path / "x.pt").write_bytes(b"")  # present (validate does not load it): now aesthetic complains
    with pytest.raises(ConfigError, match="stage 'aesthetic'"):
        run_pipeline("hunyuan", [demo_videos[0].path], lake, progress=False,
                     overrides=[f"clip_embedding.pretrained={tmp_path}/x.pt"])


def test_kill_9_mid_run_then_rerun_equals_a_clean_run(tmp_path):
    """A real crash: the CLI is killed with SIGKILL after its first commits; the rerun completes the
    lake with no duplicate and no lost row."""
    import signal
    import subprocess
    import sys
    import time

    from curation import synth

    videos = tmp_path / "in"
    videos.mkdir()
    n = 16
    for i in range(n):
        synth.make_video(videos / f"v{i:02d}.mp4", [synth.Shot("astronaut", 30, pan=(i * 0.1, 0)),
                                                    synth.Shot("coffee", 30, pan=(0, i * 0.1))],
                         size=(128, 72), fps=15)
    pipe = {"name": "t", "commit_every": 1, "stages": [{"stage": "probe"}, {"stage": "split", "params": {
        "min_clip_s": 1.0}}]}
    yaml_path = tmp_path / "p.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump(pipe))
    lake = Lake(tmp_path / "lake")
    def cli(root: str) -> list[str]:
        return [sys.executable, "-m", "curation.cli", "run", str(yaml_path), "-i", str(videos), "-l", root,
                "--no-progress", "--num-cpus", "1"]

    cmd = cli(lake.root)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while lake.count("videos") < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < lake.count("videos") < n, "the kill did not land mid-run"
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clean = Lake(tmp_path / "clean")
    subprocess.run(cli(clean.root), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sql = "select clip_id from clips order by clip_id"
    assert query(lake, sql).to_pylist() == query(clean, sql).to_pylist()
    assert _counts(lake) == _counts(clean) == (n, 2 * n, 0)


def _crashing_class(kind: str):
    """A stage whose worker process dies (as on a decoder segfault) on files named crash*: a split task,
    or a scorer running in an actor."""
    import sys

    import ray.cloudpickle

    from curation.split import SplitStage
    from filters.clarity import ClarityScorer

    def dies(uri: str) -> bool:
        return os.path.basename(uri).startswith("crash")

    class CrashingSplit(SplitStage):
        def split_row(self, row):
            if dies(row["uri"]):
                os._exit(1)
            return super().split_row(row)

    class CrashingScorer(ClarityScorer):
        def score(self, clip):
            if dies(clip.uri):
                os._exit(1)
            return super().score(clip)

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    return CrashingSplit if kind == "split" else CrashingScorer


@pytest.mark.parametrize("where", ["split", "scorer"])
def test_a_file_that_kills_its_worker_is_a_failure_row_not_a_hang(demo_videos, tmp_path, monkeypatch, where):
    import shutil

    from curation import registry

    monkeypatch.setitem(registry._extra, "crashing", _crashing_class(where))
    folder = tmp_path / "in"
    folder.mkdir()
    for t in demo_videos[:2]:
        shutil.copy(t.path, folder)
    shutil.copy(demo_videos[2].path, folder / "crash.mp4")
    lake = Lake(tmp_path / "lake")
    stages = [{"stage": "probe"}, {"stage": "crashing"}] if where == "split" else \
        [{"stage": "probe"}, {"stage": "split"}, {"stage": "crashing"}]
    summary = run_pipeline({"name": "c", "stages": stages}, [str(folder)], lake, progress=False)
    assert summary.stats.videos["ok"] == 2 and summary.stats.videos["failed"] == 1
    lost = query(lake, "select uri, kind, stage from failures").to_pylist()
    assert lost == [{"uri": str(folder / "crash.mp4"), "kind": "worker_lost", "stage": "runner"}]
    assert lake.count("clips") == sum(len(t.shots) for t in demo_videos[:2])


def test_a_rescored_scorer_sees_the_columns_of_scorers_that_did_not_rerun(tmp_path):
    """Only `embedding` is stale on the second run; it must still crop to the content_box `borders`
    wrote on the first, so the rescored lake equals a fresh run."""
    import numpy as np

    import media

    src = synth.make_video(tmp_path / "src.mp4", [synth.Shot("chelsea", 60, pan=(1.0, 0))], size=(320, 180))
    barred = str(tmp_path / "in" / "barred.mp4")
    os.makedirs(os.path.dirname(barred))
    media._run("-i", src.path, "-vf", "pad=320:240:0:30", "-c:v", "libx264", barred)

    def stages(w_dct):
        return {"name": "r", "stages": [{"stage": "probe"}, {"stage": "split"}, {"stage": "borders"},
                                        {"stage": "embedding", "params": {"w_dct": w_dct}}]}

    run_pipeline(stages(0.5), [barred], tmp_path / "a", progress=False)
    summary = run_pipeline(stages(1.0), [barred], tmp_path / "a", progress=False)
    assert summary.steps["rescore"]["stages"] == ["embedding"]
    run_pipeline(stages(1.0), [barred], tmp_path / "b", progress=False)
    no_borders = stages(1.0)
    no_borders["stages"].pop(2)
    run_pipeline(no_borders, [barred], tmp_path / "c", progress=False)  # the bars left in
    a, b, c = (np.array(query(str(tmp_path / x), "select embedding from clips order by clip_id").column(0)
                        .to_pylist()) for x in "abc")
    assert a.shape == b.shape == c.shape == (1, 160)
    # equal up to resampling (the fresh run decodes once for borders and embedding at a larger size)
    assert float(a[0] @ b[0]) > 0.995 and float(c[0] @ b[0]) < 0.5  # with the bars: 0.23
