"""Plain-text summary lines for the terminal (no timing, so runs can be compared byte for byte)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _f(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """Per suite and retriever: counts, then each metric's mean, 95% CI, n and NaN count."""
    lines: list[str] = []
    for s in summary["suites"]:
        ds = (s.get("dataset_hash") or "")[:12]
        lines.append(f"suite {s['name']} [{s['id']}] dataset {ds}")
        for r in s["retrievers"]:
            lines.append(
                f"  {r['name']}: {r['n_cases']} cases, {r['n_errors']} errors, "
                f"{r['n_failed']} below per-query thresholds"
            )
            if r["n_no_relevant"]:
                lines.append(
                    f"    {r['n_no_relevant']} queries have no relevant document in the labels "
                    "(scored 0, as trec_eval does)"
                )
            width = max([len("metric"), *(len(m) for m in r["metrics"])])
            lines.append(f"    {'metric':<{width}}  {'mean':>8}  {'95% CI':<18}  {'n':>6}  "
                         f"{'nan':>5}")
            for name, st in r["metrics"].items():
                ci = f"[{_f(st['ci_low'])}, {_f(st['ci_high'])}]"
                lines.append(f"    {name:<{width}}  {_f(st['mean']):>8}  {ci:<18}  "
                             f"{st['n']:>6}  {st['n_nan']:>5}")
            for e in r.get("errors", [])[:5]:
                lines.append(f"    error {e['case_id']} [{e['stage']}]: {e['message']}")
    return lines


def gate_lines(gates: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for g in gates:
        mark = "PASS" if g["passed"] else "FAIL"
        lines.append(
            f"  {mark} {g['suite']}/{g['retriever']}: {g['metric']} {_f(g['value'])} "
            f"{g['op']} {g['threshold']:g} (margin {_f(g['margin'], signed=True)})"
        )
    return lines


def baseline_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        mark = "REGRESSED" if row["regressed"] else "ok"
        lines.append(
            f"  {mark:<9} {row['suite']}/{row['retriever']}: {row['metric']} "
            f"{_f(row['current'])} vs baseline {_f(row['baseline'])} "
            f"(delta {_f(row['delta'], signed=True)}, tolerance {row['tolerance']})"
        )
    return lines


def failure_lines(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One explicit line per failed gate or regression, for the end of the output."""
    out = []
    for g in summary["gates"]:
        if not g["passed"]:
            out.append(
                f"ragbench: gate failed: {g['suite']}/{g['retriever']} {g['metric']} = "
                f"{_f(g['value'])}, expected {g['op']} {g['threshold']:g} "
                f"(missed by {_f(abs(g['margin']))})"
            )
    for row in rows:
        if row["regressed"]:
            out.append(
                f"ragbench: regression: {row['suite']}/{row['retriever']} {row['metric']} "
                f"dropped from {_f(row['baseline'])} to {_f(row['current'])} "
                f"(delta {_f(row['delta'], signed=True)}, tolerance {row['tolerance']})"
            )
    return out
