"""Retry backoff, circuit breaker, rate limiter, prices and budgets."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from pytest_ragbench.errors import SuiteError
from pytest_ragbench.llm.base import Completion, LLMError, Usage
from pytest_ragbench.llm.extractive import ExtractiveLLM
from pytest_ragbench.llm.openai import OpenAIChat
from pytest_ragbench.llm.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    RateLimiter,
    RetryPolicy,
    backoff_delay,
    is_retryable_status,
    parse_retry_after,
)
from pytest_ragbench.llm.testing import FakeOpenAIServer, Fault
from pytest_ragbench.llm.usage import (
    BudgetedLLM,
    BudgetExceeded,
    CostBudget,
    Price,
    PriceTable,
)

USER = [{"role": "user", "content": "hello"}]


class FakeClock:
    """Monotonic time that only moves when told (or when the fake sleep is awaited)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(hang_seconds=5) as running:
        yield running


# -- backoff -------------------------------------------------------------------------------


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    rng = random.Random(0)
    delays = [
        backoff_delay(n, None, rng, base_delay=0.5, max_delay=3.0, jitter=False)
        for n in range(1, 6)
    ]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_full_jitter_stays_within_the_exponential_cap() -> None:
    rng = random.Random(42)
    for attempt in range(1, 8):
        cap = min(30.0, 0.5 * 2 ** (attempt - 1))
        samples = [backoff_delay(attempt, None, rng) for _ in range(200)]
        assert all(0.0 <= s <= cap for s in samples)
        # full jitter spreads over the range instead of sitting at the cap
        assert min(samples) < cap * 0.2 and max(samples) > cap * 0.8


def test_retry_after_wins_over_backoff_but_is_capped() -> None:
    rng = random.Random(1)
    assert backoff_delay(1, 7.0, rng, max_delay=30.0) == 7.0
    assert backoff_delay(1, 120.0, rng, max_delay=30.0) == 30.0
    assert backoff_delay(3, 0.0, rng) == 0.0
    assert RetryPolicy(max_delay=2.0).delay(1, 5.0, rng) == 2.0
    with pytest.raises(ValueError):
        backoff_delay(0, None, rng)


def test_parse_retry_after_seconds_dates_and_garbage() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("3", now=now) == 3.0
    assert parse_retry_after(" 0.25 ", now=now) == 0.25
    assert parse_retry_after("-4", now=now) == 0.0
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    )
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0
    )
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("", now=now) is None
    assert parse_retry_after(None) is None


def test_retryable_statuses() -> None:
    assert [s for s in (200, 400, 401, 404, 408, 429, 500, 503, 599) if is_retryable_status(s)] == [
        408,
        429,
        500,
        503,
        599,
    ]


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)


# -- circuit breaker (unit, fake clock) ------------------------------------------------------


@pytest.mark.asyncio
async def test_breaker_opens_after_threshold_and_fails_fast() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10, clock=clock)
    for n in range(3):
        await breaker.before_call("http://h/v1")
        await breaker.record_failure(f"HTTP 500: boom {n}")
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError) as info:
        await breaker.before_call("http://h/v1")
    assert str(info.value) == (
        "circuit open: HTTP 500: boom 2, 3 consecutive failures; endpoint http://h/v1"
    )
    assert isinstance(info.value, LLMError)


@pytest.mark.asyncio
async def test_breaker_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, clock=FakeClock())
    await breaker.record_failure("x")
    await breaker.record_success()
    await breaker.record_failure("y")
    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 1


@pytest.mark.asyncio
async def test_breaker_half_open_allows_one_probe_then_closes_or_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=5, clock=clock)
    await breaker.record_failure("down")
    clock.now += 4.9
    with pytest.raises(CircuitOpenError):
        await breaker.before_call()
    clock.now += 0.2
    await breaker.before_call()  # the probe
    assert breaker.state == "half_open"
    with pytest.raises(CircuitOpenError):
        await breaker.before_call()  # only one probe at a time
    await breaker.record_failure("still down")
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError, match="still down"):
        await breaker.before_call()
    clock.now += 5
    await breaker.before_call()
    await breaker.record_success()
    assert breaker.state == "closed"
    await breaker.before_call()


@pytest.mark.asyncio
async def test_breaker_aborted_probe_frees_the_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=1, clock=clock)
    await breaker.record_failure("down")
    clock.now += 1
    await breaker.before_call()
    breaker.record_abort()
    await breaker.before_call()  # another probe may go
    assert breaker.state == "half_open"


