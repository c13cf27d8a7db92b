"""The ``ragbench`` command: ``compare``, ``history``, ``report`` and ``list``.

``ragbench compare A B`` compares run B against baseline A exactly as the plugin does (the same
:func:`pytest_ragbench.compare.compare_docs` on the same documents) and exits 0 when every gate
passes, 1 on a regression or failed gate, 2 on a usage error (bad arguments, unreadable input).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .baseline import BaselineError
from .compare import Overrides, compare_docs, load_side
from .gates import TESTS
from .history import DEFAULT_HISTORY, HistoryError, RunHistory, history_lines
from .options import gate_arg, tolerance_arg
from .records import jsonable
from .report.terminal import baseline_lines, dataset_lines, gate_lines

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad arguments already; keep its message on stderr."""


def _alpha(value: str) -> float:
    try:
        alpha = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0.0 < alpha < 1.0:
        raise argparse.ArgumentTypeError(f"alpha must be strictly between 0 and 1, got {value}")
    return alpha


def _compare_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ragbench compare",
                description="Compare run B against baseline A, paired per query, and gate it.")
    p.add_argument("baseline", metavar="A",
                   help="baseline: a baseline JSON file, a run folder, or a history run id "
                        "('last', 'best')")
    p.add_argument("current", metavar="B", help="the run to check, in any of the same forms")
    p.add_argument("--db", default=None, help=f"run history (default: {DEFAULT_HISTORY})")
    p.add_argument("--gate", action="append", default=[], type=gate_arg, metavar="EXPR",
                   help="an extra gate, as --ragbench-gate; repeatable")
    p.add_argument("--tolerance", type=tolerance_arg, default=None,
                   help="allowed drop for every metric (0.02 or 5%%), as --ragbench-tolerance")
    p.add_argument("--test", choices=TESTS, default=None, help="paired test (default: the "
                   "suite's baseline.test, else permutation)")
    p.add_argument("--alpha", type=_alpha, default=None, help="significance level")
    p.add_argument("--require-same-dataset", action="store_true",
                   help="fail when the dataset or the query set differ")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    return p


def compare_main(argv: Sequence[str]) -> int:
    """``ragbench compare``; returns the exit code."""
    args = _compare_parser().parse_args(list(argv))
    cwd = Path.cwd()
    db = Path(args.db) if args.db else cwd / DEFAULT_HISTORY
    try:
        base, base_label = load_side(args.baseline, cwd=cwd, history=db)
        cur, cur_label = load_side(args.current, cwd=cwd, history=db)
        result = jsonable(compare_docs(base, cur, Overrides(
            tolerance=args.tolerance, test=args.test, alpha=args.alpha,
            require_same_dataset=args.require_same_dataset, gates=tuple(args.gate))))
    except (BaselineError, HistoryError) as exc:
        print(f"ragbench compare: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        print(f"ragbench compare: {cur_label} against baseline {base_label}")
        for line in dataset_lines(result["suites"]):
            print(line)
        for line in baseline_lines(result["rows"]):
            print(line)
        if result["gates"]:
            print("gates:")
            for line in gate_lines(result["gates"]):
                print(line)
        for line in result["failures"]:
            print(line)
        print("ragbench compare: " + ("passed" if result["passed"] else "FAILED"))
    return EXIT_OK if result["passed"] else EXIT_FAILED


def history_main(argv: Sequence[str]) -> int:
    """``ragbench history``: recent runs and a trend per metric."""
    p = _Parser(prog="ragbench history", description="List runs and trends from the history.")
    p.add_argument("--db", default=None, help=f"run history (default: {DEFAULT_HISTORY})")
    p.add_argument("--metric", default=None, help="metric to show the trend of")
    p.add_argument("--suite", default=None, help="only runs of this suite (id or name)")
    p.add_argument("--limit", type=int, default=20, help="how many recent runs (default 20)")
    args = p.parse_args(list(argv))
    db = Path(args.db) if args.db else Path.cwd() / DEFAULT_HISTORY
    try:
        with RunHistory(db, readonly=True) as h:
            lines = history_lines(h, metric=args.metric, suite=args.suite, limit=args.limit)
    except HistoryError as exc:
        print(f"ragbench history: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(lines))
    return EXIT_OK


def _optional(module: str, attr: str) -> Callable[[list[str]], int] | None:
    """A subcommand implemented elsewhere in the package, when that module exists."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    func: Any = getattr(mod, attr, None)
    return func if callable(func) else None


def _subcommands() -> dict[str, Callable[[list[str]], int] | None]:
    out: dict[str, Callable[[list[str]], int] | None] = {
        "compare": compare_main,
        "history": history_main,
        "report": _optional("pytest_ragbench.report.rerender", "main_report"),
    }
    listing = _optional("pytest_ragbench.listing", "main")
    if listing is not None:
        out["list"] = listing
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ragbench`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = _subcommands()
    usage = f"usage: ragbench {{{','.join(commands)}}} ..."
    if not args or args[0] in ("-h", "--help"):
        print(usage)
        print("  compare A B   compare run B against baseline A and gate it (exit 1 on failure)")
        print("  history       list runs and metric trends from the run history")
        print("  report        re-render the reports of a run folder")
        if "list" in commands:
            print("  list          list the cases of a suite")
        return EXIT_OK if args else EXIT_USAGE
    name, rest = args[0], args[1:]
    if name not in commands:
        print(f"ragbench: unknown command {name!r}\n{usage}", file=sys.stderr)
        return EXIT_USAGE
    func = commands[name]
    if func is None:
        print(f"ragbench: '{name}' is not available in this installation", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(rest))
    except SystemExit as exc:  # argparse's own exit (2 on bad arguments, 0 on --help)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
