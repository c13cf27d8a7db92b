"""Generation and judging per case: config parsing, offline and fake-server pipelines, faults,
cache, budget, prefetching and secrets."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import QUERIES
from virtual_clock import JumpingClock

from pytest_ragbench.answers.config import parse_rag_config
from pytest_ragbench.answers.pipeline import CaseRequest, RagPipeline, build_pipeline
from pytest_ragbench.answers.prefetch import Prefetcher
from pytest_ragbench.answers.prompt import DEFAULT_TEMPLATE, template_version
from pytest_ragbench.answers.repeats import flaky_summary
from pytest_ragbench.datasets import Query
from pytest_ragbench.embedders import HashingEmbedder
from pytest_ragbench.llm.testing import CHAT_PATH, EMBEDDINGS_PATH, FakeOpenAIServer, Fault

LEXICAL = ("exact_match", "token_f1", "rouge_l", "answer_contains", "abstention_accuracy")
JUDGED = (
    "faithfulness",
    "answer_relevancy",
    "context_precision",
    "context_recall",
    "answer_correctness",
)
FRANCE = Query("q1", "What is the capital of France?", reference_answers=("Paris",))
CONTEXTS = [
    ("d1", "Paris is the capital of France. It is large."),
    ("d2", "Berlin is in Germany."),
]
ANSWER = "Paris is the capital of France."
QUESTIONS = [
    "What is the capital of France?",
    "Which city is the French capital?",
    "Where is the seat of the government of France?",
]
JUDGE_REPLY = {
    "answer_claims": [
        {"claim": "Paris is the capital of France", "supported": 1, "ctx": [1],
         "in_reference": 1},
        {"claim": "Paris has ten million people", "supported": 0, "in_reference": 0,
         "why": "not in the contexts"},
    ],
    "reference_claims": [{"claim": "Paris", "attributed": 1, "ctx": [1], "in_answer": 1}],
    "useful": [0, 1],
    "questions": QUESTIONS,
    "noncommittal": 0,
}
SECRET = "sk-test-very-secret-4242"


def is_judge(messages: Sequence[dict[str, str]]) -> bool:
    return messages[0].get("role") == "system" and "You grade" in messages[0]["content"]


def question_of(messages: Sequence[dict[str, str]]) -> str:
    return messages[-1]["content"].rsplit("Question: ", 1)[-1].strip()


def scripted(messages: Sequence[dict[str, str]]) -> str:
    """Generation answers ANSWER for FRANCE and echoes other questions; the judge JUDGE_REPLY."""
    if is_judge(messages):
        return json.dumps(JUDGE_REPLY)
    question = question_of(messages)
    return ANSWER if question == FRANCE.text else f"answer to {question}"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=scripted) as fake:
        yield fake


def openai_llm(server: FakeOpenAIServer, **extra: Any) -> dict[str, Any]:
    return {"type": "openai", "base_url": server.base_url, "model": "m", "timeout": 5,
            "backoff": 0.01, **extra}


def pipeline(tmp_path: Path, config: dict[str, Any], **kwargs: Any) -> RagPipeline:
    return build_pipeline(parse_rag_config(config), base_dir=tmp_path, **kwargs)


def full_config(server: FakeOpenAIServer, **extra: Any) -> dict[str, Any]:
    return {
        "llm": openai_llm(server, params={"temperature": 0}),
        "judge": {"llm": "same"},
        "embedder": {"type": "hashing", "dim": 256},
        "prices": {"m": {"prompt": 0.15, "completion": 0.6}},
        **extra,
    }


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- offline: the extractive provider ---------------------------------------------------------


def test_extractive_answer_and_lexical_metrics_by_hand(tmp_path: Path) -> None:
    with pipeline(tmp_path, {"llm": {"type": "extractive"}, "cache": "off"}) as rag:
        out = rag.run_case_sync(FRANCE, CONTEXTS, LEXICAL)
    assert out["answer"] == ANSWER
    assert out["contexts"] == ["d1", "d2"]
    # normalised answer "paris is capital of france" (5 tokens) vs reference "paris":
    # precision 1/5, recall 1, F1 = 2 * 0.2 / 1.2 = 1/3; the LCS is also one token
    assert out["metrics"]["exact_match"] == 0.0
    assert out["metrics"]["token_f1"] == pytest.approx(1 / 3)
    assert out["metrics"]["rouge_l"] == pytest.approx(1 / 3)
    assert out["metrics"]["answer_contains"] == 1.0
    assert out["metrics"]["abstention_accuracy"] == 1.0
    assert out["errors"] == {}
    assert out["cost"] == 0.0
    assert out["usage"]["requests"] == 1
    json.dumps(out, allow_nan=False)  # JSON-safe, no NaN


def test_extractive_abstains_on_unanswerable_query(tmp_path: Path) -> None:
    unanswerable = Query("q2", "Who painted the Mona Lisa?")
    with pipeline(tmp_path, {"llm": {"type": "extractive"}, "cache": "off"}) as rag:
        out = rag.run_case_sync(unanswerable, CONTEXTS, LEXICAL)
    assert out["answer"] == "I don't know."
    assert out["metrics"]["abstention_accuracy"] == 1.0
    # no reference: reference metrics are not computable, which is not an error
    assert out["metrics"]["exact_match"] is None
    assert out["metrics"]["token_f1"] is None
    assert out["errors"] == {}


def test_abstaining_on_an_answerable_query_scores_zero(tmp_path: Path) -> None:
    answerable = Query("q3", "Who painted the Mona Lisa?", reference_answers=("Leonardo",))
    with pipeline(tmp_path, {"llm": {"type": "extractive"}, "cache": "off"}) as rag:
        out = rag.run_case_sync(answerable, CONTEXTS, ["abstention_accuracy", "exact_match"])
    assert out["metrics"] == {"abstention_accuracy": 0.0, "exact_match": 0.0}


def test_only_the_top_contexts_reach_the_prompt(tmp_path: Path) -> None:
    config = {"llm": {"type": "extractive"}, "cache": "off", "generation": {"contexts": 1}}
    with pipeline(tmp_path, config) as rag:
        out = rag.run_case_sync(FRANCE, CONTEXTS[::-1], ["answer_contains"])
        prompt = rag.messages(FRANCE.text, CONTEXTS[::-1])[0]["content"]
    assert out["contexts"] == ["d2"]
    assert "Berlin" in prompt and "Paris" not in prompt
    assert out["answer"] == "I don't know."  # the answering passage was cut off


def test_offline_provider_is_not_cached(tmp_path: Path) -> None:
    with pipeline(tmp_path, {"llm": {"type": "extractive"}}) as rag:  # cache on by default
        first = rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match"])
        second = rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match"])
        assert rag.cache is not None
        stats = rag.cache.stats
    assert first == second
    assert second["usage"]["requests"] == 1
    assert (stats.hits, stats.misses, stats.writes) == (0, 0, 0)


def test_judged_metric_without_a_judge_is_an_explicit_error(tmp_path: Path) -> None:
    with pipeline(tmp_path, {"llm": {"type": "extractive"}, "cache": "off"}) as rag:
        out = rag.run_case_sync(FRANCE, CONTEXTS, ["faithfulness", "exact_match"])
        with pytest.raises(ValueError, match="unknown answer metric 'exact_mach'"):
            rag.run_case_sync(FRANCE, CONTEXTS, ["exact_mach"])
    assert out["metrics"] == {"faithfulness": None, "exact_match": 0.0}
    assert "needs a judge" in out["errors"]["faithfulness"]


# -- the full pipeline against the fake OpenAI server -----------------------------------------


def test_full_pipeline_end_to_end(tmp_path: Path, server: FakeOpenAIServer) -> None:
    with pipeline(tmp_path, full_config(server)) as rag:
        out = rag.run_case_sync(FRANCE, CONTEXTS, (*LEXICAL, *JUDGED))
    hashing = HashingEmbedder(dim=256, nonzero=True)
    relevancy = np.mean([cosine(hashing.vector(FRANCE.text), hashing.vector(q))
                         for q in QUESTIONS])
    similarity = min(1.0, max(0.0, cosine(hashing.vector(ANSWER), hashing.vector("Paris"))))
    metrics = out["metrics"]
    assert out["errors"] == {}
    assert out["answer"] == ANSWER
    assert metrics["faithfulness"] == pytest.approx(0.5)  # 1 of 2 answer claims supported
    assert metrics["context_precision"] == pytest.approx(0.5)  # useful only at rank 2
    assert metrics["context_recall"] == pytest.approx(1.0)
    # TP 1, FP 1, FN 0: factual F1 = 1 / (1 + 0.5) = 2/3, blended with the similarity
    assert metrics["answer_correctness"] == pytest.approx(0.75 * 2 / 3 + 0.25 * similarity)
    assert metrics["answer_relevancy"] == pytest.approx(relevancy)
    assert metrics["token_f1"] == pytest.approx(1 / 3)
    assert out["judge"]["faithfulness"]["supported"] == 1
    assert out["usage"]["requests"] == 2  # one generation, one batched judge request
    usage = out["usage"]
    expected_cost = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.6) / 1e6
    assert out["cost"] == pytest.approx(expected_cost) and out["cost"] > 0
    assert server.count(CHAT_PATH) == 2
    json.dumps(out, allow_nan=False)


def test_generation_seed_is_config_seed_plus_run(tmp_path: Path, server: FakeOpenAIServer) -> None:
    config = {"llm": openai_llm(server), "seed": 10, "cache": "off"}
    with pipeline(tmp_path, config) as rag:
        for run in range(3):
            rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match"], run=run)
    assert [r.body["seed"] for r in server.requests] == [10, 11, 12]


def test_transient_faults_are_retried_to_a_score(tmp_path: Path, server: FakeOpenAIServer) -> None:
    server.add_faults(Fault.rate_limited(retry_after="0.1"), Fault.server_error(500),
                      Fault.malformed())
    with pipeline(tmp_path, full_config(server, cache="off")) as rag:
        out = rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match", "faithfulness"])
    assert out["errors"] == {}
    assert out["answer"] == ANSWER
    assert out["metrics"]["faithfulness"] == pytest.approx(0.5)
    assert out["usage"]["requests"] == 5  # 4 attempts for the answer, 1 for the judge
    assert server.count(CHAT_PATH) == 5


def test_lasting_outage_is_an_explicit_generation_error(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    server.set_default(Fault.server_error(503))
    config = full_config(server, cache="off")
    config["llm"]["retries"] = 1
    with pipeline(tmp_path, config) as rag:
        out = rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match", "faithfulness"])
    assert out["answer"] is None
    assert out["metrics"] == {"exact_match": None, "faithfulness": None}
    assert "HTTP 503" in out["errors"]["generation"]
    assert "after 2 attempts" in out["errors"]["generation"]
    assert server.count(CHAT_PATH) == 2  # no judge call for an answer that does not exist


def test_malformed_judge_reply_fails_only_judged_metrics(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    server.set_reply(lambda m: "this is not JSON" if is_judge(m) else ANSWER)
    with pipeline(tmp_path, full_config(server, cache="off")) as rag:
        out = rag.run_case_sync(FRANCE, CONTEXTS, ["answer_contains", "faithfulness",
                                                   "context_recall"])
    assert out["metrics"]["answer_contains"] == 1.0
    assert out["metrics"]["faithfulness"] is None
    assert out["metrics"]["context_recall"] is None
    assert set(out["errors"]) == {"faithfulness", "context_recall"}
    assert "rejected after 1 retry: not valid JSON" in out["errors"]["faithfulness"]
    assert out["usage"]["requests"] == 3  # answer, judge, judge retry


def _numbered_queries(n: int) -> list[Query]:
    return [Query(f"q{i}", f"question number {i}",
                  reference_answers=(f"answer to question number {i}",)) for i in range(n)]


def test_mixed_faults_are_retried_and_lose_no_case(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # 4 endpoint faults (429s do not count): below the circuit breaker's threshold of 5
    server.add_faults(Fault.rate_limited("0.05"), Fault.server_error(), Fault.truncated(),
                      Fault.rate_limited("0"), Fault.drop(), Fault.malformed())
    queries = _numbered_queries(12)
    with pipeline(tmp_path, full_config(server, cache="off")) as rag:
        for q in queries:
            rag.submit(q.id, q, CONTEXTS, ["exact_match", "faithfulness"])
        results = {q.id: rag.result(q.id, timeout=20) for q in queries}
    for q in queries:
        out = results[q.id]
        assert out["errors"] == {}, out["errors"]
        assert out["metrics"]["exact_match"] == 1.0
        assert out["metrics"]["faithfulness"] == pytest.approx(0.5)


def test_fault_burst_ends_each_case_in_scores_or_an_explicit_error(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # enough consecutive failures to open the circuit breaker for some in-flight cases
    server.add_faults(*[Fault.server_error(502)] * 8, Fault.malformed(), Fault.drop())
    queries = _numbered_queries(12)
    with pipeline(tmp_path, full_config(server, cache="off")) as rag:
        rag.schedule((q.id, CaseRequest(q, tuple(CONTEXTS), ("exact_match", "faithfulness")))
                     for q in queries)
        results = [rag.result(q.id, timeout=20) for q in queries]
    # The burst was served: without this the test would pass against a server that ignored it.
    assert server.faults_served > 0
    assert len(results) == len(queries)
    for out in results:
        if out["answer"] is None:
            reason = out["errors"]["generation"]  # why it has no answer
            assert isinstance(reason, str) and reason.strip()
            assert out["metrics"] == {"exact_match": None, "faithfulness": None}
        else:
            assert out["metrics"]["exact_match"] == 1.0
            for name in ("faithfulness",):
                assert out["metrics"][name] is not None or out["errors"][name]
    if any(out["answer"] is not None for out in results):
        # Replies come only once the queue is empty: an answer means every fault went out.
        assert server.faults_served_by_kind() == {"status": 8, "malformed": 1, "drop": 1}


# -- cache --------------------------------------------------------------------------------------


def test_cache_makes_a_second_identical_run_call_free(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = full_config(server, cache={"path": "cache.sqlite", "mode": "on"})
    config["embedder"] = {"type": "openai", "base_url": server.base_url, "model": "e"}
    metrics = (*LEXICAL, *JUDGED)
    with pipeline(tmp_path, config) as rag:
        first = rag.run_case_sync(FRANCE, CONTEXTS, metrics)
    calls = server.request_count
    assert server.count(EMBEDDINGS_PATH) == 1 and server.count(CHAT_PATH) == 2
    with pipeline(tmp_path, config) as rag:
        second = rag.run_case_sync(FRANCE, CONTEXTS, metrics)
    assert server.request_count == calls
    assert (tmp_path / "cache.sqlite").is_file()
    assert second["metrics"] == first["metrics"]
    assert second["answer"] == first["answer"]
    assert second["usage"]["requests"] == 0
    assert second["usage"]["prompt_tokens"] == first["usage"]["prompt_tokens"]
    assert second["cost"] == 0.0 and first["cost"] > 0


def test_changing_the_template_misses_the_cache(tmp_path: Path, server: FakeOpenAIServer) -> None:
    config = {"llm": openai_llm(server), "cache": {"path": "c.sqlite"}}
    with pipeline(tmp_path, config) as rag:
        rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match"])
    config["generation"] = {"template": DEFAULT_TEMPLATE + "\nBe brief."}
    with pipeline(tmp_path, config) as rag:
        out = rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match"])
    assert out["usage"]["requests"] == 1
    assert server.count(CHAT_PATH) == 2


def test_cache_mode_override_off_sends_every_call(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = {"llm": openai_llm(server), "cache": {"path": "c.sqlite"}}
    for _ in range(2):
        with pipeline(tmp_path, config, cache_mode_override="off") as rag:
            rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match"])
    assert server.count(CHAT_PATH) == 2
    assert not (tmp_path / "c.sqlite").exists()


# -- prefetching --------------------------------------------------------------------------------


def test_prefetcher_runs_50_items_concurrently_in_any_order(tmp_path: Path) -> None:
    queries = [Query(f"q{i}", f"question {i}") for i in range(50)]
    with FakeOpenAIServer(latency=0.05, reply=scripted) as slow:
        config = {"llm": openai_llm(slow, concurrency=10), "cache": "off"}
        with pipeline(tmp_path, config) as rag:
            started = time.perf_counter()
            scheduled = rag.schedule(
                (q.id, CaseRequest(q, tuple(CONTEXTS), ("abstention_accuracy",)))
                for q in queries
            )
            results = {q.id: rag.result(q.id, timeout=10) for q in reversed(queries)}
            elapsed = time.perf_counter() - started
        most_at_once = slow.max_in_flight
    assert scheduled == 50
    assert most_at_once == 10  # the bound of 10 in flight holds, as the server saw it
    assert elapsed < 1.25, elapsed  # sequentially it would take 50 x 0.05 s = 2.5 s
    assert elapsed >= 0.225  # 5 waves of 10 at 0.05 s: the same bound, in time
    for q in queries:
        assert results[q.id]["answer"] == f"answer to {q.text}"


def test_prefetcher_results_errors_duplicates_and_timeouts() -> None:
    async def value(x: int, delay: float = 0.0) -> int:
        await asyncio.sleep(delay)
        return x

    async def boom() -> int:
        raise RuntimeError("exploded")

    with Prefetcher(concurrency=2) as prefetcher:
        assert prefetcher.submit("a", lambda: value(1, 0.05))
        assert not prefetcher.submit("a", lambda: value(99))  # already pending
        prefetcher.submit("b", boom)
        prefetcher.submit("slow", lambda: value(3, 0.15))  # far longer than the 0.01 s below
        with pytest.raises(RuntimeError, match="exploded"):
            prefetcher.result("b")
        with pytest.raises(TimeoutError):
            prefetcher.result("slow", timeout=0.01)
        assert prefetcher.result("slow", timeout=5) == 3  # still collectable after a timeout
        assert prefetcher.result("a") == 1
        with pytest.raises(KeyError):
            prefetcher.result("a")  # each result is handed out once
        assert prefetcher.call(lambda: value(7)) == 7


def test_prefetcher_close_cancels_pending_work_promptly() -> None:
    finished: list[int] = []

    async def forever(i: int) -> int:
        await asyncio.sleep(60)
        finished.append(i)
        return i

    finalized: list[bool] = []

    async def finalizer() -> None:
        finalized.append(True)

    prefetcher = Prefetcher(concurrency=4)
    for i in range(20):
        prefetcher.submit(i, lambda i=i: forever(i))
    started = time.perf_counter()
    prefetcher.close(finalizer)
    assert time.perf_counter() - started < 2.0
    assert finished == [] and finalized == [True]
    with pytest.raises(RuntimeError, match="cancelled"):
        prefetcher.result(0)
    with pytest.raises(RuntimeError, match="closed"):
        prefetcher.submit(99, lambda: forever(99))


# -- budget and secrets -------------------------------------------------------------------------


def test_max_cost_stops_paid_calls_and_keeps_finished_results(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    # $1 per completion token: the 6-word answer costs $6, the judge reply far more
    config = full_config(server, cache="off", max_cost=10.0,
                         prices={"m": {"prompt": 0.0, "completion": 1_000_000.0}})
    with pipeline(tmp_path, config) as rag:
        first = rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match", "faithfulness"])
        calls = server.request_count
        second = rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match", "faithfulness"])
        spent = rag.spent
    assert first["errors"] == {}
    assert first["metrics"]["faithfulness"] == pytest.approx(0.5)
    assert first["cost"] == pytest.approx(spent) and spent > 10.0
    assert server.request_count == calls  # no paid call after the cap
    assert "cost budget exhausted" in second["errors"]["generation"]
    assert second["metrics"] == {"exact_match": None, "faithfulness": None}
    assert second["cost"] == 0.0


def test_budget_exhausted_mid_case_fails_the_judge_explicitly(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    config = full_config(server, cache="off", max_cost=1.0,
                         prices={"m": {"prompt": 0.0, "completion": 1_000_000.0}})
    with pipeline(tmp_path, config) as rag:
        out = rag.run_case_sync(FRANCE, CONTEXTS, ["answer_contains", "faithfulness"])
    assert out["answer"] == ANSWER  # the paid answer is kept
    assert out["metrics"]["answer_contains"] == 1.0
    assert out["metrics"]["faithfulness"] is None
    assert "cost budget exhausted" in out["errors"]["faithfulness"]


def test_api_key_never_appears_in_results(
    tmp_path: Path, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGBENCH_RAG_TEST_KEY", SECRET)
    echo_key = json.dumps({"error": {"message": f"bad key {SECRET}"}})
    server.add_faults(Fault("status", 401, body=echo_key))
    config = full_config(server, cache={"path": "c.sqlite"})
    config["llm"]["api_key_env"] = "RAGBENCH_RAG_TEST_KEY"
    config["llm"]["headers"] = {"X-Api-Key": SECRET}  # a literal secret header too
    with pipeline(tmp_path, config) as rag:
        failed = rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match", "faithfulness"])
        ok = rag.run_case_sync(FRANCE, CONTEXTS, ["exact_match", "faithfulness"])
        text = json.dumps([failed, ok]) + repr(rag) + repr(rag.config)
    assert "HTTP 401" in failed["errors"]["generation"]
    assert ok["errors"] == {}
    assert SECRET not in text
    assert SECRET not in (tmp_path / "c.sqlite").read_bytes().decode("latin-1")
    assert server.requests[0].headers["Authorization"] == f"Bearer {SECRET}"


# -- configuration ------------------------------------------------------------------------------


def test_the_documented_suite_shape_parses(tmp_path: Path) -> None:
    config = parse_rag_config({
        "llm": {"type": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m",
                "api_key_env": "OPENAI_API_KEY",
                "params": {"temperature": 0, "max_tokens": 256, "seed": 1},
                "headers": {"X-Org": "${ORG}"}, "timeout": 30, "concurrency": 16,
                "retries": 5, "rpm": None, "tpm": None},
        "judge": {"llm": "same", "mode": "batched", "n_questions": 3},
        "embedder": {"type": "hashing", "dim": 256},
        "generation": {"contexts": 5},
        "cache": {"path": ".ragbench/llm-cache.sqlite", "mode": True},  # YAML's bare `on`
        "prices": {"m": {"prompt": 0.15, "completion": 0.6}},
        "max_cost": 1.0,
        "runs": 3,
        "seed": 0,
    })
    assert config.llm.endpoint is not None and config.llm.endpoint.retries == 5
    assert config.llm.endpoint.params["max_tokens"] == 256
    assert config.judge is not None and config.judge.llm is None
    assert config.cache.mode == "on"
    assert config.runs == 3 and config.max_cost == 1.0
    assert config.prices is not None and config.prices.price("m").completion == 0.6


BAD_CONFIGS = [
    ({}, "rag.llm: missing"),
    ({"llm": {"type": "gpt"}}, "rag.llm.type: unknown LLM type 'gpt'"),
    ({"llm": {"type": "openai", "model": "m"}}, "rag.llm.base_url: missing"),
    ({"llm": {"type": "extractive", "threshold": 2}}, "rag.llm.threshold: expected a share"),
    ({"llm": {"type": "extractive", "treshold": 0.5}},
     "rag.llm.treshold: unknown key 'treshold' (did you mean 'threshold'?)"),
    ({"llm": {"type": "extractive"}, "judge": {"mode": "fast"}}, "rag.judge.mode: expected"),
    ({"llm": {"type": "extractive"}, "judge": {"llm": {"type": "extractive"}}},
     "rag.judge.llm.type: the extractive provider cannot judge"),
    ({"llm": {"type": "extractive"}, "embedder": {"type": "hashing", "dim": 0}},
     "rag.embedder.dim: expected an integer from 2 to 1048576, got 0"),
    ({"llm": {"type": "extractive"}, "cache": {"mode": "sometimes"}}, "rag.cache.mode: expected"),
    ({"llm": {"type": "extractive"}, "runs": 0}, "rag.runs: expected an integer >= 1"),
    ({"llm": {"type": "extractive"}, "prices": {"m": {"prompt": -1, "completion": 1}}},
     "rag.prices.m.prompt: expected a number (USD per 1M tokens) from 0 to 1000000, got -1"),
    ({"llm": {"type": "openai", "base_url": "http://x/v1", "model": "m"}, "max_cost": 1},
     "rag.max_cost: needs 'prices'"),
    ({"llm": {"type": "extractive"}, "generation": {"template": "a", "template_file": "b"}},
     "rag.generation: give either"),
    ({"llm": {"type": "openai", "base_url": "http://x/v1", "model": "m",
              "params": {"stop": {1, 2}}}}, "rag.llm.params.stop: expected a JSON value"),
    ({"llm": {"type": "extractive"}, "sed": 1},
     "rag.sed: unknown key 'sed' (did you mean 'seed'?)"),
    ({"llm": {"type": "extractive"}, "judge": {"llm": "same"}},
     "rag.judge.llm: 'same' would make the extractive provider judge"),
]


@pytest.mark.parametrize(("data", "message"), BAD_CONFIGS)
def test_bad_config_names_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_rag_config(data, key_prefix="rag.")
    assert str(info.value).startswith(message), str(info.value)


def test_build_errors_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGBENCH_UNSET_KEY", raising=False)
    llm = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    cases = [
        ({"llm": {**llm, "api_key_env": "RAGBENCH_UNSET_KEY"}}, "llm.api_key_env: environment"),
        ({"llm": llm, "prices": {"other": {"prompt": 1, "completion": 1}}},
         "prices: no price for model 'm'"),
        ({"llm": llm, "generation": {"template": "{{ question }"}},
         "generation.template: bad Jinja2 template"),
        ({"llm": llm, "generation": {"template": "{{ questoin }}"}},
         "generation.template: bad Jinja2 template"),
        ({"llm": llm, "generation": {"template_file": "missing.j2"}},
         "generation.template_file: cannot read template"),
        # one line without Jinja2 markup is a file name, so a typo is reported, not sent
        ({"llm": llm, "generation": {"template": "prompts/gen.j2"}},
         "generation.template: cannot read template"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError) as info:
            build_pipeline(parse_rag_config({**data, "cache": "off"}), base_dir=tmp_path)
        assert str(info.value).startswith(message), str(info.value)


def test_template_from_file_is_used_and_versioned(tmp_path: Path) -> None:
    text = "Q={{ question }} N={{ contexts | length }}"
    (tmp_path / "prompt.j2").write_text(text, encoding="utf-8")
    config = {"llm": {"type": "extractive"}, "cache": "off",
              "generation": {"template": "prompt.j2"}}
    with pipeline(tmp_path, config) as rag:
        (message,) = rag.messages("why?", CONTEXTS)
        assert message["content"] == "Q=why? N=2"
        assert rag.template_version == template_version(text)
        assert rag.template_version != template_version(DEFAULT_TEMPLATE)


# -- helpers --------------------------------------------------------------------------------------


def test_flaky_summary_spread_and_flips() -> None:
    steady = flaky_summary([0.8, 0.9, 0.7])
    assert steady["spread"] == pytest.approx(0.2)
    assert steady["flips"] is False and steady["pass_rate"] == 1.0
    flaky = flaky_summary([0.6, None, 0.4, float("nan")])
    assert flaky["flips"] is True
    assert flaky["missing"] == 2 and flaky["values"] == [0.6, None, 0.4, None]
    assert flaky["spread"] == pytest.approx(0.2) and flaky["mean"] == pytest.approx(0.5)
    empty = flaky_summary([None, None])
    assert empty["spread"] is None and empty["flips"] is False


def test_hashing_embedder_is_deterministic_and_normalised() -> None:
    embedder = HashingEmbedder(dim=64, nonzero=True)
    matrix = asyncio.run(embedder.embed(["Paris is big", "paris IS big", "", "Berlin"]))
    assert matrix.shape == (4, 64) and matrix.dtype == np.float32
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0)
    assert np.array_equal(matrix[0], matrix[1])
    assert cosine(matrix[0], matrix[3]) < 0.99
    assert math.isfinite(float(matrix[2].sum()))


@pytest.mark.parametrize("role", [None, "follow", "lead"])
def test_the_exchange_leader_keeps_a_second_window_of_cases_open(
        tmp_path: Path, server: FakeOpenAIServer, role: str | None) -> None:
    """The controller's head start claims each request in the run's exchange before it asks
    for a slot: with twice its window of cases open, the next cases wait for their slots
    with that round trip done. Everyone else keeps one window (a queued case's time limit
    would run while it waits)."""
    from pytest_ragbench.budget import LocalBudget

    budget = LocalBudget()
    rag = pipeline(tmp_path, {"llm": openai_llm(server, concurrency=3), "cache": "off"},
                   run_budget=budget, cost_key="s", exchange=role)
    try:
        assert rag.slots == 3
        assert rag.leads is (role == "lead")
        assert rag.prefetcher.concurrency == (6 if role == "lead" else 3)
    finally:
        rag.close()
        budget.close()


def test_a_case_whose_request_a_worker_sent_itself_does_not_wait_for_the_leader_again(
        tmp_path: Path) -> None:
    """A worker's request the head start did not reach in time becomes the worker's own
    (budget/exchange.py); the head start then skips that case, so the case's judge request
    must not wait for a claim that never comes. The park runs out on a JumpingClock (no real
    waiting): a second wait would add a second park to the clock."""
    from pytest_ragbench.budget import Coordinator, CoordinatorClient

    park = 0.5
    clocks: list[JumpingClock] = []

    def clock(loop: asyncio.AbstractEventLoop) -> JumpingClock:
        clocks.append(JumpingClock(loop))
        return clocks[0]

    with FakeOpenAIServer(reply=scripted) as server, Coordinator(clock=clock) as coord:
        coord._core.exchange._park_timeout = park
        lead = coord.local_budget()
        lead.lead(["suite.yaml"])  # leads the suite, and never gets to this case
        worker = CoordinatorClient(coord.address, coord.token, name="w")
        follow = pipeline(tmp_path, full_config(server, cache="off"), run_budget=worker,
                          cost_key="s", exchange="follow", exchange_scope="suite.yaml")
        try:
            started = clocks[0].time()
            out = follow.run_case_sync(FRANCE, CONTEXTS, ["faithfulness"])
            took = clocks[0].time() - started
            assert out["errors"] == {}
            # the generation waited for the leader once; the judge went its own way at once
            assert coord.totals()["exchange"]["parked"] == 1
            assert park <= took < 2 * park
            assert server.count(CHAT_PATH) == 2
        finally:
            follow.close()
            worker.close()
            lead.close()


def test_an_answer_judged_on_its_own_does_not_wait_for_the_leader(tmp_path: Path) -> None:
    """The head start judges only the answers it generates: judging a given answer (a
    pipeline under test's, a test's ``ragbench_record.score``) in a suite it leads sends the
    judge request at once."""
    from pytest_ragbench.budget import Coordinator, CoordinatorClient

    with FakeOpenAIServer(reply=scripted) as server, Coordinator() as coord:
        lead = coord.local_budget()
        lead.lead(["suite.yaml"])
        worker = CoordinatorClient(coord.address, coord.token, name="w")
        follow = pipeline(tmp_path, full_config(server, cache="off"), run_budget=worker,
                          cost_key="s", exchange="follow", exchange_scope="suite.yaml")
        try:
            started = time.monotonic()
            out = follow.judge_answer_sync(FRANCE, "Paris.", CONTEXTS, ["faithfulness"])
            assert out["errors"] == {} and out["metrics"]["faithfulness"] is not None
            assert time.monotonic() - started < 2  # not the 5 s park
            assert coord.totals()["exchange"]["parked"] == 0
        finally:
            follow.close()
            worker.close()
            lead.close()


def test_a_judge_reply_rejected_in_one_run_is_asked_afresh_in_the_next(tmp_path) -> None:
    """The response cache kept every reply: one bad judge reply (and its failed correction)
    was replayed at every later run, which sent nothing and errored the case again."""
    import json as _json

    from pytest_ragbench.answers.config import parse_rag_config
    from pytest_ragbench.answers.pipeline import build_pipeline
    from pytest_ragbench.datasets import Query
    from pytest_ragbench.llm.testing import CHAT_PATH, FakeOpenAIServer

    good = [False]

    def reply(messages):
        if "Produce these keys" not in str(messages):
            return "Paris."
        if not good[0]:
            return "not json"
        return _json.dumps({"answer_claims": [{"claim": "Paris", "supported": 1, "ctx": [1]}]})

    with FakeOpenAIServer(reply=reply) as server:
        config = parse_rag_config({
            "llm": {"type": "openai", "base_url": server.base_url, "model": "m", "retries": 0},
            "judge": {"llm": "same"}, "cache": {"path": str(tmp_path / "cache.sqlite")}})

        def run() -> dict:
            with build_pipeline(config, base_dir=tmp_path) as rag:
                return rag.run_case_sync(Query("q1", "capital of France?"),
                                         [("d1", "Paris is the capital of France.")],
                                         ["faithfulness"])

        assert "faithfulness" in run()["errors"]
        assert server.count(CHAT_PATH) == 3  # the answer, the reply, its correction
        good[0] = True
        out = run()
        assert out["errors"] == {} and out["metrics"]["faithfulness"] == 1.0
        assert server.count(CHAT_PATH) == 4  # the answer from the cache, the judge afresh


def test_the_summary_names_an_embedders_pool_as_one(pytester: pytest.Pytester,
                                                    mini_suite: Any) -> None:
    """A dense retriever's embedding endpoint draws from a pool of the run's budget as the
    LLM's does; the summary's pool line says which kind of endpoint it is."""
    with FakeOpenAIServer() as server:
        mini_suite(f"""
            name: kinds
            dataset: {{corpus: corpus.jsonl, queries: queries.jsonl, answer_field: type}}
            retrievers:
              dense:
                type: dense
                embedder: {{type: openai, base_url: "{server.base_url}", model: emb,
                           api_key_env: null, concurrency: 2}}
            metrics: [recall@10, token_f1]
            llm: {{type: openai, base_url: "{server.base_url}", model: gen, api_key_env: null}}
            """)
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist",
                                    "--ragbench-no-output")
        assert server.count(EMBEDDINGS_PATH) >= 1 and server.count(CHAT_PATH) >= 1
        url = server.base_url
    result.assert_outcomes(passed=len(QUERIES))
    result.stdout.fnmatch_lines([f"embedding pool emb at {url}: * requests*",
                                 f"llm pool gen at {url}: * requests*"])
    result.stdout.no_fnmatch_line("llm pool emb *")
