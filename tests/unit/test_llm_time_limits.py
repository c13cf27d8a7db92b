"""LLM time limits (an endpoint's ``case_timeout``, ``generation.timeout``) do not count the
time a case's calls wait for the run's slots (pytest_ragbench.llm.deadline).

Each xdist worker opens as many cases as the run has slots, so how long a case queues for
one depends on how many workers share them. The end-to-end tests below put several
pipelines (as several workers would hold) on one run budget against a real server on
127.0.0.1; with a plain clock the cases at the back of the queue ran out of time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from virtual_clock import InlineBudget, ManualClockLoop, VirtualClockLoop, raises_after
from virtual_clock import run as run_on_virtual_clock

from pytest_ragbench.answers.config import parse_rag_config, rag_config_from_model
from pytest_ragbench.answers.pipeline import build_pipeline
from pytest_ragbench.budget import LocalBudget
from pytest_ragbench.datasets import Query
from pytest_ragbench.llm import deadline
from pytest_ragbench.llm.base import Completion, Usage
from pytest_ragbench.llm.testing import (
    CHAT_PATH,
    FakeOpenAIServer,
    Reply,
    echo_reply,
    per_item_judge,
)
from pytest_ragbench.suite import schema

CONTEXTS = [("d1", "Paris is the capital of France.")]


# -- the clock ---------------------------------------------------------------------------------


# The tests of the clock run on a virtual one (tests/virtual_clock.py): the times they read
# are exact. The waits for a slot below outlast the limit by half of it: a clock that counted
# them runs out while they go on.
async def _waits_then_works(wait: float, work: float) -> str:
    with deadline.call():
        with deadline.waiting_for_slot():
            await asyncio.sleep(wait)
        await asyncio.sleep(work)
    return "done"


def test_the_wait_for_a_slot_is_not_counted() -> None:
    done, took = run_on_virtual_clock(
        lambda: deadline.within(0.2, lambda: _waits_then_works(0.3, 0.02)))
    assert done == "done" and took == pytest.approx(0.32)


def test_the_work_is_counted() -> None:
    took = raises_after(TimeoutError,
                        lambda: deadline.within(0.1, lambda: _waits_then_works(0.0, 5.0)))
    assert took == pytest.approx(0.1)  # cancelled at the limit, not run out


def test_the_time_between_calls_is_counted() -> None:
    async def work() -> None:
        await _waits_then_works(0.0, 0.0)
        await asyncio.sleep(5.0)  # preparing the next call, say

    assert raises_after(TimeoutError, lambda: deadline.within(0.1, work)) == pytest.approx(0.1)


def test_the_clock_runs_while_one_call_is_served_and_another_waits() -> None:
    async def work() -> None:
        await asyncio.gather(_waits_then_works(5.0, 0.0), _waits_then_works(0.0, 5.0))

    assert raises_after(TimeoutError, lambda: deadline.within(0.1, work)) == pytest.approx(0.1)


def test_a_wait_stops_every_deadline_it_is_under() -> None:
    async def case() -> str:
        return await deadline.within(0.2, lambda: _waits_then_works(0.3, 0.02))

    done, took = run_on_virtual_clock(lambda: deadline.within(0.2, case))
    assert done == "done" and took == pytest.approx(0.32)


def test_work_that_ignores_its_cancellation_is_still_past_its_limit() -> None:
    """Work that catches the cancellation at its limit and returns anyway (an app's bare
    ``except:``) handed its result back as if in time: the case passed, 0.5 s past a 0.1 s
    limit."""
    async def work() -> str:
        try:
            await asyncio.sleep(5.0)
        except asyncio.CancelledError:
            await asyncio.sleep(0.4)
        return "late"

    assert raises_after(TimeoutError, lambda: deadline.within(0.1, work)) == pytest.approx(0.5)


def test_work_that_blocks_the_loop_past_its_limit_is_past_it() -> None:
    """An ``async def`` that blocks (a synchronous library call inside) keeps the loop from
    firing the limit's timer: it returned 2 s later under a limit of 0.1 s, and passed."""
    async def work() -> str:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualClockLoop)
        loop.advance(2.0)  # what a blocking call does to the clock: time passes, no yield
        return "late"

    assert raises_after(TimeoutError, lambda: deadline.within(0.1, work)) == pytest.approx(2.0)


