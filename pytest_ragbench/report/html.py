"""The self-contained HTML report of a run: one file that opens from disk with no network access.

:func:`render_html` turns a run summary (see :mod:`pytest_ragbench.results.aggregate`) and the
per-case records (see :mod:`pytest_ragbench.records`) into one HTML page rendered with Jinja2
(autoescaping on). The page holds run metadata, gate results, per-suite metric tables with 95%
confidence intervals, inline SVG charts (:mod:`.svg`), the baseline comparison and trends when
given, and a per-query table with a drill-down for every case.

Scale: only the first :data:`PAGE_SIZE` rows of each per-query table are written as HTML (so
the page is a usable plain table with scripts off). Every row is also embedded once as compact
JSON in a ``<script type="application/json">`` block, from which a small inline script sorts,
filters and pages the table and builds drill-downs on demand. Long texts (answers, contexts,
judge reasons, document snippets) are shortened in steps until the embedded data fits
:data:`JSON_BUDGET`; the complete records stay in ``cases.jsonl``.

Safety: everything from data is escaped by Jinja or :mod:`.svg`; the JSON block escapes ``<``,
``>``, ``&`` and U+2028/U+2029; the script writes data into the page only through
``textContent``; and a Content-Security-Policy allows no fetches at all and only the page's own
script (by hash), so even an escaping bug could not load or run anything else.

Nothing here imports pytest.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import json
import math
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jinja2
from markupsafe import Markup

from ..records import (
    OUTCOMES,
    XFAIL_OUTCOMES,
    case_outcome,
    dumps_json,
    strict_xpass,
    xfail_outcome,
    xfail_reason,
)
from ..results.aggregate import group_records, metric_values
from ..results.resume import resume_line
from . import svg
from .budget import budget_lines
from .documents import SNIPPET_MAX
from .format import finite as _finite
from .format import num, p_value
from .views import (
    NOTHING_COMPARED,
    dataset_change_text,
    gate_state,
    headline_metrics,
    metrics_not_in_baseline_text,
    not_in_baseline_text,
    row_mark,
    tell_suites_apart,
    unknown_labels_text,
    unscoped_text,
    usage_view,
)

__all__ = ["JSON_BUDGET", "PAGE_FILES", "PAGE_SIZE", "REPORT_HTML", "TEMPLATE_FILES",
           "embed_json", "render_html", "template_digest", "write_html"]

REPORT_HTML = "report.html"
PAGE_SIZE = 200
"""Rows per page of a per-query table; the first page is also written as plain HTML."""
JSON_BUDGET = 12_000_000
"""Bytes the embedded per-query data may take before long texts are shortened further."""
SNIPPET_BUDGET = 2_000_000
"""The part of :data:`JSON_BUDGET` for document snippets (filled in table order)."""
_SAMPLE = 400  # records measured to pick the level of detail before building every row

# Rows are shown as pytest reported them (records.case_outcome), problems first; the page's
# script has the same ranks (STATUS_RANK in report.js).
_STATUS_RANK = {name: rank for rank, name in enumerate(OUTCOMES)}
_ROW_QUERY = 300  # characters of the query in the table row; the drill-down has the rest
_TEMPLATES = "templates"


@dataclass(frozen=True)
class _Limits:
    """How much of each long field the embedded data keeps (characters or items)."""

    query: int
    answer: int
    context: int
    contexts: int
    judge_text: int
    judge_lines: int
    retrieved: int
    snippet: int


# Tried in order; the first whose JSON fits the budget wins. The last one is used regardless,
# so a very large run still gets a report (bigger than the budget) rather than none.
_LEVELS = (
    _Limits(query=2000, answer=4000, context=600, contexts=10, judge_text=400, judge_lines=60,
            retrieved=100, snippet=SNIPPET_MAX),
    _Limits(query=500, answer=1000, context=200, contexts=5, judge_text=200, judge_lines=20,
            retrieved=20, snippet=160),
    _Limits(query=300, answer=400, context=120, contexts=3, judge_text=120, judge_lines=10,
            retrieved=10, snippet=120),
    _Limits(query=300, answer=200, context=0, contexts=0, judge_text=80, judge_lines=6,
            retrieved=10, snippet=80),
    _Limits(query=200, answer=120, context=0, contexts=0, judge_text=60, judge_lines=4,
            retrieved=10, snippet=60),
    _Limits(query=200, answer=100, context=0, contexts=0, judge_text=40, judge_lines=3,
            retrieved=10, snippet=40),
    _Limits(query=160, answer=80, context=0, contexts=0, judge_text=30, judge_lines=2,
            retrieved=5, snippet=0),
    _Limits(query=160, answer=0, context=0, contexts=0, judge_text=0, judge_lines=0,
            retrieved=5, snippet=0),
)


# -- value formatting shared with the template ------------------------------------------------


fmt = num
"""A number as the report shows it (the shared format); ``nan`` for missing or non-finite."""
fmt_p = p_value
"""A p-value as the report shows it (the shared format)."""


def heat(value: Any, direction: str = "higher") -> str:
    """CSS class ``h0``..``h10`` shading a score in [0, 1] (``h10`` = best); empty otherwise."""
    f = _finite(value)
    if f is None or not 0.0 <= f <= 1.0:
        return ""
    good = 1.0 - f if direction == "lower" else f
    # Half-up rounding, as Math.round in the page's script, so both renderings agree.
    return f"h{int(good * 10 + 0.5)}"


def _cut(text: Any, limit: int) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= limit else s[: max(limit - 1, 0)] + "\u2026"


def _round(value: Any, digits: int) -> float | None:
    f = _finite(value)
    return None if f is None else round(f, digits)


def embed_json(data: Any) -> Markup:
    """JSON safe to place inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c``-style escapes, so no ``</script>`` or ``<!--`` can
    end or confuse the block; U+2028/U+2029 are escaped for tools that read it as JavaScript.
    """
    text = _dumps(data)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return Markup(text)


def _dumps(data: Any) -> str:
    return dumps_json(data, ensure_ascii=False, separators=(",", ":"))


# -- normalising the summary -------------------------------------------------------------------
# Summaries come from several versions of the plugin, from recomputation after a crash, and from
# other tools; every key the template reads gets a default here so that a sparse summary still
# renders (the template itself is strict, so a typo in it fails the tests).

_SUITE_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "id": "", "name": "", "suite_hash": None, "dataset_hash": None, "metrics": (),
    "retrievers": (), "ab": ()})
_RETRIEVER_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "name": "", "n_cases": 0, "n_errors": 0, "n_failed": 0, "n_xfailed": 0, "n_xpassed": 0,
    "n_no_relevant": 0, "error_rate": 0.0, "errors": (), "metrics": MappingProxyType({})})
_STAT_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "mean": None, "ci_low": None, "ci_high": None, "std": None, "n": 0, "n_nan": 0,
    "direction": "higher"})
_ROW_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "suite": "", "suite_id": None, "retriever": "", "metric": "", "scope": "",
    "baseline": None, "current": None, "delta": None, "ci_low": None, "ci_high": None,
    "p_holm": None, "test": "", "tolerance": None, "allowed": None, "direction": "higher",
    "regressed": False, "same_dataset": True})
_AB_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "metric": "", "test": "", "alpha": 0.05, "pairs": (), "best": None, "p_best": None})
_PAIR_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "a": "", "b": "", "n": None, "delta": None, "ci_low": None, "ci_high": None,
    "p_holm": None, "significant": False})
_ERROR_DEFAULTS: Mapping[str, Any] = MappingProxyType({"case_id": "", "stage": "",
                                                       "message": ""})


def _with(defaults: Mapping[str, Any], value: Any) -> dict[str, Any]:
    return {**defaults, **value} if isinstance(value, Mapping) else dict(defaults)


def _normal_suite(suite: Any) -> dict[str, Any]:
    s = _with(_SUITE_DEFAULTS, suite)
    s["name"] = s["name"] or s["id"]
    s["retrievers"] = []
    for r in (suite if isinstance(suite, Mapping) else {}).get("retrievers") or []:
        rv = _with(_RETRIEVER_DEFAULTS, r)
        rv["metrics"] = {str(m): _with(_STAT_DEFAULTS, st)
                         for m, st in (rv["metrics"] or {}).items()}
        rv["errors"] = [_with(_ERROR_DEFAULTS, e) for e in rv["errors"] or []]
        s["retrievers"].append(rv)
    s["ab"] = [{**_with(_AB_DEFAULTS, ab),
                "pairs": [_with(_PAIR_DEFAULTS, c)
                          for c in (ab if isinstance(ab, Mapping) else {}).get("pairs") or []]}
               for ab in s["ab"] or []]
    return s


# -- view model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A per-query table column; ``key`` is what the script sorts by."""

    key: str
    label: str
    kind: str  # "text" | "num" | "metric" | "status"
    direction: str = "higher"


