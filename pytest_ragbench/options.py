"""Command-line and ini options of the plugin; the ones the ``ragbench`` command shares.

Shared options are defined once, by functions taking an ``addoption`` callable and a prefix
(the way pytest-benchmark shares its display options with its CLI), so the plugin's
``--ragbench-gate`` and ``ragbench compare --gate`` cannot drift apart in type, default or
help.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .results.gates import Tolerance


def tolerance_arg(value: str) -> Tolerance:
    """argparse type for ``--ragbench-tolerance``: ``0.02`` or ``5%``."""
    from .results.gates import parse_tolerance, tolerance_problem

    try:
        tolerance = parse_tolerance(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    # It applies to every metric, and most lie in [0, 1]: an absolute drop above 1 would pass
    # any regression, so "5" is far more likely a percentage missing its sign.
    problem = tolerance_problem("*", tolerance, None)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return tolerance


def gate_arg(value: str) -> str:
    """argparse type for ``--ragbench-gate``: checked for syntax now, for metrics at the end."""
    from .results.gates import parse_gate_expression

    try:
        parse_gate_expression(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


AddOption = Callable[..., Any]


def add_gate_options(addoption: AddOption, prefix: str = "ragbench-") -> None:
    """Register ``--{prefix}gate`` and ``--{prefix}tolerance``.

    ``addoption`` is pytest's ``group.addoption`` (prefix ``ragbench-``) or an argparse
    parser's ``add_argument`` (prefix ``""``, as ``ragbench compare`` does): one definition, so
    the plugin and the command accept the same values with the same help.
    """
    addoption(
        f"--{prefix}gate", action="append", default=[], type=gate_arg, metavar="EXPR",
        help="an extra gate for every suite, e.g. 'ndcg@10 >= 0.6', 'ndcg@10: drop <= 2%%', "
             "'ndcg@10: no significant drop at 0.05', 'difficulty=hard: recall@10 >= 0.5'; "
             "repeatable",
    )
    addoption(
        f"--{prefix}tolerance", default=None, type=tolerance_arg, metavar="TOL",
        help="allowed drop against the baseline for every metric but wall times (latency_ms, "
             "any *_ms): absolute (0.02) or relative (5%%); overrides the suite's "
             "baseline.tolerance",
    )


def add_history_option(addoption: AddOption, prefix: str = "ragbench-",
                       aliases: Sequence[str] = ()) -> None:
    """Register ``--{prefix}history`` (plus ``aliases``, e.g. the command's older ``--db``)."""
    addoption(
        f"--{prefix}history", *aliases, default=None, metavar="PATH",
        help="SQLite run history: pytest runs are appended to it, baselines (a run "
             "number, 'last', 'best', a run id) are read from it (default: "
             ".ragbench/history.sqlite under the rootdir; for the ragbench command, under the "
             "current directory)",
    )


SUMMARY_LEVELS = ("short", "default", "full")

#: ``--ragbench-resume`` given without RUN: the newest run of the suites, when unfinished.
#: Not a run reference, so that an explicit ``=latest`` can name the newest run of the
#: suites, finished or not.
RESUME_NEWEST_UNFINISHED = "<newest unfinished>"


def add_summary_option(addoption: AddOption, prefix: str = "ragbench-") -> None:
    """Register ``--{prefix}summary``: how much the terminal summary and ``summary.md`` show
    (the plugin's ``--ragbench-summary``, ``ragbench report --summary``)."""
    # the command prints no summary and has no -q/-v: its default is summary.md's
    default = ("default: default, or short with -q and full with -v for the terminal"
               if prefix else "default: default")
    addoption(
        f"--{prefix}summary", default=None, choices=SUMMARY_LEVELS,
        help="how much the summary shows: short (means, failed gates, verdict), default "
             "(per suite one table of systems x headline metrics, significant A/B "
             f"differences, gates failed first, verdict) or full (every metric, every A/B "
             f"pair, every gate and baseline row); {default}",
    )


def summary_level(value: str | None, verbosity: int = 0) -> str:
    """The summary level: the option's ``value`` when given, else from pytest's verbosity
    (``-q``: short, ``-v``: full)."""
    if value:
        return value
    if verbosity < 0:
        return "short"
    return "full" if verbosity > 0 else "default"


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
             "folder, or from the run history a run number (the # of 'ragbench history'), "
             "'last', 'best' or a run id; gates against the baseline (drop, no significant "
             "drop) and the tolerance decide the verdict",
    )
    add_gate_options(group.addoption)
    add_history_option(group.addoption)
    add_summary_option(group.addoption)
    group.addoption(
        "--ragbench-no-history", action="store_true", default=False,
        help="do not append this run to the run history",
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
        "--ragbench-save-run", default=None, metavar="DIR",
        help="write each suite x system's rankings as a TREC run file DIR/<suite>.<system>.trec "
             "(top k per query; records then keep k documents), readable by trec_eval, ranx "
             "and the 'run' retriever",
    )
    group.addoption(
        "--ragbench-resume", nargs="?", const=RESUME_NEWEST_UNFINISHED, default=None,
        metavar="RUN",
        help="finish an earlier run: reuse its finished cases whose suite, dataset, system "
             "parameters, case and repetition are unchanged, run the rest (missing or "
             "errored), and report old and new as one run. RUN: a run number (the history's #), "
             "a run id, a run folder, 'last', 'best' or 'latest' (the newest run of the same "
             "suites, finished or not); without RUN: that run if it is unfinished or a "
             "crashed worker left cases of it (with --lf or --ff, whether or not)",
    )
    group.addoption(
        "--ragbench-html", default=None, metavar="PATH",
        help="also write the self-contained HTML report to PATH (it is always written to the "
             "run folder as report.html)",
    )
    parser.addini(
        "ragbench_progress_interval", type="string", default="10",
        help="seconds between progress lines (LLM requests, tokens, cost, ETA) when the "
             "output is not a terminal, e.g. in CI logs; 0 turns progress off (default 10)",
    )
    parser.addini(
        "ragbench_suites", type="linelist", default=[],
        help="suite files to collect beside the test paths (testpaths, or the ones given on "
             "the command line); relative to the rootdir",
    )
    parser.addini(
        "ragbench_keep_runs", type="string", default="",
        help="after each run keep the newest N runs' folders and history rows, and the runs a "
             "baseline points at; delete older ones (default: keep every run)",
    )
