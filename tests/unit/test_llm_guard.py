"""Registered providers under the call guard: what is retried, and that cache, retries, budget,
rate limits, concurrency and usage metering wrap a provider from the registry like the
built-in OpenAI client (pytest_ragbench.llm.guard, answers.pipeline.build_pipeline)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from virtual_clock import VirtualClockLoop
from virtual_clock import run as run_on_virtual_clock

from pytest_ragbench.answers.config import rag_config_from_model
from pytest_ragbench.answers.pipeline import RagPipeline, build_pipeline
from pytest_ragbench.budget import LocalBudget
from pytest_ragbench.datasets import Query
from pytest_ragbench.llm.base import Completion, LLMError, ProviderError, Usage
from pytest_ragbench.llm.guard import (
    CallGuard,
    CallLimits,
    GuardedEmbedder,
    GuardedLLM,
    classify,
)
from pytest_ragbench.llm.resilience import RateLimiter
from pytest_ragbench.suite import schema

QUERY = Query("q1", "What is the capital of France?", reference_answers=("Paris",))
CONTEXTS = [("d1", "Paris is the capital of France.")]


class Flaky:
    """A third-party LLM: fails ``fails`` times with ``error``, then answers; counts calls."""

    def __init__(self, fails: int = 0, error: Exception | None = None, delay: float = 0.0,
                 answer: str = "Paris") -> None:
        self.fails = fails
        self.error = error if error is not None else ProviderError("overloaded", status=503)
        self.delay = delay
        self.answer = answer
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    async def chat(self, messages: Sequence[dict[str, str]], **params: Any) -> Completion:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.calls <= self.fails:
                raise self.error
            return Completion(self.answer, Usage(11, 2), model="flaky-1")
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed = True


class FlakyEmbedder:
    def __init__(self, fails: int = 0) -> None:
        self.fails = fails
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.calls <= self.fails:
            raise ConnectionResetError("peer went away")
        return np.ones((len(texts), 4), dtype=np.float32)


def pipeline(tmp_path: Path, provider: Any, *, embedder: Any = None, run_budget: Any = None,
             **keys: Any) -> RagPipeline:
    data: dict[str, Any] = {"llm": {"type": "flaky", "backoff": 0, **keys.pop("llm", {})},
                            "cache": {"path": str(tmp_path / "cache.sqlite")}, **keys}
    if embedder is not None:
        data["embedder"] = {"type": "counted", "backoff": 0}
    config = rag_config_from_model(schema.RagFields.model_validate(data))
    built = {"flaky": provider, "counted": embedder}
    return build_pipeline(config, base_dir=tmp_path, run_budget=run_budget,
                          components=lambda kind, name, params: built[name])


class _SdkError(Exception):
    """Shaped like an SDK's status error: a status_code and an httpx-like response."""

    def __init__(self, status: int, retry_after: str | None = None) -> None:
        super().__init__(f"Error code: {status}")
        self.status_code = status
        self.response = type("R", (), {"headers": {"retry-after": retry_after}
                                       if retry_after else {}})()


class APIConnectionError(Exception):
    """Named like the OpenAI / Anthropic SDKs' dropped-connection error."""


@pytest.mark.parametrize(("exc", "retryable", "outcome", "retry_after"), [
    (ProviderError("overloaded", status=503), True, "error", None),
    (ProviderError("slow down", status=429, retry_after=2.5), True, "throttled", 2.5),
    (ProviderError("bad request", status=400), False, "error", None),
    (ProviderError("no status"), False, "error", None),
    (ProviderError("try again", retryable=True), True, "error", None),
    (ProviderError("a 503 we know is permanent", status=503, retryable=False), False, "error",
     None),
    (_SdkError(429, retry_after="3"), True, "throttled", 3.0),
    (_SdkError(502), True, "error", None),
    (_SdkError(401), False, "error", None),
    (TimeoutError("read timed out"), True, "timeout", None),
    (ConnectionResetError("reset"), True, "error", None),
    (APIConnectionError("Connection error."), True, "error", None),
    (ValueError("a bug in the provider"), False, "error", None),
    (LLMError("refused"), False, "error", None),
])
def test_what_is_retried(exc: Exception, retryable: bool, outcome: str,
                         retry_after: float | None) -> None:
    failure = classify(exc)
    assert (failure.retryable, failure.outcome, failure.retry_after) == (
        retryable, outcome, retry_after)
    assert failure.message  # never empty: it becomes the case's error