@dataclass(frozen=True)
class CaseRow:
    """One case as both the template and the script see it (see :meth:`compact`)."""

    retriever: int
    case_id: str
    run: int
    query: str
    status: str  # records.case_outcome: an expected failure is "xfailed", not "failed"
    values: tuple[float | None, ...]
    latency_ms: float | None
    cost: float | None
    detail: Mapping[str, Any]

    def compact(self) -> list[Any]:
        """The row as a JSON array; positions are read by the page's script (``F_*``)."""
        return [self.retriever, self.case_id, self.run, self.query, self.status,
                list(self.values), self.latency_ms, self.cost, self.detail]


@dataclass(frozen=True)
class CaseTable:
    """The per-query table of one suite."""

    index: int
    columns: tuple[Column, ...]
    retrievers: tuple[str, ...]
    rows: tuple[CaseRow, ...]

    @property
    def first_page(self) -> tuple[CaseRow, ...]:
        return self.rows[:PAGE_SIZE]

    def spec(self) -> dict[str, Any]:
        return {
            "columns": [[c.key, c.label, c.kind, c.direction] for c in self.columns],
            "retrievers": list(self.retrievers),
            "rows": [r.compact() for r in self.rows],
        }


@dataclass(frozen=True)
class RetrieverView:
    name: str
    color: str
    summary: Mapping[str, Any]
    best: frozenset[str]
    latency_p50: float | None
    latency_p95: float | None
    tokens: int | None
    requests: int | None
    cost: float | None
    tokens_note: str = ""  # why its tokens and cost are partly estimates, if they are


