"""The answer-metric contract: what an answer metric needs, what it gets, and how an item is
scored.

An answer metric is any object with

``name``
    the metric's name in records, reports and gates;
``direction``
    ``"higher"`` or ``"lower"`` (is better);
``needs``
    a ``frozenset`` of what it cannot do without, from :data:`NEEDS`: ``"question"``,
    ``"answer"``, ``"contexts"``, ``"references"``, ``"judge"``, ``"embedder"``;
``score(sample, resources)``
    its value for one item: a float, ``None`` (not computable, counted, not averaged) or a
    :class:`MetricScore` (a value plus JSON-safe evidence for the report). It may be a
    coroutine function. Raising :class:`MetricError` (or anything else) records an error for
    this metric only: its value is ``None`` and the item reports the reason.

``sample`` is an :class:`AnswerSample` (question, answer, contexts, references, the dataset's
query when there is one); ``resources`` an :class:`AnswerResources` (the suite's judge LLM and
embedder, already cached, metered and under the run's budget). What ``needs`` declares is
checked before ``score`` is called: a metric that needs references is not called for an item
without one (its value is ``None``), and one that needs a judge or an embedder the suite does
not configure gets an error naming the missing section. A metric may read what it does not
require (``abstention_accuracy`` reads the references to know whether the question is
answerable).

Judged metrics share ONE judge request per item. A metric with a ``judge_part`` attribute (the
name of a built-in judged metric such as ``"faithfulness"``, or a
:class:`~pytest_ragbench.metrics.judge.Criteria`) contributes that part to the item's batched
judge request; :func:`score_answer` sends the request once, before any metric is scored, and
the metric reads its verdict with :meth:`AnswerResources.verdict`. (With the judge's
``items_per_call`` > 1 that request is shared with other items judged at the same time; the
item's verdicts are still validated on their own.) The built-in judged metrics
and the suite's custom criteria work that way; a third-party metric can too. A metric that
instead calls ``resources.judge.chat(...)`` itself pays for its own requests.

Nothing here imports pytest.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..datasets import Query
from ..errors import RagbenchError, exception_text
from ..llm.base import LLM, Embedder, LLMError
from .judge import Criteria, Judge, JudgeInput, JudgeResult

__all__ = [
    "NEEDS",
    "AnswerMetric",
    "AnswerResources",
    "AnswerSample",
    "AnswerScores",
    "MetricError",
    "MetricScore",
    "Verdict",
    "is_answer_metric",
    "score_answer",
]

NEEDS: frozenset[str] = frozenset(
    {"question", "answer", "contexts", "references", "judge", "embedder"})
"""What an answer metric may declare in ``needs``."""


@dataclass(frozen=True)
class AnswerSample:
    """One answer to score: the question, the answer, the contexts it was based on (texts,
    best first), the reference answers (non-blank) and the dataset's query (id, metadata)
    when the item has one."""

    question: str
    answer: str
    contexts: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    query: Query | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "contexts", tuple(str(c) for c in self.contexts))
        object.__setattr__(self, "references",
                           tuple(str(r) for r in self.references if str(r).strip()))

    @property
    def reference(self) -> str | None:
        """The canonical reference (the first), or None."""
        return self.references[0] if self.references else None


@dataclass(frozen=True)
class MetricScore:
    """A metric's value with JSON-safe ``evidence`` (claims, verdicts, reasons) that the
    record keeps under ``judge`` for the reports."""

    value: float | None
    evidence: Mapping[str, Any] | None = None


class MetricError(Exception):
    """A metric could not be computed for this item; the message is the reason shown."""

    def __init__(self, message: str, evidence: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evidence = evidence


@dataclass(frozen=True)
class Verdict:
    """A judged part's outcome for one item: the score (NaN when not computable), the
    evidence, and the error when the judge or the embedder failed."""

    score: float
    evidence: Mapping[str, Any] | None
    error: str | None = None


@runtime_checkable
class AnswerMetric(Protocol):
    """The answer-metric contract; see the module documentation."""

    name: str
    direction: str
    needs: frozenset[str]

    def score(self, sample: AnswerSample, resources: AnswerResources) -> Any: ...


def is_answer_metric(obj: Any) -> bool:
    """Whether ``obj`` follows the answer-metric contract (``needs`` and ``score``)."""
    return callable(getattr(obj, "score", None)) and getattr(obj, "needs", None) is not None


def check_needs(name: str, needs: Any) -> frozenset[str]:
    """``needs`` as a frozenset of known names; ValueError naming the unknown ones."""
    if isinstance(needs, str) or not isinstance(needs, Sequence | set | frozenset):
        raise ValueError(f"metric {name!r}: needs must be a set of names from "
                         f"{', '.join(sorted(NEEDS))}, got {needs!r}")
    unknown = sorted(str(n) for n in needs if n not in NEEDS)
    if unknown:
        raise ValueError(f"metric {name!r}: unknown needs {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(NEEDS))}")
    return frozenset(needs)


class AnswerResources:
    """What an answer metric may use besides the sample: ``judge`` (the suite's judge LLM,
    ``async chat(messages, **params)``), ``embedder`` (``async embed(texts)``), and the
    verdicts of the item's batched judge request (:meth:`verdict`)."""

    def __init__(self, judge: LLM | None = None, embedder: Embedder | None = None,
                 judgement: JudgeResult | None = None, judge_error: str | None = None) -> None:
        self.judge = judge
        self.embedder = embedder
        self._judgement = judgement
        self._judge_error = judge_error

    def verdict(self, part: str | Criteria) -> Verdict:
        """The outcome of judged part ``part`` (a built-in judged metric's name or a
        :class:`Criteria`) in this item's judge request."""
        key = part.name if isinstance(part, Criteria) else part
        if self._judge_error is not None:
            return Verdict(math.nan, None, self._judge_error)
        result = self._judgement
        if result is None or key not in result.scores:
            return Verdict(math.nan, None,
                           f"{key} was not part of this item's judge request")
        return Verdict(result.scores[key], result.verdicts.get(key), result.errors.get(key))


