"""Command-line and ini options, and the value parsers shared with the ``ragbench`` CLI."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .gates import Tolerance


def tolerance_arg(value: str) -> Tolerance:
    """argparse type for ``--ragbench-tolerance``: ``0.02`` or ``5%``."""
    from .gates import parse_tolerance

    try:
        return parse_tolerance(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def gate_arg(value: str) -> str:
    """argparse type for ``--ragbench-gate``: checked for syntax now, for metrics at the end."""
    from .gates import parse_gate_expression

    try:
        parse_gate_expression(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def addoption(parser: Any) -> None:
    """Register the plugin's options on pytest's parser."""
    group = parser.getgroup("ragbench", "RAG benchmarks as test suites (pytest-ragbench)")
    group.addoption(
        "--ragbench", action="append", default=[], metavar="SUITE",
        help="collect the suite file SUITE (YAML or JSON); repeatable. Without other "
             "arguments only the suites are collected.",
    )
    group.addoption(
        "--ragbench-out", default=None, metavar="DIR",
        help="folder for run outputs (default: .ragbench/runs under the rootdir); each run "
             "writes DIR/<run id>/ and points DIR/latest at it",
    )
    group.addoption(
        "--ragbench-save-baseline", default=None, metavar="PATH",
        help="write per-query scores of this run as a baseline JSON file",
    )
    group.addoption(
        "--ragbench-baseline", default=None, metavar="REF",
        help="compare this run per query against a baseline: a baseline JSON file, a run "
             "folder, or from the run history 'last', 'best' or a run id; gates against the "
             "baseline (drop, no significant drop) and the tolerance decide the verdict",
    )
    group.addoption(
        "--ragbench-gate", action="append", default=[], type=gate_arg, metavar="EXPR",
        help="an extra gate for every suite, e.g. 'ndcg@10 >= 0.6', 'ndcg@10: drop <= 2%%', "
             "'ndcg@10: no significant drop at 0.05', 'difficulty=hard: recall@10 >= 0.5'; "
             "repeatable",
    )
    group.addoption(
        "--ragbench-history", default=None, metavar="PATH",
        help="SQLite run history to append to and to read baselines from (default: "
             ".ragbench/history.sqlite under the rootdir)",
    )
    group.addoption(
        "--ragbench-no-history", action="store_true", default=False,
        help="do not append this run to the run history",
    )
    group.addoption(
        "--ragbench-tolerance", default=None, type=tolerance_arg, metavar="TOL",
        help="allowed drop against the baseline for every metric: absolute (0.02) or "
             "relative (5%%); overrides the suite's baseline.tolerance",
    )
    group.addoption(
        "--ragbench-no-output", action="store_true", default=False,
        help="write no run folder and no history entry (the terminal summary and gates "
             "still apply)",
    )
    group.addoption(
        "--ragbench-cache", default=None, choices=("on", "off", "read-only", "refresh"),
        help="LLM/embedding response cache mode, overriding the suite's cache.mode: on (read "
             "and write), off, read-only, refresh (write, never read)",
    )
    group.addoption(
        "--ragbench-cache-path", default=None, metavar="PATH",
        help="LLM/embedding response cache file (SQLite), overriding the suite's cache.path",
    )
    group.addoption(
        "--ragbench-html", default=None, metavar="PATH",
        help="also write the self-contained HTML report to PATH (it is always written to the "
             "run folder as report.html)",
    )
    parser.addini(
        "ragbench_suites", type="linelist", default=[],
        help="suite files to collect as if given with --ragbench (relative to the rootdir)",
    )