# -- circuit breaker against the real server --------------------------------------------------


@pytest.mark.asyncio
async def test_breaker_stops_requests_and_recovers_when_the_server_heals(
    server: FakeOpenAIServer,
) -> None:
    server.set_default(Fault.server_error(503))
    # the breaker's clock is told when reset_timeout has passed (instead of waiting it out)
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=0.3, clock=clock)
    async with OpenAIChat(
        server.base_url, "m", retry=RetryPolicy(max_attempts=1), breaker=breaker, timeout=2
    ) as llm:
        for _ in range(3):
            with pytest.raises(LLMError, match="HTTP 503"):
                await llm.chat(USER)
        assert server.request_count == 3
        started = time.perf_counter()
        for _ in range(5):
            with pytest.raises(CircuitOpenError, match=r"3 consecutive failures; endpoint http"):
                await llm.chat(USER)
        assert time.perf_counter() - started < 0.2
        assert server.request_count == 3  # failing fast sent nothing

        server.set_default(None)  # the endpoint heals
        clock.now += 0.29
        with pytest.raises(CircuitOpenError):  # still open until reset_timeout has passed
            await llm.chat(USER)
        clock.now += 0.02
        completion = await asyncio.wait_for(llm.chat(USER), 5)
        assert completion.text == "echo: hello"
        assert breaker.state == "closed"
        assert server.request_count == 4


@pytest.mark.asyncio
async def test_breaker_failed_probe_reopens_against_the_server(server: FakeOpenAIServer) -> None:
    server.set_default(Fault.drop())
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=0.2, clock=clock)
    async with OpenAIChat(
        server.base_url, "m", retry=RetryPolicy(max_attempts=1), breaker=breaker, timeout=2
    ) as llm:
        for _ in range(2):
            with pytest.raises(LLMError, match="connection error"):
                await llm.chat(USER)
        clock.now += 0.25
        with pytest.raises(LLMError, match="connection error"):
            await llm.chat(USER)  # the probe, still failing
        assert breaker.state == "open"
        with pytest.raises(CircuitOpenError):
            await llm.chat(USER)
        assert server.request_count == 3


@pytest.mark.asyncio
async def test_breaker_opening_mid_retry_stops_the_retries(server: FakeOpenAIServer) -> None:
    server.set_default(Fault.server_error())
    async with OpenAIChat(
        server.base_url,
        "m",
        retry=RetryPolicy(max_attempts=10, base_delay=0.0),
        breaker=CircuitBreaker(failure_threshold=3, reset_timeout=60),
    ) as llm:
        with pytest.raises(CircuitOpenError):
            await asyncio.wait_for(llm.chat(USER), 5)
    assert server.request_count == 3


@pytest.mark.asyncio
async def test_rate_limited_answers_do_not_open_the_breaker(server: FakeOpenAIServer) -> None:
    server.add_faults(*[Fault.rate_limited("0")] * 4)
    breaker = CircuitBreaker(failure_threshold=2)
    async with OpenAIChat(
        server.base_url, "m", retry=RetryPolicy(max_attempts=5, base_delay=0.0), breaker=breaker
    ) as llm:
        completion = await asyncio.wait_for(llm.chat(USER), 5)
    assert completion.usage.requests == 5
    assert breaker.state == "closed"


# -- rate limiter --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rate_limiter_requests_per_minute_with_injected_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=2, clock=clock, sleep=clock.sleep)
    start = clock.now
    await limiter.acquire()
    await limiter.acquire()
    assert clock.now == start  # the first minute's allowance is available at once
    await limiter.acquire()
    assert clock.now - start == pytest.approx(30.0)  # one request refills every 30 s
    await limiter.acquire()
    assert clock.now - start == pytest.approx(60.0)


@pytest.mark.asyncio
async def test_rate_limiter_tokens_per_minute_and_adjust() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tokens_per_minute=600, clock=clock, sleep=clock.sleep)
    await limiter.acquire(500)
    assert clock.slept == []
    await limiter.acquire(200)  # 100 left, 100 missing at 10 tokens/s
    assert sum(clock.slept) == pytest.approx(10.0)
    limiter.adjust(300)  # the calls used 300 more tokens than estimated
    before = clock.now
    await limiter.acquire(1)
    assert clock.now - before == pytest.approx(30.1)
    # a request bigger than the bucket is clamped rather than waiting forever
    await limiter.acquire(10_000)
    assert clock.now - before == pytest.approx(30.1 + 60.0)


