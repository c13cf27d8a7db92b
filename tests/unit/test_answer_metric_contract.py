"""The answer-metric contract (:mod:`pytest_ragbench.metrics.contract`) and custom criteria in
the judge, without a pytest run: a scripted judge LLM counts its requests."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_ragbench.llm.base import Completion, LLMError, Usage
from pytest_ragbench.metrics.contract import (
    AnswerSample,
    MetricError,
    MetricScore,
    score_answer,
)
from pytest_ragbench.metrics.judge import Criteria, Judge, JudgeInput
from pytest_ragbench.metrics.rag_components import (
    BUILTIN_ANSWER_METRICS,
    criteria,
)
from pytest_ragbench.metrics.spec import resolve_metric
from pytest_ragbench.registry import Registry

SAMPLE = AnswerSample(
    question="How fine should espresso be ground?",
    answer="Grind it fine, like table salt.",
    contexts=("Espresso needs a fine grind.", "Tea steeps for minutes."),
    references=("a fine grind", "  "),
)
HELPFUL = criteria("helpfulness", "Does the answer help a home barista?", scale=[1, 5],
                   examples=[{"answer": "Use beans.", "score": 2, "why": "too vague"}])
TONE = criteria("tone", "Is the answer polite?", scale=[0, 10], inputs=["answer"])


def judge_reply(criteria_scores: dict[str, Any] | None = None) -> Callable[[str], str]:
    """Replies with whatever the prompt asks for: claims, useful verdicts, questions and the
    criteria it names (each scored from ``criteria_scores``)."""

    def reply(prompt: str) -> str:
        contexts = len(re.findall(r"^\[\d+\] ", prompt, flags=re.MULTILINE))
        body: dict[str, Any] = {
            "answer_claims": [{"claim": "Fine grind.", "supported": 1, "ctx": [1],
                               "in_reference": 1},
                              {"claim": "Like salt.", "supported": 0, "in_reference": 0}],
            "reference_claims": [{"claim": "Fine.", "attributed": 1, "in_answer": 1}],
            "useful": [1] + [0] * (contexts - 1),
            "questions": ["How to grind?", "What grind?", "Espresso grind?"],
            "noncommittal": 0,
        }
        names = re.findall(r'^  "([^"]+)" \(an integer from', prompt, flags=re.MULTILINE)
        if names:
            body["criteria"] = {n: {"score": (criteria_scores or {}).get(n, 4), "why": "ok"}
                                for n in names}
        return json.dumps(body)

    return reply


class CountingLLM:
    """A judge LLM answering from a function of the prompt; counts requests."""

    def __init__(self, replies: Sequence[Callable[[str], str] | Exception]) -> None:
        self.replies = list(replies)
        self.prompts: list[str] = []

    async def chat(self, messages: Sequence[dict[str, str]], **params: Any) -> Completion:
        self.prompts.append(str(messages[1]["content"]) if len(messages) > 1 else "")
        reply = self.replies[0] if len(self.replies) == 1 else self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return Completion(reply(self.prompts[-1]), Usage(10, 5, 1), model="fake")


class CountingEmbedder:
    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return np.array([[1.0, float(len(t) % 3), 0.5] for t in texts], dtype=np.float32)


@dataclass(frozen=True)
class WordCount:
    """A third-party style metric: synchronous, needs only the answer."""

    name: str = "answer_words"
    direction: str = "lower"
    needs: frozenset[str] = frozenset({"answer"})

    def score(self, sample: AnswerSample, resources: Any) -> float:
        return float(len(sample.answer.split()))


@dataclass(frozen=True)
class CitesContext:
    """Async, needs contexts and references, returns evidence."""

    name: str = "cites_context"
    direction: str = "higher"
    needs: frozenset[str] = frozenset({"answer", "contexts", "references"})

    async def score(self, sample: AnswerSample, resources: Any) -> MetricScore:
        await asyncio.sleep(0)
        hits = [c for c in sample.contexts if "fine" in c]
        return MetricScore(len(hits) / len(sample.contexts), {"citing": hits})


@dataclass(frozen=True)
class OwnRubric:
    """A third-party metric that puts its own rubric into the item's judge request."""

    name: str = "conciseness"
    direction: str = "higher"
    needs: frozenset[str] = frozenset({"answer", "judge"})
    judge_part: Criteria = field(default_factory=lambda: Criteria(
        "conciseness", "Is the answer short?", scale=(1, 3)))

    def score(self, sample: AnswerSample, resources: Any) -> float:
        verdict = resources.verdict(self.judge_part)
        if verdict.error:
            raise MetricError(verdict.error)
        return verdict.score


