"""Answer metrics as a third party ships them (entry point group ``ragbench.metrics``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pytest_ragbench.metrics.contract import MetricError, MetricScore
from pytest_ragbench.metrics.judge import Criteria


@dataclass(frozen=True)
class AnswerWords:
    """Words in the answer, capped at ``cap`` (lower is better); needs nothing but it."""

    cap: int = 100
    name: str = "answer_words"
    direction: str = "lower"
    needs: frozenset = frozenset({"answer"})

    def score(self, sample, resources):
        return float(min(len(sample.answer.split()), self.cap))


@dataclass(frozen=True)
class GroundedRubric:
    """An async rubric graded in the item's one judge request (its ``judge_part``)."""

    scale: int = 4
    name: str = "grounded_rubric"
    direction: str = "higher"
    needs: frozenset = frozenset({"answer", "contexts", "judge"})
    judge_part: Criteria = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "judge_part", Criteria(
            "grounded_rubric", "Is every sentence of the answer backed by the contexts?",
            scale=(0, self.scale), inputs=("answer", "contexts")))

    async def score(self, sample, resources):
        verdict = resources.verdict(self.judge_part)
        if verdict.error:
            raise MetricError(verdict.error)
        return MetricScore(verdict.score, {**verdict.evidence, "contexts": len(sample.contexts)})