@pytest.mark.parametrize("blames_calls", [True, False])
def test_a_call_cancelled_at_its_own_limit_knows_why(blames_calls: bool) -> None:
    """A call's own limit (case_timeout) running out says the call was too slow; a case's
    limit (generation.timeout) says nothing of the endpoint whose call it cancels."""
    seen: list[bool] = []

    async def work() -> None:
        with deadline.call():
            try:
                await asyncio.sleep(5.0)
            except asyncio.CancelledError:
                seen.append(deadline.expired())
                raise

    took = raises_after(TimeoutError,
                        lambda: deadline.within(0.1, work, blames_calls=blames_calls))
    assert seen == [blames_calls] and took == pytest.approx(0.1)
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

    _, took = run_on_virtual_clock(main)
    assert seen == [False] and took == pytest.approx(0.05)


@pytest.mark.parametrize("shared", [False, True], ids=["own-call", "shared-call"])
def test_a_limit_that_ran_out_with_an_inner_one_still_stops_its_work(
        monkeypatch: pytest.MonkeyPatch, shared: bool) -> None:
    """Python 3.10 cannot tell a task cancelled from outside from one whose work was: when a
    case's limit and its call's ran out together, the call's turned the case's cancellation
    into its own timeout, and the case went on past its limit. Also when the call is made for
    other cases too (the cache's one request for identical ones), where the case's limit is
    not among the call's."""
    monkeypatch.setattr(deadline, "_cancelling", lambda: False)  # as on Python 3.10
    finished: list[str] = []

    async def slow_to_stop() -> None:
        with deadline.call():
            try:
                await asyncio.sleep(5.0)
            except asyncio.CancelledError:
                await asyncio.sleep(0.1)  # a client closing its connection, while the
                raise                     # inner limit runs out too

    async def case() -> None:
        making = deadline.SharedCall().making() if shared else contextlib.nullcontext()
        with contextlib.suppress(TimeoutError), making:  # the call's error: the case goes on
            await deadline.within(0.2, slow_to_stop, blames_calls=True)
        await asyncio.sleep(1.0)
        finished.append("case")

    took = raises_after(TimeoutError, lambda: deadline.within(0.15, case))
    # the case's limit ran out at 0.15 s, the call's at 0.2 s while it was closing: the case
    # stopped there, and did not go on for its second more
    assert finished == [] and took == pytest.approx(0.2)


@pytest.mark.parametrize("waits", [False, True], ids=["calls", "waits-then-calls"])
def test_a_limit_whose_work_is_over_never_runs_out(waits: bool) -> None:
    """A task the work started and left running (an embedding batch after another failed)
    must not start the finished limit's clock again: neither by calling, nor when its wait
    for a slot ends (which starts a stopped clock of a limit still running)."""
    seen: list[bool] = []
    left: list[asyncio.Future[None]] = []

    async def main() -> None:
        async def straggler() -> None:
            await asyncio.sleep(0.05)
            with deadline.call():
                if waits:
                    with deadline.waiting_for_slot():
                        await asyncio.sleep(0.01)
                await asyncio.sleep(0.15)  # past where the limit would have run out
                seen.append(deadline.expired())

        async def work() -> str:
            left.append(asyncio.ensure_future(straggler()))
            return "done"

        assert await deadline.within(0.1, work, blames_calls=True) == "done"
        await left[0]

    _, took = run_on_virtual_clock(main)
    assert seen == [False] and took == pytest.approx(0.21 if waits else 0.2)


