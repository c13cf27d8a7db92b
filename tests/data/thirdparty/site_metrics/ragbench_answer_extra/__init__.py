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
    """A rubric graded 0-4 in the item's one judge request."""

    name: str = "grounded_rubric"
    direction: str = "higher"
    needs: frozenset = frozenset({"answer", "contexts", "judge"})
    judge_part: Criteria = field(default_factory=lambda: Criteria(
        "grounded_rubric", "Is every sentence of the answer backed by the contexts?",
        scale=(0, 4), inputs=("answer", "contexts")))

    async def score(self, sample, resources):
        verdict = resources.verdict(self.judge_part)
        if verdict.error:
            raise MetricError(verdict.error)
        return MetricScore(verdict.score, verdict.evidence)
