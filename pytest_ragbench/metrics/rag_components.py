"""Answer and judged metrics as registry components.

Their values are produced by the suite's RAG pipeline (:mod:`pytest_ragbench.answers`), which
generates and judges the answer after retrieval; the component only names the metric, its
direction and its family so suites, gates and reports treat it like any other metric.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..datasets import Query
from .spec import CaseResult


@dataclass(frozen=True)
class RagMetric:
    """A metric whose value the RAG pipeline computes (``family = "rag"``)."""

    name: str
    direction: str = "higher"
    family: str = "rag"
    needs_qrels: bool = False

    def compute(self, case: Query, result: CaseResult) -> float | None:
        # Filled in from the pipeline's output by the runtime; nothing to compute from hits.
        return None


def exact_match() -> RagMetric:
    """SQuAD exact match against the reference answers (max over references)."""
    return RagMetric("exact_match")


def token_f1() -> RagMetric:
    """SQuAD token F1 against the reference answers (max over references)."""
    return RagMetric("token_f1")


def rouge_l() -> RagMetric:
    """ROUGE-L F-measure against the reference answers (max over references)."""
    return RagMetric("rouge_l")


def answer_contains() -> RagMetric:
    """1 when the answer contains a reference answer (normalised, whole words)."""
    return RagMetric("answer_contains")


def abstention_accuracy() -> RagMetric:
    """1 when an unanswerable question is abstained on or an answerable one is answered."""
    return RagMetric("abstention_accuracy")


def faithfulness() -> RagMetric:
    """RAGAS faithfulness: answer claims supported by the contexts / answer claims."""
    return RagMetric("faithfulness")


def answer_relevancy() -> RagMetric:
    """RAGAS answer relevancy: cosine of the question with questions generated from the answer."""
    return RagMetric("answer_relevancy")


def context_precision() -> RagMetric:
    """RAGAS context precision: average precision of the "useful" verdicts over the contexts."""
    return RagMetric("context_precision")


def context_recall() -> RagMetric:
    """RAGAS context recall: reference claims attributable to the contexts / reference claims."""
    return RagMetric("context_recall")


def answer_correctness() -> RagMetric:
    """Judged factual F1 against the reference (blended with similarity when embedded)."""
    return RagMetric("answer_correctness")
