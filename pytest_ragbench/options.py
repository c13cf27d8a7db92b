"""Command-line and ini options, and the value parsers shared with the ``ragbench`` CLI."""

from __future__ import annotations

import argparse
from typing import Any

from .gates import Tolerance, parse_tolerance


def tolerance_arg(value: str) -> Tolerance:
    """argparse type for ``--ragbench-tolerance``: ``0.02`` or ``5%``."""
    try:
        return parse_tolerance(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        "--ragbench-baseline", default=None, metavar="PATH",
        help="compare this run's means against a saved baseline; a drop beyond the "
             "tolerance fails the run",
    )
    group.addoption(
        "--ragbench-tolerance", default=None, type=tolerance_arg, metavar="TOL",
        help="allowed drop against the baseline for every metric: absolute (0.02) or "
             "relative (5%%); overrides the suite's baseline.tolerance",
    )
    group.addoption(
        "--ragbench-no-output", action="store_true", default=False,
        help="write no run folder (the terminal summary and gates still apply)",
    )
    parser.addini(
        "ragbench_suites", type="linelist", default=[],
        help="suite files to collect as if given with --ragbench (relative to the rootdir)",
    )
