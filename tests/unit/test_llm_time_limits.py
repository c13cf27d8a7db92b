"""LLM time limits (an endpoint's ``case_timeout``, ``generation.timeout``) do not count the
time a case's calls wait for the run's slots (pytest_ragbench.llm.deadline).

Each xdist worker opens as many cases as the run has slots, so how long a case queues for
one depends on how many workers share them. The end-to-end tests below put several
pipelines (as several workers would hold) on one run budget against a real server on
127.0.0.1; with a plain clock the cases at the back of the queue ran out of time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_ragbench.answers.config import parse_rag_config, rag_config_from_model
from pytest_ragbench.answers.pipeline import RagPipeline, build_pipeline
from pytest_ragbench.budget import LocalBudget
from pytest_ragbench.datasets import Query
from pytest_ragbench.llm import deadline
from pytest_ragbench.llm.base import Completion, Usage
from pytest_ragbench.llm.testing import CHAT_PATH, FakeOpenAIServer
from pytest_ragbench.suite import schema

CONTEXTS = [("d1", "Paris is the capital of France.")]


# -- the clock ---------------------------------------------------------------------------------


async def _waits_then_works(wait: float, work: float) -> str:
    with deadline.call():
        with deadline.waiting_for_slot():
            await asyncio.sleep(wait)
        await asyncio.sleep(work)
    return "done"


def test_the_wait_for_a_slot_is_not_counted() -> None:
    assert asyncio.run(deadline.within(0.3, lambda: _waits_then_works(0.6, 0.05))) == "done"


def test_the_work_is_counted() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(deadline.within(0.2, lambda: _waits_then_works(0.0, 5.0)))
    assert time.monotonic() - started < 2.0  # cancelled at the limit, not run out


def test_the_time_between_calls_is_counted() -> None:
    async def work() -> None:
        await _waits_then_works(0.0, 0.0)
        await asyncio.sleep(5.0)  # preparing the next call, say

    with pytest.raises(TimeoutError):
        asyncio.run(deadline.within(0.2, work))


def test_the_clock_runs_while_one_call_is_served_and_another_waits() -> None:
    async def work() -> None:
        await asyncio.gather(_waits_then_works(5.0, 0.0), _waits_then_works(0.0, 5.0))

    with pytest.raises(TimeoutError):
        asyncio.run(deadline.within(0.2, work))


def test_a_wait_stops_every_deadline_it_is_under() -> None:
    async def case() -> str:
        return await deadline.within(0.3, lambda: _waits_then_works(0.6, 0.05))

    assert asyncio.run(deadline.within(0.3, case)) == "done"


def test_work_cancelled_at_the_limit_knows_why() -> None:
    seen: list[bool] = []

    async def work() -> None:
        with deadline.call():
            try:
                await asyncio.sleep(5.0)
            except asyncio.CancelledError:
                seen.append(deadline.expired())
                raise

    with pytest.raises(TimeoutError):
        asyncio.run(deadline.within(0.1, work))
    assert seen == [True]
    assert not deadline.expired()  # outside the limit nothing has expired


def test_a_cancelled_caller_cancels_the_work_and_is_no_timeout() -> None:
    seen: list[bool] = []

    async def work() -> None:
        try:
            await asyncio.sleep(5.0)
        except asyncio.CancelledError:
            seen.append(deadline.expired())
            raise

    async def main() -> None:
        task = asyncio.ensure_future(deadline.within(3.0, work))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == [False]


# -- end to end: several pipelines (as workers hold them) on one run budget ---------------------

LATENCY = 0.15  # the server's answer time
LIMIT = 0.4  # well above one answer; below one answer plus the wait behind three others
N_PIPELINES, N_CASES = 4, 2


def _config(server: FakeOpenAIServer, limit: str, **llm: Any) -> dict[str, Any]:
    endpoint = {"type": "openai", "base_url": server.base_url, "model": "m", "timeout": 5,
                "retries": 0, "concurrency": 1, **llm}
    config: dict[str, Any] = {"llm": endpoint, "cache": "off"}
    if limit == "case_timeout":
        endpoint["case_timeout"] = LIMIT
    else:
        config["generation"] = {"timeout": LIMIT}
    return config


def _run_as_workers(tmp_path: Path, config: dict[str, Any],
                    budget: LocalBudget) -> list[dict[str, Any]]:
    """``N_PIPELINES`` pipelines on one budget, each with ``N_CASES`` cases open at once."""
    pipelines: list[RagPipeline] = [
        build_pipeline(parse_rag_config(config), base_dir=tmp_path, run_budget=budget,
                       cost_key="s") for _ in range(N_PIPELINES)]
    try:
        for p, rag in enumerate(pipelines):
            for i in range(N_CASES):
                rag.submit(i, Query(f"q{p}{i}", f"question {p} {i}?"), CONTEXTS,
                           ["answer_contains"])
        return [rag.result(i, timeout=30) for rag in pipelines for i in range(N_CASES)]
    finally:
        for rag in pipelines:
            rag.close()


@pytest.mark.parametrize("limit", ["case_timeout", "generation.timeout"])
def test_cases_queued_for_the_runs_one_slot_keep_their_time_limit(tmp_path: Path,
                                                                  limit: str) -> None:
    with FakeOpenAIServer(latency=LATENCY) as server, LocalBudget() as budget:
        outs = _run_as_workers(tmp_path, _config(server, limit), budget)
        assert server.count(CHAT_PATH) == N_PIPELINES * N_CASES
        assert server.max_in_flight == 1
        (pool,) = budget.totals()["pools"].values()
    assert [o["errors"] for o in outs] == [{}] * (N_PIPELINES * N_CASES)
    assert pool["timeouts"] == 0


@pytest.mark.parametrize("limit", ["case_timeout", "generation.timeout"])
def test_a_call_past_its_limit_is_still_an_error_and_counts_as_a_timeout(
        tmp_path: Path, limit: str) -> None:
    with FakeOpenAIServer(latency=5 * LIMIT) as server, LocalBudget() as budget:
        config = _config(server, limit, concurrency={"auto": True, "max": 4, "start": 2})
        rag = build_pipeline(parse_rag_config(config), base_dir=tmp_path, run_budget=budget,
                             cost_key="s")
        try:
            out = rag.run_case_sync(Query("q1", "question?"), CONTEXTS, ["answer_contains"])
        finally:
            rag.close()
        (pool,) = budget.totals()["pools"].values()
    said = f"case_timeout {LIMIT:g} s" if limit == "case_timeout" else \
        f"generation.timeout {LIMIT:g} s"
    assert said in out["errors"]["generation"]
    # the slot is freed as a timeout, which the adaptive level backs off on (not as a call
    # abandoned for reasons of its own, which says nothing about the endpoint)
    assert pool["timeouts"] == 1
    assert pool["adaptive"]["decreases"] == 1


class _Slow:
    """A registered LLM that answers after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = self.max_in_flight = 0

    async def chat(self, messages: Any, **params: Any) -> Completion:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return Completion("Paris", Usage(11, 2), model="slow-1")
        finally:
            self.in_flight -= 1


def test_a_registered_llms_case_timeout_does_not_count_the_wait_for_a_slot(
        tmp_path: Path) -> None:
    slow = _Slow(LATENCY)
    # validated as the plugin does, which knows the registered names (parse_rag_config
    # checks them against the installed ones only)
    config = rag_config_from_model(schema.RagFields.model_validate(
        {"llm": {"type": "slow", "backoff": 0, "retries": 0, "concurrency": 1,
                 "case_timeout": LIMIT}, "cache": "off"}))
    with LocalBudget() as budget:
        pipelines = [build_pipeline(config, base_dir=tmp_path, run_budget=budget,
                                    components=lambda kind, name, params: slow)
                     for _ in range(N_PIPELINES)]
        try:
            for p, rag in enumerate(pipelines):
                for i in range(N_CASES):
                    rag.submit(i, Query(f"q{p}{i}", f"question {p} {i}?"), CONTEXTS,
                               ["answer_contains"])
            outs = [rag.result(i, timeout=30) for rag in pipelines for i in range(N_CASES)]
        finally:
            for rag in pipelines:
                rag.close()
    assert [o["errors"] for o in outs] == [{}] * (N_PIPELINES * N_CASES)
    assert slow.max_in_flight == 1
