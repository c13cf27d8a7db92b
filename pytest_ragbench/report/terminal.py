"""Plain-text summary lines for the terminal (no timing, so runs can be compared byte for byte)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .format import num as _f
from .format import p_value as _p
from .views import baseline_notes, gate_state, usage_view, where


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """Per suite and retriever: counts, then each metric's mean, 95% CI, n and NaN count."""
    lines: list[str] = []
    for s in summary["suites"]:
        ds = (s.get("dataset_hash") or "")[:12]
        line = f"suite {s['name']} [{s['id']}] dataset {ds}"
        if s.get("partial"):
            line += f": partial, {s['n_cases_run']} of {s['n_cases_total']} cases ran"
        lines.append(line)
        for r in s["retrievers"]:
            counts = (f"  {r['name']}: {r['n_cases']} cases, {r['n_errors']} errors, "
                      f"{r['n_failed']} below per-query thresholds")
            # Known failures only when the suite has some, so other runs print as before;
            # .get: summaries written before these counts existed are printed too (compare).
            n_xfailed, n_xpassed = r.get("n_xfailed", 0), r.get("n_xpassed", 0)
            if n_xfailed or n_xpassed:
                counts += f", {n_xfailed} xfailed (expected), {n_xpassed} xpassed"
            lines.append(counts)
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
            usage = usage_view(r)
            if usage is not None:
                lines.append(f"    {usage.line()}")
            flaky = r.get("flaky")
            if flaky is not None:
                flips = [f for f in flaky if f["flips"]]
                lines.append(f"    repeated runs: {len(flaky)} case/metric pairs vary, "
                             f"{len(flips)} flip between pass and fail at 0.5")
                for f in flaky[:5]:
                    mark = "FLAKY" if f["flips"] else "varies"
                    lines.append(f"      {mark} {f['case_id']} {f['metric']}: spread "
                                 f"{_f(f['spread'])} over {len(f['values'])} runs")
            for e in r.get("errors", [])[:5]:
                lines.append(f"    error {e['case_id']} [{e['stage']}]: {e['message']}")
    return lines


def gate_lines(gates: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per checked gate: PASS/FAIL (or SKIP), where, the value and the margin."""
    lines = []
    for g in gates:
        lines.append(_gate_line(g) + (f" [on {g['coverage']} that ran]"
                                      if g.get("coverage") else ""))
    return lines


def _gate_line(g: Mapping[str, Any]) -> str:
    state = gate_state(g)
    mark = {"skipped": "SKIP", "passed": "PASS", "failed": "FAIL"}[state]
    if state == "skipped":
        return f"  {mark} {where(g)}: {g['text']} ({g.get('note', '')})"
    if g.get("kind", "threshold") == "threshold":
        return (f"  {mark} {where(g)}: {g['metric']} {_f(g['value'])} "
                f"{g['op']} {g['threshold']:g} (margin {_f(g['margin'], signed=True)})")
    r = g["row"]
    return (f"  {mark} {where(g)}: {g['text']}: delta {_f(r['delta'], signed=True)} "
            f"[{_f(r['ci_low'], signed=True)}, {_f(r['ci_high'], signed=True)}], "
            f"p = {_p(r['p_holm'])} ({r['test']}, Holm)")


def ab_lines(summary: Mapping[str, Any]) -> list[str]:
    """Pairwise comparisons of a suite's retrievers, per metric, and the likely best one."""
    lines: list[str] = []
    for s in summary["suites"]:
        for table in s.get("ab", []):
            lines.append(
                f"A/B {s['name']} {table['metric']} ({table['test']}, two-sided, Holm-corrected;"
                f" * p < {table['alpha']:g}):"
            )
            for c in table["pairs"]:
                mark = "*" if c["significant"] else " "
                lines.append(
                    f"  {c['b']} vs {c['a']}: {_f(c['delta'], signed=True)} "
                    f"[{_f(c['ci_low'], signed=True)}, {_f(c['ci_high'], signed=True)}] "
                    f"p = {_p(c['p_holm'])} {mark}".rstrip()
                )
            if table["best"] is not None:
                lines.append(f"  best: {table['best']} (P(best) = {_f(table['p_best'], 2)})")
    return lines


def dataset_lines(suites: Sequence[Mapping[str, Any]]) -> list[str]:
    """What differs between the baseline and this run: suite file, dataset, query set."""
    lines = []
    for s in suites:
        if s.get("partial"):
            lines.append(f"  suite {s['name']}: partial, {s['partial']} ran; compared on "
                         "those")
        if not s.get("in_baseline", True):
            lines.append(f"  suite {s['name']}: not in the baseline")
            continue
        changes = baseline_notes(s)
        if changes and s.get("n_common") is not None:
            lines.append(f"  suite {s['name']}: {', '.join(changes)}; compared on the "
                         f"{s['n_common']} common queries")
    return lines


def baseline_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per (suite, retriever, metric): baseline and current means, paired delta, CI, p."""
    lines = []
    for row in rows:
        mark = "REGRESSED" if row["regressed"] else "ok"
        scope = f" [{row['scope']}]" if row.get("scope") else ""
        tol = f", tolerance {row['tolerance']}" if row.get("tolerance") is not None else ""
        lines.append(
            f"  {mark:<9} {row['suite']}/{row['retriever']}{scope}: {row['metric']} "
            f"{_f(row['current'])} vs baseline {_f(row['baseline'])} "
            f"(delta {_f(row['delta'], signed=True)}, 95% CI [{_f(row['ci_low'], signed=True)}, "
            f"{_f(row['ci_high'], signed=True)}], p = {_p(row['p_holm'])} {row['test']}, "
            f"n {row['n']}{tol})"
        )
    return lines