def test_a_provider_error_without_a_message_says_its_status() -> None:
    """``raise ProviderError("", status=503)`` (the service's body was empty) made the case's
    error 'llm 'mine' failed after 5 attempts: ProviderError', the status it was retried for
    lost."""
    assert classify(ProviderError("", status=503)).message == "ProviderError (status 503)"
    assert classify(ProviderError("", status=429, retry_after=1.0)).message == (
        "ProviderError (status 429)")
    assert classify(ProviderError("overloaded", status=503)).message == "overloaded"
    assert classify(ProviderError("", retryable=True)).message == "ProviderError"


def test_a_registered_llm_that_fails_twice_then_answers_is_retried_metered_and_cached(
        tmp_path: Path) -> None:
    flaky = Flaky(fails=2)
    with LocalBudget() as budget:
        rag = pipeline(tmp_path, flaky, run_budget=budget, llm={"retries": 2})
        try:
            out = rag.run_case_sync(QUERY, CONTEXTS, ["exact_match"])
            totals = budget.totals()
        finally:
            rag.close()
    assert out["errors"] == {} and out["answer"] == "Paris"
    assert out["metrics"] == {"exact_match": 1.0}
    # the case's usage counts every attempt and the reply's tokens
    assert out["usage"] == {"prompt_tokens": 11, "completion_tokens": 2, "requests": 3}
    assert flaky.calls == 3 and flaky.closed
    # its run-wide pool saw the three attempts (what the summary's budget lines show)
    pools = [p for key, p in totals["pools"].items() if "registered llm 'flaky'" in key]
    assert len(pools) == 1 and pools[0]["requests"] == 3
    # a second run over the same cache calls the provider zero times
    again = Flaky()
    rag = pipeline(tmp_path, again)
    try:
        out = rag.run_case_sync(QUERY, CONTEXTS, ["exact_match"])
    finally:
        rag.close()
    assert again.calls == 0 and out["answer"] == "Paris"
    assert out["usage"] == {"prompt_tokens": 11, "completion_tokens": 2, "requests": 0}


def test_retries_are_bounded_and_the_error_names_the_provider(tmp_path: Path) -> None:
    flaky = Flaky(fails=10)
    rag = pipeline(tmp_path, flaky, llm={"retries": 1}, cache="off")
    try:
        out = rag.run_case_sync(QUERY, CONTEXTS, ["exact_match"])
    finally:
        rag.close()
    assert flaky.calls == 2
    assert out["errors"] == {"generation": "llm 'flaky' failed after 2 attempts: overloaded"}
    assert out["metrics"] == {"exact_match": None}


def test_a_foreign_exception_is_not_retried_and_becomes_the_case_error(tmp_path: Path) -> None:
    flaky = Flaky(fails=1, error=KeyError("choices"))
    rag = pipeline(tmp_path, flaky, cache="off")
    try:
        out = rag.run_case_sync(QUERY, CONTEXTS, ["exact_match"])
    finally:
        rag.close()
    assert flaky.calls == 1
    assert out["errors"] == {"generation": "llm 'flaky' failed: KeyError: 'choices'"}


def test_the_per_attempt_timeout_retries_a_hung_call(tmp_path: Path) -> None:
    class Hangs(Flaky):
        async def chat(self, messages: Sequence[dict[str, str]], **params: Any) -> Completion:
            self.delay = 5.0 if self.calls == 0 else 0.0
            return await super().chat(messages, **params)

    hangs = Hangs()
    rag = pipeline(tmp_path, hangs, llm={"timeout": 0.05}, cache="off")
    out, took = run_on_virtual_clock(lambda: _one_case(rag))
    assert out["errors"] == {} and out["usage"]["requests"] == 2 and hangs.calls == 2
    assert took == pytest.approx(0.05)  # the hung attempt was given up at its timeout


async def _one_case(rag: RagPipeline) -> dict[str, Any]:
    """A case of ``rag`` on the running loop (a virtual clock's, tests/virtual_clock.py)."""
    try:
        return await rag.run_case(QUERY, CONTEXTS, ["exact_match"])
    finally:
        await rag.aclose()


