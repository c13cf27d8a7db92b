"""``ragbench report RUN_DIR``: re-render the report files of a saved run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_command


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``report`` to the command's subparsers."""
    p = add_command(commands, "report", summary="re-render the reports of a run folder",
                    description="Re-render report.html, cases.csv and summary.md of a saved "
                                "run folder (e.g. .ragbench/runs/latest) from its cases.jsonl "
                                "and summary.json.")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="the run folder, or a run reference: 'latest', a run number (the # "
                        "of 'ragbench history'), 'last', 'best' or a run id, looked up in "
                        ".ragbench/runs (the 'runs' folder beside --history)")
    p.add_argument("--html", type=Path, default=None, metavar="PATH",
                   help="write the HTML report here instead of RUN_DIR/report.html")
    p.add_argument("--history", type=Path, default=None, metavar="DB",
                   help="run history database for the trend lines (default: the "
                        "history.sqlite beside the runs folder, if any)")
    from ..options import add_summary_option

    add_summary_option(p.add_argument, prefix="")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ragbench report``: prints the written paths; 2 for a folder that is not a run
    folder or an unreadable history, 1 when a file cannot be written."""
    from ..report.rerender import RunFolderError, rerender
    from ..results.history import DEFAULT_HISTORY, HistoryError
    from ..results.runref import RunRefError, resolve_run_ref

    run_dir = Path(args.run_dir)
    try:
        # A path (it names folders) keeps the folder messages; a bare name may be a run.
        if not run_dir.exists() and len(run_dir.parts) == 1 and not run_dir.is_absolute():
            db = args.history if args.history is not None else Path.cwd() / DEFAULT_HISTORY
            run_dir = resolve_run_ref(args.run_dir, db.parent / "runs", history=db)
        paths = rerender(run_dir, html_path=args.html, history_db=args.history,
                         summary_level=args.summary or "default",
                         on_note=lambda note: print(f"ragbench report: {note}",
                                                    file=sys.stderr))
    except (RunFolderError, HistoryError, RunRefError) as exc:
        print(f"ragbench report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"ragbench report: cannot write the report: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for path in paths:
        print(path)
    return EXIT_OK
