"""The Markdown summary (``summary.md``, ``$GITHUB_STEP_SUMMARY``) and the escaping of
user-provided strings (suite, retriever, metric and query names, gate texts) in it, so that a
name renders as the text it is: no raw HTML, no emphasis, no broken table.

CommonMark and GitHub's tables are the target (pull-request comments, CI step summaries). The
summary follows the terminal's design and levels (see
:func:`pytest_ragbench.report.terminal.render_summary`), from the same facts
(:mod:`pytest_ragbench.report.views`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..results.resume import resume_line
from ..results.verdict import verdict_of
from .budget import budget_lines
from .format import count, money, num, p_value, plural, signed
from .views import (
    SuiteTable,
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
    usage_view,
)

#: At the default level, as in the terminal: the rest is counted.
MAX_AB_PAIRS = 8

# Backslash-escaped: characters that start emphasis, links, code, headings, strikethrough or
# (in GFM tables) a new cell. CommonMark allows a backslash before any ASCII punctuation.
_ESCAPED = frozenset("\\`*_[]|#~!")
# Written as entities: a renderer that passes HTML through must never see a tag or an entity.
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def _one_line(value: Any) -> str:
    # A line break would end a table row or a heading early.
    return _LINE_BREAKS.sub(" ", str(value))


def md_text(value: Any) -> str:
    """``value`` as literal inline Markdown text, on one line (safe in a table cell)."""
    out = []
    for ch in _one_line(value):
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in _ESCAPED:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _cell(text: Any) -> str:
    # Every user-provided string (suite, retriever, metric names, gate texts, paths) goes
    # through here: escaped Markdown, one line, no raw HTML. Never inside a code span, where
    # no escape works and "<" would stay raw in the file.
    return md_text(text)


def _gate_value(g: Mapping[str, Any]) -> tuple[str, str]:
    if g.get("skipped") or g.get("note"):  # a failed one: nothing it could check
        return "-", _cell(g.get("note", ""))
    if g.get("kind", "threshold") == "threshold":
        return num(g["value"]), signed(g["margin"])  # signed, as every other output
    r = g["row"]
    return (f"{signed(r['delta'])} [{signed(r['ci_low'])}, {signed(r['ci_high'])}]",
            f"p = {p_value(r['p_holm'])} ({r['test']}, Holm)")


def summary_markdown(summary: Mapping[str, Any],
                     baseline_rows: Sequence[Mapping[str, Any]] = (), *,
                     level: str = "default") -> str:
    """A Markdown summary suitable for a pull-request comment or a CI step summary.

    ``level`` as in the terminal: ``short`` (means, failed gates), ``default`` (per suite
    one table of systems x headline metrics with 95% CIs, the significant A/B differences,
    the gates failed first, the regressed baseline rows) or ``full`` (every metric, every A/B
    pair, every gate and baseline row)."""
    # named as the suites are, where two suite files of the run share a name
    baseline_rows = tell_suites_apart(baseline_rows, summary["suites"])
    if level != "full":
        return _compact_markdown(summary, baseline_rows, level)
    lines = _heading(summary, baseline_rows)
    for s in summary["suites"]:
        lines += [f"### Suite {_cell(_suite_name(s, summary['suites']))}", ""]
        if s.get("partial"):
            lines += [f"{s['n_cases_run']} of {plural(int(s['n_cases_total']), 'case')} ran.",
                      ""]
        unknown = unknown_labels_text(s.get("unknown_labels"))
        if unknown:
            lines += [f"{_cell(unknown[:1].upper() + unknown[1:])}.", ""]
        if not s["retrievers"]:
            lines += [_NONE_RAN, ""]  # a partial run's suite: no system to tabulate
            continue
        metrics = s["metrics"]
        # the counts the terminal's full summary gives each system, when there are any
        failed = any(r.get("n_failed") for r in s["retrievers"])
        known = any(r.get("n_xfailed") or r.get("n_xpassed") for r in s["retrievers"])
        lines.append("| retriever | cases | errors | " + ("failed | " if failed else "")
                     + ("xfail/xpass | " if known else "")
                     + " | ".join(_cell(m) for m in metrics) + " |")
        lines.append("|---|---:|---:|" + "---:|" * (failed + known + len(metrics)))
        for r in s["retrievers"]:
            cells = []
            for m in metrics:
                st = r["metrics"][m]
                # with n and the NaN count, as the terminal's full summary has them
                nan = f", {st['n_nan']} nan" if st.get("n_nan") else ""
                cells.append(f"{num(st['mean'])} [{num(st['ci_low'])}, {num(st['ci_high'])}]"
                             f" (n {st['n']}{nan})")
            counts = ([str(r.get("n_failed", 0))] if failed else []) + (
                [f"{r.get('n_xfailed', 0)}/{r.get('n_xpassed', 0)}"] if known else [])
            lines.append(f"| {_cell(r['name'])} | {r['n_cases']} | {r['n_errors']} | "
                         + " | ".join([*counts, *cells]) + " |")
        lines.append("")
        # what the default level's llm cell says, in full (as the terminal's full summary)
        used = [(r["name"], u) for r in s["retrievers"] if (u := usage_view(r)) is not None]
        if used:
            lines += [*(f"- {_cell(name)}: {md_text(u.line())}" for name, u in used), ""]
        for table in s.get("ab", []):
            lines += [f"A/B on {_cell(table['metric'])} ({table['test']}, two-sided, "
                      f"Holm-corrected; **bold** = p < {table['alpha']:g})", "",
                      "| candidate | vs | delta | 95% CI | p (Holm) |",
                      "|---|---|---:|---|---:|"]
            for c in table["pairs"]:
                delta = signed(c["delta"])
                if c["significant"]:
                    delta = f"**{delta}**"
                lines.append(f"| {_cell(c['b'])} | {_cell(c['a'])} | {delta} | "
                             f"[{signed(c['ci_low'])}, {signed(c['ci_high'])}] | "
                             f"{p_value(c['p_holm'])} |")
            if table["best"] is not None:
                lines += ["", f"best: {_cell(table['best'])} (P(best) = {num(table['p_best'], 2)})"]
            lines.append("")
    if summary["gates"]:
        lines += ["### Gates", "", *_gate_table(gates_failed_first(
            tell_suites_apart(summary["gates"], summary["suites"])))]
    if baseline_rows:
        lines += [*_baseline_head(summary.get("baseline", {})), *_baseline_table(baseline_rows)]
    elif isinstance(summary.get("baseline"), Mapping):
        # a comparison with no row: why, as every other output says it
        lines += _baseline(summary["baseline"], baseline_rows, level)
    lines += _budget(summary)
    return "\n".join(lines)


_NONE_RAN = "No case of this suite ran."


def _suite_name(suite: Mapping[str, Any], suites: Sequence[Mapping[str, Any]]) -> str:
    """The suite's name, with its file where another suite file of the run shares it."""
    shared = sum(1 for s in suites if s.get("name") == suite.get("name")) > 1
    return f"{suite['name']} [{suite['id']}]" if shared and suite.get("id") else suite["name"]