@pytest.mark.asyncio
async def test_rate_limiter_without_limits_never_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        await limiter.acquire(10_000)
    assert clock.slept == []


@pytest.mark.asyncio
async def test_rate_limiter_serves_concurrent_waiters_in_order() -> None:
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=60, clock=clock, sleep=clock.sleep)
    for _ in range(60):
        await limiter.acquire()
    finished: list[int] = []

    async def take(n: int) -> None:
        await limiter.acquire()
        finished.append(n)

    await asyncio.gather(*(take(n) for n in range(5)))
    assert finished == [0, 1, 2, 3, 4]
    assert sum(clock.slept) == pytest.approx(5.0)


# -- prices and budgets -------------------------------------------------------------------


PRICES = {
    "gpt-4o": {"prompt": 2.5, "completion": 10.0},
    "mini": {"prompt": 0.15, "completion": 0.6},
}


def test_price_table_cost_math() -> None:
    table = PriceTable.from_mapping(PRICES)
    assert table.price("mini") == Price(0.15, 0.6)
    assert table.cost("gpt-4o", Usage(1_000_000, 0)) == pytest.approx(2.5)
    assert table.cost("gpt-4o", Usage(2000, 500)) == pytest.approx(0.005 + 0.005)
    assert table.cost("mini", Usage(0, 0)) == 0.0
    # dated snapshots reported by the API fall back to the base name
    assert table.cost("gpt-4o-2024-08-06", Usage(1_000_000, 1_000_000)) == pytest.approx(12.5)


def test_price_table_unknown_model_suggests_a_name() -> None:
    table = PriceTable.from_mapping(PRICES)
    with pytest.raises(LLMError, match=r"no price for model 'gpt-4' \(did you mean 'gpt-4o'\?\)"):
        table.cost("gpt-4", Usage(1, 1))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"m": {"prompt": 1}}, "prices.m: missing field 'completion'"),
        ({"m": {"prompt": 1, "completion": -2}}, "prices.m.completion: expected a finite number"),
        ({"m": {"prompt": "cheap", "completion": 1}}, "prices.m.prompt: expected a number"),
        ({"m": {"prompt": 1, "completon": 1}}, "did you mean 'completion'"),
        ({"m": 3}, "prices.m: expected {prompt"),
    ],
)
def test_price_table_rejects_bad_input(data: dict, message: str) -> None:
    with pytest.raises(SuiteError) as info:
        PriceTable.from_mapping(data)
    assert message in str(info.value)


def test_cost_budget_check_and_add() -> None:
    budget = CostBudget(0.01)
    budget.check()
    budget.add(0.004)
    budget.check()
    budget.add(0.006)
    assert budget.remaining == 0.0
    with pytest.raises(BudgetExceeded, match=r"spent \$0\.0100 of \$0\.0100"):
        budget.check()
    assert issubclass(BudgetExceeded, LLMError)
    with pytest.raises(ValueError):
        budget.add(-1)


def test_cost_budget_charges_nothing_for_cached_completions() -> None:
    table = PriceTable.from_mapping(PRICES)
    budget = CostBudget(1.0)
    fresh = Completion("a", Usage(1_000_000, 0, 1))
    cached = Completion("a", Usage(1_000_000, 0, 0), cached=True)
    assert budget.charge(table, "mini", cached) == 0.0
    assert budget.charge(table, "mini", fresh) == pytest.approx(0.15)
    assert budget.spent == pytest.approx(0.15)


@pytest.mark.asyncio
async def test_budgeted_llm_stops_calling_once_the_cap_is_reached() -> None:
    table = PriceTable({"extractive": Price(prompt=100_000.0, completion=0.0)})
    budget = CostBudget(max_cost=1.0)
    inner = ExtractiveLLM()
    llm = BudgetedLLM(inner, budget, table, model="extractive")
    messages = [{"role": "user", "content": "five words in this prompt"}]
    calls = 0
    with pytest.raises(BudgetExceeded):
        for _ in range(10):
            await llm.chat(messages)
            calls += 1
    # each call costs 5 tokens * $0.1 = $0.5, so the third call is refused
    assert calls == 2
    assert budget.spent == pytest.approx(1.0)
    with pytest.raises(LLMError, match="no price"):
        BudgetedLLM(inner, budget, table, model="other")