@pytest.mark.parametrize("late", ["blocks", "ignores-cancel"])
def test_an_attempt_that_returns_past_its_timeout_timed_out(tmp_path: Path, late: str) -> None:
    """A provider that blocks the loop (a synchronous SDK call inside ``async def``) or
    answers after its cancellation: its late reply was taken, and ``timeout`` never held."""
    class Late(Flaky):
        async def chat(self, messages: Sequence[dict[str, str]], **params: Any) -> Completion:
            self.calls += 1
            if self.calls == 1:
                if late == "blocks":
                    loop = asyncio.get_running_loop()
                    assert isinstance(loop, VirtualClockLoop)
                    loop.advance(0.2)  # what a blocking call does to the clock: no yield
                else:
                    try:
                        await asyncio.sleep(5.0)
                    except asyncio.CancelledError:
                        await asyncio.sleep(0.1)
                return Completion("late", Usage(11, 2), model="flaky-1")
            return Completion(self.answer, Usage(11, 2), model="flaky-1")

    provider = Late()
    rag = pipeline(tmp_path, provider, llm={"timeout": 0.05, "retries": 1}, cache="off")
    out, _ = run_on_virtual_clock(lambda: _one_case(rag))
    assert out["errors"] == {} and out["answer"] == "Paris", out
    assert out["usage"]["requests"] == 2 and provider.calls == 2


@pytest.mark.parametrize("with_run_budget", [False, True])
def test_concurrency_of_a_registered_llm_is_limited(tmp_path: Path,
                                                    with_run_budget: bool) -> None:
    slow = Flaky(delay=0.02)
    budget = LocalBudget() if with_run_budget else None
    rag = pipeline(tmp_path, slow, run_budget=budget, llm={"concurrency": 2}, cache="off")
    try:
        for i in range(6):
            rag.submit(i, Query(f"q{i}", f"question {i}?"), CONTEXTS, ["exact_match"])
        outs = [rag.result(i) for i in range(6)]
    finally:
        rag.close()
        if budget is not None:
            budget.close()
    assert all(o["errors"] == {} for o in outs)
    assert slow.calls == 6 and slow.max_in_flight == 2


@pytest.mark.parametrize("with_run_budget", [False, True])
def test_max_cost_stops_a_priced_registered_llm(tmp_path: Path, with_run_budget: bool) -> None:
    flaky = Flaky()
    budget = LocalBudget() if with_run_budget else None
    rag = pipeline(tmp_path, flaky, run_budget=budget, llm={"model": "m"}, cache="off",
                   prices={"m": {"prompt": 1000.0, "completion": 1000.0}}, max_cost=0.01)
    try:
        first = rag.run_case_sync(QUERY, CONTEXTS, ["exact_match"])
        second = rag.run_case_sync(QUERY, CONTEXTS, ["exact_match"])
    finally:
        rag.close()
        if budget is not None:
            budget.close()
    # 13 tokens at $1000 per 1M: $0.013, over the $0.01 cap after the first call
    assert first["errors"] == {} and first["cost"] == pytest.approx(0.013)
    assert "budget" in second["errors"]["generation"] and flaky.calls == 1


def test_rpm_and_tpm_of_a_registered_llm_limit_its_run_wide_pool(tmp_path: Path) -> None:
    flaky = Flaky()
    with LocalBudget() as budget:
        rag = pipeline(tmp_path, flaky, run_budget=budget, llm={"rpm": 600, "tpm": 10_000},
                       cache="off")
        try:
            rag.run_case_sync(QUERY, CONTEXTS, ["exact_match"])
            totals = budget.totals()
        finally:
            rag.close()
    (pool,) = [p for key, p in totals["pools"].items() if "flaky" in key]
    assert (pool["rpm"], pool["tpm"], pool["requests"]) == (600, 10_000, 1)


def test_without_a_run_budget_rpm_is_a_local_rate_limiter() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    guard = CallGuard("llm 'x'", CallLimits(rpm=1.0))
    assert guard._limiter is not None  # built from the limits; driven by a fake clock here
    guard._limiter = RateLimiter(1.0, clock=lambda: now[0], sleep=fake_sleep)
    llm = GuardedLLM(Flaky(), guard)

    async def run() -> None:
        for text in ("a", "b"):
            await llm.chat([{"role": "user", "content": text}])

    asyncio.run(run())
    # the bucket holds one call a minute: the second waited for it to refill
    assert slept == [pytest.approx(60.0)]