@dataclass(frozen=True)
class TrendRow:
    retriever: str
    metric: str
    points: tuple[float | None, ...]
    chart: Markup | None

    @property
    def first(self) -> float | None:
        return next((p for p in self.points if p is not None), None)

    @property
    def last(self) -> float | None:
        return self.points[-1]

    @property
    def runs(self) -> int:
        """Runs with a value (this one included)."""
        return sum(p is not None for p in self.points)

    @property
    def change(self) -> float | None:
        first, last = self.first, self.last
        return None if first is None or last is None else last - first


@dataclass(frozen=True)
class GateView:
    """A gate result as shown: threshold gates have a value and margin; gates against the
    baseline a change with its interval and p-value; skipped ones a note."""

    status: str  # "pass" | "fail" | "skip"
    where: str
    text: str
    value: str
    detail: str


_GATE_RANK = {"fail": 0, "pass": 1, "skip": 2}


def _gate_view(g: Mapping[str, Any]) -> GateView:
    view = _gate_view_of(g)
    if g.get("coverage") and not g.get("skipped"):
        # Judged on the cases a partial run ran, and labelled so.
        return replace(view, detail=f"{view.detail}; on {g['coverage']} that ran")
    return view


def _gate_view_of(g: Mapping[str, Any]) -> GateView:
    where = f"{g.get('suite')} / {g.get('retriever')}"
    if g.get("scope"):
        where += f" [{g['scope']}]"
    # the scope is said once, beside the system: not again at the head of the gate's text
    text = unscoped_text(g)
    state = gate_state({"passed": False, **g})
    if state == "skipped":
        return GateView("skip", where, text, "\u2013", str(g.get("note", "")))
    status = "pass" if state == "passed" else "fail"
    if g.get("note"):  # failed with nothing to check (a scope no query matches)
        return GateView(status, where, text, "\u2013", str(g["note"]))
    kind = g.get("kind", "threshold")
    if kind == "threshold":
        detail = f"margin {fmt(g.get('margin'), signed=True)}"
        if g.get("scope") and g.get("n") is not None:
            detail += f" (n={g['n']})"
        return GateView(status, where, text, fmt(g.get("value")), detail)
    row = g.get("row") or {}
    value = (f"{fmt(row.get('delta', g.get('value')), signed=True)} "
             f"[{fmt(row.get('ci_low'), signed=True)}, {fmt(row.get('ci_high'), signed=True)}]")
    if kind == "drop":
        detail = f"allowed drop {fmt(g.get('allowed'))}"
    else:
        detail = (f"p (Holm) = {fmt_p(g.get('p_holm', row.get('p_holm')))}"
                  f" ({row.get('test', '?')}), alpha {g.get('alpha', '?')}")
    return GateView(status, where, text, value, detail)


@dataclass(frozen=True)
class SuiteView:
    summary: Mapping[str, Any]
    retrievers: tuple[RetrieverView, ...]
    directions: Mapping[str, str]
    bar_chart: Markup | None
    scaled_charts: tuple[tuple[str, Markup], ...]
    histograms: tuple[tuple[str, Markup], ...]
    baseline_rows: tuple[Mapping[str, Any], ...]
    baseline_notes: tuple[str, ...]
    delta_chart: Markup | None
    trends: tuple[TrendRow, ...]
    table: CaseTable
    has_usage: bool
    has_cost: bool
    has_xfail: bool
    #: What the dataset's ``unknown_documents`` did with labels naming documents the corpus
    #: lacks, in words; None when none did.
    unknown_labels: str | None = None


@dataclass(frozen=True)
class _Colors:
    """One colour per retriever name across all suites, by first appearance."""

    names: tuple[str, ...] = field(default_factory=tuple)

    def of(self, name: str) -> str:
        return svg.color(self.names.index(name)) if name in self.names else svg.color(0)


# -- building ---------------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


_UNITS: Mapping[str, str] = MappingProxyType({"latency_ms": "ms"})
"""Units of the metrics that are not scores, for their chart axes."""


def _is_score(metric: str, retrievers: Sequence[RetrieverView]) -> bool:
    """Whether a metric belongs on the [0, 1] axis of scores: not a known measurement with a
    unit, and every mean and interval bound in [0, 1]."""
    if metric in _UNITS:
        return False
    for rv in retrievers:
        st = rv.summary["metrics"].get(metric, {})
        for key in ("mean", "ci_low", "ci_high"):
            v = _finite(st.get(key))
            if v is not None and not -1e-9 <= v <= 1.0 + 1e-9:
                return False
    return True


def _mean_cost(records: Sequence[Mapping[str, Any]]) -> float | None:
    costs = [c for c in (_finite(r.get("cost")) for r in records) if c is not None]
    return math.fsum(costs) / len(costs) if costs else None


def _best(suite: Mapping[str, Any]) -> dict[str, set[str]]:
    """Per retriever, the metrics where its mean is the best of the suite (only with rivals)."""
    out: dict[str, set[str]] = {r["name"]: set() for r in suite.get("retrievers", [])}
    if len(out) < 2:
        return out
    for m in suite.get("metrics", []):
        scored: list[tuple[str, float, str]] = []
        for r in suite["retrievers"]:
            st = r["metrics"].get(m, {})
            mean = _finite(st.get("mean"))
            if mean is not None:
                scored.append((r["name"], mean, st.get("direction", "higher")))
        if not scored:
            continue
        sign = -1.0 if scored[0][2] == "lower" else 1.0
        top = max(sign * v for _, v, _ in scored)
        for n, v, _ in scored:
            if sign * v >= top - 1e-12:
                out[n].add(m)
    return out


