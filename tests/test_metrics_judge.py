"""Judged metrics with scripted fake LLMs and embedders: scores, request counts, failures."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_ragbench.llm.base import LLM, Completion, Embedder, LLMError, Usage
from pytest_ragbench.metrics.judge import (
    JUDGED_METRICS,
    TEMPLATE_VERSION,
    Judge,
    JudgeInput,
    JudgeResult,
    f_beta,
)

RAGAS_FOUR = ("faithfulness", "answer_relevancy", "context_precision", "context_recall")


def _tokens(text: str) -> int:
    # A rough stand-in for a tokenizer (about 4 characters per token for English).
    return math.ceil(len(text) / 4)


Reply = str | Exception | Callable[[Sequence[dict[str, str]]], str]


class ScriptedLLM:
    """Returns the scripted replies in order; a callable reply is given the messages."""

    def __init__(self, replies: Sequence[Reply]) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[list[dict[str, str]], dict[str, Any]]] = []

    async def chat(self, messages: Sequence[dict[str, str]], **params: Any) -> Completion:
        self.calls.append(([dict(m) for m in messages], params))
        if not self.replies:
            raise AssertionError("the judge made more chat requests than scripted")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        text = reply(messages) if callable(reply) else reply
        prompt = sum(_tokens(m["content"]) + 4 for m in messages)
        return Completion(text, Usage(prompt, _tokens(text), 1), model="fake")


class OracleLLM(ScriptedLLM):
    """Answers every request from one full reply, keeping only the keys the prompt asks for."""

    def __init__(self, full: dict[str, Any]) -> None:
        super().__init__([])
        self.full = full

    async def chat(self, messages: Sequence[dict[str, str]], **params: Any) -> Completion:
        self.replies.append(lambda msgs: json.dumps(self.answer(msgs)))
        return await super().chat(messages, **params)

    def answer(self, messages: Sequence[dict[str, str]]) -> dict[str, Any]:
        asked = asked_keys(messages)
        return {k: v for k, v in self.full.items() if k in asked}


def asked_keys(messages: Sequence[dict[str, str]]) -> list[str]:
    last_line = messages[1]["content"].strip().splitlines()[-1]
    return re.findall(r'"(\w+)": \.\.\.', last_line)


class FakeEmbedder:
    """Embeds texts by looking them up in a table of chosen vectors."""

    def __init__(self, vectors: dict[str, Sequence[float]], fail: Exception | None = None) -> None:
        self.vectors = vectors
        self.fail = fail
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.fail is not None:
            raise self.fail
        return np.array([self.vectors[t] for t in texts], dtype=np.float32)


ITEM = JudgeInput(
    question="Who wrote Hamlet and when?",
    answer="Shakespeare wrote Hamlet around 1600. He was French.",
    contexts=(
        "Hamlet is a tragedy written by William Shakespeare.",
        "Paris is the capital of France.",
        "Hamlet was written between 1599 and 1601.",
    ),
    reference="William Shakespeare wrote Hamlet around 1600; it is set in Denmark.",
)

GENERATED = ["Who wrote Hamlet?", "When was Hamlet written?", "What nationality was Shakespeare?"]

FULL_REPLY: dict[str, Any] = {
    "answer_claims": [
        {"claim": "Shakespeare wrote Hamlet.", "supported": 1, "ctx": [1], "in_reference": 1},
        {"claim": "Hamlet was written around 1600.", "supported": 1, "ctx": [3], "in_reference": 1},
        {
            "claim": "Shakespeare was French.",
            "supported": 0,
            "ctx": [],
            "in_reference": 0,
            "why": "no context gives his nationality",
        },
    ],
    "reference_claims": [
        {"claim": "William Shakespeare wrote Hamlet.", "attributed": 1, "ctx": [1], "in_answer": 1},
        {"claim": "Hamlet was written around 1600.", "attributed": 1, "ctx": [3], "in_answer": 1},
        {"claim": "Hamlet is set in Denmark.", "attributed": 0, "in_answer": 0, "why": "absent"},
    ],
    "useful": [1, 0, 1],
    "questions": GENERATED,
    "noncommittal": 0,
}

VECTORS: dict[str, Sequence[float]] = {
    ITEM.question: [1.0, 0.0, 0.0],
    GENERATED[0]: [2.0, 0.0, 0.0],  # cosine 1
    GENERATED[1]: [0.0, 1.0, 0.0],  # cosine 0
    GENERATED[2]: [1.0, 1.0, 0.0],  # cosine 1/sqrt(2)
    ITEM.answer: [3.0, 4.0, 0.0],
    ITEM.reference or "": [3.0, 0.0, 0.0],  # cos(answer, reference) = 9 / 15 = 0.6
}

FAITHFULNESS = 2 / 3
RECALL = 2 / 3
PRECISION = (1 / 1 + 2 / 3) / 2  # verdicts [1, 0, 1]
RELEVANCY = (1 + 0 + 1 / math.sqrt(2)) / 3
FACTUAL_F1 = 2 / (2 + 0.5 * (1 + 1))  # TP 2, FP 1, FN 1
CORRECTNESS_BLEND = 0.75 * FACTUAL_F1 + 0.25 * 0.6


def reply(**changes: Any) -> str:
    return json.dumps({**FULL_REPLY, **changes})


def assert_json_safe(result: JudgeResult) -> None:
    json.dumps(result.verdicts, allow_nan=False)


@pytest.mark.asyncio
async def test_fakes_behave_as_the_protocols_say() -> None:
    # What the judge relies on: chat() returns a Completion with its usage, in script order;
    # embed() returns a float32 (n, d) array in the order of the texts.
    llm: LLM = ScriptedLLM(["first", lambda msgs: msgs[-1]["content"].upper()])
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi there"}]
    one = await llm.chat(messages, temperature=0)
    two = await llm.chat(messages)
    assert isinstance(one, Completion) and isinstance(two, Completion)
    assert (one.text, two.text) == ("first", "HI THERE")
    assert one.usage.requests == 1 and one.usage.prompt_tokens > 0
    assert one.usage.completion_tokens == _tokens("first")
    embedder: Embedder = FakeEmbedder(VECTORS)
    texts = [GENERATED[1], ITEM.question]
    vectors = await embedder.embed(texts)
    assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
    assert vectors.shape == (2, 3)
    np.testing.assert_array_equal(vectors, np.array([VECTORS[t] for t in texts], np.float32))


@pytest.mark.asyncio
async def test_batched_all_metrics_one_chat_one_embed() -> None:
    llm, embedder = OracleLLM(FULL_REPLY), FakeEmbedder(VECTORS)
    result = await Judge(llm, embedder).evaluate(ITEM, JUDGED_METRICS)

    assert result.errors == {}
    assert list(result.scores) == list(JUDGED_METRICS)
    assert result.scores["faithfulness"] == pytest.approx(FAITHFULNESS)
    assert result.scores["context_recall"] == pytest.approx(RECALL)
    assert result.scores["context_precision"] == pytest.approx(PRECISION)
    assert result.scores["answer_relevancy"] == pytest.approx(RELEVANCY)
    assert result.scores["answer_correctness"] == pytest.approx(CORRECTNESS_BLEND)
    assert len(llm.calls) == 1
    assert result.usage.requests == 1
    assert asked_keys(llm.calls[0][0]) == [
        "answer_claims",
        "reference_claims",
        "useful",
        "questions",
        "noncommittal",
    ]
    assert embedder.calls == [[ITEM.question, *GENERATED, ITEM.answer, ITEM.reference]]
    assert result.embed_requests == 1
    assert_json_safe(result)
    correctness = result.verdicts["answer_correctness"]
    assert (correctness["tp"], correctness["fp"], correctness["fn"]) == (2, 1, 1)
    assert correctness["similarity"] == pytest.approx(0.6)
    assert "0.75" in correctness["formula"]
    faithfulness = result.verdicts["faithfulness"]
    assert faithfulness["claims"][2] == {
        "claim": "Shakespeare was French.",
        "supported": 0,
        "ctx": [],
        "why": "no context gives his nationality",
    }
    assert result.verdicts["answer_relevancy"]["similarities"] == pytest.approx(
        [1.0, 0.0, 1 / math.sqrt(2)]
    )
    assert result.verdicts["context_precision"]["precision_at_k"] == pytest.approx([1, 0.5, 2 / 3])


@pytest.mark.asyncio
async def test_per_metric_mode_one_request_per_metric() -> None:
    llm, embedder = OracleLLM(FULL_REPLY), FakeEmbedder(VECTORS)
    result = await Judge(llm, embedder, mode="per_metric").evaluate(ITEM, JUDGED_METRICS)

    assert result.errors == {}
    assert len(llm.calls) == len(JUDGED_METRICS)
    assert result.usage.requests == len(JUDGED_METRICS)
    asked = sorted(tuple(asked_keys(messages)) for messages, _ in llm.calls)
    assert asked == sorted(
        [
            ("answer_claims",),  # faithfulness
            ("questions", "noncommittal"),
            ("useful",),
            ("reference_claims",),  # context recall
            ("answer_claims", "reference_claims"),  # correctness
        ]
    )
    assert len(embedder.calls) == 1
    assert result.embed_requests == 1
    assert result.scores["faithfulness"] == pytest.approx(FAITHFULNESS)
    assert result.scores["context_precision"] == pytest.approx(PRECISION)
    assert result.scores["context_recall"] == pytest.approx(RECALL)
    assert result.scores["answer_relevancy"] == pytest.approx(RELEVANCY)
    assert result.scores["answer_correctness"] == pytest.approx(CORRECTNESS_BLEND)


@pytest.mark.asyncio
async def test_per_metric_prompts_leave_out_unneeded_parts() -> None:
    llm = OracleLLM(FULL_REPLY)
    await Judge(llm, mode="per_metric").evaluate(ITEM, ["context_recall", "faithfulness"])
    prompts = {asked_keys(m)[0]: m[1]["content"] for m, _ in llm.calls}
    assert "ANSWER:" not in prompts["reference_claims"]
    assert "REFERENCE:" not in prompts["answer_claims"]
    assert ITEM.contexts[2] in prompts["answer_claims"]


@pytest.mark.asyncio
async def test_relevancy_only_prompt_hides_the_real_question() -> None:
    llm = OracleLLM(FULL_REPLY)
    await Judge(llm, FakeEmbedder(VECTORS)).evaluate(ITEM, ["answer_relevancy"])
    prompt = llm.calls[0][0][1]["content"]
    assert ITEM.question not in prompt
    assert ITEM.answer in prompt
    assert ITEM.contexts[0] not in prompt


@pytest.mark.parametrize(
    ("useful", "expected"),
    [
        ([1, 0, 1], (1 + 2 / 3) / 2),
        ([0, 0, 0], 0.0),
        ([0, 1, 0], 1 / 2),
        ([1, 1, 0], 1.0),
        ([0, 0, 1], 1 / 3),
    ],
)
@pytest.mark.asyncio
async def test_context_precision_average_precision(useful: list[int], expected: float) -> None:
    llm = ScriptedLLM([json.dumps({"useful": useful})])
    result = await Judge(llm).evaluate(ITEM, ["context_precision"])
    assert result.scores["context_precision"] == pytest.approx(expected)
    assert result.verdicts["context_precision"]["useful"] == useful


@pytest.mark.asyncio
async def test_faithfulness_only_asks_for_answer_claims() -> None:
    claims = [
        {"claim": "a", "supported": True, "ctx": [1, 3]},  # JSON booleans are accepted verdicts
        {"claim": "b", "supported": 1},
        {"claim": "c", "supported": False, "why": "not in the contexts"},
    ]
    llm = ScriptedLLM([json.dumps({"answer_claims": claims})])
    result = await Judge(llm).evaluate(ITEM, ["faithfulness"])
    assert result.scores == {"faithfulness": pytest.approx(2 / 3)}
    assert result.verdicts["faithfulness"]["supported"] == 2
    assert result.verdicts["faithfulness"]["claims"][0]["ctx"] == [1, 3]
    assert asked_keys(llm.calls[0][0]) == ["answer_claims"]
    assert result.embed_requests == 0


@pytest.mark.asyncio
async def test_answer_correctness_without_embedder_is_factual_f1() -> None:
    llm = OracleLLM(FULL_REPLY)
    result = await Judge(llm).evaluate(ITEM, ["answer_correctness"])
    assert result.scores["answer_correctness"] == pytest.approx(FACTUAL_F1)
    assert result.verdicts["answer_correctness"]["formula"] == "factual_f1"
    assert result.embed_requests == 0


@pytest.mark.asyncio
async def test_noncommittal_answer_scores_zero_relevancy_without_embedding() -> None:
    llm = ScriptedLLM([json.dumps({"questions": GENERATED, "noncommittal": 1})])
    embedder = FakeEmbedder(VECTORS)
    result = await Judge(llm, embedder).evaluate(ITEM, ["answer_relevancy"])
    assert result.scores["answer_relevancy"] == 0.0
    assert result.errors == {}
    assert embedder.calls == []
    assert result.verdicts["answer_relevancy"]["noncommittal"] is True


@pytest.mark.asyncio
async def test_n_questions_sets_the_schema() -> None:
    llm = ScriptedLLM([json.dumps({"questions": GENERATED[:1], "noncommittal": 0})])
    embedder = FakeEmbedder(VECTORS)
    result = await Judge(llm, embedder, n_questions=1).evaluate(ITEM, ["answer_relevancy"])
    assert result.scores["answer_relevancy"] == pytest.approx(1.0)
    assert "1 different questions" in llm.calls[0][0][1]["content"]
    assert embedder.calls == [[ITEM.question, GENERATED[0]]]


@pytest.mark.asyncio
async def test_answer_relevancy_needs_an_embedder() -> None:
    llm = OracleLLM(FULL_REPLY)
    result = await Judge(llm).evaluate(ITEM, ["answer_relevancy", "faithfulness"])
    assert result.errors == {"answer_relevancy": "answer_relevancy needs an embedder"}
    assert math.isnan(result.scores["answer_relevancy"])
    assert result.scores["faithfulness"] == pytest.approx(FAITHFULNESS)
    assert asked_keys(llm.calls[0][0]) == ["answer_claims"]  # no questions paid for


@pytest.mark.asyncio
async def test_malformed_then_good_reply_succeeds_with_two_requests() -> None:
    bad = '{"answer_claims": [{"claim": "x", "supported": "yes"}]}'
    good = json.dumps({"answer_claims": FULL_REPLY["answer_claims"]})
    llm = ScriptedLLM([bad, good])
    result = await Judge(llm).evaluate(ITEM, ["faithfulness"])

    assert result.errors == {}
    assert result.scores["faithfulness"] == pytest.approx(FAITHFULNESS)
    assert result.usage.requests == 2
    retry_messages = llm.calls[1][0]
    assert retry_messages[-2] == {"role": "assistant", "content": bad}
    assert "answer_claims[0].supported: expected 0 or 1" in retry_messages[-1]["content"]
    expected_tokens = sum(sum(_tokens(m["content"]) + 4 for m in c[0]) for c in llm.calls)
    assert result.usage.prompt_tokens == expected_tokens
    assert result.usage.completion_tokens == _tokens(bad) + _tokens(good)


@pytest.mark.asyncio
async def test_two_malformed_replies_give_explicit_errors() -> None:
    llm = ScriptedLLM(["Sure! Here is my verdict.", "still not JSON"])
    embedder = FakeEmbedder(VECTORS)
    metrics = list(JUDGED_METRICS)
    result = await Judge(llm, embedder).evaluate(ITEM, metrics)

    assert set(result.errors) == set(metrics)
    for metric in metrics:
        assert result.errors[metric].startswith("judge reply rejected after 1 retry")
        assert "not valid JSON" in result.errors[metric]
        assert math.isnan(result.scores[metric])
        assert result.verdicts[metric]["reply"] == "still not JSON"
    assert result.usage.requests == 2
    assert embedder.calls == []
    assert_json_safe(result)


@pytest.mark.asyncio
async def test_per_metric_failure_only_hits_its_metric() -> None:
    def by_keys(messages: Sequence[dict[str, str]]) -> str:
        if asked_keys(messages) == ["useful"]:
            return '{"useful": [1, 0]}'  # three contexts, two verdicts
        return json.dumps({"answer_claims": FULL_REPLY["answer_claims"]})

    llm = ScriptedLLM([by_keys] * 4)
    result = await Judge(llm, mode="per_metric").evaluate(
        ITEM, ["faithfulness", "context_precision"]
    )
    assert list(result.errors) == ["context_precision"]
    assert "expected 3 verdicts (one per context), got 2" in result.errors["context_precision"]
    assert result.scores["faithfulness"] == pytest.approx(FAITHFULNESS)
    assert result.usage.requests == 3


@pytest.mark.parametrize(
    "text",
    [
        "```json\n" + json.dumps({"useful": [1, 0, 1]}) + "\n```",
        "```\n" + json.dumps({"useful": [1, 0, 1]}) + "\n```\n",
        "  " + json.dumps({"useful": [1, 0, 1], "note": "extra keys are ignored"}),
    ],
)
@pytest.mark.asyncio
async def test_fenced_json_is_accepted(text: str) -> None:
    result = await Judge(ScriptedLLM([text])).evaluate(ITEM, ["context_precision"])
    assert result.errors == {}
    assert result.scores["context_precision"] == pytest.approx(PRECISION)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"answer_claims": [{"claim": "x", "supported": 1, "ctx": [4]}]}, "out of range (1..3)"),
        ({"answer_claims": [{"claim": "x", "supported": 1, "ctx": [0]}]}, "out of range"),
        ({"answer_claims": [{"claim": "x", "supported": 1, "ctx": [True]}]}, "context number"),
        ({"answer_claims": [{"claim": "x", "supported": 2}]}, "expected 0 or 1, got 2"),
        ({"answer_claims": [{"claim": "x", "supported": 1.0}]}, "expected 0 or 1, got 1.0"),
        ({"answer_claims": [{"claim": "", "supported": 1}]}, "claim: expected a non-empty"),
        ({"answer_claims": [{"supported": 1}]}, "missing key 'claim'"),
        ({"answer_claims": [{"claim": "x"}]}, "missing key 'supported'"),
        ({"answer_claims": {"claim": "x"}}, "answer_claims: expected an array"),
        ({"answer_claims": ["x"]}, "answer_claims[0]: expected an object"),
        ({"answer_claims": [{"claim": "x", "supported": 1, "why": 3}]}, "why: expected a string"),
        ({"claims": []}, "missing key 'answer_claims'"),
    ],
)
@pytest.mark.asyncio
async def test_schema_violations_are_rejected(bad: dict[str, Any], message: str) -> None:
    llm = ScriptedLLM([json.dumps(bad), json.dumps(bad)])
    result = await Judge(llm).evaluate(ITEM, ["faithfulness"])
    assert message in result.errors["faithfulness"]
    assert math.isnan(result.scores["faithfulness"])
    assert len(llm.calls) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"questions": ["a", "b"], "noncommittal": 0}', "expected 3 questions, got 2"),
        ('{"questions": ["a", "b", " "], "noncommittal": 0}', "questions[2]: expected a non-emp"),
        ('{"questions": ["a", "b", "c"], "noncommittal": "no"}', "noncommittal: expected 0 or 1"),
        ('{"questions": ["a", "b", "c"]}', "missing key 'noncommittal'"),
        ('{"questions": ["a", "b", "c"], "noncommittal": NaN}', "NaN is not allowed"),
        ('[{"questions": []}]', "expected a JSON object, got an array"),
        ('Here: {"questions": ["a", "b", "c"], "noncommittal": 0}', "not valid JSON"),
        ('```json\n{"questions": ["a", "b", "c"], "noncommittal": 0}', "not valid JSON"),
    ],
)
@pytest.mark.asyncio
async def test_relevancy_schema_violations(text: str, message: str) -> None:
    llm = ScriptedLLM([text, text])
    result = await Judge(llm, FakeEmbedder(VECTORS)).evaluate(ITEM, ["answer_relevancy"])
    assert message in result.errors["answer_relevancy"]
    assert math.isnan(result.scores["answer_relevancy"])


@pytest.mark.asyncio
async def test_llm_error_becomes_error_entries() -> None:
    llm = ScriptedLLM([LLMError("HTTP 503 after 3 attempts")])
    result = await Judge(llm, FakeEmbedder(VECTORS)).evaluate(ITEM, RAGAS_FOUR)
    assert set(result.errors) == set(RAGAS_FOUR)
    for metric in RAGAS_FOUR:
        assert result.errors[metric] == "judge request failed: HTTP 503 after 3 attempts"
        assert math.isnan(result.scores[metric])
    assert result.usage.requests == 0


@pytest.mark.asyncio
async def test_llm_error_on_the_retry_keeps_the_first_request_usage() -> None:
    llm = ScriptedLLM(["nope", LLMError("circuit breaker open")])
    result = await Judge(llm).evaluate(ITEM, ["faithfulness"])
    assert result.errors["faithfulness"] == "judge request failed: circuit breaker open"
    assert result.verdicts["faithfulness"]["reply"] == "nope"
    assert result.usage.requests == 1


@pytest.mark.asyncio
async def test_embedder_failure_only_hits_embedding_metrics() -> None:
    embedder = FakeEmbedder(VECTORS, fail=LLMError("embedding quota exceeded"))
    result = await Judge(OracleLLM(FULL_REPLY), embedder).evaluate(ITEM, JUDGED_METRICS)
    assert set(result.errors) == {"answer_relevancy", "answer_correctness"}
    assert "embedding quota exceeded" in result.errors["answer_relevancy"]
    assert math.isnan(result.scores["answer_correctness"])
    assert result.verdicts["answer_correctness"]["factual_f1"] == pytest.approx(FACTUAL_F1)
    assert result.scores["faithfulness"] == pytest.approx(FAITHFULNESS)
    assert result.embed_requests == 1


@pytest.mark.asyncio
async def test_zero_vector_is_an_error_not_a_division_by_zero() -> None:
    vectors = {**VECTORS, GENERATED[1]: [0.0, 0.0, 0.0]}
    result = await Judge(OracleLLM(FULL_REPLY), FakeEmbedder(vectors)).evaluate(
        ITEM, ["answer_relevancy"]
    )
    assert result.errors == {"answer_relevancy": "the embedder returned a zero vector"}


@pytest.mark.asyncio
async def test_zero_vector_for_correctness_leaves_relevancy_alone() -> None:
    vectors = {**VECTORS, ITEM.answer: [0.0, 0.0, 0.0]}
    result = await Judge(OracleLLM(FULL_REPLY), FakeEmbedder(vectors)).evaluate(
        ITEM, ["answer_relevancy", "answer_correctness"]
    )
    assert result.errors == {"answer_correctness": "the embedder returned a zero vector"}
    assert result.scores["answer_relevancy"] == pytest.approx(RELEVANCY)
    assert math.isnan(result.scores["answer_correctness"])


def test_judge_input_contexts_become_a_tuple() -> None:
    item = JudgeInput("q", "a", ["c1", "c2"])  # type: ignore[arg-type]
    assert item.contexts == ("c1", "c2")
    assert hash(item) == hash(JudgeInput("q", "a", ("c1", "c2")))


@pytest.mark.asyncio
async def test_bad_embedding_shape_is_an_error() -> None:
    class OneRow:
        async def embed(self, texts: Sequence[str]) -> np.ndarray:
            return np.ones((1, 3), dtype=np.float32)

    result = await Judge(OracleLLM(FULL_REPLY), OneRow()).evaluate(ITEM, ["answer_relevancy"])
    assert "shape (1, 3) for 4 texts" in result.errors["answer_relevancy"]


@pytest.mark.asyncio
async def test_no_reference_skips_reference_metrics_without_requests() -> None:
    item = JudgeInput(ITEM.question, ITEM.answer, ITEM.contexts, reference=None)
    llm = OracleLLM(FULL_REPLY)
    result = await Judge(llm).evaluate(item, JUDGED_METRICS[:1] + JUDGED_METRICS[2:])
    assert result.errors == {}
    for metric in ("context_precision", "context_recall", "answer_correctness"):
        assert math.isnan(result.scores[metric])
        assert "needs a reference" in result.verdicts[metric]["skipped"]
    assert asked_keys(llm.calls[0][0]) == ["answer_claims"]
    assert "REFERENCE" not in llm.calls[0][0][1]["content"]

    nothing = ScriptedLLM([])
    result = await Judge(nothing).evaluate(item, ["context_recall"])
    assert nothing.calls == []
    assert result.usage.requests == 0


@pytest.mark.asyncio
async def test_no_contexts_gives_zero_precision_without_asking() -> None:
    item = JudgeInput(ITEM.question, ITEM.answer, (), ITEM.reference)
    llm = ScriptedLLM([])
    result = await Judge(llm).evaluate(item, ["context_precision"])
    assert result.scores["context_precision"] == 0.0
    assert llm.calls == []


@pytest.mark.asyncio
async def test_no_contexts_means_no_claim_can_cite_one() -> None:
    item = JudgeInput(ITEM.question, ITEM.answer, (), ITEM.reference)
    bad = json.dumps({"answer_claims": [{"claim": "x", "supported": 1, "ctx": [1]}]})
    good = json.dumps({"answer_claims": [{"claim": "x", "supported": 0}]})
    llm = ScriptedLLM([bad, good])
    result = await Judge(llm).evaluate(item, ["faithfulness"])
    assert "(none)" in llm.calls[0][0][1]["content"]
    assert "there are no contexts" in llm.calls[1][0][-1]["content"]
    assert result.scores["faithfulness"] == 0.0


@pytest.mark.parametrize(("tp", "fp", "fn", "beta", "expected"), [
    (2, 1, 1, 1.0, 2 / 3),           # p = r = 2/3
    (1, 0, 3, 1.0, 0.4),             # p 1, r 1/4: 2 * 0.25 / 1.25
    (1, 0, 3, 2.0, 1.25 / 4.25),     # (1 + 4) * 0.25 / (4 + 0.25)
    (0, 0, 0, 1.0, 1.0),             # nothing to count on either side: perfect, as in RAGAS
    (0, 0, 3, 1.0, 0.0),             # empty precision with misses: 0
    (0, 2, 0, 1.0, 0.0),             # empty recall with false claims: 0
    (0, 2, 3, 1.0, 0.0),
])
def test_f_beta_follows_ragas(tp: int, fp: int, fn: int, beta: float, expected: float) -> None:
    assert f_beta(tp, fp, fn, beta) == pytest.approx(expected, abs=1e-15)


@pytest.mark.asyncio
async def test_answer_correctness_keeps_a_negative_similarity() -> None:
    vectors = {**VECTORS, ITEM.answer: [-3.0, -4.0, 0.0]}  # cos with reference = -9/15
    result = await Judge(OracleLLM(FULL_REPLY), FakeEmbedder(vectors)).evaluate(
        ITEM, ["answer_correctness"])
    # 0.75 * 2/3 + 0.25 * (-0.6) = 0.5 - 0.15
    assert result.scores["answer_correctness"] == pytest.approx(0.35, abs=1e-7)
    assert result.verdicts["answer_correctness"]["similarity"] == pytest.approx(-0.6, abs=1e-7)


@pytest.mark.asyncio
@pytest.mark.parametrize(("answer_claims", "reference_claims", "side", "factual"), [
    # RAGAS classifies whenever one side states a claim (TP 0 scores 0: an evasive answer
    # to a reference that states facts is not correct); only with neither is factuality 1.0
    ([], FULL_REPLY["reference_claims"], "the answer", 0.0),
    (FULL_REPLY["answer_claims"], [], "the reference", 2 / (2 + 0.5 * 1)),
    ([], [], "neither the answer nor the reference", 1.0),
])
async def test_answer_correctness_when_a_side_states_no_claim(
        answer_claims: list[Any], reference_claims: list[Any], side: str,
        factual: float) -> None:
    reply = {**FULL_REPLY, "answer_claims": answer_claims, "reference_claims": reference_claims}
    alone = await Judge(OracleLLM(reply)).evaluate(ITEM, ["answer_correctness"])
    assert alone.scores["answer_correctness"] == pytest.approx(factual, abs=1e-15)
    assert alone.verdicts["answer_correctness"]["note"].startswith(side + " states no claim")
    json.dumps(alone.verdicts, allow_nan=False)
    blended = await Judge(OracleLLM(reply), FakeEmbedder(VECTORS)).evaluate(
        ITEM, ["answer_correctness"])
    # (0.75 * factual + 0.25 * 0.6) / (0.75 + 0.25)
    assert blended.scores["answer_correctness"] == pytest.approx(0.75 * factual + 0.15,
                                                                 abs=1e-7)


@pytest.mark.asyncio
async def test_answer_without_claims_is_nan_with_a_note() -> None:
    llm = ScriptedLLM([json.dumps({"answer_claims": []})])
    result = await Judge(llm).evaluate(ITEM, ["faithfulness"])
    assert math.isnan(result.scores["faithfulness"])
    assert result.errors == {}
    assert result.verdicts["faithfulness"]["note"] == "the answer states no claim"


@pytest.mark.asyncio
async def test_params_go_to_every_chat_call() -> None:
    llm = ScriptedLLM(["bad", json.dumps({"useful": [0, 0, 1]})])
    judge = Judge(llm, params={"temperature": 0, "seed": 7})
    await judge.evaluate(ITEM, ["context_precision"])
    assert [params for _, params in llm.calls] == [{"temperature": 0, "seed": 7}] * 2


@pytest.mark.asyncio
async def test_unknown_metric_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="did you mean 'faithfulness'"):
        await Judge(ScriptedLLM([])).evaluate(ITEM, ["faithfullness"])


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="mode"):
        Judge(ScriptedLLM([]), mode="parallel")
    with pytest.raises(ValueError, match="n_questions"):
        Judge(ScriptedLLM([]), n_questions=0)
    with pytest.raises(ValueError, match="not be comparable"):
        Judge(ScriptedLLM([]), template_version="judge-0")
    assert Judge(ScriptedLLM([]), template_version=TEMPLATE_VERSION).template_version == (
        TEMPLATE_VERSION
    )


def test_messages_for_inspection() -> None:
    judge = Judge(ScriptedLLM([]), FakeEmbedder(VECTORS))
    messages = judge.messages(ITEM, RAGAS_FOUR)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert asked_keys(messages) == [
        "answer_claims",
        "reference_claims",
        "useful",
        "questions",
        "noncommittal",
    ]
    for number, context in enumerate(ITEM.contexts, start=1):
        assert f"[{number}] {context}" in messages[1]["content"]
    assert judge.messages(JudgeInput("q", "a", ()), ["context_recall"]) == []
    assert re.fullmatch(r"judge-\d+\+[0-9a-f]{12}", TEMPLATE_VERSION)


# A realistic item for the cost comparison: three ~70-word contexts, a two-sentence answer.
COST_ITEM = JudgeInput(
    question="What causes the seasons on Earth?",
    answer=(
        "The seasons are caused by the tilt of Earth's rotational axis, about 23.4 degrees, "
        "which changes how directly sunlight hits each hemisphere during the year. They are "
        "not caused by changes in the distance between Earth and the Sun."
    ),
    contexts=(
        "Earth's axis is tilted by approximately 23.4 degrees relative to the plane of its orbit. "
        "Because of this axial tilt, the Northern and Southern Hemispheres receive different "
        "amounts of direct sunlight over the course of a year, which produces the seasons. When "
        "a hemisphere is tilted toward the Sun, it experiences summer, with longer days and more "
        "direct solar radiation.",
        "Earth's orbit around the Sun is slightly elliptical. The closest approach, perihelion, "
        "occurs in early January, and the farthest point, aphelion, occurs in early July. The "
        "difference in distance is only about 3 percent and has a minor effect on the amount of "
        "solar energy received, far smaller than the effect of the axial tilt.",
        "The Moon orbits Earth roughly every 27.3 days. Its gravitational pull is the main cause "
        "of ocean tides, and the Sun contributes a smaller tidal effect. Spring tides occur when "
        "the Sun, Moon and Earth are aligned, producing higher high tides and lower low tides "
        "than usual.",
    ),
    reference=(
        "Seasons result from the 23.4-degree tilt of Earth's axis, which changes the angle and "
        "duration of sunlight each hemisphere receives; the varying Earth-Sun distance plays "
        "only a minor role."
    ),
)

COST_REPLY: dict[str, Any] = {
    "answer_claims": [
        {
            "claim": "The seasons are caused by the tilt of Earth's axis.",
            "supported": 1,
            "ctx": [1],
        },
        {"claim": "Earth's axis is tilted about 23.4 degrees.", "supported": 1, "ctx": [1]},
        {
            "claim": "The tilt changes how directly sunlight hits each hemisphere.",
            "supported": 1,
            "ctx": [1],
        },
        {
            "claim": "The seasons are not caused by the Earth-Sun distance.",
            "supported": 1,
            "ctx": [2],
        },
    ],
    "reference_claims": [
        {"claim": "Seasons result from the tilt of Earth's axis.", "attributed": 1, "ctx": [1]},
        {"claim": "The tilt is 23.4 degrees.", "attributed": 1, "ctx": [1]},
        {
            "claim": "The tilt changes the angle and duration of sunlight.",
            "attributed": 1,
            "ctx": [1],
        },
        {"claim": "The Earth-Sun distance plays a minor role.", "attributed": 1, "ctx": [2]},
    ],
    "useful": [1, 1, 0],
    "questions": [
        "What causes Earth's seasons?",
        "How much is Earth's axis tilted?",
        "Does the distance from the Sun cause the seasons?",
    ],
    "noncommittal": 0,
}


@pytest.mark.asyncio
async def test_cost_per_item_against_ragas(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)

    class RandomEmbedder:
        def __init__(self) -> None:
            self.calls = 0

        async def embed(self, texts: Sequence[str]) -> np.ndarray:
            self.calls += 1
            return rng.normal(size=(len(texts), 8)).astype(np.float32)

    lines = []
    for mode in ("batched", "per_metric"):
        llm, embedder = OracleLLM(COST_REPLY), RandomEmbedder()
        result = await Judge(llm, embedder, mode=mode).evaluate(COST_ITEM, RAGAS_FOUR)
        assert result.errors == {}
        assert result.scores["faithfulness"] == 1.0
        assert result.scores["context_recall"] == 1.0
        assert result.scores["context_precision"] == 1.0
        assert embedder.calls == result.embed_requests == 1
        tokens = result.usage.prompt_tokens + result.usage.completion_tokens
        if mode == "batched":
            assert result.usage.requests == 1  # RAGAS: 7 chat requests
            assert tokens < 4300  # RAGAS: about 4,300 tokens for these four metrics
        else:
            assert result.usage.requests == 4
        lines.append(
            f"{mode}: {result.usage.requests} chat + {result.embed_requests} embed requests, "
            f"{result.usage.prompt_tokens} prompt + {result.usage.completion_tokens} completion "
            f"= {tokens} tokens (RAGAS: 7 chat + 2 embed, ~4300 tokens)"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))


@pytest.mark.asyncio
async def test_a_stored_reply_the_judge_rejected_is_asked_again_not_replayed(
        tmp_path: Path) -> None:
    """A judge reply that failed validation (and its failed correction) were cached like any
    reply: every later run replayed them, sent nothing and errored the case again."""
    from pytest_ragbench.llm.cache import CachedLLM, ResponseCache

    def judge(first_run: ScriptedLLM) -> tuple[Judge, ResponseCache]:
        cache = ResponseCache(tmp_path / "c.sqlite")
        cached = CachedLLM(first_run, cache, provider_id="judge", template_version="t")
        return Judge(cached, replies=cached), cache

    bad = ScriptedLLM(["not json", "still not json"])
    first, cache = judge(bad)
    with cache:
        result = await first.evaluate(ITEM, ["faithfulness"])
        # within the run an identical request gets the same replies, paid once
        again = await first.evaluate(ITEM, ["faithfulness"])
        first.forget_rejected()  # as the pipeline does when it closes
    assert "faithfulness" in result.errors and len(bad.calls) == 2
    assert again.errors == result.errors
    good = OracleLLM(FULL_REPLY)
    second, cache = judge(good)
    with cache:
        result = await second.evaluate(ITEM, ["faithfulness"])
        assert result.errors == {} and result.scores["faithfulness"] == FAITHFULNESS
        assert len(good.calls) == 1  # asked once, afresh: no correction of a stored reply
    third, cache = judge(ScriptedLLM([]))  # the good reply is stored now: nothing is sent
    with cache:
        result = await third.evaluate(ITEM, ["faithfulness"])
    assert result.scores["faithfulness"] == FAITHFULNESS


@pytest.mark.asyncio
@pytest.mark.parametrize(("reply", "reason"), [
    ({"answer_claims": [{"claim": "c", "supported": 1, "ctx": [7]}], "useful": [1, 0, 1]},
     "answer_claims[0].ctx[0]: context number 7 out of range (1..3)"),
    ('{"answer_claims": NaN, "useful": [1, 0, 1]}', "NaN is not allowed in the reply"),
])
async def test_a_reply_that_is_json_but_not_a_verdict_is_not_called_unparsable(
        reply: Any, reason: str) -> None:
    text = reply if isinstance(reply, str) else json.dumps(reply)
    result = await Judge(ScriptedLLM([text, text])).evaluate(ITEM, ["faithfulness"])
    message = result.errors["faithfulness"]
    assert message == f"judge reply rejected after 1 retry: {reason}"


@pytest.mark.asyncio
async def test_a_rejected_reply_of_a_run_that_died_is_dropped_by_the_next(tmp_path: Path) -> None:
    """Dropped when the pipeline closed: a run killed before that left the rejected reply for
    every later run to replay."""
    from pytest_ragbench.llm.cache import CachedLLM, ResponseCache

    def judge(llm: ScriptedLLM) -> tuple[Judge, ResponseCache]:
        cache = ResponseCache(tmp_path / "c.sqlite")
        cached = CachedLLM(llm, cache, provider_id="judge", template_version="t")
        return Judge(cached, replies=cached), cache

    first, cache = judge(ScriptedLLM(["not json", "still not json"]))
    with cache:
        assert "faithfulness" in (await first.evaluate(ITEM, ["faithfulness"])).errors
    # no forget_rejected: the run died before its pipeline closed
    good = OracleLLM(FULL_REPLY)
    second, cache = judge(good)
    with cache:
        result = await second.evaluate(ITEM, ["faithfulness"])
    assert result.errors == {} and len(good.calls) == 1