def test_a_shared_call_waits_for_a_slot_for_every_case_on_it() -> None:
    """A call one case makes and another waits on (a judge's batch, an identical request):
    its wait for a slot stops both clocks; its answer time counts for both."""
    async def main() -> list[str]:
        shared = deadline.SharedCall()

        async def maker() -> str:
            with shared.making():
                await _waits_then_works(0.3, 0.02)
            return "made"

        async def joiner() -> str:
            await asyncio.sleep(0)  # after the maker began
            with shared.joined():
                await asyncio.sleep(0.35)  # past the maker's end
            return "joined"

        made = asyncio.ensure_future(deadline.within(0.2, maker))
        joined = asyncio.ensure_future(deadline.within(0.2, joiner))
        return list(await asyncio.gather(made, joined))

    done, took = run_on_virtual_clock(main)
    assert done == ["made", "joined"] and took == pytest.approx(0.35)


def test_a_shared_call_being_answered_counts_for_its_cases() -> None:
    async def main() -> None:
        shared = deadline.SharedCall()

        async def maker() -> None:
            with shared.making():
                await _waits_then_works(0.0, 5.0)

        async def joiner() -> None:
            with shared.joined():
                await asyncio.sleep(5.0)

        task = asyncio.ensure_future(maker())
        await asyncio.sleep(0.01)
        try:
            await deadline.within(0.1, joiner)
        finally:
            task.cancel()

    assert raises_after(TimeoutError, main) == pytest.approx(0.11)


class _Queued:
    """An embedder and a judge LLM whose every request waits ``wait`` s for a slot, then is
    answered at once; counts its requests."""

    def __init__(self, wait: float, reply: Any = None) -> None:
        self.wait, self.reply, self.requests = wait, reply, 0

    async def _request(self) -> None:
        self.requests += 1
        with deadline.call(), deadline.waiting_for_slot():
            await asyncio.sleep(self.wait)

    async def embed(self, texts: Any) -> Any:
        import numpy as np

        await self._request()
        return np.ones((len(texts), 4), dtype=np.float32)

    async def chat(self, messages: Any, **params: Any) -> Completion:
        await self._request()
        return Completion(self.reply(messages), Usage(10, 10, 1), model="judge")


def test_a_case_waiting_on_another_cases_embedding_keeps_its_time_limit(
        tmp_path: Path) -> None:
    """The cached embedder sends a text being embedded for another case once: the second
    case waits on that request, and on its wait for a slot."""
    from pytest_ragbench.llm.cache import CachedEmbedder, ResponseCache

    # on the virtual clock, as the clock tests above, and like them waits half as long again
    # as the limit: the cache's SQLite work takes none of its time, load or not
    inner = _Queued(0.3)

    async def main() -> list[Any]:
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            embedder = CachedEmbedder(inner, cache, provider_id="e")
            return list(await asyncio.gather(*(
                deadline.within(0.2, lambda: embedder.embed(["the same text"]))
                for _ in range(2))))

    done, took = run_on_virtual_clock(main)
    assert [v.shape for v in done] == [(1, 4), (1, 4)]
    assert inner.requests == 1 and took == pytest.approx(0.3)


def test_a_case_waiting_on_an_identical_judge_item_keeps_its_time_limit(
        tmp_path: Path) -> None:
    """Two repetitions that answered alike: the judge (batching items, the cache on) asks
    for the item once and the second waits on the first's request, and its wait for a slot."""
    from pytest_ragbench.llm.cache import CachedLLM, ResponseCache
    from pytest_ragbench.metrics.judge import Judge, JudgeInput

    inner = _Queued(0.3, per_item_judge(_reply))  # as in the test above
    item = JudgeInput(question="question?", answer="Paris is the capital of France.",
                      contexts=CONTEXTS[0][1:], reference="Paris")

    async def main() -> list[Any]:
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            cached = CachedLLM(inner, cache, provider_id="judge", template_version="t")
            judge = Judge(cached, items_per_call=2, replies=cached)
            return list(await asyncio.gather(*(
                deadline.within(0.2, lambda: judge.evaluate(item, ["faithfulness"]))
                for _ in range(2))))

    results, took = run_on_virtual_clock(main)
    assert [r.errors for r in results] == [{}, {}]
    assert inner.requests == 1 and took == pytest.approx(0.3)


# -- end to end: several pipelines (as workers hold them) on one run budget ---------------------