def _judge_lines(judge: Any, limits: _Limits) -> dict[str, list[list[Any]]]:
    """Judge evidence as ``{metric: [[label, text, verdict | None, note], ...]}``.

    The judge's evidence has a different shape per metric (claims with verdicts and reasons,
    lists of verdicts, skip notes), so it is flattened generically: a list of objects gives one
    line per object (its text, its 0/1 verdict, its reason), other values one line each.
    """
    if not isinstance(judge, Mapping) or limits.judge_lines <= 0:
        return {}
    n = limits.judge_text
    out: dict[str, list[list[Any]]] = {}
    for metric, evidence in judge.items():
        lines: list[list[Any]] = []
        items = evidence.items() if isinstance(evidence, Mapping) else [("", evidence)]
        for key, value in items:
            if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
                for entry in value:
                    lines.append(_judge_entry(str(key), entry, n))
            elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                lines.extend([str(key), _cut(v, n), None, ""] for v in value)
            elif isinstance(value, list | Mapping):
                lines.append([str(key), _cut(json.dumps(value, ensure_ascii=False, default=str),
                                             n), None, ""])
            else:
                lines.append([str(key), _cut(value, n), None, ""])
        if len(lines) > limits.judge_lines:
            more = len(lines) - limits.judge_lines
            lines = [*lines[: limits.judge_lines], ["", f"\u2026 {more} more", None, ""]]
        out[str(metric)] = lines
    return out


_VERDICT_KEYS = ("verdict", "supported", "attributed", "in_reference", "in_answer", "passed",
                 "useful")
_TEXT_KEYS = ("claim", "statement", "question", "text", "context")
_NOTE_KEYS = ("why", "reason", "reasons", "explanation")


def _first_key(keys: tuple[str, ...], entry: Mapping[str, Any]) -> str | None:
    # A plain loop: a report of 10,000 judged cases looks up ~150,000 keys, and a generator
    # in next() costs several times as much per lookup.
    for k in keys:
        if k in entry:
            return k
    return None


def _judge_entry(label: str, entry: Mapping[str, Any], n: int) -> list[Any]:
    text_key = _first_key(_TEXT_KEYS, entry)
    verdict_key = _first_key(_VERDICT_KEYS, entry)
    note_key = _first_key(_NOTE_KEYS, entry)
    verdict = entry.get(verdict_key) if verdict_key else None
    verdict = None if verdict is None else int(bool(verdict))
    rest = {k: v for k, v in entry.items() if k not in (text_key, verdict_key, note_key)}
    text = str(entry[text_key]) if text_key else ""
    if rest:
        extra = " ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}"
                         for k, v in rest.items())
        text = f"{text} ({extra})" if text else extra
    note = entry.get(note_key) if note_key else ""
    return [label, _cut(text, n), verdict, _cut(note if note is not None else "", n)]


def _detail(rec: Mapping[str, Any], limits: _Limits, docs: dict[str, None]) -> dict[str, Any]:
    """The drill-down data of one case (only the keys that have something to show)."""
    d: dict[str, Any] = {}
    for key in ("type", "difficulty"):
        if rec.get(key):
            d[key] = str(rec[key])
    if rec.get("tags"):
        d["tags"] = [str(t) for t in rec["tags"]]
    if rec.get("n_relevant") is not None:
        d["n_relevant"] = rec["n_relevant"]
    if rec.get("no_relevant"):
        d["no_relevant"] = True
    query = "" if rec.get("query") is None else str(rec["query"])
    if len(query) > min(limits.query, _ROW_QUERY):
        d["query"] = _cut(query, limits.query)
    reason = xfail_reason(rec)
    if reason is not None:
        # [reason, "xfailed" | "xpassed" | "failed" | None]; "failed": passed under a strict
        # mark; None: listed, but pytest ignored the mark.
        d["xfail"] = [_cut(reason, max(limits.answer, 500)),
                      "failed" if strict_xpass(rec) else xfail_outcome(rec)]
    err = rec.get("error")
    if isinstance(err, Mapping):
        d["error"] = [str(err.get("stage", "")), str(err.get("type", "")),
                      _cut(err.get("message", ""), max(limits.answer, 500))]
    # a scoped threshold names its scope: two bounds on one metric are told apart
    thresholds = [[(f"[{t['scope']}] " if t.get("scope") else "") + str(t.get("metric")),
                   str(t.get("op")), _finite(t.get("threshold")),
                   _round(t.get("value"), 4),
                   # None: the metric could not be computed, which neither passes nor fails
                   None if t.get("passed") is None else bool(t.get("passed"))]
                  for t in rec.get("thresholds") or [] if isinstance(t, Mapping)]
    if thresholds:
        d["thresholds"] = thresholds
    retrieved = rec.get("retrieved") or []
    if retrieved:
        d["retrieved"] = [[str(doc), _round(score, 4), grade]
                          for doc, score, grade in retrieved[: limits.retrieved]]
        if len(retrieved) > limits.retrieved:
            d["retrieved_more"] = len(retrieved) - limits.retrieved
    missed = rec.get("missed") or []
    if missed:
        d["missed"] = [[str(doc), grade] for doc, grade in missed[: limits.retrieved]]
        if len(missed) > limits.retrieved:
            d["missed_more"] = len(missed) - limits.retrieved
    ranks = rec.get("relevant_ranks") or {}
    if isinstance(ranks, Mapping) and ranks:
        # [doc, rank | None] of every relevant document, below the retrieved rows shown too
        d["ranks"] = [[str(doc), rank] for doc, rank in list(ranks.items())[: limits.retrieved]]
        if len(ranks) > limits.retrieved:
            d["ranks_more"] = len(ranks) - limits.retrieved
    if limits.snippet:
        # A dict keeps first-appearance (display) order, so snippets go to the first pages.
        docs.update((x[0], None) for x in d.get("retrieved", []))
        docs.update((x[0], None) for x in d.get("missed", []))
    if rec.get("answer") is not None and limits.answer:
        d["answer"] = _cut(rec["answer"], limits.answer)
    contexts = rec.get("contexts") or []
    if contexts and limits.contexts:
        d["contexts"] = [_cut(c, limits.context) for c in contexts[: limits.contexts]]
        if len(contexts) > limits.contexts:
            d["contexts_more"] = len(contexts) - limits.contexts
    judge = _judge_lines(rec.get("judge"), limits)
    if judge:
        d["judge"] = judge
    usage = rec.get("usage")
    if isinstance(usage, Mapping):
        d["usage"] = [usage.get("prompt_tokens"), usage.get("completion_tokens"),
                      usage.get("requests")]
        if usage.get("estimated"):
            d["usage"].append(1)  # its tokens are estimates: the endpoint sent no usage
    return d


