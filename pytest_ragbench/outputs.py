"""What only some runs write or read, for the controller's session: the baseline and its
comparison, the run history and its retention, the HTML report, TREC run files, junit gate
testcases, the shown documents' texts and the run budget's figures.

:mod:`pytest_ragbench.session` imports this module at one place (``RagbenchSession.outputs``)
the first time a run needs one of these, as pytest-xdist imports its ``DSession`` only in
distribution mode: a run with no outputs, baseline or LLM (the like-for-like row of
``benchmarks/overhead.py``) loads none of it (jinja2, sqlite3, the comparison, the budget
package). Each function says what it returns for the session to keep or print; usage errors
are raised as :class:`pytest.UsageError` before the first item.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .records import jsonable
from .report.documents import shown_document_texts
from .report.html import write_html
from .report.junit import add_gate_testcases
from .report.rerender import history_from_db, history_from_runs
from .report.views import with_failure_lines
from .results.baseline import BaselineError, baseline_run_ids, make_baseline, save_baseline
from .results.compare import (
    HISTORY_SPECS,
    Overrides,
    check_reference,
    compare_docs,
    load_side,
    suites_problem,
    systems_problem,
)
from .results.history import HistoryError, RunHistory
from .results.retention import prune_lines, prune_runs
from .results.runfile import save_runs

__all__ = [
    "Comparison", "add_gate_testcases", "add_to_history",
    "check_baseline_reference", "check_history", "compare", "html_reports", "load_baseline",
    "make_baseline", "prune", "save_baseline", "save_runs", "shown_document_texts",
]


def check_baseline_reference(spec: str, *, cwd: Path,
                             history: Path) -> tuple[dict[str, Any], str] | None:
    """The baseline document and its label when ``spec`` names a file now; None when it is
    resolved per suite once the run's suites are known (``last``, ``best``). A reference
    that cannot exist is a usage error."""
    try:
        doc = check_reference(spec, cwd=cwd, history=history)
    except BaselineError as exc:
        raise pytest.UsageError(f"ragbench: {exc}") from None
    return (doc, spec) if doc is not None else None


def check_history(path: Path) -> None:
    """An existing history file the run could not append to is a usage error now, not a lost
    row at the end (nothing is written)."""
    try:
        with RunHistory(path, readonly=True):
            pass
    except HistoryError as exc:
        raise pytest.UsageError(f"ragbench: {exc} (check --ragbench-history, or pass "
                                "--ragbench-no-history)") from None


def load_baseline(spec: str, names: dict[str, str], *, cwd: Path, history: Path,
                  loaded: tuple[dict[str, Any], str] | None,
                  systems: dict[str, list[str]] | None = None) -> tuple[dict[str, Any], str]:
    """The baseline for the run's suites (``names``: suite id -> suite name): a history
    reference resolved for these suites, else the document already ``loaded`` at start-up.
    A baseline that matches none of them is a usage error, and so is one whose suite holds
    none of the matching suite's ``systems`` (suite id -> system names): nothing would be
    compared, and the run would pass."""
    try:
        if spec in HISTORY_SPECS:
            doc, label = load_side(spec, cwd=cwd, history=history,
                                   suites=sorted(set(names.values())))
        elif loaded is not None:
            doc, label = loaded
        else:
            doc, label = load_side(spec, cwd=cwd, history=history)
    except BaselineError as exc:
        raise pytest.UsageError(f"ragbench: {exc}") from None
    problem = suites_problem(doc, names)
    if problem is not None:
        raise pytest.UsageError(f"ragbench: baseline {spec!r} {problem}")
    problem = systems_problem(doc, names, systems or {})
    # Only for a baseline named on purpose: with last/best a renamed system would otherwise
    # refuse every later run (none would reach the history to become the new baseline).
    if problem is not None and spec not in HISTORY_SPECS:
        raise pytest.UsageError(f"ragbench: baseline {spec!r} {problem}; nothing would be "
                                "compared (save a baseline of these systems, or run once "
                                "without --ragbench-baseline)")
    return doc, label


@dataclass
class Comparison:
    """What a comparison adds to the verdict."""

    failures: list[str] = field(default_factory=list)  # gates and regressions that failed
    other: list[str] = field(default_factory=list)  # neither (a dataset that must not change)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the baseline's metric rows


def compare(summary: dict[str, Any], current: dict[str, Any], *,
            baseline: tuple[dict[str, Any], str] | None, baseline_spec: str | None,
            tolerance: Any, gates: tuple[str, ...]) -> Comparison:
    """Compare this run's per-query document with the baseline (if any) and check the
    command-line and stored gates against it; the gates and baseline rows go into
    ``summary``."""
    base_doc = baseline[0] if baseline is not None else None
    if baseline is not None:
        base_run = baseline[0].get("run", {})
        summary["baseline"] = {"path": baseline[1], "spec": baseline_spec,
                               "baseline_run": base_run.get("id"),
                               "baseline_runs": base_run.get("runs")}
    try:
        result = jsonable(with_failure_lines(compare_docs(
            base_doc, current, Overrides(tolerance=tolerance, gates=gates),
            suite_thresholds=False, stored_verdict=False)))
    except BaselineError as exc:
        line = f"ragbench: {exc}"
        return Comparison(failures=[line], other=[line])
    # labelled with their coverage by compare_docs, as the suites' own gates are
    summary["gates"] += result["gates"]
    summary["gates_passed"] = all(g["passed"] for g in summary["gates"])
    rows: list[dict[str, Any]] = []
    if base_doc is not None:
        rows = result["rows"]
        summary["baseline"].update(rows=rows, suites=result["suites"])
    return Comparison(failures=list(result["failures"]), other=list(result["other_failures"]),
                      rows=rows)


def add_to_history(path: Path, current: dict[str, Any], *, passed: bool,
                   baseline_doc: dict[str, Any] | None, saved_to: Path | None) -> str | None:
    """Append the run to the history; a message when it could not be added."""
    try:
        with RunHistory(path) as h:
            h.append(current, passed=passed, compared_with=baseline_run_ids(baseline_doc or {}),
                     saved_to=saved_to)
    except HistoryError as exc:
        return f"ragbench: run not added to the history: {exc}"
    return None


def prune(out_root: Path, history: Path, keep: int, *, run_id: str, ini: str) -> list[str]:
    """Apply ``ragbench_keep_runs`` once this run is stored; the lines to show."""
    try:
        result = prune_runs(out_root, history, keep, protect=[run_id])
    except HistoryError as exc:
        return [f"ragbench: old runs not pruned: {exc}"]
    if not (result.deleted or result.errors):
        return []
    lines = prune_lines(result, detail=False)
    return [f"ragbench: {lines[0]} ({ini} = {keep})", *(f"ragbench: {ln}" for ln in lines[1:])]


def html_reports(paths: Iterable[Path], summary: dict[str, Any],
                 records: list[dict[str, Any]], *, history_db: Path, out_root: Path,
                 run_id: str, doc_text: dict[str, str] | None) -> list[str]:
    """Write the HTML report to each of ``paths``, with the trends of the runs before this
    one; the lines to show."""
    lines: list[str] = []
    history: list[dict[str, Any]] = []
    try:
        history = (history_from_db(history_db, before=run_id) if history_db.is_file()
                   else history_from_runs(out_root, before=run_id))
    except (HistoryError, OSError, ValueError) as exc:
        lines.append(f"ragbench: report trends left out: {exc}")
    for path in paths:
        written = write_html(path, summary, records, history=history, doc_text=doc_text)
        lines.append(f"report: {written}")
    return lines
