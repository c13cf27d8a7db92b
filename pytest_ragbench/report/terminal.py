"""Plain-text summary lines for the terminal (no timing, so runs can be compared byte for byte).

:func:`render_summary` lays out the whole summary at one of three levels (``short``,
``default``, ``full``, see :func:`pytest_ragbench.options.summary_level`); the other functions
are its parts, which ``ragbench compare`` uses too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..results.gates import bound_text
from .format import count, money, plural
from .format import num as _f
from .format import p_value as _p
from .views import (
    AbView,
    SuiteTable,
    SystemRow,
    ab_view,
    baseline_suite_notes,
    compared_text,
    gate_selection,
    gate_state,
    gates_failed_first,
    row_mark,
    suite_table,
    tell_suites_apart,
    unknown_labels_text,
    unscoped_text,
    usage_view,
    where,
)

#: At the default level: at most this many significant A/B pairs per suite, gate lines and
#: error lines per suite are spelled out (the rest are counted, ``-v`` shows them all).
MAX_AB_PAIRS = 8
MAX_ERRORS = 3
_MORE = "--ragbench-summary=full or -v"


@dataclass(frozen=True)
class Line:
    """A summary line and how the terminal colours it (``style``: "", "red", "green",
    "yellow"; ``bold`` for the lines that decide the run)."""

    text: str
    style: str = ""
    bold: bool = False

    @property
    def markup(self) -> dict[str, bool]:
        """Keyword arguments for pytest's ``TerminalReporter.write_line``."""
        out = {self.style: True} if self.style else {}
        if self.bold:
            out["bold"] = True
        return out


def render_summary(summary: Mapping[str, Any], baseline_rows: Sequence[Mapping[str, Any]] = (),
                   *, level: str = "default", verdict: Mapping[str, Any] | None = None,
                   messages: Sequence[str] = (), failures: Sequence[str] = ()) -> list[Line]:
    """The terminal summary (without pytest's ``=== ragbench summary ===`` rule).

    ``short``: per suite a table of means, the failed gates and the verdict; ``default``:
    per suite one table of systems x headline metrics (mean, 95% CI, n), the significant A/B
    differences (the rest counted), the gates (failed first) and the verdict; ``full``: every
    metric of every system, every A/B pair, every gate and baseline row. ``messages`` (paths,
    budget figures) and ``failures`` (the reasons the run fails) follow, the verdict last.
    """
    lines: list[Line] = []
    if verdict is not None and verdict.get("partial"):
        lines.append(Line(f"partial run: {verdict['coverage']} ran", "yellow"))
    gates = list(summary.get("gates") or [])
    # named as the tables name suites, where two suite files of the run share a name
    labelled = tell_suites_apart(gates, summary["suites"])
    baseline_rows = tell_suites_apart(baseline_rows, summary["suites"])
    if level == "full":
        lines += [Line(t) for t in summary_lines(summary)]
        lines += [Line(t) for t in ab_lines(summary)]
        if gates:
            lines.append(Line("gates:"))
            lines += [Line(t) for t in gate_lines(gates_failed_first(labelled))]
    else:
        for s in summary["suites"]:
            table = suite_table(s, gates)
            lines += [Line(t) for t in table_lines(table, ci=level != "short")]
            if level == "short" and table.unknown_labels:
                # the means are of labels the dataset did not give as they are
                lines.append(Line(f"  {table.unknown_labels}"))
            if level != "short":
                lines += [Line(t) for t in table_notes(table)]
                ab = ab_view(s, table.headline)
                if ab is not None:
                    lines += [Line(t) for t in ab_compact_lines(ab)]
        lines += [Line(t) for t in gate_summary_lines(labelled, level)]
    base = summary.get("baseline")
    if isinstance(base, Mapping) and "rows" in base:
        lines += [Line(t) for t in baseline_section(base, baseline_rows, level)]
    lines += [Line(t) for t in dict.fromkeys(messages)]
    lines += [Line(t, "red", bold=True) for t in failures]
    if verdict is not None:
        from ..results.verdict import reason_line

        lines.append(Line(f"ragbench: {reason_line(verdict)}",
                          "green" if verdict["passed"] else "red", bold=True))
    return lines


def _cell(stats: Mapping[str, Any], row_n: int | None, ci: bool) -> str:
    text = _f(stats["mean"])
    if ci:
        text += f" [{_f(stats['ci_low'])}, {_f(stats['ci_high'])}]"
    if row_n is not None and int(stats["n"]) != row_n:
        text += f" n={stats['n']}"
    if stats.get("n_nan"):
        text += f" ({stats['n_nan']} nan)"
    return text


