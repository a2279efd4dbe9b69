"""The stage contract: plugins register without the framework naming them, scorers batch and declare
their device, a GPU scorer runs as its own actor pool fed by the CPU decode, and a bad pipeline (types,
ranges, resources, column order, keys) fails at load with the stage, the setting and the fix named."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from curation import registry
from curation.errors import ConfigError
from curation.frames import FrameRequest
from curation.lake import Lake
from curation.pipeline import load_pipeline
from curation.query import query
from curation.runner import run_pipeline
from curation.scoring import GpuScoreGroup, ScoreGroup, Scorer, fuse
from curation.stage import Resources, params

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = ("filters", "captioner", "training")


def _imports(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module:
            out.add(n.module.split(".")[0])
        elif isinstance(n, ast.Import):
            out.update(a.name.split(".")[0] for a in n.names)
    return out


def test_the_framework_imports_no_plugin_by_name():
    folder = os.path.join(ROOT, "curation")
    for f in sorted(os.listdir(folder)):
        if f.endswith(".py"):
            text = open(os.path.join(folder, f), encoding="utf-8").read()
            assert not (_imports(os.path.join(folder, f)) & set(PLUGINS)), f
            assert '"filters.' not in text and "'filters." not in text, f  # nor by module path string


def test_plugins_register_through_the_entry_point():
    names = registry.names()
    for name in ("probe", "split", "dedup", "concepts", "tiers", "clarity", "motion", "ocr", "borders",
                 "embedding", "clip_embedding", "aesthetic"):
        assert name in names
    from filters.clarity import ClarityScorer

    assert registry.resolve("clarity") is ClarityScorer
    with pytest.raises(ConfigError, match="unknown stage or step 'nope'.*registered"):
        registry.resolve("nope")


@params
class BrightParams:
    frames: int = 4


class Brightness(Scorer):
    """Mean luma per clip, batched, recording how it was called: the batch size and the GPU ids Ray gave
    its worker (a logical GPU in the tests)."""

    name = "brightness"
    Params = BrightParams
    stateful = True

    def output_fields(self):
        return [pa.field("brightness", pa.float32()), pa.field("bright_batch", pa.int32()),
                pa.field("bright_gpus", pa.int32()), pa.field("bright_saw_clarity", pa.bool_())]

    def request(self):
        return FrameRequest(frames=self.params.frames, max_side=64)

    def score_batch(self, clips):
        import ray

        gpus = len(ray.get_gpu_ids()) if ray.is_initialized() else 0
        return [{"brightness": float(c.gray(64).mean()), "bright_batch": len(clips), "bright_gpus": gpus,
                 "bright_saw_clarity": c.row.get("clarity") is not None} for c in clips]


def test_fusion_groups_by_device_and_honours_gpu_resources():
    from filters.clarity import ClarityScorer
    from filters.embedding import PerceptualEmbeddingScorer

    gpu = Brightness(resources=Resources(num_gpus=1, concurrency=2, batch_size=3))
    plan = fuse([ClarityScorer(), gpu, PerceptualEmbeddingScorer(resources=Resources(num_cpus=2))])
    assert [type(s) for s in plan] == [ScoreGroup, GpuScoreGroup]
    cpu_group, gpu_group = plan
    assert [s.name for s in cpu_group.scorers] == ["clarity", "embedding"]
    assert cpu_group.resources.num_gpus == 0 and cpu_group.resources.num_cpus == 2
    assert cpu_group.feed == FrameRequest(frames=4, max_side=64)  # decoded in the CPU pass for the GPU pool
    assert gpu_group.resources.num_gpus == 1 and gpu_group.resources.concurrency == 2
    assert gpu_group.resources.batch_size == 3 and gpu.device == "cuda" and cpu_group.scorers[0].device == "cpu"


def test_a_gpu_scorer_runs_in_its_own_pool_fed_by_the_cpu_decode(ray_local, demo_videos, tmp_path, monkeypatch):
    import ray

    if ray.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("the session's Ray declares no (logical) GPU")
    monkeypatch.setitem(registry._extra, "brightness", Brightness)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    folder = os.path.dirname(demo_videos[0].path)
    stages = [{"stage": "probe"}, {"stage": "split"}, {"stage": "clarity"},
              {"stage": "brightness", "resources": {"num_gpus": 1, "num_cpus": 0, "batch_size": 3, "concurrency": 1}}]
    lake = Lake(tmp_path / "lake")
    summary = run_pipeline({"name": "gpu", "stages": stages}, [folder], lake, progress=False)
    sql = "select clarity, brightness, bright_batch, bright_gpus, bright_saw_clarity from clips"
    rows = query(lake, sql).to_pylist()
    assert summary.stats.clips == len(rows) > 3 and not summary.stats.failures
    assert all(r["bright_gpus"] == 1 for r in rows)  # scored inside a worker holding a GPU
    assert max(r["bright_batch"] for r in rows) == 3  # batches of the declared size reached score_batch
    assert all(r["bright_saw_clarity"] and r["clarity"] is not None for r in rows)
    assert all(0 < r["brightness"] < 255 for r in rows)
    # the same scores as the scorer run alone on the CPU, in process
    alone = Lake(tmp_path / "alone")
    run_pipeline({"name": "cpu", "stages": stages[:3] + [{"stage": "brightness"}]}, [folder], alone, progress=False)
    cpu = query(alone, "select brightness, bright_gpus from clips order by clip_id").to_pylist()
    gpu = query(lake, "select brightness from clips order by clip_id").to_pylist()
    assert [round(r["brightness"], 3) for r in cpu] == [round(r["brightness"], 3) for r in gpu]
    assert all(r["bright_gpus"] == 0 for r in cpu)


def test_a_batch_that_raises_is_retried_clip_by_clip():
    from curation.frames import ClipFrames
    from curation.scoring import run_scorers

    class Picky(Brightness):
        name = "picky"

        def score_batch(self, clips):
            if any(c.clip_id == "bad" for c in clips):
                raise ValueError("cannot score 'bad'")
            return super().score_batch(clips)

    frames = np.full((2, 8, 8, 3), 100, np.uint8)
    clips = [(i, ClipFrames(frames, np.arange(2), 24.0, 8, 8, clip_id=c)) for i, c in enumerate(["a", "bad", "c"])]
    outs, fails = [{} for _ in clips], [[] for _ in clips]
    run_scorers([Picky()], clips, outs, fails, {})
    assert outs[0]["brightness"] == outs[2]["brightness"] == 100.0 and outs[1] == {}
    assert fails[1][0]["stage"] == "picky" and "cannot score" in fails[1][0]["message"] and not fails[0]


def test_a_scorer_must_implement_score_or_score_batch():
    class Empty(Scorer):
        name = "empty"

        def output_fields(self):
            return []

        def request(self):
            return FrameRequest()

    with pytest.raises(TypeError, match="must implement score"):
        Empty()


@pytest.mark.parametrize("setting, message", [
    ("split.min_clip_s=abc", r"stage 'split': parameter 'min_clip_s' expects .*float.*'abc'"),
    ("split.min_clip_s=-1", r"stage 'split': parameter 'min_clip_s' expects .*greater than 0"),
    ("split.detectors=[fancy]", r"parameter 'detectors\.0' .*'content', 'adaptive'"),
    ("split.bogus=1", r"stage 'split': no parameter 'bogus' \(known: .*min_clip_s"),
    ("split.resources.num_cpus=lots", r"stage 'split' resources: parameter 'num_cpus' expects float"),
    ("split.resources.gpus=1", r"stage 'split' resources: no parameter 'gpus' \(known: .*num_gpus"),
    ("dedup.threshold=2", r"step 'dedup': parameter 'threshold' .*less than or equal to 1"),
    ("dedup.method=knn", r"step 'dedup': parameter 'method' .*'auto', 'exact', 'bucket' or 'index'"),
    ("motion.min_confidence=1.5", r"stage 'motion': parameter 'min_confidence'"),
])
def test_bad_settings_fail_at_load_naming_stage_parameter_and_type(setting, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline("default", [setting]).build()


def test_the_cli_refuses_a_bad_setting_before_any_work(tmp_path, demo_videos):
    lake = tmp_path / "lake"
    out = subprocess.run([sys.executable, "-m", "curation.cli", "run", "default", "-i", demo_videos[0].path,
                          "--lake", str(lake), "--set", "split.min_clip_s=abc", "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "stage 'split': parameter 'min_clip_s' expects float" in out.stderr
    assert not Lake(lake).exists("videos")  # nothing ran


def test_the_command_exits_with_its_code_after_the_atexit_handlers_and_with_its_output_flushed(tmp_path):
    """`videocurate` (cli.entry) skips the interpreter's teardown, not what a run registered to happen at exit."""
    code = ("import atexit, sys; from curation import cli; atexit.register(print, 'atexit ran'); "
            "sys.argv = ['videocurate'] + sys.argv[1:]; print('x' * 100000, end=''); cli.entry()")
    out = subprocess.run([sys.executable, "-c", code, "tables", "--lake", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "no lake at" in out.stderr
    assert out.stdout == "x" * 100000 + "atexit ran\n"


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`videocurate sql ... | head`: the reader has gone before the command writes; no error message."""
    lake = Lake(tmp_path / "lake")
    lake.append("scratch", pa.table({"uri": [f"v{i}" for i in range(5000)]}))
    proc = subprocess.Popen([sys.executable, "-m", "curation.cli", "sql", "--lake", lake.root,
                             "select uri from scratch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # long before the command has started
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "rror" not in err, err


def test_unknown_pipeline_keys_and_presets_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stagse'\]"):
        load_pipeline({"name": "x", "stagse": [{"stage": "probe"}]})
    with pytest.raises(ConfigError, match="'dedup' is a step: write `- step: dedup`"):
        load_pipeline({"stages": [{"stage": "probe"}, {"stage": "dedup"}]}).build()
    out = subprocess.run([sys.executable, "-m", "curation.cli", "train", "--lake", str(tmp_path), "--vae", "random",
                          "--preset", "huge"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "unknown model preset 'huge'" in out.stderr


def test_columns_are_checked_in_order_at_load():
    with pytest.raises(ConfigError, match=r"step 'dedup' reads column 'embedding', which no entry before it "
                                          r"produces; add one that produces it before it: \['clip_embedding', "
                                          r"'embedding'\]"):
        load_pipeline({"stages": [{"stage": "probe"}, {"stage": "split"}, {"step": "dedup"}]}).build()
    with pytest.raises(ConfigError, match="stage 'embedding' comes after step 'dedup'"):
        load_pipeline({"stages": [{"stage": "probe"}, {"stage": "split"}, {"step": "dedup"},
                                  {"stage": "embedding"}]}).build()
    with pytest.raises(ConfigError, match="stage 'clarity' reads column 'clip_id'.*\\['split'\\]"):
        load_pipeline({"stages": [{"stage": "probe"}, {"stage": "clarity"}]}).build()
    # a steps-only pipeline over a lake that already holds the column is fine
    load_pipeline({"stages": [{"step": "dedup"}]}).build(available=["embedding", "clip_id"])


def test_split_and_score_decode_through_pyav_when_decord_is_missing(tmp_path, demo_videos):
    """decord has wheels for x86_64 only: elsewhere every decode goes through PyAV, workers included. The
    run's stderr holds no library log lines (Lance warns of every table it creates unless told not to)."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "decord.py").write_text("raise ImportError('decord is not installed on this platform')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LANCE_LOG", "RUST_LOG")}  # as a user's shell has it
    env["PYTHONPATH"] = os.pathsep.join([str(stub), ROOT, os.environ.get("PYTHONPATH", "")])
    truth = demo_videos[0]
    lake = tmp_path / "lake"
    out = subprocess.run([sys.executable, "-m", "curation.cli", "run", "default", "-i", truth.path, "--lake",
                          str(lake), "--no-progress", "--num-cpus", "1"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "WARN" not in out.stderr and "lance::" not in out.stderr, out.stderr[-2000:]
    row = query(str(lake), "select cuts, status from videos").to_pylist()[0]
    assert row["status"] == "ok" and row["cuts"] == list(truth.cuts)
    clips = query(str(lake), "select clarity, motion from clips").to_pylist()
    assert len(clips) == len(truth.shots) and all(c["clarity"] is not None for c in clips)


def test_actor_pools_that_would_starve_the_tasks_are_fitted(ray_local):
    """On 2 CPUs a CPU score pool (1 CPU) and a GPU pool that also holds a CPU leave none for the split's
    tasks (a hung run, seen): the pools' CPU requests are scaled to leave one task its CPU."""
    from curation.runner import fit_pools
    from curation.split import SplitStage
    from filters.clarity import ClarityScorer

    def plan(gpu_cpus):
        return [SplitStage(), *fuse([ClarityScorer(), Brightness(resources=Resources(num_gpus=1, num_cpus=gpu_cpus))])]

    starving = plan(1.0)
    fit_pools(starving, 2)
    assert [s.resources.num_cpus for s in starving] == [1.0, 0.5, 0.5]
    assert starving[2].resources.num_gpus == 1
    fits = plan(0.0)
    fit_pools(fits, 2)
    assert [s.resources.num_cpus for s in fits] == [1.0, 1.0, 0.0]