def run(metrics: Sequence[Any], sample: AnswerSample = SAMPLE, **kw: Any) -> Any:
    pairs = [(m.name, m) for m in metrics]
    return asyncio.run(score_answer(pairs, sample, **kw))


def test_builtin_third_party_and_criteria_metrics_share_one_judge_request() -> None:
    llm = CountingLLM([judge_reply({"helpfulness": 5, "tone": 3, "conciseness": 2})])
    embedder = CountingEmbedder()
    judge = Judge(llm, embedder)
    metrics = [BUILTIN_ANSWER_METRICS[n]() for n in
               ("token_f1", "faithfulness", "answer_relevancy", "context_precision")]
    out = run([*metrics, HELPFUL, TONE, OwnRubric(), WordCount(), CitesContext()],
              judge=judge, embedder=embedder)
    assert len(llm.prompts) == 1 and embedder.calls == 1
    assert out.errors == {}
    # criteria normalised to 0-1: (5-1)/4, (3-0)/10, (2-1)/2
    assert out.metrics["helpfulness"] == 1.0
    assert out.metrics["tone"] == pytest.approx(0.3)
    assert out.metrics["conciseness"] == 0.5
    assert out.metrics["faithfulness"] == 0.5
    assert out.metrics["context_precision"] == 1.0
    # 2 shared tokens: precision 2/6 ("grind it fine like table salt"), recall 2/2
    assert out.metrics["token_f1"] == 0.5
    assert out.metrics["answer_words"] == 6.0
    assert out.metrics["cites_context"] == 0.5
    assert out.verdicts["helpfulness"] == {"score": 5, "why": "ok", "scale": [1, 5]}
    assert out.verdicts["cites_context"] == {"citing": ["Espresso needs a fine grind."]}
    # the records keep metrics in the order asked, whatever finished first
    assert list(out.metrics) == ["token_f1", "faithfulness", "answer_relevancy",
                                 "context_precision", "helpfulness", "tone", "conciseness",
                                 "answer_words", "cites_context"]
    assert list(out.verdicts)[-2:] == ["conciseness", "cites_context"]
    prompt = llm.prompts[0]
    assert '"helpfulness" (an integer from 1 to 5): Does the answer help a home barista?' \
        in prompt
    assert 'ANSWER "Use beans." -> {"score": 2, "why": "too vague"}' in prompt
    assert '"criteria"' in prompt and '"answer_claims"' in prompt


def test_needs_are_checked_before_score_is_called() -> None:
    no_refs = AnswerSample(question="q", answer="I don't know.", contexts=("c",))
    out = run([WordCount(), CitesContext(), BUILTIN_ANSWER_METRICS["exact_match"](),
               BUILTIN_ANSWER_METRICS["abstention_accuracy"](), HELPFUL], no_refs)
    # references missing: not computed, no error; abstention reads them without needing them
    assert out.metrics["cites_context"] is None and out.metrics["exact_match"] is None
    assert out.metrics["abstention_accuracy"] == 1.0
    assert out.errors == {"helpfulness": "helpfulness needs a judge; add a 'judge:' section "
                                         "to the suite"}

    @dataclass(frozen=True)
    class Embeds:
        name: str = "embeds"
        direction: str = "higher"
        needs: frozenset[str] = frozenset({"answer", "embedder"})

        def score(self, sample: AnswerSample, resources: Any) -> float:
            raise AssertionError("not called without an embedder")

    assert run([Embeds()]).errors == {
        "embeds": "embeds needs an embedder; add an 'embedder:' section"}


def test_a_failing_metric_fails_alone() -> None:
    @dataclass(frozen=True)
    class Broken:
        name: str = "broken"
        direction: str = "higher"
        needs: frozenset[str] = frozenset({"answer"})

        def score(self, sample: AnswerSample, resources: Any) -> Any:
            return "high"

    @dataclass(frozen=True)
    class Raises(Broken):
        name: str = "raises"

        def score(self, sample: AnswerSample, resources: Any) -> Any:
            raise ZeroDivisionError("division by zero")

    out = run([Broken(), Raises(), WordCount()])
    assert out.metrics == {"broken": None, "raises": None, "answer_words": 6.0}
    assert out.errors == {"broken": "broken returned str, expected a number or None",
                          "raises": "metric 'raises' raised ZeroDivisionError: division by zero"}