# An answer short against the limit: what a case's clock counts is one answer plus the
# client's own time (about 0.1 s more on a loaded machine), and under a plain clock the cases
# at the back of the queue, behind seven answers, are past the limit whatever the jitter.
LATENCY = 0.1  # the server's answer time
LIMIT = 0.4  # well above one answer; below one answer plus the wait behind four others
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


def _on_answer_clock(tmp_path: Path, step: float, config: Any, pipelines: int,
                     question: Any, *, reply: Reply = echo_reply,
                     metrics: Sequence[str] = ("answer_contains",),
                     ) -> tuple[list[dict[str, Any]], dict[str, Any], FakeOpenAIServer, float]:
    """``pipelines`` pipelines of ``config(server)`` on one run budget, every case of each
    (``N_CASES``, with ``metrics`` and the reference answer "Paris") open at once, on an
    :class:`ManualClockLoop` that each answer of the server (``reply``) moves by ``step``.
    Returns the cases' outputs, the pool, the server and the clock's end."""
    loop = ManualClockLoop()

    def answer(messages: Any) -> str:
        loop.advance(step)
        return reply(messages)

    async def main(endpoint: FakeOpenAIServer, budget: LocalBudget) -> list[dict[str, Any]]:
        built = [build_pipeline(parse_rag_config(config(endpoint)), base_dir=tmp_path,
                                run_budget=budget, cost_key="s") for _ in range(pipelines)]
        try:
            return list(await asyncio.gather(*(
                rag.run_case(Query(f"q{p}{i}", question(p, i), reference_answers=("Paris",)),
                             CONTEXTS, list(metrics))
                for p, rag in enumerate(built) for i in range(N_CASES))))
        finally:
            for rag in built:
                await rag.aclose()

    with FakeOpenAIServer(reply=answer) as endpoint, LocalBudget() as budget:
        try:
            outs = loop.run_until_complete(main(endpoint, budget))
        finally:
            loop.close()
        (pool,) = budget.totals()["pools"].values()
    return outs, pool, endpoint, loop.time()


@pytest.mark.parametrize("limit", ["case_timeout", "generation.timeout"])
def test_cases_queued_for_the_runs_one_slot_keep_their_time_limit(tmp_path: Path,
                                                                  limit: str) -> None:
    """Eight cases (four pipelines, as four workers hold them) on the run's one slot: the last
    waits behind seven answers of LATENCY, 0.7 s of its clock's time, and answers in 0.1 s.
    Only an answer moves the clock, so a case counts its own answer, and at most one other
    that its first or last step overlaps: 0.3 s of LIMIT's 0.4 at most, load or not."""
    outs, pool, server, took = _on_answer_clock(
        tmp_path, LATENCY, lambda server: _config(server, limit), N_PIPELINES,
        lambda p, i: f"question {p} {i}?")
    assert server.count(CHAT_PATH) == N_PIPELINES * N_CASES
    assert server.max_in_flight == 1
    assert took == pytest.approx(N_PIPELINES * N_CASES * LATENCY)  # 0.8 s in all
    assert [o["errors"] for o in outs] == [{}] * (N_PIPELINES * N_CASES)
    assert pool["timeouts"] == 0


def _answered_late(tmp_path: Path, config: Any, case: Any, *, run_budget: bool = True
                   ) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    """``case(pipeline)`` of ``config(server)`` on a :class:`ManualClockLoop`, against a server
    whose answer takes 5 LIMIT of that clock: as a request arrives it moves the clock so far
    and wakes the loop, then holds its answer until the case has ended (10 s of real time at
    most: a case its limit did not stop then gets the answer). Returns the case's output, the
    pool (with ``run_budget``) and whether the answer was still held when the case ended."""
    loop = ManualClockLoop()
    ended = threading.Event()

    def answer(messages: Any) -> str:
        loop.advance(5 * LIMIT)
        loop.call_soon_threadsafe(lambda: None)  # the loop looks at its clock now
        ended.wait(10)
        return _reply(messages)

    with FakeOpenAIServer(reply=answer) as server, LocalBudget() as budget:
        rag = build_pipeline(parse_rag_config(config(server)), base_dir=tmp_path,
                             **({"run_budget": budget, "cost_key": "s"} if run_budget else {}))
        try:
            out = loop.run_until_complete(case(rag))
            held = not ended.is_set()
        finally:
            ended.set()
            loop.run_until_complete(rag.aclose())
            loop.close()
        pools = list(budget.totals()["pools"].values())
    return out, (pools[0] if run_budget else None), held