@dataclass(frozen=True)
class AnswerScores:
    """The outcome of :func:`score_answer`: a value per metric (None when not computable),
    evidence per metric, and an error per metric that failed."""

    metrics: dict[str, float | None]
    verdicts: dict[str, Any]
    errors: dict[str, str]


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _number(name: str, value: Any) -> tuple[float | None, Mapping[str, Any] | None]:
    evidence = None
    if isinstance(value, MetricScore):
        value, evidence = value.value, value.evidence
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        try:
            value = float(value)  # numpy scalars
        except (TypeError, ValueError):
            raise MetricError(f"{name} returned {type(value).__name__}, expected a number or "
                              "None") from None
    return _finite(value), evidence


async def score_answer(
    metrics: Sequence[tuple[str, Any]],
    sample: AnswerSample,
    *,
    judge: Judge | None = None,
    embedder: Embedder | None = None,
    values: dict[str, float | None] | None = None,
) -> AnswerScores:
    """Score ``sample`` with ``metrics`` (``(record name, metric)`` pairs, in record order).

    The judged parts of all metrics go to the judge in one :meth:`Judge.evaluate` call (one
    chat request in batched mode, at most one embedding request) while the metrics without a
    judged part are scored; then the judged ones read their verdicts. Coroutines run
    concurrently. ``values``, when given, is filled as each value is known (a caller that
    is cancelled keeps what was computed). Failures are data: see :class:`AnswerScores`.
    """
    values = {} if values is None else values
    values.update({name: None for name, _ in metrics})
    verdicts: dict[str, Any] = {}
    errors: dict[str, str] = {}
    ready: list[tuple[str, Any]] = []
    parts: list[str | Criteria] = []
    for name, metric in metrics:
        needs = frozenset(getattr(metric, "needs", ()))
        part = getattr(metric, "judge_part", None)
        if ("judge" in needs or part is not None) and judge is None:
            errors[name] = f"{name} needs a judge; add a 'judge:' section to the suite"
            continue
        if part is None:
            # judged parts are skipped by the judge itself, which records why
            if "embedder" in needs and embedder is None:
                errors[name] = f"{name} needs an embedder; add an 'embedder:' section"
                continue
            if "references" in needs and not sample.references:
                continue
        elif part not in parts:
            parts.append(part)
        ready.append((name, metric))

    resources = AnswerResources(judge.llm if judge is not None else None, embedder)

    async def judging() -> None:
        assert judge is not None
        item = JudgeInput(question=sample.question, answer=sample.answer,
                          contexts=sample.contexts, reference=sample.reference)
        try:
            resources._judgement = await judge.evaluate(item, parts)
        except (LLMError, RagbenchError) as exc:  # e.g. the cache file became unwritable
            resources._judge_error = str(exc) or type(exc).__name__

    async def one(name: str, metric: Any) -> None:
        try:
            value = metric.score(sample, resources)
            if inspect.isawaitable(value):
                value = await value
            values[name], evidence = _number(name, value)
        except MetricError as exc:
            errors[name] = str(exc)
            evidence = exc.evidence
        except Exception as exc:
            errors[name] = f"metric {name!r} raised {exception_text(exc)}"
            evidence = None
        part = getattr(metric, "judge_part", None)
        if evidence is None and part is not None:
            # the judge's evidence for a metric that returned a bare number
            evidence = resources.verdict(part).evidence
        if evidence is not None:
            verdicts[name] = dict(evidence)

    plain = [(n, m) for n, m in ready if getattr(m, "judge_part", None) is None]
    judged = [(n, m) for n, m in ready if getattr(m, "judge_part", None) is not None]
    await asyncio.gather(*([judging()] if parts else []),
                         *(one(name, metric) for name, metric in plain))
    await asyncio.gather(*(one(name, metric) for name, metric in judged))
    # record order, whatever order the coroutines finished in
    order = {name: i for i, (name, _) in enumerate(metrics)}
    return AnswerScores(
        metrics=values,
        verdicts=dict(sorted(verdicts.items(), key=lambda kv: order[kv[0]])),
        errors=dict(sorted(errors.items(), key=lambda kv: order[kv[0]])),
    )
