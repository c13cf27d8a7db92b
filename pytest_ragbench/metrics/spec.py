"""Metrics as components: the metric contract, and metric names resolved through the registry.

A suite lists metrics by name (``ndcg@10``, ``latency_ms``, ``temporal_ndcg@10``) or as a
mapping with parameters (``{name: temporal_ndcg@10, lambda: 0.5, T: 3d}``). A mapping with a
``type`` builds that registered metric under the mapping's ``name``
(``{name: helpfulness, type: criteria, criteria: "...", scale: [1, 5]}``).
:func:`resolve_metric` turns an entry into a :class:`MetricSpec`: the canonical name records
and gates use, whether higher or lower is better, and the built metric object.

Resolution, against the registry's ``metric`` components (built-ins, ``ragbench.metrics`` entry
points, conftest registrations alike):

1. the exact name (``latency_ms``);
2. ``base@K`` where ``base`` is a registered name: the factory is called with ``k=K``;
3. any spelling :func:`~pytest_ragbench.metrics.retrieval.parse_metric` accepts
   (``nDCG@10``, ``ndcg_cut_10``, ``P.5``, ``Rprec``): the registry entry of its kind.

The metric contract (:class:`Metric`): an object with ``name`` (canonical, including ``@K``),
``direction`` (``"higher"`` or ``"lower"``) and ``compute(case, result) -> float | None`` where
``case`` is the :class:`~pytest_ragbench.datasets.Query` and ``result`` a :class:`CaseResult`.
Optional attributes: ``needs_qrels`` (True: not computed, None, for queries without labels) and
``family`` (a label for reports). ``None`` or NaN means "could not be computed" and is counted,
not averaged. Factories should be cheap: metric objects are built when a suite is loaded, in
every process.

Answer metrics follow their own contract (:mod:`.contract`): ``needs`` and
``score(sample, resources)`` instead of ``compute``; their family is ``"rag"`` and the answer
path computes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..datasets import Document, Query
from ..errors import ComponentError, ParamError, did_you_mean
from .retrieval import RetrievalMetric, parse_metric

if TYPE_CHECKING:
    from ..registry import BuildContext, Registry

OPERATIONAL_METRICS: dict[str, str] = {
    "latency_ms": "retrieval wall time per query in milliseconds",
}

DIRECTIONS = ("higher", "lower")


@dataclass(frozen=True)
class CaseResult:
    """What a retriever produced for one case, as metrics see it.

    ``ranked`` holds the retrieved document ids in evaluation order (trec_eval's: score
    descending, ties by id descending); ``scores`` their scores; ``documents`` the whole corpus
    by id (for metadata such as timestamps); ``run_start`` the run's start in epoch seconds.
    ``answer`` and ``contexts`` are for answer metrics (None / empty for retrieval-only runs).
    """

    ranked: tuple[str, ...]
    scores: Mapping[str, float] = field(default_factory=dict, compare=False, hash=False)
    k: int = 10
    latency_ms: float | None = None
    documents: Mapping[str, Document] = field(default_factory=dict, compare=False, hash=False,
                                              repr=False)
    run_start: float | None = None
    answer: str | None = None
    contexts: tuple[str, ...] = ()


@runtime_checkable
class Metric(Protocol):
    """The metric contract; see the module documentation."""

    name: str
    direction: str

    def compute(self, case: Query, result: CaseResult) -> float | None: ...


@dataclass(frozen=True)
class MetricSpec:
    """What the plugin knows of one metric named in a suite."""

    name: str
    family: str  # "retrieval" | "operational" | whatever a component says ("custom" if not)
    direction: str = "higher"  # "higher" or "lower" is better
    k: int | None = None
    kind: str = ""  # the registry name the metric was built from ("ndcg", "temporal_ndcg")
    needs_qrels: bool = False
    params: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # what an answer metric needs (see .contract); None for metrics of hits
    needs: frozenset[str] | None = None
    component: Any = field(default=None, compare=False, hash=False, repr=False)

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    def compute(self, case: Query, result: CaseResult) -> float | None:
        """The metric's value for one case; None when it cannot be computed."""
        if self.needs is not None:
            return None  # an answer metric: the answer path scores it
        if self.needs_qrels and not case.judged:
            return None
        if self.component is None:
            raise ComponentError(f"metric {self.name!r} has no component to compute it")
        value = self.component.compute(case, result)
        if value is None:
            return None
        value = float(value)
        return value if math.isfinite(value) else None


