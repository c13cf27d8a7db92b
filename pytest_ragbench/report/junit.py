"""Gates, baseline regressions and the verdict as junit testcases, so CI test views show a
failed gate and agree with the run's verdict.

pytest's junitxml plugin writes one testcase per item report it is handed. At session end,
before it writes its file, each gate (suite gates, ``--ragbench-gate``, gates against the
baseline) and each baseline comparison row is handed to it as a synthetic call report and a
closing teardown report, named ``SUITE::ragbench-gates::RETRIEVER::GATE`` (classname
``SUITE.ragbench-gates.RETRIEVER``). A failing verdict reason that fails no item or gate
(:data:`UNSEEN_REASONS`) is one more, ``ragbench-verdict::REASON``; the verdict line and the
coverage are testsuite properties. The reports go to the junitxml plugin only: the terminal,
``--lf`` and the exit status never see them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from ..results.verdict import beyond_tolerance, reason_line, verdict_of
from .format import num as _f
from .format import p_value as _p
from .views import NOTHING_COMPARED, metrics_not_in_baseline_text, not_in_baseline_text

GATES_CLASS = "ragbench-gates"

#: The testcases of verdict reasons that fail no item or gate testcase (an interruption, a
#: baseline that cannot be compared, an exit status nothing else explains): without them a
#: run whose cases all passed read green in junit while every other output said FAILED.
VERDICT_CLASS = "ragbench-verdict"
UNSEEN_REASONS = ("interrupted", "baseline", "exit_status")


def _junit_plugin(config: pytest.Config) -> Any:
    """The running LogXML instance, or None without ``--junitxml``."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - pytest moved its internals
        return None
    return config.stash.get(xml_key, None)


def _name(text: str) -> str:
    # "::" separates node id parts and "[" opens parameters: neither may appear in a name.
    return text.replace("::", ":").replace("[", "(").replace("]", ")")


