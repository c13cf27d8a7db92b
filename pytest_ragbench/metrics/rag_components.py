"""The built-in answer metrics as components of the answer-metric contract
(:mod:`.contract`): the lexical ones, the RAGAS judged ones and custom criteria.

They follow the same contract as a third-party ``ragbench.metrics`` answer metric: ``needs``
says what they require, ``score(sample, resources)`` computes one item. The judged ones name
their ``judge_part`` so the item's one batched judge request covers them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..datasets import Query
from .answer import ANSWER_METRICS
from .contract import AnswerResources, AnswerSample, MetricError, MetricScore
from .judge import CRITERIA_INPUTS, Criteria, CriterionExample
from .spec import CaseResult

_JUDGED_NEEDS: dict[str, frozenset[str]] = {
    "faithfulness": frozenset({"answer", "contexts", "judge"}),
    "answer_relevancy": frozenset({"question", "answer", "judge", "embedder"}),
    "context_precision": frozenset({"question", "contexts", "references", "judge"}),
    "context_recall": frozenset({"contexts", "references", "judge"}),
    "answer_correctness": frozenset({"answer", "references", "judge"}),
}


class _AnswerComponent:
    """What the retrieval side of the plugin sees of an answer metric: nothing to compute
    from ranked hits (the answer path fills the value)."""

    family = "rag"
    needs_qrels = False

    def compute(self, case: Query, result: CaseResult) -> float | None:
        return None


@dataclass(frozen=True)
class LexicalMetric(_AnswerComponent):
    """A lexical answer metric of :mod:`.answer` (no model involved)."""

    name: str
    direction: str = "higher"
    needs: frozenset[str] = frozenset({"answer", "references"})

    def score(self, sample: AnswerSample, resources: AnswerResources) -> float:
        spec = ANSWER_METRICS[self.name]
        return spec.fn(sample.answer, list(sample.references), bool(sample.references))


@dataclass(frozen=True)
class JudgedMetric(_AnswerComponent):
    """A RAGAS judged metric (see :mod:`.judge`): its part of the item's judge request."""

    name: str
    direction: str = "higher"

    @property
    def judge_part(self) -> str:
        return self.name

    @property
    def needs(self) -> frozenset[str]:
        return _JUDGED_NEEDS[self.name]

    def score(self, sample: AnswerSample, resources: AnswerResources) -> MetricScore:
        verdict = resources.verdict(self.judge_part)
        if verdict.error is not None:
            raise MetricError(verdict.error, verdict.evidence)
        return MetricScore(verdict.score, verdict.evidence)


@dataclass(frozen=True)
class CriteriaMetric(_AnswerComponent):
    """A custom-criteria judged metric declared in the suite (see :class:`.judge.Criteria`);
    its verdict is asked in the item's one judge request."""

    criterion: Criteria
    direction: str = "higher"
    needs: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        parts = {"contexts": "contexts", "reference": "references", "question": "question",
                 "answer": "answer"}
        object.__setattr__(self, "needs", frozenset(
            {"judge", *(parts[i] for i in self.criterion.inputs)}))

    @property
    def name(self) -> str:
        return self.criterion.name

    @property
    def judge_part(self) -> Criteria:
        return self.criterion

    def score(self, sample: AnswerSample, resources: AnswerResources) -> MetricScore:
        verdict = resources.verdict(self.criterion)
        if verdict.error is not None:
            raise MetricError(verdict.error, verdict.evidence)
        return MetricScore(verdict.score, verdict.evidence)


def criteria(
    name: str,
    criteria: str,
    scale: Sequence[int] = (1, 5),
    examples: Sequence[Mapping[str, Any]] = (),
    inputs: Sequence[str] = ("question", "answer"),
    direction: Literal["higher", "lower"] = "higher",
) -> CriteriaMetric:
    """A custom criterion graded by the suite's judge (G-Eval / ``llm-rubric`` style).

    ``criteria`` is the rubric; ``scale`` ``[low, high]`` the integer range the judge grades
    on (the score is normalised to 0-1); ``examples`` scored examples
    ``{answer, score, question?, why?}``; ``inputs`` what the judge sees of the item (of
    question, answer, contexts, reference).
    """
    unknown_inputs = [i for i in inputs if i not in CRITERIA_INPUTS]
    if unknown_inputs:
        raise ValueError(f"{name}: unknown inputs {unknown_inputs}; known: "
                         f"{', '.join(CRITERIA_INPUTS)}")
    shots = []
    for i, example in enumerate(examples):
        data = dict(example)
        unknown = sorted(set(data) - {"answer", "score", "question", "why"})
        if unknown or "answer" not in data or "score" not in data:
            raise ValueError(f"{name}: examples[{i}] must be {{answer, score, question?, "
                             f"why?}}, got keys {sorted(data)}")
        shots.append(CriterionExample(answer=str(data["answer"]), score=data["score"],
                                      question=data.get("question"), reason=data.get("why")))
    return CriteriaMetric(Criteria(name=name, criteria=criteria, scale=tuple(scale),
                                   examples=tuple(shots), inputs=tuple(inputs)),
                          direction=direction)


def exact_match() -> LexicalMetric:
    """SQuAD exact match against the reference answers (max over references)."""
    return LexicalMetric("exact_match")


def token_f1() -> LexicalMetric:
    """SQuAD token F1 against the reference answers (max over references)."""
    return LexicalMetric("token_f1")


def rouge_l() -> LexicalMetric:
    """ROUGE-L F-measure against the reference answers (max over references)."""
    return LexicalMetric("rouge_l")


def answer_contains() -> LexicalMetric:
    """1 when the answer contains a reference answer (normalised, whole words)."""
    return LexicalMetric("answer_contains")


def abstention_accuracy() -> LexicalMetric:
    """1 when an unanswerable question is abstained on or an answerable one is answered."""
    # the references say whether the question is answerable; none means "unanswerable"
    return LexicalMetric("abstention_accuracy", needs=frozenset({"answer"}))


def faithfulness() -> JudgedMetric:
    """RAGAS faithfulness: answer claims supported by the contexts / answer claims."""
    return JudgedMetric("faithfulness")


def answer_relevancy() -> JudgedMetric:
    """RAGAS answer relevancy: cosine of the question with questions generated from the answer."""
    return JudgedMetric("answer_relevancy")


def context_precision() -> JudgedMetric:
    """RAGAS context precision: average precision of the "useful" verdicts over the contexts."""
    return JudgedMetric("context_precision")


def context_recall() -> JudgedMetric:
    """RAGAS context recall: reference claims attributable to the contexts / reference claims."""
    return JudgedMetric("context_recall")


def answer_correctness() -> JudgedMetric:
    """Judged factual F1 against the reference (blended with similarity when embedded)."""
    return JudgedMetric("answer_correctness")


BUILTIN_ANSWER_METRICS = {
    f.__name__: f for f in (exact_match, token_f1, rouge_l, answer_contains,
                            abstention_accuracy, faithfulness, answer_relevancy,
                            context_precision, context_recall, answer_correctness)
}
"""The built-in answer metrics by name: factories without parameters."""