# -- built-in metric components ----------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalMetricComponent:
    """A trec_eval-compatible retrieval metric (see :mod:`.retrieval`) as a component."""

    metric: RetrievalMetric
    family: str = "retrieval"
    needs_qrels: bool = True

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def direction(self) -> str:
        return self.metric.direction

    def compute(self, case: Query, result: CaseResult) -> float:
        return self.metric.compute(result.ranked, case.relevant)


def _retrieval(kind: str, k: int | None) -> RetrievalMetricComponent:
    return RetrievalMetricComponent(RetrievalMetric(kind if k is None else f"{kind}@{k}", kind, k))


def ndcg(k: int | None = None) -> RetrievalMetricComponent:
    """nDCG, trec_eval ``ndcg_cut.k`` (``ndcg`` without a cutoff)."""
    return _retrieval("ndcg", k)


def recall(k: int) -> RetrievalMetricComponent:
    """Recall at ``k``, trec_eval ``recall.k``."""
    return _retrieval("recall", k)


def precision(k: int) -> RetrievalMetricComponent:
    """Precision at ``k``, trec_eval ``P.k``."""
    return _retrieval("precision", k)


def mrr(k: int | None = None) -> RetrievalMetricComponent:
    """Reciprocal rank of the first relevant document, trec_eval ``recip_rank``."""
    return _retrieval("mrr", k)


def map_metric(k: int | None = None) -> RetrievalMetricComponent:
    """Average precision, trec_eval ``map`` / ``map_cut.k``."""
    return _retrieval("map", k)


def hit(k: int) -> RetrievalMetricComponent:
    """1 when a relevant document is in the top ``k``, trec_eval ``success.k``."""
    return _retrieval("hit", k)


def r_precision() -> RetrievalMetricComponent:
    """Precision at R (the number of relevant documents), trec_eval ``Rprec``."""
    return _retrieval("r_precision", None)


@dataclass(frozen=True)
class LatencyMetric:
    """Retrieval wall time of the case in milliseconds (lower is better)."""

    name: str = "latency_ms"
    direction: str = "lower"
    family: str = "operational"
    needs_qrels: bool = False

    def compute(self, case: Query, result: CaseResult) -> float | None:
        return result.latency_ms


def latency_ms() -> LatencyMetric:
    """Retrieval wall time per query in milliseconds (batched retrieval: batch time / n)."""
    return LatencyMetric()


# -- resolution --------------------------------------------------------------------------------


def known_metric_forms() -> tuple[str, ...]:
    """Names and patterns accepted in a suite's ``metrics`` list, for error messages."""
    from .retrieval import KNOWN_METRIC_FORMS

    return (*KNOWN_METRIC_FORMS, *OPERATIONAL_METRICS)


def _default_registry() -> Registry:
    from ..registry import Registry

    return Registry()


def _cutoff(key: str, text: str) -> int:
    text = text.strip()
    try:
        k = int(text)
    except ValueError:
        raise ValueError(f"{key!r}: k must be a positive integer, got {text!r}") from None
    if k <= 0:
        raise ValueError(f"{key!r}: k must be a positive integer, got {k}")
    return k


def _lookup(key: str, registry: Registry) -> tuple[str, int | None]:
    """(registry name, cutoff) for a metric name as written in a suite."""
    infos = registry.infos("metric")
    for candidate in (key, key.lower()):
        if candidate in infos:
            return candidate, None
    if "@" in key:
        base, _, k_text = key.rpartition("@")
        if base in infos and base not in OPERATIONAL_METRICS:
            return base, _cutoff(key, k_text)
    try:
        m = parse_metric(key)
    except ValueError as exc:
        msg = str(exc)
        others = [n for n in infos if n not in _RETRIEVAL_KINDS]
        base = key.partition("@")[0]
        extra = "" if "did you mean" in msg else did_you_mean(base, others)
        raise ValueError(f"{msg}{extra}; other metrics: {', '.join(others)} "
                         "(append @K where the metric takes a cutoff)") from None
    if m.kind not in infos:  # the built-in was overridden away: cannot happen, but be clear
        raise ValueError(f"metric kind {m.kind!r} is not registered")
    return m.kind, m.k


