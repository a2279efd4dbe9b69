"""`videocurate demo`: sample videos with known cuts made from real photographs, curated with the
default pipeline into a lake, and a look at the results with SQL."""

from __future__ import annotations

import os

from curation import synth
from curation.query import query, render
from curation.runner import run_pipeline


def run_demo(out: str, num_cpus: int | None = None, pipeline: str = "default") -> int:
    videos = os.path.join(out, "videos")
    lake = os.path.join(out, "lake")
    print(f"making sample videos in {videos} ...")
    truths = synth.demo_set(videos)
    summary = run_pipeline(pipeline, [videos], lake, num_cpus=num_cpus)
    print("\n".join(summary.lines()))

    found = {r["uri"]: r["cuts"] for r in query(lake, "select uri, cuts from videos").to_pylist()}
    print("\ncuts: known vs found")
    hits = total = 0
    for t in truths:
        got = found.get(os.path.abspath(t.path)) or []
        hits += sum(any(abs(g - c) <= 1 for g in got) for c in t.cuts)
        total += len(t.cuts)
        print(f"  {os.path.basename(t.path):20s} known {t.cuts}  found {got}")
    print(f"  {hits}/{total} known cuts found within ±1 frame")

    cols = set(query(lake, "select * from clips limit 0").column_names)
    wanted = {"clarity": "round(clarity::double, 1) as clarity", "camera_motion": "camera_motion",
              "motion": "round(motion::double, 3) as motion", "text_area": "round(text_area::double, 3) as text_area",
              "is_duplicate": "is_duplicate", "caption_status": "caption_status"}
    extra = [expr for col, expr in wanted.items() if col in cols]
    sql = ("select regexp_extract(uri, '[^/]+$') as video, start_frame, end_frame, "
           + ", ".join(extra or ["duration_clip_s"]) + " from clips order by video, start_frame")
    print(f"\n$ videocurate sql --lake {lake} \"{sql}\"")
    print(render(query(lake, sql)))
    if "caption" in cols:
        sql = "select clip_id, caption from clips where caption_status = 'ok' order by clip_id limit 2"
        print(f"\n$ videocurate sql --lake {lake} --format json \"{sql}\"")
        print(render(query(lake, sql), "json"))
    from curation.report import write_report

    print(f"\nreport: {write_report(lake, os.path.join(out, 'report.html'))}")
    print(f"\nlake: {lake}\n  try: videocurate sql --lake {lake} \"select * from tiers_256p\"\n"
          f"       videocurate train --lake {lake} --vae random --max-steps 3 --out {out}/checkpoints")
    return 0 if hits == total else 1
