"""Report facts: what the terminal, Markdown, HTML and junit outputs show, computed once.

The renderers lay these out; none of them derives a fact of its own. The facts come from the
summary (:mod:`pytest_ragbench.results.aggregate`) and the comparison
(:mod:`pytest_ragbench.results.compare`), which compute the numbers; this module only words
them, with the shared number formats of :mod:`pytest_ragbench.report.format`. The domain
(``results``, ``metrics``) imports nothing from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..results.changes import dataset_change_text
from .format import finite, num, p_value

__all__ = ["UsageView", "baseline_notes", "dataset_change_text", "failure_lines",
           "gate_failure_line", "gate_state", "headline_metrics", "regression_line", "usage_view",
           "where", "with_failure_lines"]

HEADLINE_FIRST = 3
"""How many of a suite's listed metrics lead its outputs besides the gated ones."""


def where(g: Mapping[str, Any]) -> str:
    """``suite/retriever [scope]``: where a gate or row applies."""
    scope = f" [{g['scope']}]" if g.get("scope") else ""
    return f"{g['suite']}/{g['retriever']}{scope}"


def gate_state(g: Mapping[str, Any]) -> str:
    """"skipped", "passed" or "failed"."""
    if g.get("skipped"):
        return "skipped"
    return "passed" if g["passed"] else "failed"


def gate_failure_line(g: Mapping[str, Any]) -> str:
    """One explicit line for a failed gate: which, where, by how much, with the statistics."""
    if g["kind"] == "threshold":
        margin = finite(g["margin"])
        return (f"ragbench: gate failed: {where(g)} {g['metric']} = {num(g['value'])}, "
                f"expected {g['op']} {g['threshold']:g} (missed by "
                f"{num(None if margin is None else abs(margin))})")
    r = g["row"]
    stats = (f"delta {num(r['delta'], signed=True)}, 95% CI [{num(r['ci_low'], signed=True)}, "
             f"{num(r['ci_high'], signed=True)}], p = {p_value(r['p_holm'])} ({r['test']}, "
             f"Holm), {num(r['baseline'])} -> {num(r['current'])}, n = {r['n']}")
    if g["kind"] == "drop":
        return (f"ragbench: gate failed: {where(g)} {g['metric']} dropped more than allowed "
                f"(`{g['text']}`, allowed {num(g['allowed'])}): {stats}")
    return (f"ragbench: gate failed: {where(g)} {g['metric']} dropped significantly at "
            f"{g['alpha']:g} (`{g['text']}`): {stats}")


def regression_line(row: Mapping[str, Any]) -> str:
    """One line for a metric that moved beyond its tolerance."""
    return (f"ragbench: regression: {row['suite']}/{row['retriever']} {row['metric']} "
            f"dropped from {num(row['baseline'])} to {num(row['current'])} "
            f"(delta {num(row['delta'], signed=True)}, 95% CI "
            f"[{num(row['ci_low'], signed=True)}, {num(row['ci_high'], signed=True)}], "
            f"p = {p_value(row['p_holm'])} ({row['test']}), tolerance {row['tolerance']})")


def failure_lines(result: Mapping[str, Any]) -> list[str]:
    """One line per reason a comparison (:func:`~pytest_ragbench.results.compare.compare_docs`)
    fails: a dataset that must not change, each failed gate, each regression, and a run that
    had failed when it ran, in that order."""
    prior = result.get("prior_failure")
    other = [line for line in result.get("other_failures", []) if line != prior]
    return [*other,
            *(gate_failure_line(g) for g in result.get("gates", []) if not g["passed"]),
            *(regression_line(row) for row in result.get("rows", []) if row["regressed"]),
            *([prior] if prior else [])]


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

    @property
    def cost(self) -> float | None:
        """The summed cost; None when no case carried one (an LLM without prices)."""
        return self.total_cost if self.costed else None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def line(self) -> str:
        per = self.per_item
        return (f"llm: {self.requests} requests, {self.prompt_tokens} prompt + "
                f"{self.completion_tokens} completion tokens, cost ${num(self.total_cost)} "
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
                     dict(u.get("per_item") or {}), costed)


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


def headline_metrics(suite: Mapping[str, Any], gates: Iterable[Mapping[str, Any]] = (),
                     *, first: int = HEADLINE_FIRST) -> tuple[str, ...]:
    """The metrics a suite leads with: every listed metric a gate of the suite checks, plus
    its first ``first`` listed metrics, in the suite's listing order.

    ``suite`` is a suite of a run summary (its ``id``, ``name``, ``metrics`` and optionally
    its retrievers' ``gates``); ``gates`` are gate results of the run (``summary["gates"]``),
    of any suite: those naming this suite by name or id count. A gate on something that is
    not a listed metric (``error_rate``) adds nothing. The outputs that show a part of a
    suite's metrics (trends, the terminal summary) all pick them here, so they agree.
    """
    listed = [str(m) for m in suite.get("metrics") or ()]
    names = {suite.get("id"), suite.get("name")} - {None}
    every = [*gates, *(g for r in suite.get("retrievers") or () if isinstance(r, Mapping)
                       for g in r.get("gates") or ())]
    gated = {str(g.get("metric")) for g in every if isinstance(g, Mapping)
             and (g.get("suite") in names or g.get("suite_id") in names)}
    lead = set(listed[: max(first, 0)])
    return tuple(m for m in listed if m in gated or m in lead)
