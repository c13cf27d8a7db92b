"""Metric names resolved to what the plugin needs to know about them.

A suite lists metrics by name (``ndcg@10``, ``latency_ms``...). :func:`resolve_metric` turns a
name into a :class:`MetricSpec`: its canonical name, which family computes it, whether higher or
lower is better, and what a case needs for it (relevance labels, an answer, a reference, an LLM).
"""

from __future__ import annotations

from dataclasses import dataclass

OPERATIONAL_METRICS: dict[str, str] = {
    "latency_ms": "retrieval wall time per query in milliseconds",
}


@dataclass(frozen=True)
class MetricSpec:
    """What the plugin knows of one metric named in a suite."""

    name: str
    family: str  # "retrieval" | "operational"
    direction: str = "higher"  # "higher" or "lower" is better
    k: int | None = None
    kind: str = ""
    needs_qrels: bool = False

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"


def known_metric_forms() -> tuple[str, ...]:
    """Names and patterns accepted in a suite's ``metrics`` list, for error messages."""
    from .retrieval import KNOWN_METRIC_FORMS

    return (*KNOWN_METRIC_FORMS, *OPERATIONAL_METRICS)


def resolve_metric(name: str) -> MetricSpec:
    """Resolve a metric name; raises ValueError naming the problem."""
    from .retrieval import parse_metric

    key = name.strip()
    if key.lower() in OPERATIONAL_METRICS:
        return MetricSpec(name=key.lower(), family="operational", direction="lower",
                          kind=key.lower())
    m = parse_metric(key)
    return MetricSpec(name=m.name, family="retrieval", direction=m.direction, k=m.k,
                      kind=m.kind, needs_qrels=True)