def _columns(metrics: Sequence[str], directions: Mapping[str, str], has_run: bool,
             has_cost: bool) -> tuple[Column, ...]:
    cols = [Column("id", "query id", "text"), Column("retriever", "retriever", "text")]
    if has_run:
        cols.append(Column("run", "run", "num"))
    cols += [Column("query", "query", "text"), Column("status", "status", "status")]
    cols += [Column(f"m{i}", m, "metric", directions.get(m, "higher"))
             for i, m in enumerate(metrics)]
    if "latency_ms" not in metrics:  # else it is a metric column already
        cols.append(Column("latency", "latency ms", "num"))
    if has_cost:
        cols.append(Column("cost", "cost $", "num"))
    return tuple(cols)


def _case_table(index: int, suite: Mapping[str, Any],
                groups: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
                limits: _Limits, docs: dict[str, None]) -> CaseTable:
    metrics = list(suite.get("metrics", []))
    retrievers = [r["name"] for r in suite.get("retrievers", [])]
    recs: list[Mapping[str, Any]] = []
    for (sid, ret), group in groups.items():
        if sid == suite["id"]:
            if ret not in retrievers:
                retrievers.append(ret)
            recs.extend(group)
    directions = {m: st.get("direction", "higher")
                  for r in suite.get("retrievers", []) for m, st in r["metrics"].items()}
    has_run = any(int(r.get("run") or 0) for r in recs)
    has_cost = any(_finite(r.get("cost")) is not None for r in recs)
    r_index = {name: i for i, name in enumerate(retrievers)}
    # Problems first (errors, then cases below a per-query threshold): the page people see
    # first, and the one shown without scripts, is the one worth reading.
    outcomes = {id(r): case_outcome(r) for r in recs}
    recs.sort(key=lambda r: (_STATUS_RANK[outcomes[id(r)]], r_index[r["retriever"]]))
    rows = []
    for r in recs:
        rows.append(CaseRow(
            retriever=r_index[r["retriever"]],
            case_id=str(r["case_id"]),
            run=int(r.get("run") or 0),
            query=_cut(r.get("query"), min(limits.query, _ROW_QUERY)),
            status=outcomes[id(r)],
            values=tuple(_round((r.get("metrics") or {}).get(m), 4) for m in metrics),
            latency_ms=_round(r.get("latency_ms"), 2),
            cost=_round(r.get("cost"), 6),
            detail=_detail(r, limits, docs),
        ))
    return CaseTable(index, _columns(metrics, directions, has_run, has_cost),
                     tuple(retrievers), tuple(rows))


def _trends(suite: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
            run_id: str | None, gates: Sequence[Mapping[str, Any]]) -> tuple[TrendRow, ...]:
    """Sparklines of the suite's headline metrics (a row per retriever and metric would bury
    the few that matter), each over the earlier runs and this one."""
    runs = sorted(history, key=lambda h: (str(h.get("finished") or ""), str(h.get("run_id"))))
    # a partial run's means cover some queries: beside whole runs they are no trend (the
    # history leaves partial runs out too)
    include_current = not suite.get("partial") and (
        run_id is None or all(h.get("run_id") != run_id for h in runs))
    out = []
    for m in headline_metrics(suite, gates):
        for r in suite.get("retrievers", []):
            keys = {f"{suite['id']}/{r['name']}/{m}", f"{suite.get('name')}/{r['name']}/{m}"}
            points: list[float | None] = []
            for h in runs:
                means = h.get("means") or {}
                points.append(next((_finite(means[k]) for k in keys if k in means), None))
            if not any(p is not None for p in points):
                continue
            if include_current:
                points.append(_finite(r["metrics"].get(m, {}).get("mean")))
            if len(points) < 2:
                continue
            # Two values are a change, not a trend: the table's numbers say it better.
            chart = svg.sparkline(points, label=f"{r['name']} {m} over the last runs") \
                if sum(p is not None for p in points) >= 3 else None
            out.append(TrendRow(r["name"], m, tuple(points), chart))
    return tuple(out)


