"""The one verdict of a run, and the coverage that says whether the run is partial.

Every output (exit status, ``summary.json``, ``summary.md``, the HTML header, the terminal,
``ragbench history``, ``ragbench compare`` and junit) renders the same ``verdict`` mapping::

    {"passed": bool, "status": "passed" | "failed", "partial": bool,
     "cases_run": N, "cases_total": M, "coverage": "N of M cases",
     "reasons": [{"kind", "count", "text", "fails"}, ...], "headline": str}

Reasons that fail a run: items that failed or errored (any pytest item), test files that
failed to collect (a run that went on without them: pytest-xdist, or
``--continue-on-collection-errors``), gates that failed,
metrics that regressed against the baseline, other baseline failures (a dataset that must not
change), an interruption, and a non-zero exit status nothing else explains. ``partial`` is a
reason too, but it does not fail a run by itself: a run narrowed with ``-k`` passes or fails on
what it ran, and says that it covered only part of its suites. Nothing here imports pytest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def coverage_text(cases_run: int, cases_total: int) -> str:
    """``"3 of 15 cases"``."""
    return f"{cases_run} of {_plural(cases_total, 'case')}"


def gate_coverage_text(gate: Mapping[str, Any], system_coverage: str) -> str:
    """What a gate of a partial run is labelled with ("on ... that ran"): a gate with a query
    scope, the cases of its scope that ran (``scope_cases``: ``"1 case of its scope"``), as it
    judged them; any other, its system's ``system_coverage`` (``"3 of 5 cases"``)."""
    n = gate.get("scope_cases")
    if isinstance(n, int) and not isinstance(n, bool):
        return f"{_plural(n, 'case')} of its scope"
    return system_coverage


@dataclass(frozen=True)
class Coverage:
    """How many cases ran, per suite id, against how many the suites hold."""

    run: Mapping[str, int] = field(default_factory=dict)
    total: Mapping[str, int] = field(default_factory=dict)
    interrupted: bool = False

    def suite(self, suite_id: str) -> tuple[int, int]:
        """(cases run, cases held) of one suite; held is at least run (unknown = as run)."""
        n = int(self.run.get(suite_id, 0))
        return n, max(n, int(self.total.get(suite_id, n)))

    @property
    def cases_run(self) -> int:
        return sum(self.suite(s)[0] for s in self._ids())

    @property
    def cases_total(self) -> int:
        return sum(self.suite(s)[1] for s in self._ids())

    def _ids(self) -> list[str]:
        return sorted(set(self.run) | set(self.total))

    @property
    def partial(self) -> bool:
        """Fewer cases ran than the suites hold, or the run was interrupted."""
        return self.interrupted or self.cases_run < self.cases_total


def beyond_tolerance(row: Mapping[str, Any]) -> bool:
    """Whether a comparison row moved beyond its tolerance: the verdict's "regression". Its
    ``regressed`` (the row's mark) is also set by a failed gate judged on it, which the
    verdict counts as that gate; a row stored before the two were told apart has only
    ``regressed``, its tolerance's."""
    return bool(row.get("beyond_tolerance", row.get("regressed")))


def make_verdict(
    *, items_failed: int = 0, items_errored: int = 0, collection_errors: int = 0,
    gates: Sequence[Mapping[str, Any]] = (), rows: Sequence[Mapping[str, Any]] = (),
    other_failures: Sequence[str] = (), cases_run: int = 0, cases_total: int = 0,
    partial: bool = False, interrupted: bool = False, exitstatus: int | None = None,
) -> dict[str, Any]:
    """Build the verdict mapping (see the module docstring).

    With ``exitstatus`` (the plugin) the verdict passes exactly when it is 0; a non-zero status
    that none of the other reasons explains is a reason of its own, so the two never disagree.
    """
    reasons: list[dict[str, Any]] = []

    def add(kind: str, count: int, text: str, fails: bool = True) -> None:
        reasons.append({"kind": kind, "count": int(count), "text": text, "fails": fails})

    if items_failed:
        add("items_failed", items_failed, f"{_plural(items_failed, 'item')} failed")
    if items_errored:
        add("items_errored", items_errored, f"{_plural(items_errored, 'item')} errored")
    if collection_errors:
        add("collection_errors", collection_errors,
            _plural(collection_errors, "collection error"))
    n_gates = sum(1 for g in gates if not g.get("passed", True) and not g.get("skipped"))
    if n_gates:
        add("gates_failed", n_gates, f"{_plural(n_gates, 'gate')} failed")
    n_reg = sum(1 for r in rows if beyond_tolerance(r))
    if n_reg:
        add("regression", n_reg,
            f"{_plural(n_reg, 'metric')} regressed against the baseline")
    for line in other_failures:
        add("baseline", 1, line.removeprefix("ragbench: "))
    if interrupted:
        add("interrupted", 1, "the run was interrupted")
    if exitstatus not in (None, 0) and not any(r["fails"] for r in reasons):
        add("exit_status", 1, f"pytest exit status {exitstatus}")
    if partial:
        add("partial", cases_total - cases_run,
            f"partial: {coverage_text(cases_run, cases_total)} ran", fails=False)
    passed = (exitstatus == 0) if exitstatus is not None else not any(
        r["fails"] for r in reasons)
    return {
        "passed": passed, "status": "passed" if passed else "failed", "partial": bool(partial),
        "cases_run": int(cases_run), "cases_total": int(cases_total),
        "coverage": coverage_text(cases_run, cases_total), "reasons": reasons,
        "headline": headline(passed, partial, cases_run, cases_total),
    }


def headline(passed: bool, partial: bool, cases_run: int, cases_total: int) -> str:
    """``"passed"``, ``"FAILED"``, with ``" (partial: 3 of 15 cases)"`` for a partial run."""
    word = "passed" if passed else "FAILED"
    return f"{word} (partial: {coverage_text(cases_run, cases_total)})" if partial else word


def reason_line(verdict: Mapping[str, Any]) -> str:
    """``"FAILED: 23 items failed; 1 gate failed"`` (one line for every output)."""
    texts = [r["text"] for r in verdict.get("reasons", []) if r.get("fails")]
    return verdict["headline"] + (": " + "; ".join(texts) if texts else "")


def verdict_of(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict of a summary; for summaries written before verdicts existed, one rebuilt
    from what they hold (``passed``, gates, the baseline rows, ``run.partial``)."""
    v = summary.get("verdict")
    if isinstance(v, Mapping) and "passed" in v and "headline" in v:
        return dict(v)
    run = summary.get("run") or {}
    n = int(run.get("n_cases", run.get("n_records", 0)) or 0)
    total = int(run.get("n_cases_total", n) or n)
    rows = (summary.get("baseline") or {}).get("rows") or []
    out = make_verdict(gates=summary.get("gates") or [], rows=rows, cases_run=n,
                       cases_total=total, partial=bool(run.get("partial")))
    if "passed" in summary and bool(summary["passed"]) != out["passed"]:
        out["passed"] = bool(summary["passed"])
        out["status"] = "passed" if out["passed"] else "failed"
        out["headline"] = headline(out["passed"], out["partial"], n, total)
    return out