@pytest.mark.parametrize("limit", ["case_timeout", "generation.timeout"])
def test_a_call_past_its_limit_is_an_error_and_a_timeout_of_its_endpoint_if_its_own(
        tmp_path: Path, limit: str) -> None:
    out, pool, held = _answered_late(
        tmp_path,
        lambda server: _config(server, limit, concurrency={"auto": True, "max": 4, "start": 2}),
        lambda rag: rag.run_case(Query("q1", "question?"), CONTEXTS, ["answer_contains"]))
    said = f"case_timeout {LIMIT:g} s" if limit == "case_timeout" else \
        f"generation.timeout {LIMIT:g} s"
    assert said in out["errors"]["generation"]
    assert held  # stopped at its limit, not when the answer came
    # past its own case_timeout the slot is freed as a timeout, which the adaptive level
    # backs off on; a case's generation.timeout may run out on another endpoint's account,
    # so the call it cancels says nothing of this one
    blamed = int(limit == "case_timeout")
    assert pool is not None
    assert pool["timeouts"] == blamed
    assert pool["adaptive"]["decreases"] == blamed


def _reply(messages: Any) -> str:
    """The generation's answer, or the judge's verdict: every claim supported."""
    prompt = next((str(m["content"]) for m in messages if m.get("role") == "user"), "")
    if "Produce these keys" not in prompt:
        return "Paris is the capital of France."
    return json.dumps({"answer_claims": [{"claim": "Paris is the capital of France",
                                          "supported": 1, "ctx": [1]}], "useful": [1]})


@pytest.mark.parametrize("items_per_call", [1, 2])
def test_a_judge_batch_queued_for_the_runs_slot_keeps_its_cases_time_limit(
        tmp_path: Path, items_per_call: int) -> None:
    """A case waits on a batch of judge items it does not send itself, and before that for the
    batch to fill (while the other cases queue for their slots). Eight cases on the run's one
    slot, each a generation and a share of a judge call: each answer moves the clock by
    LATENCY, and a case counts its own two and at most one other beside each."""
    def config(server: FakeOpenAIServer) -> dict[str, Any]:
        return {**_config(server, "generation.timeout"),
                "judge": {"items_per_call": items_per_call}}

    outs, _, server, took = _on_answer_clock(
        tmp_path, LATENCY, config, N_PIPELINES, lambda p, i: f"question {p} {i}?",
        reply=per_item_judge(_reply), metrics=["faithfulness"])
    assert [o["errors"] for o in outs] == [{}] * (N_PIPELINES * N_CASES)
    assert all(o["metrics"]["faithfulness"] == 1.0 for o in outs)
    calls = N_PIPELINES * N_CASES * (1 + 1 / items_per_call)  # generations and judge calls
    assert server.count(CHAT_PATH) == calls
    assert server.max_in_flight == 1
    assert took == pytest.approx(calls * LATENCY)


def test_a_case_sharing_another_cases_request_keeps_its_time_limit(tmp_path: Path) -> None:
    """The response cache sends an identical request once: the second case waits on the first
    one's request, and on its wait for a slot."""
    # two slots; twelve pipelines, so that the last requests, behind five rounds of two
    # answers (each round LATENCY on the answer clock, so half of it an answer), end half the
    # limit past it; a case counts its answer and the one beside it, and at most one more
    outs, pool, server, took = _on_answer_clock(
        tmp_path, LATENCY / 2,
        lambda server: {**_config(server, "generation.timeout", concurrency=2),
                        "cache": {"path": str(tmp_path / "cache.sqlite")}},
        12, lambda p, i: f"question {p}?")  # each pipeline's two cases ask the same
    assert server.count(CHAT_PATH) == 12  # one request for both cases
    assert server.max_in_flight <= 2
    assert pool["max_in_flight"] == 2  # both slots were used
    assert took == pytest.approx(12 * LATENCY / 2)
    assert [o["errors"] for o in outs] == [{}] * (12 * N_CASES)