def _llm_cell(row: SystemRow) -> str:
    u = row.usage
    if u is None:
        return "-"
    text = f"{u.requests} req, {count(u.tokens)} tok" + (" (estimated)" if u.estimated else "")
    return text + (f", {money(u.cost)}" if u.cost is not None else "")


def table_lines(table: SuiteTable, *, ci: bool = True) -> list[str]:
    """A suite's header line and its table: one row per system, its counts, the headline
    metrics (mean, with the 95% CI unless ``ci`` is false), n, and the resource columns
    (latency, LLM requests/tokens/cost)."""
    # no hash when no case of the suite ran (each crashed its worker): said as the HTML does
    head = f"suite {table.name} [{table.id}]" + (f" dataset {table.dataset}"
                                                   if table.dataset else "")
    if table.partial:
        head += f": {table.partial}"
    if not table.rows:
        # a suite of a partial run of which no case ran: no system to tabulate
        return [head, "  no case of this suite ran"]
    cols: list[tuple[str, list[str], bool]] = [
        ("system", [r.name for r in table.rows], False),
        ("cases", [str(r.n_cases) for r in table.rows], True),
        ("errors", [str(r.n_errors) for r in table.rows], True)]
    if any(r.n_failed for r in table.rows):
        cols.append(("failed", [str(r.n_failed) for r in table.rows], True))
    if table.has_known_failures:
        cols.append(("xfail/xpass", [f"{r.n_xfailed}/{r.n_xpassed}" for r in table.rows],
                     True))
    for m in table.headline:
        cols.append((m, [_cell(r.metrics[m], r.n, ci) if m in r.metrics else "-"
                         for r in table.rows], False))
    cols.append(("n", ["-" if r.n is None else str(r.n) for r in table.rows], True))
    for m in table.resources:
        cols.append((m, [_f(r.metrics[m]["mean"], 1) if m in r.metrics else "-"
                         for r in table.rows], True))
    if table.has_usage:
        cols.append(("llm", [_llm_cell(r) for r in table.rows], False))
    widths = [max(len(title), *(len(v) for v in values)) for title, values, _ in cols]

    def row(values: Sequence[str]) -> str:
        cells = [v.rjust(w) if right else v.ljust(w)
                 for v, w, (_, _, right) in zip(values, widths, cols, strict=True)]
        return ("  " + "  ".join(cells)).rstrip()

    return [head, row([c[0] for c in cols]),
            *(row([c[1][i] for c in cols]) for i in range(len(table.rows)))]


def table_notes(table: SuiteTable) -> list[str]:
    """What the table leaves out, in a line each: the other metrics, queries without a
    relevant document, flaky repeats, the first errors."""
    lines = []
    if table.hidden:
        names = ", ".join(table.hidden)
        if len(names) > 60:
            names = names[:57].rsplit(", ", 1)[0] + ", ..."
        more = f"{len(table.hidden)} more metric{'' if len(table.hidden) == 1 else 's'}"
        lines.append(f"  {more} ({_MORE}): {names}")
    if table.n_no_relevant:
        lines.append(f"  {_no_relevant(table.n_no_relevant)} in the labels (scored 0, as "
                     "trec_eval does)")
    if table.unknown_labels:
        lines.append(f"  {table.unknown_labels}")
    if table.flaky:
        lines.append(f"  repeated runs: {table.flaky} case/metric pairs vary, {table.flips} "
                     "flip between pass and fail at 0.5")
    for name, e in table.errors[:MAX_ERRORS]:
        lines.append(f"  error {name}/{e['case_id']} [{e['stage']}]: {e['message']}")
    total = table.n_errors
    if total > MAX_ERRORS:
        lines.append(f"  ... {plural(total - MAX_ERRORS, 'more error')} ({_MORE})")
    return lines


