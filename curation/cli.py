"""The `videocurate` command line: run a pipeline, query the lake with SQL, tiers, the demo, and the
commands plugins register (the trainer's `train`)."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading
import warnings

from curation.errors import CurationError


def _quiet() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # RUST_LOG/LANCE_LOG: set by importing curation
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", message=".*fork-safe.*")
    for name in ("ray", "ray.data", "ray._private"):
        logging.getLogger(name).setLevel(logging.ERROR)


def cmd_run(args: argparse.Namespace) -> int:
    from curation.runner import run_pipeline

    summary = run_pipeline(args.pipeline, args.input, args.lake, overrides=args.set or [],
                           address=args.address, num_cpus=args.num_cpus, progress=not args.no_progress,
                           retry_failed=args.retry_failed, executor=args.executor,
                           extensions=args.ext.split(",") if args.ext else None)
    print("\n".join(summary.lines()))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from curation.query import print_query

    print_query(args.lake, args.query, args.format, max_rows=args.max_rows)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from curation.lake import Lake

    lake = Lake(args.lake, create=False)
    if args.column:
        lake.index(args.table, args.column)
    print(f"{args.table}: BTREE on {', '.join(lake.indexed_columns(args.table)) or 'no column'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from curation.export import export_tier

    summary = export_tier(args.lake, args.tier, args.format, args.out, shard_size=args.shard_size,
                          size=args.size, progress=not args.no_progress)
    print("\n".join(summary.lines()))
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    from curation.redrive import redrive

    summary = redrive(args.lake, stage=args.stage, kind=args.kind, pipeline=args.pipeline, overrides=args.set or [],
                      address=args.address, num_cpus=args.num_cpus, progress=not args.no_progress,
                      executor=args.executor)
    print("\n".join(summary.lines()))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from curation.check import check_lake, render

    problems = check_lake(args.lake, args.input)
    print(render(problems, args.lake))
    return 1 if problems else 0


def cmd_report(args: argparse.Namespace) -> int:
    from curation.report import write_report

    path = write_report(args.lake, args.output, spec=args.spec)
    print(f"report: {path}")
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from curation.lake import Lake

    lake = Lake(args.lake, create=False)
    for name in lake.tables():
        ds = lake.dataset(name)
        indexed = lake.indexed_columns(name)
        print(f"{name:16s} {ds.count_rows():>10d} rows  version {ds.version:<4d} {len(ds.schema.names)} columns"
              + (f"  BTREE on {', '.join(indexed)}" if indexed else ""))
    if args.producers:
        print("\ncolumn producers (clips):")
        for col, prod in sorted(lake.producers("clips").items()):
            print(f"  {col:26s} {prod.get('stage')} v{prod.get('version')} {prod.get('params')}")
    return 0


def cmd_tier(args: argparse.Namespace) -> int:
    from curation.lake import Lake
    from curation.tiers import TierStep, render_funnel

    lake = Lake(args.lake, create=False)
    spec = args.spec
    if args.calibrate:
        from curation.calibrate import calibrate, render_calibration, write_spec

        specs, results = calibrate(lake, spec)
        spec = args.calibrated_out or os.path.join(lake.root, "tiers.calibrated.yaml")
        write_spec(specs, spec, args.spec)
        print(render_calibration(results) + f"\ncalibrated spec: {spec}\n")
    params = {"spec": spec, **({"only": args.only} if args.only else {})}
    print(render_funnel(TierStep(params).run(lake)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from curation.demo import run_demo

    return run_demo(args.out, num_cpus=args.num_cpus)


def plugin_commands() -> list:
    """`register(subparsers)` functions of installed packages (entry-point group `videocurate.commands`);
    the trainer adds `train` this way."""
    from importlib.metadata import entry_points

    return [ep.load() for ep in sorted(entry_points(group="videocurate.commands"), key=lambda e: e.name)]


def _executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="join the Ray cluster at this address (`auto`: a running local one); "
                   "the stages then run on Ray")
    p.add_argument("--executor", choices=["auto", "local", "ray"], default="auto",
                   help="what runs the streaming stages: `local` worker processes on this machine, or `ray` "
                   "(embedded unless --address). auto: Ray with --address, RAY_ADDRESS or a GPU stage, else local")
    p.add_argument("--num-cpus", type=int, help="CPUs to use on this machine (default: all it may use)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="videocurate", description="Video data curation: split, score, dedupe, "
                                "caption and tier video clips into a Lance lake queried with DuckDB.")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and Ray logs")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a pipeline YAML over input videos into a lake")
    r.add_argument("pipeline", help="pipeline YAML path or bundled name (default, hunyuan)")
    r.add_argument("--input", "-i", nargs="+", required=True, help="files, directories (recursive) or globs")
    r.add_argument("--lake", "-l", required=True, help="lake directory (created if missing)")
    r.add_argument("--set", "-s", action="append", metavar="STAGE.PARAM=VALUE",
                   help="override a stage parameter (VALUE is YAML), e.g. split.min_clip_s=3")
    _executor_args(r)
    r.add_argument("--ext", help="only inputs with these extensions, e.g. mp4,mkv,webm (default: all files)")
    r.add_argument("--retry-failed", action="store_true", help="process inputs that failed before again")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)

    q = sub.add_parser("sql", help="query the lake with DuckDB (every table is a view of its name)")
    q.add_argument("query", help='e.g. "select uri, cuts from videos"')
    q.add_argument("--lake", "-l", required=True)
    q.add_argument("--format", "-f", choices=("table", "csv", "json"), default="table",
                   help="table: aligned text, at most --max-rows rows; csv/json: every row, streamed")
    q.add_argument("--max-rows", type=int, default=40, help="rows the table format shows (default 40)")
    q.set_defaults(func=cmd_sql)

    ix = sub.add_parser("index", help="give columns a BTREE index: range filters and top-k (order by c limit k) "
                        "on them read the index instead of scanning; later writes keep it; no column: list them")
    ix.add_argument("column", nargs="*", help="e.g. aesthetic clarity")
    ix.add_argument("--lake", "-l", required=True)
    ix.add_argument("--table", "-t", default="clips")
    ix.set_defaults(func=cmd_index)

    tb = sub.add_parser("tables", help="list the lake's tables (rows, version) and, with --producers, "
                        "which stage, version and parameters produced each score column")
    tb.add_argument("--lake", "-l", required=True)
    tb.add_argument("--producers", action="store_true")
    tb.set_defaults(func=cmd_tables)

    t = sub.add_parser("tier", help="materialise tiers (tiers/<name> tables) from a tier spec, print the funnel")
    t.add_argument("--lake", "-l", required=True)
    t.add_argument("--spec", default="tiers", help="tier spec YAML path or bundled name (default: tiers)")
    t.add_argument("--only", nargs="+", help="write only these tiers")
    t.add_argument("--calibrate", action="store_true", help="fit each tier's score thresholds to its `keep` "
                   "fraction from the lake's score distributions, write the calibrated spec, tier with it")
    t.add_argument("--calibrated-out", help="where --calibrate writes the spec (default: LAKE/tiers.calibrated.yaml)")
    t.set_defaults(func=cmd_tier)

    e = sub.add_parser("export", help="export a tier for other trainers: WebDataset shards (cut, cropped mp4 "
                       "+ json) or a Parquet manifest; resumable")
    e.add_argument("--lake", "-l", required=True)
    e.add_argument("--tier", required=True, help="tier name, e.g. 360p (a tiers/<name> table)")
    e.add_argument("--format", choices=("webdataset", "parquet"), default="webdataset")
    e.add_argument("--out", "-o", required=True, help="output folder")
    e.add_argument("--shard-size", type=int, default=1000, help="clips per WebDataset shard (default 1000)")
    e.add_argument("--size", type=int, help="short side of the exported clips in pixels (default: the tier's "
                   "`size`, else its source size)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_export)

    rd = sub.add_parser("redrive", help="retry recorded failures (all, or of one stage / kind) and mark the ones "
                        "that now succeed resolved; failure rows keep their history")
    rd.add_argument("--lake", "-l", required=True)
    rd.add_argument("--stage", help="only failures of this stage (e.g. probe, split, clarity, caption)")
    rd.add_argument("--kind", help="only failures of this kind (e.g. decode_error, server_error)")
    rd.add_argument("--pipeline", help="pipeline to rerun with (default: the one the lake's last run recorded)")
    rd.add_argument("--set", "-s", action="append", metavar="STAGE.PARAM=VALUE", help="override a parameter")
    _executor_args(rd)
    rd.add_argument("--no-progress", action="store_true")
    rd.set_defaults(func=cmd_redrive)

    ck = sub.add_parser("check", help="verify the lake's invariants (unique ids, clips of ok videos, failures "
                        "recorded, producers, tiers nested); exit 1 with the list when one breaks")
    ck.add_argument("--lake", "-l", required=True)
    ck.add_argument("--input", "-i", nargs="+", help="also check that every file these name is in the lake")
    ck.set_defaults(func=cmd_check)

    rp = sub.add_parser("report", help="write the curation report: one self-contained HTML file")
    rp.add_argument("--lake", "-l", required=True)
    rp.add_argument("--output", "-o", default=None, help="HTML file (default: LAKE/report.html)")
    rp.add_argument("--spec", default="tiers", help="tier spec whose thresholds the histograms show")
    rp.set_defaults(func=cmd_report)

    for register in plugin_commands():
        register(sub)

    d = sub.add_parser("demo", help="make sample videos from real photos, curate them, show the results")
    d.add_argument("--out", default="videocurate-demo", help="folder for the sample videos and the lake")
    d.add_argument("--num-cpus", type=int)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.verbose:
        _quiet()
    try:
        return args.func(args)
    except CurationError as exc:
        print(f"videocurate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("videocurate: interrupted; committed work is kept, a rerun resumes", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`videocurate sql ... | head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush into the pipe
        return 141  # 128 + SIGPIPE: what a shell reports for a writer the pipe stopped
    except Exception as exc:  # noqa: BLE001 - a clear one-line message unless --verbose
        if args.verbose:
            raise
        print(f"videocurate: error: {type(exc).__name__}: {exc} (rerun with -v for details)", file=sys.stderr)
        return 1


def entry() -> None:
    """The `videocurate` command: `main`, then an exit that skips tearing the interpreter down. The
    atexit handlers run (Ray's shutdown, logging, temporary directories) and the standard streams are
    flushed; what is skipped is freeing every module and object one by one, ~0.15 s after a run with
    lance, DuckDB, PyAV and OpenCV loaded, which nothing needs: the lake is committed when `main`
    returns. A thread still running (not a daemon) gets the ordinary exit, which waits for it."""
    code = main() or 0
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`videocurate ... | head`)
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