def test_criteria_reply_is_validated_and_retried_once() -> None:
    bad = judge_reply({"helpfulness": 7})  # off the 1-5 scale
    good = judge_reply({"helpfulness": 2})
    llm = CountingLLM([bad, good])
    out = run([HELPFUL], judge=Judge(llm))
    assert len(llm.prompts) == 2 and out.metrics["helpfulness"] == 0.25
    llm = CountingLLM([bad, bad])
    out = run([HELPFUL, BUILTIN_ANSWER_METRICS["faithfulness"]()], judge=Judge(llm))
    assert out.metrics == {"helpfulness": None, "faithfulness": None}
    assert "criteria.helpfulness.score: expected an integer from 1 to 5, got 7" \
        in out.errors["helpfulness"]
    assert out.errors["faithfulness"] == out.errors["helpfulness"]
    assert out.verdicts["helpfulness"]["reply"]  # the rejected reply is kept as evidence


def test_judge_failure_is_an_error_of_every_judged_metric_only() -> None:
    llm = CountingLLM([LLMError("HTTP 500")])
    out = run([HELPFUL, OwnRubric(), WordCount()], judge=Judge(llm))
    assert out.metrics["answer_words"] == 6.0
    assert set(out.errors) == {"helpfulness", "conciseness"}
    assert all("HTTP 500" in e for e in out.errors.values())


def test_criteria_with_the_reference_skip_items_without_one() -> None:
    graded = criteria("matches", "Does the answer agree with the reference?",
                      inputs=["reference"])
    llm = CountingLLM([judge_reply()])
    out = run([graded], AnswerSample(question="q", answer="a"), judge=Judge(llm))
    assert llm.prompts == [] and out.metrics == {"matches": None} and out.errors == {}
    assert out.verdicts["matches"] == {
        "skipped": "matches needs a reference answer and the item has none"}
    out = run([graded], judge=Judge(llm))
    assert "REFERENCE: a fine grind" in llm.prompts[0] and "QUESTION" not in llm.prompts[0]


def test_per_metric_mode_asks_each_criterion_on_its_own() -> None:
    llm = CountingLLM([judge_reply()])
    out = run([HELPFUL, TONE], judge=Judge(llm, mode="per_metric"))
    assert len(llm.prompts) == 2 and out.metrics == {"helpfulness": 0.75, "tone": 0.4}


def test_criterion_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="name of a built-in judged metric"):
        Criteria("faithfulness", "x")
    with pytest.raises(ValueError, match=r"scale must be two integers \[low, high\]"):
        Criteria("c", "x", scale=(3, 3))
    with pytest.raises(ValueError, match=r"examples\[0\].score must be an integer from 1 to 5"):
        criteria("c", "x", examples=[{"answer": "a", "score": 6}])
    with pytest.raises(ValueError, match="unknown input 'answr'"):
        Criteria("c", "x", inputs=("answr",))
    judge = Judge(CountingLLM([judge_reply()]))
    with pytest.raises(ValueError, match="two different criteria are named 'c'"):
        judge.messages(JudgeInput("q", "a", ()), [Criteria("c", "x"), Criteria("c", "y")])
    assert Criteria("c", "x", scale=(0, 4)).normalise(1) == 0.25
    assert math.isclose(Criteria("c", "x", scale=(-2, 2)).normalise(0), 0.5)


def test_metric_entries_resolve_to_answer_metric_specs(tmp_path: Path) -> None:
    registry = Registry(use_entry_points=False)
    registry.add("metric", "words", WordCount)
    spec = resolve_metric("words", registry=registry)
    assert (spec.family, spec.direction, spec.needs) == ("rag", "lower", frozenset({"answer"}))
    spec = resolve_metric("helpfulness", {"type": "criteria", "criteria": "Helpful?",
                                          "scale": [1, 3]}, registry=registry)
    assert spec.name == "helpfulness" and spec.kind == "criteria"
    assert spec.needs == frozenset({"judge", "question", "answer"})
    assert spec.component.judge_part == Criteria("helpfulness", "Helpful?", scale=(1, 3))
    with pytest.raises(ValueError, match=r"unknown metric type 'critera'.*did you mean"):
        resolve_metric("h", {"type": "critera", "criteria": "x"}, registry=registry)

    @dataclass(frozen=True)
    class BadNeeds(WordCount):
        needs: frozenset[str] = frozenset({"answer", "llm"})

    registry.add("metric", "bad_needs", BadNeeds)
    with pytest.raises(ValueError, match="unknown needs 'llm'; known: answer, contexts"):
        resolve_metric("bad_needs", registry=registry)