def _suite_view(suite: Mapping[str, Any], table: CaseTable,
                groups: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
                colors: _Colors, baseline: Mapping[str, Any],
                history: Sequence[Mapping[str, Any]] | None,
                run_id: str | None, gates: Sequence[Mapping[str, Any]]) -> SuiteView:
    metrics = list(suite.get("metrics", []))
    best = _best(suite)
    retrievers = []
    for r in suite.get("retrievers", []):
        recs = groups.get((suite["id"], r["name"]), [])
        latencies = [f for f in (_finite(x.get("latency_ms")) for x in recs) if f is not None]
        usage = usage_view(r)
        retrievers.append(RetrieverView(
            name=r["name"], color=colors.of(r["name"]), summary=r,
            best=frozenset(best.get(r["name"], ())),
            latency_p50=_percentile(latencies, 0.5), latency_p95=_percentile(latencies, 0.95),
            tokens=usage.tokens if usage else None, requests=usage.requests if usage else None,
            cost=usage.cost if usage else None,
            tokens_note=usage.estimate_note if usage else "",
        ))
    def ci_series(names: Sequence[str]) -> list[svg.CiSeries]:
        return [svg.CiSeries(rv.name, rv.color, tuple(
            (_finite(st.get("mean")), _finite(st.get("ci_low")), _finite(st.get("ci_high")))
            for st in (rv.summary["metrics"].get(m, {}) for m in names))) for rv in retrievers]

    scores = [m for m in metrics if _is_score(m, retrievers)]
    bar = svg.ci_bar_chart(scores, ci_series(scores), label=f"{suite.get('name')}: mean per "
                           "metric with 95% confidence interval") \
        if scores and retrievers else None
    # Latency, cost and any metric off the [0, 1] scale each get an axis of their own, in
    # their unit: on the scores' axis they would flatten every score bar.
    scaled = []
    for m in metrics:
        if m not in scores and retrievers:
            unit = _UNITS.get(m, "")
            scaled.append((f"Mean {m}{f' ({unit})' if unit else ''} with 95% CI",
                           svg.ci_bar_chart([m], ci_series([m]), unit=unit,
                                            label=f"{suite.get('name')}: mean {m}")))
    costs = [svg.CiSeries(rv.name, rv.color, ((_mean_cost(
        groups.get((suite["id"], rv.name), [])), None, None),)) for rv in retrievers]
    if any(c.points[0][0] is not None for c in costs):
        scaled.append(("Mean LLM cost per query ($)",
                       svg.ci_bar_chart(["cost per query"], costs, unit="$",
                                        label=f"{suite.get('name')}: mean cost per query")))
    hists = []
    for m in metrics:
        hs = [svg.HistSeries(rv.name, rv.color, tuple(
            _finite(v) for v in metric_values(groups.get((suite["id"], rv.name), []), m)))
            for rv in retrievers]
        if any(h.values for h in hs):
            hists.append((m, svg.histogram_panel(m, hs)))
    rows = tuple(b for b in baseline.get("rows") or []
                 if b.get("suite_id", b.get("suite")) == suite["id"]
                 or (b.get("suite_id") is None and b.get("suite") == suite.get("name")))
    delta = svg.delta_chart([
        svg.DeltaBar(" \u00b7 ".join(str(x) for x in (b["retriever"], b["metric"], b.get("scope"))
                                     if x),
                     _finite(b.get("delta")), _finite(b.get("allowed")),
                     str(b.get("direction", "higher")), bool(b.get("regressed")),
                     _finite(b.get("ci_low")), _finite(b.get("ci_high")),
                     bool(b.get("checked", True))) for b in rows
    ], label=f"{suite.get('name')}: change against the baseline") if rows else None
    notes = []
    for info in baseline.get("suites") or []:
        if info.get("id") != suite["id"]:
            continue
        if not info.get("in_baseline"):
            notes.append("This suite is not in the baseline.")
            continue
        if info.get("suite_changed"):
            notes.append("The suite file changed since the baseline.")
        change = dataset_change_text(info)
        if change:
            notes.append(f"Against the baseline: {change}" + (
                "." if info.get("nothing_compared")
                else f"; compared on {info.get('n_common', '?')} common queries."))
        for missing in (not_in_baseline_text(info), metrics_not_in_baseline_text(info)):
            if missing:
                notes.append(f"{missing[0].upper()}{missing[1:]}.")
    trends = _trends(suite, history, run_id, gates) if history else ()
    directions = {m: next((r.summary["metrics"][m]["direction"] for r in retrievers
                           if m in r.summary["metrics"]), "higher") for m in metrics}
    return SuiteView(
        summary=suite, retrievers=tuple(retrievers), directions=directions, bar_chart=bar,
        scaled_charts=tuple(scaled), histograms=tuple(hists),
        baseline_rows=rows, baseline_notes=tuple(notes), delta_chart=delta, trends=trends,
        table=table,
        has_usage=any(rv.tokens is not None for rv in retrievers),
        has_cost=any(rv.cost is not None for rv in retrievers),
        # From the rows too: a summary written before the xfail counts existed has none.
        has_xfail=any(rv.summary["n_xfailed"] or rv.summary["n_xpassed"] for rv in retrievers)
        or any(row.status in XFAIL_OUTCOMES for row in table.rows),
        unknown_labels=unknown_labels_text(suite.get("unknown_labels")),
    )


