"""``ragbench history``: recent runs and a trend per metric, from the run history; with
``--prune N``, retention on demand (:mod:`pytest_ragbench.results.retention`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..options import add_history_option
from ..report.format import one_line
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_command


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        # argparse's own wording for type=int
        raise argparse.ArgumentTypeError(f"invalid int value: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return number


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``history`` to the command's subparsers."""
    p = add_command(commands, "history",
                    summary="list runs and metric trends from the run history; prune old runs",
                    description="List recent runs (their number '#' names the run wherever a "
                                "run is expected: --ragbench-baseline=3, 'ragbench compare 3 "
                                "5', 'ragbench report 3') and the trend of each suite's first "
                                "metric; with --prune N, delete all but the newest N runs and "
                                "those a baseline points at.")
    add_history_option(p.add_argument, prefix="", aliases=("--db",))
    p.add_argument("--metric", default=None,
                   help="metric to show the trend of (default: each suite's first metric)")
    p.add_argument("--suite", default=None, help="only runs of this suite (id or name)")
    p.add_argument("--limit", type=_positive, default=20,
                   help="how many recent runs (default 20)")
    p.add_argument("--prune", type=_positive, default=None, metavar="N",
                   help="keep the newest N runs (folders and history rows) and every run a "
                        "baseline points at, delete the others, and print what was deleted")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="the folder holding the run folders, for --prune (default: 'runs' "
                        "beside the history file, as pytest writes them by default)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ragbench history`` on parsed arguments; returns the exit status."""
    from ..results.history import DEFAULT_HISTORY, HistoryError, RunHistory, history_lines

    db = Path(args.history) if args.history else Path.cwd() / DEFAULT_HISTORY
    if args.prune is not None:
        return _prune(db, args.out if args.out is not None else db.parent / "runs",
                      args.prune, out_given=args.out is not None,
                      history_given=bool(args.history))
    try:
        with RunHistory(db, readonly=True) as h:
            lines = history_lines(h, metric=args.metric, suite=args.suite, limit=args.limit)
    except HistoryError as exc:
        print(f"ragbench history: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # names from the suites (a suite name may hold a line break): one line each
    print("\n".join(one_line(line) for line in lines))
    # a --metric or --suite the history does not know is a typo, as a bad --gate is
    unknown = (lines[-1].startswith(f"metric {args.metric!r} is not in the history")
               if args.metric is not None else False) or (
        args.suite is not None and lines[0].startswith("no runs in "))
    return EXIT_USAGE if unknown else EXIT_OK


def _prune(db: Path, out_dir: Path, keep: int, *, out_given: bool = False,
           history_given: bool = False) -> int:
    from ..results.history import HistoryError
    from ..results.retention import prune_lines, prune_runs

    if not db.is_file() and not out_dir.is_dir():
        print(f"ragbench history: nothing to prune: no run history at {db} and no run "
              f"folders in {out_dir}", file=sys.stderr)
        return EXIT_USAGE
    if history_given and not db.is_file():
        # a typo: the folders went without the history that pins runs ('last', 'best', a
        # baseline's)
        print(f"ragbench history: no run history at {db}", file=sys.stderr)
        return EXIT_USAGE
    if out_given and not out_dir.is_dir():
        # a typo: no run folder there, so every history row past the newest N went, their
        # folders left where they are
        print(f"ragbench history: --out {out_dir}: no such folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = prune_runs(out_dir, db, keep, vacuum=True)
    except HistoryError as exc:
        print(f"ragbench history: {exc}", file=sys.stderr)
        return EXIT_USAGE
    lines = prune_lines(result)
    print(f"ragbench history: {lines[0]}")
    for line in lines[1:]:
        print(line)
    return EXIT_FAILED if result.errors else EXIT_OK
