"""Report facts: what the terminal, Markdown, HTML and junit outputs show, computed once.

The renderers lay these out; none of them derives a fact of its own. The facts come from the
summary (:mod:`pytest_ragbench.results.aggregate`) and the comparison
(:mod:`pytest_ragbench.results.compare`), which compute the numbers; this module only words
them, with the shared number formats of :mod:`pytest_ragbench.report.format`. The domain
(``results``, ``metrics``) imports nothing from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..results.changes import dataset_change_text
from ..results.gates import bound_text
from ..results.verdict import beyond_tolerance
from .format import estimate_note, finite, num, p_value, plural

__all__ = ["HEADLINE_COUNT", "MAX_GATES", "AbPair", "AbView", "GateSelection", "SuiteTable",
           "SystemRow", "UsageView", "ab_view", "baseline_notes", "baseline_suite_notes",
           "dataset_change_text",
           "failure_lines", "gate_failure_line", "gate_selection", "gate_state",
           "gates_failed_first", "headline_metrics",
           "is_resource_metric", "regression_line", "row_mark", "suite_table",
           "tell_suites_apart", "unknown_labels_text", "unscoped_text", "usage_view", "where",
           "with_failure_lines"]


def where(g: Mapping[str, Any]) -> str:
    """``suite/retriever [scope]``: where a gate or row applies."""
    scope = f" [{g['scope']}]" if g.get("scope") else ""
    return f"{g['suite']}/{g['retriever']}{scope}"


def unscoped_text(g: Mapping[str, Any]) -> str:
    """A gate's text without the scope it starts with (``ndcg@10: drop <= 0.03``), for a
    line whose :func:`where` already names the scope."""
    text, scope = str(g.get("text", "")), g.get("scope")
    return text.removeprefix(f"{scope}: ") if scope else text


def tell_suites_apart(gates: Sequence[Mapping[str, Any]],
                      suites: Sequence[Mapping[str, Any]] = ()) -> list[Mapping[str, Any]]:
    """The gates, those of a suite whose name another suite file of the run shares (among
    ``suites`` or the gates' own files) named ``name [file]``: two files may share a name
    (a common baseline identity), and their gate lines read alike."""
    files: dict[str, set[str]] = {}
    for item in (*({"suite": s.get("name"), "suite_id": s.get("id")} for s in suites), *gates):
        if item.get("suite_id") is not None:
            files.setdefault(str(item.get("suite")), set()).add(str(item["suite_id"]))
    shared = {name for name, ids in files.items() if len(ids) > 1}
    return [{**g, "suite": f"{g['suite']} [{g['suite_id']}]"}
            if g.get("suite_id") is not None and str(g.get("suite")) in shared else g
            for g in gates]


def gate_state(g: Mapping[str, Any]) -> str:
    """"skipped", "passed" or "failed"."""
    if g.get("skipped"):
        return "skipped"
    return "passed" if g["passed"] else "failed"


def gate_failure_line(g: Mapping[str, Any]) -> str:
    """One explicit line for a failed gate: which, where, by how much, with the statistics."""
    if g["kind"] == "threshold" and g.get("note"):
        return (f"ragbench: gate failed: {where(g)} {g['metric']}: {g['note']} "
                f"(`{g['text']}`): nothing was checked")
    if g["kind"] == "threshold":
        margin = finite(g["margin"])
        return (f"ragbench: gate failed: {where(g)} {g['metric']} = {num(g['value'])}, "
                f"expected {g['op']} {bound_text(g['threshold'])} (missed by "
                f"{num(None if margin is None else abs(margin))})")
    r = g["row"]
    if not r.get("n") and r.get("n_common"):
        # not renamed query ids: the queries are there, unscored (NaN) on one side
        return (f"ragbench: gate failed: {where(g)} {g['metric']}: no query scored on both "
                f"sides, the {plural(int(r['n_common']), 'query', 'queries')} in common with "
                f"the baseline NaN on one side (`{g['text']}`, n = 0): nothing was compared")
    if not r.get("n"):
        return (f"ragbench: gate failed: {where(g)} {g['metric']}: no query in common with the "
                f"baseline (`{g['text']}`, n = 0): nothing was compared")
    stats = (f"delta {num(r['delta'], signed=True)}, 95% CI [{num(r['ci_low'], signed=True)}, "
             f"{num(r['ci_high'], signed=True)}], p = {p_value(r['p_holm'])} ({r['test']}, "
             f"Holm), {num(r['baseline'])} -> {num(r['current'])}, n = {r['n']}")
    moved = _worse(r)
    if g["kind"] == "drop":
        return (f"ragbench: gate failed: {where(g)} {g['metric']} {moved} more than allowed "
                f"(`{g['text']}`, allowed {num(g['allowed'])}): {stats}")
    return (f"ragbench: gate failed: {where(g)} {g['metric']} {moved} significantly at "
            f"{g['alpha']:g} (`{g['text']}`): {stats}")


def _worse(row: Mapping[str, Any]) -> str:
    """How the metric of a comparison row got worse: a quality score drops, a time or an error
    rate rises (the gates' ``drop`` means either)."""
    return "rose" if row.get("direction") == "lower" else "dropped"


def regression_line(row: Mapping[str, Any]) -> str:
    """One line for a metric that moved beyond its tolerance (or that nothing compared)."""
    if not row.get("n"):
        return (f"ragbench: regression: {row['suite']}/{row['retriever']} {row['metric']}: no "
                f"query scored on both sides (n = 0: none in common with the baseline, or "
                f"NaN on one side): nothing was compared (tolerance {row['tolerance']})")
    return (f"ragbench: regression: {row['suite']}/{row['retriever']} {row['metric']} "
            f"{_worse(row)} from {num(row['baseline'])} to {num(row['current'])} "
            f"(delta {num(row['delta'], signed=True)}, 95% CI "
            f"[{num(row['ci_low'], signed=True)}, {num(row['ci_high'], signed=True)}], "
            f"p = {p_value(row['p_holm'])} ({row['test']}, Holm), tolerance {row['tolerance']})")


def failure_lines(result: Mapping[str, Any]) -> list[str]:
    """One line per reason a comparison (:func:`~pytest_ragbench.results.compare.compare_docs`)
    fails: a dataset that must not change, each failed gate, each row beyond its tolerance
    (a row marked regressed by a failed gate alone is that gate's line), and a run that had
    failed when it ran, in that order."""
    prior = result.get("prior_failure")
    other = [line for line in result.get("other_failures", []) if line != prior]
    return [*other,
            *(gate_failure_line(g)
              for g in tell_suites_apart(result.get("gates", []), result.get("suites", []))
              if not g["passed"]),
            *(regression_line(row)
              for row in tell_suites_apart(result.get("rows", []), result.get("suites", []))
              if beyond_tolerance(row)),
            *([prior] if prior else [])]


def row_mark(row: Mapping[str, Any]) -> str:
    """A comparison row's mark in every output: ``REGRESSED`` (beyond its tolerance, or a
    gate judged on it failed), ``ok`` (its checks passed) or ``unchecked`` (no tolerance or
    gate judges it: a wall time, or a metric gated on some queries only; it is shown, not
    judged). A row stored before rows said whether they were checked reads ``ok``."""
    if row.get("regressed"):
        return "REGRESSED"
    return "ok" if row.get("checked", True) else "unchecked"


def with_failure_lines(result: Mapping[str, Any]) -> dict[str, Any]:
    """A comparison as ``ragbench compare --json`` prints it and the plugin reports it: with
    its ``failures`` lines."""
    out = {k: v for k, v in result.items() if k != "prior_failure"}
    out["failures"] = failure_lines(result)
    return out


@dataclass(frozen=True)
class UsageView:
    """LLM use of one retriever's cases, from its summary (None: no case called an LLM)."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_cost: float
    per_item: Mapping[str, float]
    costed: bool
    estimated: int = 0  # cases whose token counts are partly estimates (no usage sent)
    cases: int = 0

    @property
    def estimate_note(self) -> str:
        """What the token counts (and costs) are when some are estimates, else ''."""
        return estimate_note(self.estimated, self.cases, "cases")

    @property
    def cost(self) -> float | None:
        """The summed cost; None when no case carried one (an LLM without prices)."""
        return self.total_cost if self.costed else None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def line(self) -> str:
        per = self.per_item
        note = f" ({self.estimate_note})" if self.estimated else ""
        return (f"llm: {plural(self.requests, 'request')}, {self.prompt_tokens} prompt + "
                f"{self.completion_tokens} completion tokens{note}, "
                f"cost ${num(self.total_cost)} "
                f"(per item: {num(per['requests'], 2)} requests, "
                f"{num(per['prompt_tokens'] + per['completion_tokens'], 0)} tokens)")


def usage_view(group: Mapping[str, Any]) -> UsageView | None:
    """The usage totals aggregation put in a retriever's summary, as one fact for every
    output (they are summed once, by :func:`pytest_ragbench.results.aggregate.usage_totals`)."""
    u = group.get("usage")
    if not isinstance(u, Mapping) or not u:
        return None
    cost = float(u.get("cost") or 0.0)
    # Summaries written before n_costed existed: a cost of 0 reads as none carried.
    costed = int(u["n_costed"]) > 0 if "n_costed" in u else cost != 0.0
    return UsageView(int(u.get("requests") or 0), int(u.get("prompt_tokens") or 0),
                     int(u.get("completion_tokens") or 0), cost,
                     dict(u.get("per_item") or {}), costed,
                     int(u.get("n_estimated") or 0), int(u.get("n_items") or 0))


def baseline_notes(info: Mapping[str, Any]) -> list[str]:
    """What differs between a suite and its baseline suite, as short clauses (empty when
    nothing does or the suite is not in the baseline)."""
    changes = []
    if info.get("baseline_id") and info["baseline_id"] != info.get("id"):
        changes.append(f"matched by name to {info['baseline_id']} in the baseline")
    if info.get("suite_changed"):
        changes.append("suite file changed")
    data = dataset_change_text(info)
    if data:
        changes.append(data)
    return changes


def baseline_suite_notes(suites: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per suite of a comparison that is partial, not in the baseline, or changed
    since it (the terminal, ``ragbench compare`` and summary.md say the same)."""
    lines = []
    names = [str(s.get("name")) for s in suites]
    for s in suites:
        # two suite files may share a name: then the file says which
        name = (f"{s['name']} [{s['id']}]" if names.count(str(s.get("name"))) > 1
                and s.get("id") is not None else s["name"])
        nothing = bool(s.get("nothing_compared"))
        if s.get("partial"):
            lines.append(f"suite {name}: partial, {s['partial']} ran"
                         + ("" if nothing else "; compared on those"))
        if not s.get("in_baseline", True):
            lines.append(f"suite {name}: not in the baseline")
            continue
        changes = baseline_notes(s)
        missing = not_in_baseline_text(s)
        if changes and s.get("n_common") is not None:
            # compared on no query when no system that ran is in the baseline
            lines.append(f"suite {name}: {', '.join(changes)}" + (
                "" if nothing else f"; compared on the {s['n_common']} common queries"))
        if missing:
            lines.append(f"suite {name}: {missing}")
        metrics = metrics_not_in_baseline_text(s)
        if metrics:
            lines.append(f"suite {name}: {metrics}")
    return lines


def not_in_baseline_text(info: Mapping[str, Any]) -> str:
    """What a suite of a comparison (``info``) ran that its baseline suite lacks, so that
    nothing was compared for it: every system that ran (a ``-k`` or shard of new systems
    alone, which passes having compared nothing) or some; empty when none."""
    missing = [str(n) for n in info.get("not_in_baseline") or []]
    if not missing:
        return ""
    return _not_compared(missing, info.get("baseline_systems"), "holds",
                         bool(info.get("nothing_compared")))


def metrics_not_in_baseline_text(info: Mapping[str, Any]) -> str:
    """The metrics a suite of a comparison (``info``) computes that its baseline suite's
    systems lack (``ndcg@10`` become ``ndcg@5``), compared for none; empty when none."""
    missing = [str(n) for n in info.get("metrics_not_in_baseline") or []]
    if not missing:
        return ""
    return _not_compared(missing, info.get("baseline_metrics"), "has", False)


def _not_compared(missing: list[str], have: Any, verb: str, nothing: bool) -> str:
    theirs = ", ".join(str(n) for n in have or []) or "none"
    if nothing:
        return (f"no system that ran is in the baseline (ran: {', '.join(missing)}; the "
                f"baseline: {theirs}), so nothing was compared against it")
    if len(missing) == 1:
        return (f"{missing[0]} is not in the baseline (it {verb} {theirs}), so it was not "
                "compared")
    return (f"{', '.join(missing)} are not in the baseline (it {verb} {theirs}), so they were "
            "not compared")


#: What every output says of a comparison with the baseline that compared no metric.
NOTHING_COMPARED = "nothing was compared against the baseline"


def compared_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``"1 of 4 metrics regressed"``, or :data:`NOTHING_COMPARED` (not "0 of 0 metrics
    regressed", which read as a comparison that found nothing wrong)."""
    if not rows:
        return NOTHING_COMPARED
    return f"{sum(1 for r in rows if r.get('regressed'))} of {len(rows)} metrics regressed"


# -- the one-screen summary ------------------------------------------------------------------

#: Metrics a suite's summary table shows besides its gated ones (the first ones it lists).
HEADLINE_COUNT = 3
# Metrics that measure what a system costs rather than how good it is: shown in a compact
# column of their own (the mean only), never among the headline metrics.
_RESOURCE_PREFIXES = ("latency", "cost", "tokens")


def is_resource_metric(name: str) -> bool:
    """A latency, cost or token count metric (``latency_ms``): a column of its own."""
    return name.startswith(_RESOURCE_PREFIXES)


def headline_metrics(suite: Mapping[str, Any], gates: Iterable[Mapping[str, Any]] = (),
                     count: int = HEADLINE_COUNT) -> list[str]:
    """The metrics a suite leads with, in its listing order: every listed metric a gate of
    the suite checks, then its first listed metrics until there are ``count``.

    ``suite`` is a suite of a run summary (its ``id``, ``name``, ``metrics`` and optionally
    its retrievers' ``gates``); ``gates`` are gate results of the run (``summary["gates"]``),
    of any suite: those naming this suite by name or id count. A gate on something that is
    not a listed metric (``error_rate``) adds nothing. Resource metrics (``latency_ms``,
    cost, tokens) are never headline metrics: they get a column of their own. The outputs
    that show a part of a suite's metrics (the terminal and Markdown summaries, the HTML
    trends) all pick them here, so they agree.
    """
    quality = [str(m) for m in suite.get("metrics") or () if not is_resource_metric(str(m))]
    names = {suite.get("id"), suite.get("name")} - {None}
    every = [*gates, *(g for r in suite.get("retrievers") or () if isinstance(r, Mapping)
                       for g in r.get("gates") or ())]
    chosen = {str(g.get("metric")) for g in every if isinstance(g, Mapping)
              and _gate_of(g, suite.get("id"), names)} & set(quality)
    for m in quality:
        if len(chosen) >= count:
            break
        chosen.add(m)
    return [m for m in quality if m in chosen]


def _gate_of(g: Mapping[str, Any], suite_id: Any, names: set[Any]) -> bool:
    """Whether gate result ``g`` is of the suite with ``suite_id`` (``names``: its id and
    name): by the suite file it names when it names one, as two files of a run may share a
    name; by name or id for results written before gates named their file."""
    if g.get("suite_id") is not None:
        return g["suite_id"] == suite_id or (suite_id is None and g["suite_id"] in names)
    return g.get("suite") in names


@dataclass(frozen=True)
class SystemRow:
    """One retriever or pipeline of a suite: its counts and the statistics of the metrics
    its suite's table shows."""

    name: str
    n_cases: int
    n_errors: int
    n_failed: int
    n_xfailed: int
    n_xpassed: int
    metrics: Mapping[str, Mapping[str, Any]]
    usage: UsageView | None
    #: the n most of the row's headline cells share (a cell that differs says its own)
    n: int | None


@dataclass(frozen=True)
class SuiteTable:
    """A suite as its one summary table shows it: systems x headline metrics."""

    name: str
    id: str
    dataset: str
    partial: str | None
    headline: list[str]
    resources: list[str]
    hidden: list[str]
    rows: list[SystemRow]
    n_no_relevant: int
    errors: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    flaky: int = 0
    flips: int = 0
    #: What the dataset's ``unknown_documents`` did, in words (None: no label named a
    #: document the corpus lacks).
    unknown_labels: str | None = None

    @property
    def has_usage(self) -> bool:
        return any(r.usage is not None for r in self.rows)

    @property
    def n_errors(self) -> int:
        """Every errored case: :attr:`errors` lists only each system's first ones."""
        return sum(r.n_errors for r in self.rows)

    @property
    def has_known_failures(self) -> bool:
        return any(r.n_xfailed or r.n_xpassed for r in self.rows)


def suite_table(suite: Mapping[str, Any], gates: Sequence[Mapping[str, Any]] = (),
                metrics: Sequence[str] | None = None) -> SuiteTable:
    """The facts of a suite's summary table; ``metrics`` (default: the headline metrics)
    chooses the quality columns."""
    headline = list(metrics) if metrics is not None else headline_metrics(suite, gates)
    resources = [m for m in suite["metrics"] if is_resource_metric(m)]
    hidden = [m for m in suite["metrics"] if m not in headline and m not in resources]
    rows = []
    errors: list[tuple[str, Mapping[str, Any]]] = []
    flaky = flips = 0
    for r in suite["retrievers"]:
        shown = {m: r["metrics"][m] for m in [*headline, *resources] if m in r["metrics"]}
        ns = [int(shown[m]["n"]) for m in headline if m in shown]
        # the most frequent n (the smallest on a tie), so a row says it once
        n = min(ns, key=lambda k: (-ns.count(k), k)) if ns else None
        rows.append(SystemRow(r["name"], int(r["n_cases"]), int(r["n_errors"]),
                              int(r["n_failed"]), int(r.get("n_xfailed", 0)),
                              int(r.get("n_xpassed", 0)), shown, usage_view(r), n))
        errors += [(r["name"], e) for e in r.get("errors", [])]
        if r.get("flaky") is not None:
            flaky += len(r["flaky"])
            flips += sum(1 for f in r["flaky"] if f["flips"])
    partial = (f"partial, {suite['n_cases_run']} of "
               f"{plural(int(suite['n_cases_total']), 'case')} ran"
               if suite.get("partial") else None)
    return SuiteTable(str(suite["name"]), str(suite["id"]),
                      (suite.get("dataset_hash") or "")[:12], partial, headline, resources,
                      hidden, rows,
                      sum(int(r.get("n_no_relevant", 0)) for r in suite["retrievers"]),
                      errors, flaky, flips, unknown_labels_text(suite.get("unknown_labels")))


def unknown_labels_text(info: Any) -> str | None:
    """A suite's ``unknown_labels`` (see :func:`~pytest_ragbench.results.aggregate.
    unknown_labels`) in words, e.g. "3 labels of 2 queries name a document the corpus lacks:
    kept, ..."; None when there is none (or it is not one)."""
    if not isinstance(info, Mapping) or not info.get("n_labels"):
        return None
    action = str(info.get("action"))
    # "relevant" said of every label counted a grade-0 one among them
    what = {"kept": "kept with their grades, never retrieved, as trec_eval and BEIR score them "
                    "(dataset.unknown_documents: keep)",
            "dropped": "dropped, not scored (dataset.unknown_documents: drop)"}.get(action, action)
    return (f"{plural(int(info['n_labels']), 'label')} of "
            f"{plural(int(info.get('n_queries') or 0), 'query', 'queries')} "
            f"name{'s' if int(info['n_labels']) == 1 else ''} a document the corpus lacks: "
            f"{what}")


@dataclass(frozen=True)
class AbPair:
    """A significant difference, the better system first (by the metric's direction)."""

    metric: str
    better: str
    worse: str
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p: float | None


@dataclass(frozen=True)
class AbView:
    """A suite's pairwise comparisons over some metrics: the significant ones spelled out,
    the rest counted."""

    metrics: list[str]
    test: str
    alpha: float
    n_pairs: int
    significant: list[AbPair]
    best: list[tuple[str, str, float | None]]


def ab_view(suite: Mapping[str, Any], metrics: Sequence[str]) -> AbView | None:
    """The A/B facts of ``suite`` over ``metrics`` (None: fewer than two systems).

    Significant pairs are ordered by metric (as listed) then by p-value, so the strongest
    evidence comes first."""
    order = {m: i for i, m in enumerate(metrics)}
    tables = sorted((t for t in suite.get("ab", []) if t["metric"] in order),
                    key=lambda t: order[t["metric"]])
    if not tables:
        return None
    pairs: list[AbPair] = []
    n_pairs = 0
    best = []
    for t in tables:
        lower = t.get("direction") == "lower"
        found = []
        for c in t["pairs"]:
            n_pairs += 1
            if not c["significant"]:
                continue
            delta = finite(c["delta"])
            # delta is b - a: b is the better one when it moved the metric's good way
            b_better = delta is not None and (delta < 0 if lower else delta > 0)
            if b_better:
                found.append(AbPair(t["metric"], c["b"], c["a"], delta, finite(c["ci_low"]),
                                    finite(c["ci_high"]), finite(c["p_holm"])))
            else:
                lo, hi = finite(c["ci_low"]), finite(c["ci_high"])
                found.append(AbPair(t["metric"], c["a"], c["b"],
                                    None if delta is None else -delta,
                                    None if hi is None else -hi,
                                    None if lo is None else -lo, finite(c["p_holm"])))
        found.sort(key=lambda a: (a.p if a.p is not None else 2.0))
        pairs += found
        if t.get("best") is not None:
            best.append((t["metric"], str(t["best"]), finite(t.get("p_best"))))
    first = tables[0]
    return AbView([t["metric"] for t in tables], str(first["test"]), float(first["alpha"]),
                  n_pairs, pairs, best)


def gates_failed_first(gates: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The gates in the order a reader needs them: failed, then passed, then skipped (each
    group in the order the run checked them)."""
    rank = {"failed": 0, "passed": 1, "skipped": 2}
    return sorted(gates, key=lambda g: rank[gate_state(g)])


#: Gate lines the one-screen summaries (terminal and Markdown) spell out; the rest are counted.
MAX_GATES = 12


@dataclass(frozen=True)
class GateSelection:
    """The gates a summary shows at a level: a count text, those spelled out, the rest."""

    counts: str
    shown: list[Mapping[str, Any]]
    rest: list[Mapping[str, Any]]


def gate_selection(gates: Sequence[Mapping[str, Any]], level: str) -> GateSelection:
    """Failed first; ``short`` keeps only the failed ones, ``default`` spells out at most
    :data:`MAX_GATES`, ``full`` all of them."""
    states = [gate_state(g) for g in gates]
    counts = ", ".join(f"{states.count(k)} {k}" for k in ("failed", "passed", "skipped")
                       if states.count(k))
    ordered = gates_failed_first(gates)
    if level == "short":
        ordered = [g for g in ordered if gate_state(g) == "failed"]
    shown = ordered[:MAX_GATES] if level == "default" else ordered
    return GateSelection(counts, shown, ordered[len(shown):])