def _heading(summary: Mapping[str, Any],
             baseline_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The verdict heading, the failed reasons and the partial-run note (every level)."""
    verdict = verdict_of({**summary, "baseline": {
        **(summary.get("baseline") or {}), "rows": baseline_rows}})
    lines = [f"## ragbench: {verdict['headline']}", ""]
    reasons = [r["text"] for r in verdict["reasons"] if r.get("fails")]
    if reasons:
        lines += ["Failed because: " + "; ".join(_cell(t) for t in reasons) + ".", ""]
    if verdict["partial"]:
        lines += [f"> **Partial run**: {verdict['coverage']} ran; means and gates cover only "
                  "those cases, and the run is never picked as a baseline by `last`/`best`.",
                  ""]
    resumed = (summary.get("run") or {}).get("resumed")
    if isinstance(resumed, Mapping) and resumed.get("from") is not None:
        said = _cell(resume_line(resumed))
        lines += [f"> {said[:1].upper()}{said[1:]}.", ""]
    return lines


def _compact_markdown(summary: Mapping[str, Any], baseline_rows: Sequence[Mapping[str, Any]],
                      level: str) -> str:
    lines = _heading(summary, baseline_rows)
    gates = list(summary.get("gates") or [])
    for s in summary["suites"]:
        table = suite_table(s, gates)
        lines += [f"### Suite {_cell(_suite_name(s, summary['suites']))}", ""]
        if table.partial:
            lines += [f"{s['n_cases_run']} of {plural(int(s['n_cases_total']), 'case')} ran.",
                      ""]
        if not table.rows:
            lines += [_NONE_RAN, ""]  # a partial run's suite: no system to tabulate
            continue
        lines += _table(table, ci=level != "short")
        if table.unknown_labels:
            # at every level: the means are of labels the dataset did not give as they are
            lines += [f"{_cell(table.unknown_labels[:1].upper() + table.unknown_labels[1:])}.",
                      ""]
        if level == "short":
            continue
        if table.hidden:
            lines += [f"{len(table.hidden)} more metric{'' if len(table.hidden) == 1 else 's'}"
                      f" in the full summary "
                      f"(`--ragbench-summary=full`): "
                      f"{', '.join(_cell(m) for m in table.hidden)}.", ""]
        if table.errors:
            name, e = table.errors[0]
            lines += [f"{plural(table.n_errors, 'error')}; the first: {_cell(name)}/"
                      f"{_cell(e['case_id'])} [{_cell(e['stage'])}]: {_cell(e['message'])}",
                      ""]
        lines += _ab(s, table)
    lines += _gates(tell_suites_apart(gates, summary["suites"]), level)
    if baseline_rows or isinstance(summary.get("baseline"), Mapping):
        lines += _baseline(summary.get("baseline") or {}, baseline_rows, level)
    lines += _budget(summary)
    return "\n".join(lines)


def _table(table: SuiteTable, *, ci: bool) -> list[str]:
    extra_failed = any(r.n_failed for r in table.rows)
    # the terminal's columns: known failures are counted apart from the failed items
    known = table.has_known_failures
    head = ["system", "cases", "errors", *(["failed"] if extra_failed else []),
            *(["xfail/xpass"] if known else []),
            *(_cell(m) for m in table.headline), "n", *(_cell(m) for m in table.resources),
            *(["llm"] if table.has_usage else [])]
    align = ["---", "---:", "---:", *(["---:"] if extra_failed else []),
             *(["---:"] if known else []),
             *("---" for _ in table.headline), "---:", *("---:" for _ in table.resources),
             *(["---"] if table.has_usage else [])]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for r in table.rows:
        cells = [_cell(r.name), str(r.n_cases), str(r.n_errors),
                 *([str(r.n_failed)] if extra_failed else []),
                 *([f"{r.n_xfailed}/{r.n_xpassed}"] if known else [])]
        for m in table.headline:
            st = r.metrics.get(m)
            if st is None:
                cells.append("-")
                continue
            text = num(st["mean"])
            if ci:
                text += f" [{num(st['ci_low'])}, {num(st['ci_high'])}]"
            if r.n is not None and int(st["n"]) != r.n:
                text += f" n={st['n']}"
            if st.get("n_nan"):
                text += f" ({st['n_nan']} nan)"
            cells.append(text)
        cells.append("-" if r.n is None else str(r.n))
        cells += [num(r.metrics[m]["mean"], 1) if m in r.metrics else "-"
                  for m in table.resources]
        if table.has_usage:
            u = r.usage
            cells.append("-" if u is None else (
                f"{u.requests} req, {count(u.tokens)} tok"
                + (" (estimated)" if u.estimated else "")
                + (f", {money(u.cost)}" if u.cost is not None else "")))
        out.append("| " + " | ".join(cells) + " |")
    return [*out, ""]


def _ab(suite: Mapping[str, Any], table: SuiteTable) -> list[str]:
    ab = ab_view(suite, table.headline)
    if ab is None:
        return []
    lines = [f"A/B on {', '.join(_cell(m) for m in ab.metrics)} ({ab.test}, two-sided, "
             f"Holm-corrected, p < {ab.alpha:g}): {len(ab.significant)} of {ab.n_pairs} pairs "
             "differ significantly.", ""]
    shown = ab.significant[:MAX_AB_PAIRS]
    if shown:
        lines += ["| metric | better | than | delta | 95% CI | p (Holm) |",
                  "|---|---|---|---:|---|---:|"]
        lines += [f"| {_cell(a.metric)} | {_cell(a.better)} | {_cell(a.worse)} | "
                  f"{signed(a.delta)} | [{signed(a.ci_low)}, {signed(a.ci_high)}] | "
                  f"{p_value(a.p)} |" for a in shown]
        lines.append("")
    if len(ab.significant) > len(shown):
        lines += [f"{len(ab.significant) - len(shown)} more significant differences in the "
                  "full summary.", ""]
    if ab.best:
        lines += ["Best (P(best)): " + ", ".join(f"{_cell(m)} {_cell(name)} {num(p, 2)}"
                                                for m, name, p in ab.best) + ".", ""]
    return lines


def _gates(gates: Sequence[Mapping[str, Any]], level: str) -> list[str]:
    if not gates:
        return []
    pick = gate_selection(gates, level)
    shown = pick.shown
    lines = ["### Gates", "", f"{pick.counts}.", ""]
    if shown:
        lines += _gate_table(shown)
    if pick.rest:
        rest = [gate_state(g) for g in pick.rest]
        lines += [f"{len(rest)} more gates ({rest.count('failed')} failed) in the full "
                  "summary.", ""]
    return lines


def _gate_table(gates: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| | suite/retriever | gate | value | margin / p |", "|---|---|---|---:|---:|"]
    for g in gates:
        mark = {"skipped": "skip", "passed": "PASS", "failed": "**FAIL**"}[gate_state(g)]
        value, margin = _gate_value(g)
        cov = f" (on {_cell(g['coverage'])} that ran)" if g.get("coverage") else ""
        lines.append(f"| {mark} | {_cell(g['suite'])}/{_cell(g['retriever'])} | "
                     f"{_cell(g['text'])}{cov} | {value} | {margin} |")
    return [*lines, ""]


def _baseline_head(base: Mapping[str, Any]) -> list[str]:
    lines = ["### Against the baseline", ""]
    if base.get("path"):
        lines += [f"Baseline: {_cell(str(base['path']))}", ""]
    notes = baseline_suite_notes(base.get("suites", []))
    if notes:
        lines += [*(f"- {_cell(note)}" for note in notes), ""]
    return lines


def _budget(summary: Mapping[str, Any]) -> list[str]:
    """The run's spend against each ``max_cost``, as the terminal says it (a run stopped by
    its cap says so). Not the pools: their figures (in flight, throttled, the adaptive
    level) depend on timing, and this file is the same with and without ``-n`` (but for a
    run stopped by its cap, whose refused cases depend on timing too)."""
    report = (summary.get("run") or {}).get("budget")
    if not isinstance(report, Mapping):
        return []
    lines = budget_lines({"costs": report.get("costs") or {}})
    if not lines:
        return []
    return ["### LLM budget", "", *(f"- {_cell(line)}" for line in lines), ""]


def _baseline_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["| | suite/retriever | metric | baseline | current | delta | 95% CI | "
             "p (Holm) | test | tolerance |",
             "|---|---|---|---:|---:|---:|---|---:|---|---:|"]
    for b in rows:
        mark = "**REGRESSED**" if b["regressed"] else row_mark(b)
        scope = f" [{_cell(b['scope'])}]" if b.get("scope") else ""
        lines.append(f"| {mark} | {_cell(b['suite'])}/{_cell(b['retriever'])}{scope} | "
                     f"{_cell(b['metric'])} | {num(b['baseline'])} | {num(b['current'])} | "
                     f"{signed(b['delta'])} | [{signed(b['ci_low'])}, "
                     f"{signed(b['ci_high'])}] | {p_value(b['p_holm'])} | {b['test']} | "
                     f"{_cell(b['tolerance']) if b.get('tolerance') is not None else '-'} |")
    return [*lines, ""]


def _baseline(base: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
              level: str) -> list[str]:
    regressed = [b for b in rows if b["regressed"]]
    said = compared_text(rows)
    lines = [*_baseline_head(base), f"{said[0].upper()}{said[1:]}.", ""]
    if level == "short" or not regressed:
        return lines
    return [*lines, *_baseline_table(regressed)]
