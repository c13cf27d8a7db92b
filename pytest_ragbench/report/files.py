"""Result files of a run: per-case JSONL (appended live), per-case CSV, summary JSON, Markdown."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ..records import case_outcome, dumps_json, record_key, xfail_reason
from ..results.runfolder import CASES_JSONL, RUN_JSON, SUMMARY_JSON, read_jsonl, run_start_doc
from ..results.verdict import verdict_of
from .format import num, p_value, signed
from .markdown import md_text
from .views import dataset_change_text, gate_state

CASES_CSV = "cases.csv"
SUMMARY_MD = "summary.md"

__all__ = ["CASES_CSV", "CASES_JSONL", "RUN_JSON", "SUMMARY_JSON", "SUMMARY_MD",
           "JsonlAppender", "read_jsonl", "run_start_doc", "summary_markdown",
           "write_cases_csv", "write_json"]


class JsonlAppender:
    """Appends one JSON line per record and flushes it, so a crashed or killed run loses no
    finished case."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: IO[str] | None = path.open("a", encoding="utf-8")

    def append(self, record: Mapping[str, Any]) -> None:
        if self._fh is None:
            raise ValueError(f"{self.path} is closed")
        self._fh.write(dumps_json(record, ensure_ascii=False) + "\n")
        # flush hands the line to the OS, which keeps it when this process crashes or is
        # killed; an fsync per case (only power loss needs it) would cost milliseconds each.
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps_json(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_cases_csv(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """One row per case: identity, status, every metric (blank = NaN), latency, error, and
    how pytest reported the case.

    ``status`` is the case's own verdict ("failed" below a threshold); ``outcome`` is what to
    count ("xfailed" for a known failure of the suite, see :func:`records.case_outcome`) and
    ``xfail_reason`` the suite's reason. Both come last so positional readers keep working.
    """
    recs = sorted(records, key=record_key)
    metric_names: list[str] = []
    for r in recs:
        for m in r.get("metrics", {}):
            if m not in metric_names:
                metric_names.append(m)
    # latency_ms listed as a suite metric is already a metric column, with the same value:
    # a second column of that name would make the header ambiguous for readers keyed by name.
    latency = [] if "latency_ms" in metric_names else ["latency_ms"]
    cols = ["suite", "retriever", "case_id", "run", "status", "type", "difficulty", "tags",
            *metric_names, *latency, "n_relevant", "error", "outcome", "xfail_reason"]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in recs:
            m = r.get("metrics", {})
            w.writerow([
                r["suite"], r["retriever"], r["case_id"], r.get("run", 0), r.get("status"),
                r.get("type") or "", r.get("difficulty") or "", ";".join(r.get("tags") or []),
                *["" if m.get(n) is None else repr(float(m[n])) for n in metric_names],
                *(["" if r.get("latency_ms") is None else r["latency_ms"]] if latency else []),
                "" if r.get("n_relevant") is None else r["n_relevant"],
                (r.get("error") or {}).get("message", ""),
                case_outcome(r),
                xfail_reason(r) or "",
            ])
    tmp.replace(path)


def _cell(text: Any) -> str:
    # Every user-provided string (suite, retriever, metric names, gate texts, paths) goes
    # through here: escaped Markdown, one line, no raw HTML. Never inside a code span, where
    # no escape works and "<" would stay raw in the file.
    return md_text(text)


def _gate_value(g: Mapping[str, Any]) -> tuple[str, str]:
    if g.get("skipped"):
        return "-", _cell(g.get("note", ""))
    if g.get("kind", "threshold") == "threshold":
        return num(g["value"]), num(g["margin"])
    r = g["row"]
    return (f"{signed(r['delta'])} [{signed(r['ci_low'])}, {signed(r['ci_high'])}]",
            f"p = {p_value(r['p_holm'])} ({r['test']}, Holm)")


def summary_markdown(summary: Mapping[str, Any],
                     baseline_rows: Sequence[Mapping[str, Any]] = ()) -> str:
    """A Markdown summary suitable for a pull-request comment or a CI step summary."""
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
    for s in summary["suites"]:
        lines += [f"### Suite {_cell(s['name'])}", ""]
        if s.get("partial"):
            lines += [f"{s['n_cases_run']} of {s['n_cases_total']} cases ran.", ""]
        metrics = s["metrics"]
        lines.append("| retriever | cases | errors | " + " | ".join(_cell(m) for m in metrics)
                     + " |")
        lines.append("|---|---:|---:|" + "---:|" * len(metrics))
        for r in s["retrievers"]:
            cells = []
            for m in metrics:
                st = r["metrics"][m]
                cells.append(f"{num(st['mean'])} [{num(st['ci_low'])}, {num(st['ci_high'])}]")
            lines.append(f"| {_cell(r['name'])} | {r['n_cases']} | {r['n_errors']} | "
                         + " | ".join(cells) + " |")
        lines.append("")
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
        lines += ["### Gates", "", "| | suite/retriever | gate | value | margin / p |",
                  "|---|---|---|---:|---:|"]
        for g in summary["gates"]:
            mark = {"skipped": "skip", "passed": "PASS", "failed": "**FAIL**"}[gate_state(g)]
            where = f"{_cell(g['suite'])}/{_cell(g['retriever'])}"
            value, margin = _gate_value(g)
            cov = f" (on {_cell(g['coverage'])} that ran)" if g.get("coverage") else ""
            lines.append(f"| {mark} | {where} | {_cell(g['text'])}{cov} | {value} | {margin} |")
        lines.append("")
    if baseline_rows:
        base = summary.get("baseline", {})
        lines += ["### Against the baseline", ""]
        if base.get("path"):
            lines += [f"Baseline: {_cell(str(base['path']))}", ""]
        for s in base.get("suites", []):
            change = dataset_change_text(s) if s.get("in_baseline") else None
            if change:
                lines += [f"- suite {_cell(s['name'])}: {change}; compared on "
                          f"{s['n_common']} common queries", ""]
        lines += ["| | suite/retriever | metric | baseline | current | delta | 95% CI | "
                  "p (Holm) | test | tolerance |",
                  "|---|---|---|---:|---:|---:|---|---:|---|---:|"]
        for b in baseline_rows:
            mark = "**REGRESSED**" if b["regressed"] else "ok"
            scope = f" [{_cell(b['scope'])}]" if b.get("scope") else ""
            lines.append(f"| {mark} | {_cell(b['suite'])}/{_cell(b['retriever'])}{scope} | "
                         f"{_cell(b['metric'])} | {num(b['baseline'])} | {num(b['current'])} | "
                         f"{signed(b['delta'])} | [{signed(b['ci_low'])}, "
                         f"{signed(b['ci_high'])}] | {p_value(b['p_holm'])} | {b['test']} | "
                         f"{_cell(b['tolerance']) if b.get('tolerance') is not None else '-'} |")
        lines.append("")
    return "\n".join(lines)