def _snippets(doc_text: Mapping[str, str] | None, docs: Sequence[str],
              limit: int) -> dict[str, str]:
    """Shortened document texts within :data:`SNIPPET_BUDGET`: shorter when there are many
    documents, and only for the documents met first when even short ones do not fit."""
    if not doc_text or not limit:
        return {}
    known = [d for d in docs if doc_text.get(d)]
    length = min(limit, max(40, SNIPPET_BUDGET // max(len(known), 1)))
    out: dict[str, str] = {}
    used = 0
    for doc in known:
        snippet = _snippet(str(doc_text[doc]), length)
        used += len(snippet) + len(doc) + 6
        if used > SNIPPET_BUDGET:
            break
        out[doc] = snippet
    return out


def _snippet(text: str, length: int) -> str:
    """``text`` with its whitespace collapsed, cut to ``length``. Collapsing only a prefix gives
    the same result whenever that prefix still outlasts ``length``: documents can be long, and
    a report shows thousands of them."""
    head = text[: 2 * length + 16]
    collapsed = " ".join(head.split())
    if len(collapsed) <= length and len(head) < len(text):
        collapsed = " ".join(text.split())
    return _cut(collapsed, length)


def _first_level(records: Sequence[Mapping[str, Any]]) -> int:
    """The first level of detail whose rows, estimated from a sample, fit the budget."""
    if not records:
        return 0
    sample = records[:: max(1, len(records) // _SAMPLE)]
    scale = len(records) / len(sample)
    budget = JSON_BUDGET - SNIPPET_BUDGET
    for level, limits in enumerate(_LEVELS):
        # ~120 bytes for the fixed part of a row (ids, status, values, latency).
        size = sum(len(_dumps(_detail(r, limits, {}))) + 120
                   + len(str(r.get("query") or "")[:_ROW_QUERY]) for r in sample)
        if size * scale <= budget:
            return level
    return len(_LEVELS) - 1


def _run_items(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for key, label in (("id", "run id"), ("started", "started"), ("finished", "finished"),
                       ("duration_s", "duration s"), ("git_commit", "git commit"),
                       ("cwd", "cwd"), ("workers", "workers"), ("exitstatus", "exit status"),
                       ("n_records", "records")):
        if run.get(key) is not None:
            items.append((label, str(run[key])))
    command = run.get("command")
    if isinstance(command, list):
        items.append(("command", shlex.join(str(c) for c in command)))
    elif command:
        items.append(("command", str(command)))
    versions = run.get("versions")
    if isinstance(versions, Mapping):
        items.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items()
                                            if v is not None)))
    # the run budget as the terminal and summary.md give it: spend against each cost cap,
    # each LLM pool's requests and concurrency (the adaptive level reached)
    budget = run.get("budget")
    if isinstance(budget, Mapping):
        items += [("LLM budget", line) for line in budget_lines(budget)]
    # as the terminal and summary.md say it: which run's records it reused, and how many
    resumed = run.get("resumed")
    if isinstance(resumed, Mapping) and resumed.get("from") is not None:
        items.append(("resumed", resume_line(resumed)))
    return items


class _BestEffortBytecodeCache(jinja2.FileSystemBytecodeCache):
    """jinja2's file cache of compiled templates, where a write that fails (read-only or full
    disk) is skipped: the cache only saves time, and must never cost the report."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def _environment(template_cache: Path | None = None) -> jinja2.Environment:
    # Compiling the template costs a large part of a small run; jinja2's bytecode cache keys
    # each entry by the template source and the Python version, so a stale entry is never used.
    # Without a folder given, compiled templates go where jinja2 keeps them by default: a
    # per-user folder in the temp directory that it creates private (0700) and refuses to use
    # when another user owns it. Compiled code is not project data, so every project, CI
    # checkout and `-p no:cacheprovider` run on the machine compiles the template once.
    cache: jinja2.BytecodeCache | None = None
    if template_cache is None:
        try:
            cache = _BestEffortBytecodeCache()
        except (OSError, RuntimeError):  # no safe per-user folder: render without the cache
            cache = None
    else:
        try:
            template_cache.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
        else:
            cache = _BestEffortBytecodeCache(str(template_cache))
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_ragbench.report", _TEMPLATES),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined, bytecode_cache=cache,
    )
    env.globals.update(fmt=fmt, fmt_p=fmt_p, heat=heat)
    return env


def _asset(name: str) -> str:
    return (resources.files("pytest_ragbench.report") / _TEMPLATES / name).read_text("utf-8")


TEMPLATE_FILES = ("report.html.j2", "report.css", "report.js")
"""The files the page is made from (in ``report/templates``)."""

PAGE_FILES = (*TEMPLATE_FILES, "html.py", "svg.py")
"""What decides how the page looks: the templates, and the code that feeds them and draws
its charts (modules of ``pytest_ragbench.report``)."""


def _page_source(name: str) -> str:
    if name in TEMPLATE_FILES:
        return _asset(name)
    return (resources.files("pytest_ragbench.report") / name).read_text("utf-8")


def template_digest() -> str:
    """SHA-256 over :data:`PAGE_FILES` (names and contents, in order): what a picture of the
    report records to tell whether it still shows the current page."""
    h = hashlib.sha256()
    for name in PAGE_FILES:
        data = _page_source(name).encode("utf-8")
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def render_html(
    summary: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    *,
    history: Sequence[Mapping[str, Any]] | None = None,
    doc_text: Mapping[str, str] | None = None,
    template_cache: Path | None = None,
) -> str:
    """Render the report of one run as a self-contained HTML page.

    ``summary`` is a run summary (``summarize_run`` plus the session's ``run`` and optional
    ``baseline``); ``records`` are the run's per-case records. ``history`` lists earlier runs as
    ``{"run_id", "finished", "means": {"SUITE/RETRIEVER/METRIC": value}}`` (SUITE is the suite
    id or name) and adds trend sparklines; ``doc_text`` maps document ids to their text and adds
    snippets to the drill-downs. ``template_cache`` is a folder for compiled templates
    (jinja2's bytecode cache), reused by later runs; by default jinja2's private per-user
    folder in the temp directory.
    """
    # The page is built from hundreds of thousands of small lists and dicts, none in a
    # reference cycle; the cyclic collector, run again and again while they pile up, took 40%
    # of the time for 10,000 cases. Paused for the rendering only, as it was.
    with _gc_paused():
        return _render(summary, records, history=history, doc_text=doc_text,
                       template_cache=template_cache)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _render(
    summary: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    *,
    history: Sequence[Mapping[str, Any]] | None,
    doc_text: Mapping[str, str] | None,
    template_cache: Path | None,
) -> str:
    groups = group_records(records)
    suite_summaries = [_normal_suite(s) for s in summary.get("suites") or []]
    names: list[str] = []
    for s in suite_summaries:
        names.extend(r["name"] for r in s["retrievers"] if r["name"] not in names)
    colors = _Colors(tuple(names))
    run = summary.get("run") or {}
    baseline = dict(summary.get("baseline") or {})
    # with the mark every output gives the row
    baseline_rows = [{**_with(_ROW_DEFAULTS, b), "mark": row_mark(b)}
                     for b in baseline.get("rows") or []]
    baseline["rows"] = baseline_rows

    tables: list[CaseTable] = []
    snippets: dict[str, str] = {}
    data_json = Markup("")
    trimmed = False
    # Normally one pass; another only when the sampled estimate was too optimistic.
    for level in range(_first_level(records), len(_LEVELS)):
        limits = _LEVELS[level]
        docs: dict[str, None] = {}
        tables = [_case_table(i, s, groups, limits, docs)
                  for i, s in enumerate(suite_summaries)]
        snippets = _snippets(doc_text, list(docs), limits.snippet)
        trimmed = level > 0
        data_json = embed_json({"page": PAGE_SIZE, "trimmed": trimmed,
                                "tables": [t.spec() for t in tables], "docs": snippets})
        if len(data_json.encode("utf-8")) <= JSON_BUDGET:
            break

    gate_results = [g for g in summary.get("gates") or [] if isinstance(g, Mapping)]
    suites = [_suite_view(s, t, groups, colors, baseline, history, run.get("id"), gate_results)
              for s, t in zip(suite_summaries, tables, strict=True)]
    # Failed gates first: they are why the run failed, and a long list of passes hides them.
    # named as the suites are, where two suite files of the run share a name
    gates = sorted((_gate_view(g) for g in tell_suites_apart(gate_results, suite_summaries)),
                   key=lambda g: _GATE_RANK[g.status])
    regressed = any(b.get("regressed") for b in baseline_rows)
    # The session's overall verdict also counts failures that are neither gates nor
    # regressions (e.g. a required dataset that changed), so it wins when present.
    passed = summary.get("passed", summary.get("gates_passed", True) and not regressed)
    verdict = "failed" if not passed else ("passed" if gates or baseline_rows else "none")
    one = summary.get("verdict") if isinstance(summary.get("verdict"), Mapping) else None
    if one is not None:
        # The run's one verdict (as the exit status, summary.json and summary.md say).
        verdict = "passed" if one.get("passed") else "failed"
    reasons = [str(r.get("text")) for r in (one or {}).get("reasons", [])
               if isinstance(r, Mapping) and r.get("fails")]
    coverage = (one or {}).get("coverage") if (one or {}).get("partial") else None
    script = _asset("report.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    env = _environment(template_cache)
    return env.get_template("report.html.j2").render(
        run=run, run_items=_run_items(run), partial=bool(run.get("partial")),
        reasons=reasons, coverage=coverage,
        verdict=verdict, gates=gates, baseline=baseline, baseline_rows=baseline_rows,
        regressed=regressed, suites=suites, data_json=data_json, trimmed=trimmed,
        nothing_compared=NOTHING_COMPARED if isinstance(summary.get("baseline"), Mapping)
        and not baseline_rows else None,
        docs=snippets, page_size=PAGE_SIZE, n_records=len(records),
        css=Markup(_asset("report.css")), script=Markup(script),
        script_hash=f"'sha256-{digest}'",
    )


def write_html(
    path: Path,
    summary: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    *,
    history: Sequence[Mapping[str, Any]] | None = None,
    doc_text: Mapping[str, str] | None = None,
    template_cache: Path | None = None,
) -> Path:
    """Render with :func:`render_html` and write atomically to ``path``; returns ``path``."""
    html = render_html(summary, records, history=history, doc_text=doc_text,
                       template_cache=template_cache)
    if path.is_dir():
        # said before a megabyte is written beside it, as the OS says it
        raise IsADirectoryError(21, "Is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a megabyte left beside the path that failed
        raise
    return path