def ab_compact_lines(ab: AbView) -> list[str]:
    """The A/B comparisons of a suite in a few lines: how many pairs differ significantly,
    those (better system first), and the likely best system per metric."""
    lines = [f"  A/B on {', '.join(ab.metrics)} ({ab.test}, Holm, p < {ab.alpha:g}): "
             f"{len(ab.significant)} of {ab.n_pairs} pairs differ significantly"
             + (", better first:" if ab.significant else "")]
    shown = ab.significant[:MAX_AB_PAIRS]
    if shown:
        mw = max(len(a.metric) for a in shown)
        pw = max(len(f"{a.better} > {a.worse}") for a in shown)
        for a in shown:
            pair = f"{a.better} > {a.worse}"
            lines.append(f"    {a.metric:<{mw}}  {pair:<{pw}}  {_f(a.delta, signed=True)} "
                         f"[{_f(a.ci_low, signed=True)}, {_f(a.ci_high, signed=True)}]  "
                         f"p = {_p(a.p)}")
    if len(ab.significant) > len(shown):
        lines.append(f"    ... {len(ab.significant) - len(shown)} more significant ({_MORE})")
    if ab.best:
        lines.append("    best (P(best)): " + ", ".join(f"{m} {name} {_f(p, 2)}"
                                                      for m, name, p in ab.best))
    return lines


def gate_summary_lines(gates: Sequence[Mapping[str, Any]], level: str) -> list[str]:
    """The gates, failed first: a count line, then (``short``: only the failed ones)
    up to :data:`~pytest_ragbench.report.views.MAX_GATES` gate lines."""
    if not gates:
        return []
    pick = gate_selection(gates, level)
    lines = [f"gates: {pick.counts}", *gate_lines(pick.shown)]
    if pick.rest:
        rest = [gate_state(g) for g in pick.rest]
        lines.append(f"  ... {len(rest)} more ({rest.count('failed')} failed) ({_MORE})")
    return lines


def baseline_section(base: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                     level: str) -> list[str]:
    """The comparison with the baseline: every row at ``full``; the regressed rows and a
    count otherwise (``short``: the count only)."""
    regressed = [r for r in rows if r["regressed"]]
    lines = [f"baseline {base['path']}:", *dataset_lines(base.get("suites", []))]
    if level != "full" or not rows:
        lines.append(f"  {compared_text(rows)}")
    if level == "full":
        lines += baseline_lines(rows)
    elif level == "default":
        lines += baseline_lines(regressed)
    return lines


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """Per suite and retriever: counts, then each metric's mean, 95% CI, n and NaN count."""
    lines: list[str] = []
    for s in summary["suites"]:
        ds = (s.get("dataset_hash") or "")[:12]
        line = f"suite {s['name']} [{s['id']}]" + (f" dataset {ds}" if ds else "")
        if s.get("partial"):
            line += (f": partial, {s['n_cases_run']} of "
                     f"{plural(int(s['n_cases_total']), 'case')} ran")
        lines.append(line)
        unknown = unknown_labels_text(s.get("unknown_labels"))
        if unknown:
            lines.append(f"  {unknown}")
        if not s["retrievers"]:
            lines.append("  no case of this suite ran")
        for r in s["retrievers"]:
            counts = (f"  {r['name']}: {plural(int(r['n_cases']), 'case')}, "
                      f"{plural(int(r['n_errors']), 'error')}, "
                      f"{r['n_failed']} below per-query thresholds")
            # Known failures only when the suite has some, so other runs print as before;
            # .get: summaries written before these counts existed are printed too (compare).
            n_xfailed, n_xpassed = r.get("n_xfailed", 0), r.get("n_xpassed", 0)
            if n_xfailed or n_xpassed:
                counts += f", {n_xfailed} xfailed (expected), {n_xpassed} xpassed"
            lines.append(counts)
            if r["n_no_relevant"]:
                lines.append(
                    f"    {_no_relevant(r['n_no_relevant'])} in the labels "
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
    if state == "skipped" or g.get("note"):  # a failed one: nothing it could check
        return f"  {mark} {where(g)}: {unscoped_text(g)} ({g.get('note', '')})"
    if g.get("kind", "threshold") == "threshold":
        return (f"  {mark} {where(g)}: {g['metric']} {_f(g['value'])} "
                f"{g['op']} {bound_text(g['threshold'])} (margin {_f(g['margin'], signed=True)})")
    r = g["row"]
    return (f"  {mark} {where(g)}: {unscoped_text(g)}: delta {_f(r['delta'], signed=True)} "
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


def _no_relevant(n: int) -> str:
    return ("1 query has no relevant document" if n == 1
            else f"{n} queries have no relevant document")


def dataset_lines(suites: Sequence[Mapping[str, Any]]) -> list[str]:
    """What differs between the baseline and this run: suite file, dataset, query set."""
    return [f"  {line}" for line in baseline_suite_notes(suites)]


def baseline_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per (suite, retriever, metric): baseline and current means, paired delta, CI, p."""
    lines = []
    for row in rows:
        mark = row_mark(row)
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
