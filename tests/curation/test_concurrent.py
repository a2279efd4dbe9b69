"""Two `videocurate run` processes on overlapping inputs into one lake at the same time: every input
ends exactly once, and a reader during the runs always sees clips with their videos."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import yaml

from curation import synth
from curation.check import check_lake
from curation.lake import Lake
from curation.query import query


def _videos(folder, n: int) -> list[str]:
    photos = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle", "camera", "cat", "horse"]
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"v{i}.mp4")
        synth.make_video(path, [synth.Shot(photos[i % len(photos)], 60, pan=(1.5 + i, 0)),
                                synth.Shot(photos[(i + 3) % len(photos)], 60, zoom=1.004)], size=(256, 144))
        paths.append(path)
    return paths


def test_two_runs_on_overlapping_inputs_commit_each_input_once(tmp_path):
    paths = _videos(tmp_path, 6)
    with open(os.path.join(os.path.dirname(synth.__file__), "..", "pipelines", "default.yaml")) as f:
        doc = yaml.safe_load(f)
    doc["commit_every"] = 1  # many small commits: the runs interleave
    pipe = tmp_path / "p.yaml"
    pipe.write_text(yaml.safe_dump(doc))
    lake = str(tmp_path / "lake")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    runs = [subprocess.Popen([sys.executable, "-m", "curation.cli", "run", str(pipe), "--input", *part,
                              "--lake", lake, "--no-progress", "--num-cpus", "1"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for part in (paths[:4], paths[2:])]
    torn = reads = 0
    while any(r.poll() is None for r in runs):  # a reader beside the writers
        if os.path.isdir(os.path.join(lake, "videos.lance")) and os.path.isdir(os.path.join(lake, "clips.lance")):
            n = query(lake, "select count(*) as n from clips c where not exists "
                            "(select 1 from videos v where v.video_id = c.video_id)").column("n")[0].as_py()
            torn += n > 0
            reads += 1
        time.sleep(0.2)
    outs = [r.communicate() for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs
    assert reads > 0 and torn == 0  # every snapshot had each clip's videos row
    rows = query(lake, "select uri, count(*) as n, min(status) as status from videos group by uri").to_pylist()
    assert sorted(r["uri"] for r in rows) == sorted(paths) and all(r["n"] == 1 for r in rows)
    assert all(r["status"] == "ok" for r in rows)
    assert check_lake(lake, paths) == []
    assert Lake(lake).count("clips") == sum(
        r["n_clips"] for r in query(lake, "select n_clips from videos").to_pylist())
