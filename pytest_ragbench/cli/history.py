"""``ragbench history``: recent runs and a trend per metric, from the run history."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..options import add_history_option
from .common import EXIT_OK, EXIT_USAGE, add_command


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
                    summary="list runs and metric trends from the run history",
                    description="List recent runs and the trend of a metric from the run "
                                "history.")
    add_history_option(p.add_argument, prefix="", aliases=("--db",))
    p.add_argument("--metric", default=None, help="metric to show the trend of")
    p.add_argument("--suite", default=None, help="only runs of this suite (id or name)")
    p.add_argument("--limit", type=_positive, default=20,
                   help="how many recent runs (default 20)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ragbench history`` on parsed arguments; returns the exit status."""
    from ..results.history import DEFAULT_HISTORY, HistoryError, RunHistory, history_lines

    db = Path(args.history) if args.history else Path.cwd() / DEFAULT_HISTORY
    try:
        with RunHistory(db, readonly=True) as h:
            lines = history_lines(h, metric=args.metric, suite=args.suite, limit=args.limit)
    except HistoryError as exc:
        print(f"ragbench history: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(lines))
    return EXIT_OK