def test_a_registered_embedder_is_retried_and_cached(tmp_path: Path) -> None:
    emb = FlakyEmbedder(fails=1)
    rag = pipeline(tmp_path, Flaky(), embedder=emb)
    try:
        assert rag.embedder is not None
        first = rag.prefetcher.call(lambda: rag.embedder.embed(["a", "b"]))  # type: ignore[union-attr]
        second = rag.prefetcher.call(lambda: rag.embedder.embed(["a"]))  # type: ignore[union-attr]
    finally:
        rag.close()
    assert first.shape == (2, 4) and second.shape == (1, 4)
    assert emb.calls == 2  # one failure, one answer; the second embed was a cache hit


def test_a_provider_returning_the_wrong_type_is_a_clear_error() -> None:
    class Wrong:
        async def chat(self, messages: Any, **params: Any) -> Any:
            return "Paris"

    llm = GuardedLLM(Wrong(), CallGuard("llm 'wrong'"))
    with pytest.raises(LLMError, match=r"^llm 'wrong' failed: returned str, expected a "
                                       r"pytest_ragbench\.llm\.base\.Completion$"):
        asyncio.run(llm.chat([{"role": "user", "content": "q"}]))


def test_a_provider_with_a_synchronous_chat_or_embed_is_told_to_use_async_def() -> None:
    # Python's own error, "object Completion can't be used in 'await' expression", said
    # nothing of what to change
    class Sync:
        def chat(self, messages: Any, **params: Any) -> Completion:
            return Completion("Paris", Usage(1, 1), model="m")

        def embed(self, texts: Any) -> Any:
            return [[1.0, 0.0] for _ in texts]

    llm = GuardedLLM(Sync(), CallGuard("llm 'sync'"))
    with pytest.raises(LLMError, match=r"^llm 'sync' failed: chat\(\) returned Completion, not "
                                       r"an awaitable: define chat with async def$"):
        asyncio.run(llm.chat([{"role": "user", "content": "q"}]))
    emb = GuardedEmbedder(Sync(), CallGuard("embedder 'sync'"))
    with pytest.raises(LLMError, match=r"embed\(\) returned list, not an awaitable"):
        asyncio.run(emb.embed(["a"]))


class BadUsage(Flaky):
    """A provider whose Completion carries a usage the plugin cannot count."""

    def __init__(self, usage: Any) -> None:
        super().__init__()
        self.usage = usage

    async def chat(self, messages: Sequence[dict[str, str]], **params: Any) -> Completion:
        self.calls += 1
        return Completion("Paris", self.usage, model="flaky-1")


@pytest.mark.parametrize("usage", [
    Usage(-100, 5), Usage(float("nan"), 5), Usage(None, None),  # type: ignore[arg-type]
    {"prompt_tokens": 10, "completion_tokens": 5}, Usage(10.5, 5),  # type: ignore[arg-type]
])
def test_a_usage_that_cannot_be_counted_errors_its_case_and_frees_its_slot(
        tmp_path: Path, usage: Any) -> None:
    # the slot of such a call was never given back (a negative cost was refused by the run
    # budget before the lease was ended; a dict raised before the release): at concurrency 1
    # the next call waited for ever
    provider = BadUsage(usage)
    with LocalBudget() as budget:
        rag = pipeline(tmp_path, provider, run_budget=budget, cache="off",
                       llm={"model": "m", "concurrency": 1, "retries": 0},
                       prices={"m": {"prompt": 1.0, "completion": 1.0}}, max_cost=10.0)
        try:
            for i in range(2):
                rag.submit(i, Query(f"q{i}", f"question {i}?"), CONTEXTS, ["exact_match"])
            outs = [rag.result(i, timeout=10) for i in range(2)]
            totals = budget.totals()
        finally:
            rag.close()
    assert provider.calls == 2
    for out in outs:
        assert "returned a usage" in out["errors"]["generation"], out["errors"]
        assert "whole numbers >= 0" in out["errors"]["generation"]
    (pool,) = totals["pools"].values()
    assert pool["in_flight"] == 0 and pool["errors"] == 2
    assert totals["spent"] == 0.0