_RETRIEVAL_KINDS = frozenset({"ndcg", "recall", "precision", "mrr", "map", "hit", "r_precision"})


def resolve_metric(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    registry: Registry | None = None,
    context: BuildContext | None = None,
) -> MetricSpec:
    """Resolve a metric entry of a suite and build its component.

    ``params`` are the other keys of a mapping entry; the key ``as`` renames the metric (so one
    metric can be listed twice with different parameters). Raises ValueError naming the problem
    (unknown name with a did-you-mean, bad cutoff, unknown parameter with the metric's own
    parameter list).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"expected a metric name, got {name!r}")
    key = name.strip()
    reg = registry if registry is not None else _default_registry()
    kwargs = dict(params or {})
    label = kwargs.pop("as", None)
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ValueError(f"{key}: 'as' must be a non-empty string, got {label!r}")
    type_name = kwargs.pop("type", None)
    if type_name is not None:
        return _resolve_typed(key, type_name, kwargs, reg, context, params)
    base, k = _lookup(key, reg)
    if k is not None:
        if "k" in kwargs:
            raise ValueError(f"{key}: the cutoff is given twice (in the name and as k)")
        try:
            accepted = _accepted(reg, base)
        except ComponentError as exc:
            raise ValueError(str(exc)) from None
        if accepted is not None and "k" not in accepted:
            raise ValueError(f"{key}: metric {base!r} takes no cutoff")
        kwargs["k"] = k
    try:
        obj = reg.build("metric", base, kwargs, context)
    except ComponentError as exc:
        raise ParamError.of(exc) from None
    return _spec(obj, base, k, label, params)


def _resolve_typed(key: str, type_name: Any, kwargs: dict[str, Any], reg: Registry,
                   context: BuildContext | None, params: Mapping[str, Any] | None) -> MetricSpec:
    """``{name: <label>, type: <registered metric>, ...}``: the factory gets the label as
    its ``name`` when it takes one."""
    if not isinstance(type_name, str) or not type_name.strip():
        raise ValueError(f"{key}: 'type' must be a registered metric name, got {type_name!r}")
    base = type_name.strip()
    infos = reg.infos("metric")
    if base not in infos and ":" not in base:
        raise ValueError(f"{key}: unknown metric type {base!r}{did_you_mean(base, list(infos))}"
                         f"; known: {', '.join(infos)}")
    try:
        accepted = _accepted(reg, base)
    except ComponentError as exc:
        raise ValueError(str(exc)) from None
    if accepted is None or "name" in accepted:
        kwargs = {"name": key, **kwargs}
    try:
        obj = reg.build("metric", base, kwargs, context)
    except ComponentError as exc:
        raise ParamError.of(exc, f"{key}: ") from None
    return _spec(obj, base, None, key, params)


def _spec(obj: Any, base: str, k: int | None, label: str | None,
          params: Mapping[str, Any] | None) -> MetricSpec:
    from .contract import check_needs, is_answer_metric

    metric_name = getattr(obj, "name", None)
    direction = getattr(obj, "direction", None)
    if not isinstance(metric_name, str) or not metric_name:
        raise ValueError(f"metric {base!r} built an object without a string 'name'")
    if direction not in DIRECTIONS:
        raise ValueError(f"metric {base!r}: direction must be 'higher' or 'lower', "
                         f"got {direction!r}")
    answer = is_answer_metric(obj)
    if answer:
        try:
            needs: frozenset[str] | None = check_needs(base, obj.needs)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    elif callable(getattr(obj, "compute", None)):
        needs = None
    else:
        raise ValueError(f"metric {base!r} built an object without compute(case, result) "
                         "(a metric of hits) or needs and score(sample, resources) (an answer "
                         "metric)")
    return MetricSpec(
        name=label.strip() if label else metric_name,
        # the answer path computes every answer metric, whatever family it calls itself
        family="rag" if answer else str(getattr(obj, "family", "custom")),
        direction=direction,
        k=k if k is not None else getattr(obj, "k", None),
        kind=base,
        needs_qrels=False if answer else bool(getattr(obj, "needs_qrels", False)),
        params=MappingProxyType(dict(params or {})),
        component=obj,
        needs=needs,
    )


def _accepted(registry: Registry, base: str) -> list[str] | None:
    from ..registry import factory_params

    return factory_params(registry.resolve("metric", base).load())