def test_judging_a_given_answer_is_bounded_by_the_generation_timeout(tmp_path: Path) -> None:
    """A pipeline under test's answers are judged under the same limit as generated ones."""
    out, _, held = _answered_late(
        tmp_path,
        lambda server: {**_config(server, "generation.timeout"), "judge": {"llm": "same"}},
        lambda rag: rag.judge_answer(Query("q1", "question?", reference_answers=("Paris",)),
                                     "Paris is the capital of France.", CONTEXTS,
                                     ["faithfulness", "answer_contains"]),
        run_budget=False)
    assert out["errors"] == {"faithfulness": "judge timed out: the case's judging took longer "
                                             f"than generation.timeout {LIMIT:g} s"}
    assert out["metrics"] == {"faithfulness": None, "answer_contains": 1.0}
    assert held


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
    """Eight cases (four pipelines, as four workers hold them) of a registered LLM on the
    run's one slot, on a virtual clock, the budget's included: the last waits 0.7 s behind
    seven answers of LATENCY, then answers in 0.1 s, within its case_timeout LIMIT only when
    the wait is not counted."""
    slow = _Slow(LATENCY)
    # validated as the plugin does, which knows the registered names (parse_rag_config
    # checks them against the installed ones only)
    config = rag_config_from_model(schema.RagFields.model_validate(
        {"llm": {"type": "slow", "backoff": 0, "retries": 0, "concurrency": 1,
                 "case_timeout": LIMIT}, "cache": "off"}))

    async def main() -> list[dict[str, Any]]:
        with InlineBudget(asyncio.get_running_loop()) as budget:
            pipelines = [build_pipeline(config, base_dir=tmp_path, run_budget=budget,
                                        components=lambda kind, name, params: slow)
                         for _ in range(N_PIPELINES)]
            try:
                return list(await asyncio.gather(*(
                    rag.run_case(Query(f"q{p}{i}", f"question {p} {i}?"), CONTEXTS,
                                 ["answer_contains"])
                    for p, rag in enumerate(pipelines) for i in range(N_CASES))))
            finally:
                for rag in pipelines:
                    await rag.aclose()

    outs, took = run_on_virtual_clock(main)
    assert [o["errors"] for o in outs] == [{}] * (N_PIPELINES * N_CASES)
    assert slow.max_in_flight == 1
    assert took == pytest.approx(N_PIPELINES * N_CASES * LATENCY)  # one answer after another


def test_a_registered_llms_call_past_its_case_timeout_is_an_explicit_error(
        tmp_path: Path) -> None:
    """The built-in clients bound their own calls; a registered LLM's calls are bounded by
    the guard around it (nothing else stopped a call taking three times its limit)."""
    slow = _Slow(3 * LIMIT)
    config = rag_config_from_model(schema.RagFields.model_validate(
        {"llm": {"type": "slow", "backoff": 0, "retries": 0, "case_timeout": LIMIT},
         "cache": "off"}))

    async def main() -> dict[str, Any]:
        with InlineBudget(asyncio.get_running_loop()) as budget:
            rag = build_pipeline(config, base_dir=tmp_path, run_budget=budget,
                                 components=lambda kind, name, params: slow)
            try:
                return await rag.run_case(Query("q1", "capital of France?"), CONTEXTS,
                                          ["answer_contains"])
            finally:
                await rag.aclose()

    out, took = run_on_virtual_clock(main)
    assert took == pytest.approx(LIMIT)  # given up at its limit, not after the answer
    (stage, message), = out["errors"].items()
    assert stage == "generation", out["errors"]
    assert f"took longer than case_timeout {LIMIT:g} s" in message