def gate_detail(g: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The text of a gate result (what it checked, the value, the margin) and its figures."""
    cov = f" (on {g['coverage']} that ran)" if g.get("coverage") else ""
    if g.get("skipped"):
        return f"{g['text']}: skipped ({g.get('note', '')})", {}
    if g.get("note"):  # failed with nothing to check (a scope no query matches)
        return f"{g['text']}: {g['note']}{cov}", {}
    if g.get("kind", "threshold") == "threshold":
        text = (f"{g['text']}: value {_f(g.get('value'))}, margin "
                f"{_f(g.get('margin'), signed=True)}{cov}")
        return text, {"value": g.get("value"), "margin": g.get("margin")}
    r = g.get("row") or {}
    text = (f"{g['text']}: delta {_f(r.get('delta'), signed=True)} "
            f"[{_f(r.get('ci_low'), signed=True)}, {_f(r.get('ci_high'), signed=True)}], "
            f"p = {_p(r.get('p_holm'))} ({r.get('test')}, Holm), "
            f"{_f(r.get('baseline'))} -> {_f(r.get('current'))}{cov}")
    return text, {"value": r.get("delta"), "margin": g.get("margin"),
                  "p_holm": r.get("p_holm")}


def _row_detail(row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    text = (f"{row['metric']} {_f(row.get('current'))} vs baseline {_f(row.get('baseline'))}: "
            f"delta {_f(row.get('delta'), signed=True)} [{_f(row.get('ci_low'), signed=True)}, "
            f"{_f(row.get('ci_high'), signed=True)}], p = {_p(row.get('p_holm'))} "
            f"({row.get('test')}), tolerance {row.get('tolerance')}")
    margin = None
    if row.get("allowed") is not None and row.get("delta") is not None:
        worse = -row["delta"] if row.get("direction", "higher") == "higher" else row["delta"]
        margin = row["allowed"] - worse
    return text, {"value": row.get("delta"), "margin": margin, "p_holm": row.get("p_holm")}


def gate_cases(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
               reused_failed: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One entry per gate and per tolerance-checked baseline row: node id, outcome, text,
    properties; and one per failed case of a resumed run that was not run now (node id ->
    the run it failed in), which no item testcase shows, yet the verdict counts."""
    ids = {s.get("name"): s.get("id") for s in summary.get("suites") or []}
    out = []
    for nodeid, run_id in sorted((reused_failed or {}).items()):
        out.append({"nodeid": nodeid, "path": nodeid.split("::")[0], "outcome": "failed",
                    "text": f"{nodeid} failed in run {run_id}, whose record this resumed run "
                            "keeps (not run now); the verdict counts it",
                    "properties": {"reused_from": run_id}, "item": True})
    for g in summary.get("gates") or []:
        text, figures = gate_detail(g)
        outcome = "skipped" if g.get("skipped") else "passed" if g.get("passed") else "failed"
        # by the suite file the gate was checked on: two files of a run may share a name
        suite_id = g.get("suite_id") or ids.get(g.get("suite")) or str(g.get("suite"))
        out.append({"nodeid": f"{suite_id}::{GATES_CLASS}::{_name(str(g.get('retriever')))}"
                              f"::{_name(str(g['text']))}",
                    "path": suite_id, "outcome": outcome, "text": text,
                    "properties": {"gate": g["text"], **figures,
                                   **({"coverage": g["coverage"]} if g.get("coverage") else {})}})
    for row in rows:
        if row.get("tolerance") is None:
            continue
        text, figures = _row_detail(row)
        suite_id = row.get("suite_id") or ids.get(row.get("suite")) or str(row.get("suite"))
        scope = f" [{row['scope']}]" if row.get("scope") else ""
        gate = f"{row['metric']}{scope}: regression within tolerance {row['tolerance']}"
        out.append({"nodeid": f"{suite_id}::{GATES_CLASS}::{_name(str(row['retriever']))}"
                              f"::{_name(gate)}",
                    # the tolerance's check: a gate judged on the row is a testcase of its own
                    "path": suite_id,
                    "outcome": "failed" if beyond_tolerance(row) else "passed",
                    "text": text, "properties": {"gate": gate, **figures}})
    verdict = verdict_of(summary)
    for reason in verdict.get("reasons", []):
        # items, gates and regressions fail testcases of their own; these fail nothing else
        if reason.get("fails") and reason.get("kind") in UNSEEN_REASONS:
            out.append({"nodeid": f"{VERDICT_CLASS}::{_name(str(reason['text']))}",
                        "path": VERDICT_CLASS, "outcome": "failed",
                        "text": reason_line(verdict),
                        "properties": {"verdict": reason_line(verdict)}})
    return out


def nothing_compared(summary: Mapping[str, Any],
                     rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a comparison with a baseline compared nothing (a run of new systems alone
    passes, no gate or row testcase saying so); None without a baseline or when it
    compared something."""
    base = summary.get("baseline")
    if not isinstance(base, Mapping) or rows:
        return None
    why = [f"suite {s.get('name')}: {text}" for s in base.get("suites") or []
           if isinstance(s, Mapping)
           for text in (not_in_baseline_text(s), metrics_not_in_baseline_text(s)) if text]
    return NOTHING_COMPARED + (": " + "; ".join(why) if why else "")


def add_gate_testcases(config: pytest.Config, summary: Mapping[str, Any],
                       rows: Sequence[Mapping[str, Any]],
                       reused_failed: Mapping[str, str] | None = None) -> int:
    """Hand every gate to the junitxml plugin as a testcase; returns how many were added."""
    xml = _junit_plugin(config)
    if xml is None:
        return 0
    verdict = verdict_of(summary)
    # on the testsuite too, for CI views that show its properties: the one verdict, and what
    # share of the suites' cases ran
    xml.add_global_property("ragbench_verdict", reason_line(verdict))
    xml.add_global_property("ragbench_coverage", verdict["coverage"])
    compared = nothing_compared(summary, rows)
    if compared is not None:
        xml.add_global_property("ragbench_baseline", compared)
    cases = gate_cases(summary, rows, reused_failed)
    for case in cases:
        props = [(f"ragbench_gate.{k}", "nan" if v is None else v)
                 for k, v in case["properties"].items()]
        name = case["nodeid"].rsplit("::", 1)[-1]
        location = (case["path"], None, name)
        longrepr: Any = None
        if case["outcome"] == "failed":
            longrepr = (f"ragbench: {case['text']}"
                        if case["path"] == VERDICT_CLASS or case.get("item")
                        else f"ragbench: gate failed: {case['text']}")
        elif case["outcome"] == "skipped":
            longrepr = (case["path"], 0, case["text"])
        report = pytest.TestReport(case["nodeid"], location, {}, case["outcome"], longrepr,
                                   "call", user_properties=props)
        xml.pytest_runtest_logreport(report)
        xml.pytest_runtest_logreport(pytest.TestReport(
            case["nodeid"], location, {}, "passed", None, "teardown", user_properties=props))
    return len(cases)
