"""The run's request exchange (budget/exchange.py) and its LLM wrapper (answers/exchange.py):
the controller's head start and the workers send each request once and hand responses over.

A real coordinator on 127.0.0.1: the "controller" talks to it in-process
(``Coordinator.local_budget``), each "worker" over its own TCP connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from pytest_ragbench.answers.exchange import ExchangedError, ExchangedLLM, LeftToWorker
from pytest_ragbench.budget import BudgetExceeded, Coordinator, CoordinatorClient
from pytest_ragbench.llm.base import Completion, LLMError, Message, ProviderError, Usage
from pytest_ragbench.llm.identity import ProviderId
from pytest_ragbench.llm.resilience import CircuitOpenError


@pytest.fixture
def coordinator() -> Iterator[Coordinator]:
    with Coordinator() as coord:
        yield coord


def worker(coord: Coordinator, name: str = "w") -> CoordinatorClient:
    return CoordinatorClient(coord.address, coord.token, name=name)


async def claims(budget: Any, *keys: str, consume: bool = True) -> list[Any]:
    return [await budget.claim(k, consume=consume) for k in keys]


async def claims_taken(coord: Coordinator, n: int) -> None:
    """Until the coordinator has taken ``n`` claims in all: a claim that waits is then
    registered as a waiter (in place of sleeping for a while and hoping it is)."""
    for _ in range(2500):
        if coord.totals()["exchange"]["claims"] >= n:
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"the coordinator did not take {n} claims within 5 s")


def test_claim_publish_and_hand_over(coordinator: Coordinator) -> None:
    lead, w1, w2 = coordinator.local_budget(), worker(coordinator, "w1"), worker(coordinator)

    async def scenario() -> None:
        mine, = await claims(lead, "k1", consume=False)
        assert mine.state == "mine"
        waiting = asyncio.ensure_future(w1.claim("k1"))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # held by the controller: the worker waits for it
        mine.publish({"text": "answer"})
        got = await asyncio.wait_for(waiting, 5)
        assert (got.state, got.value) == ("done", {"text": "answer"})
        # handed out once: a second asker goes its own way (its cache, or its own request)
        assert (await w2.claim("k1")).state == "taken"
        assert (await lead.claim("k1", consume=False)).state == "taken"
        # a worker first: the controller skips the key, a later worker does not wait
        own, = await claims(w1, "k2")
        assert own.state == "mine"
        assert (await lead.claim("k2", consume=False)).state == "taken"
        own.release(done=True)
        assert (await w2.claim("k2")).state == "taken"
        # published before anyone asked: the first asker gets it at once
        early = await lead.claim("k3", consume=False)
        early.publish({"text": "early"})
        assert (await w2.claim("k3")).value == {"text": "early"}

    try:
        asyncio.run(scenario())
        stats = coordinator.totals()["exchange"]
        assert stats["published"] == 2 and stats["delivered"] == 2
        assert stats["skipped"] == 2
    finally:
        for b in (lead, w1, w2):
            b.close()


def test_a_departed_holder_gives_its_keys_back(coordinator: Coordinator) -> None:
    """The controller's thread stops (or a worker crashes) while holding a key: the waiting
    worker becomes its holder, and an unheld key can be claimed afresh; a withdrawn wait
    leaves the response for the next asker."""
    lead, w1, w2 = coordinator.local_budget(), worker(coordinator, "w1"), worker(coordinator)

    async def scenario() -> None:
        held = await claims(lead, "a", "b", "c", consume=False)
        assert [c.state for c in held] == ["mine"] * 3
        waiting = asyncio.ensure_future(w1.claim("a"))
        await claims_taken(coordinator, 4)  # w1 waits for "a"
        lead.close()
        got = await asyncio.wait_for(waiting, 5)
        assert got.state == "mine"  # the claim passed to the waiting worker
        assert (await w2.claim("b")).state == "mine"  # given back, nobody waited
        # a wait cancelled (the case's time limit) is withdrawn; the response waits for the
        # next asker
        own = await w2.claim("d")
        impatient = asyncio.ensure_future(w1.claim("d"))
        await claims_taken(coordinator, 7)  # w1 waits for "d"
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient  # its withdrawal is posted on w1's connection ...
        await w1.atotals()  # ... which keeps order: the withdrawal has arrived
        own.release(done=False)  # nobody waits any more: the key is free again
        assert (await w1.claim("d")).state == "mine"

    try:
        asyncio.run(scenario())
    finally:
        for b in (lead, w1, w2):
            b.close()


def test_a_crashed_worker_connection_releases_its_claim(coordinator: Coordinator) -> None:
    w1, w2 = worker(coordinator, "w1"), worker(coordinator, "w2")

    async def scenario() -> None:
        assert (await w1.claim("k")).state == "mine"
        waiting = asyncio.ensure_future(w2.claim("k"))
        await claims_taken(coordinator, 2)  # w2 waits for "k"
        w1.close()  # the socket closes as when the process dies
        assert (await asyncio.wait_for(waiting, 5)).state == "mine"

    try:
        asyncio.run(scenario())
    finally:
        w1.close()
        w2.close()


class Counting:
    """An LLM whose replies depend on the request; counts calls; may fail."""

    def __init__(self, fail: BaseException | None = None, cached: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        self.cached = cached

    async def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail is not None:
            raise self.fail
        text = f"reply to {messages[-1]['content']} seed {params.get('seed')}"
        return Completion(text, Usage(7, 3, 0 if self.cached else 1), model="m",
                          cached=self.cached)


PID = ProviderId("openai", "http://127.0.0.1:1/v1", "m")


def wrap(inner: Counting, budget: Any, role: Any) -> ExchangedLLM:
    return ExchangedLLM(inner, budget, role=role, provider_id=PID, template_version="t1")


def test_the_worker_gets_the_controllers_response_object(coordinator: Coordinator) -> None:
    """Same text, usage, model and cached flag: the case record is what -n 0 makes. A
    provider failure comes back with its message and class name; nothing is sent twice."""
    lead_budget, w = coordinator.local_budget(), worker(coordinator)
    ask = [{"role": "user", "content": "q1"}]
    failing = [{"role": "user", "content": "q2"}]

    async def scenario() -> None:
        inner_lead, inner_worker = Counting(cached=True), Counting()
        lead, follow = wrap(inner_lead, lead_budget, "lead"), wrap(inner_worker, w, "follow")
        first = await lead.chat(ask, seed=1)
        assert await follow.chat(ask, seed=1) == first  # cached=True, requests=0 kept
        # a different seed is another request: nobody has it, the worker sends it
        assert (await follow.chat(ask, seed=2)).text.endswith("seed 2")
        assert (inner_lead.calls, inner_worker.calls) == (1, 1)
        # the controller skips what a worker already has
        with pytest.raises(LeftToWorker):
            await lead.chat(ask, seed=2)

        class ProviderDown(ProviderError):
            pass

        lead.inner = Counting(fail=ProviderDown(""))
        with pytest.raises(ProviderDown):
            await lead.chat(failing)
        with pytest.raises(ExchangedError) as raised:
            await follow.chat(failing)
        # a message-less error reads the same: str(exc) or the class name
        assert (str(raised.value), type(raised.value).__name__) == ("", "ProviderDown")
        assert inner_worker.calls == 1
        # the controller's breaker open on a down endpoint: the worker fails fast with it,
        # as the cases after it do at -n 0, instead of trying the endpoint again itself
        down = [{"role": "user", "content": "q3"}]
        lead.inner = Counting(fail=CircuitOpenError("circuit open: HTTP 500, 5 consecutive "
                                                    "failures; endpoint m", retry_in=30.0))
        with pytest.raises(CircuitOpenError):
            await lead.chat(down)
        with pytest.raises(ExchangedError, match=r"^circuit open: HTTP 500") as raised:
            await follow.chat(down)
        assert type(raised.value).__name__ == "CircuitOpenError"
        assert inner_worker.calls == 1
        # read once the breaker would let a probe through, it no longer holds: the worker
        # asks the endpoint itself (a short outage failed every case the head start had left)
        later = [{"role": "user", "content": "q4"}]
        lead.inner = Counting(fail=CircuitOpenError("circuit open", retry_in=0.0))
        with pytest.raises(CircuitOpenError):
            await lead.chat(later)
        assert (await follow.chat(later)).text == "reply to q4 seed None"
        assert inner_worker.calls == 2

    try:
        asyncio.run(scenario())
    finally:
        lead_budget.close()
        w.close()


def test_budget_refusals_and_cancellations_are_not_handed_over(
        coordinator: Coordinator) -> None:
    """The controller meets max_cost (or is stopped mid-call): the key goes back and the
    worker asks itself, meeting the budget as it would without a head start."""
    lead_budget, w = coordinator.local_budget(), worker(coordinator)
    ask = [{"role": "user", "content": "q"}]

    async def scenario() -> None:
        follow_inner = Counting()
        lead = wrap(Counting(fail=BudgetExceeded("cost budget exhausted")), lead_budget, "lead")
        follow = wrap(follow_inner, w, "follow")
        with pytest.raises(BudgetExceeded):
            await lead.chat(ask)
        assert (await follow.chat(ask)).text == "reply to q seed None"
        # cancelled mid-call: given back, the worker sends it itself
        slow = Counting()
        lead.inner = slow

        sending = asyncio.Event()

        async def forever(messages: Sequence[Message], **params: Any) -> Completion:
            sending.set()
            await asyncio.sleep(30)
            raise AssertionError("not reached")

        slow.chat = forever  # type: ignore[method-assign]
        task = asyncio.ensure_future(lead.chat(ask, seed=5))
        await asyncio.wait_for(sending.wait(), 5)  # the controller holds the key, sending
        before = coordinator.totals()["exchange"]["claims"]
        waiting = asyncio.ensure_future(follow.chat(ask, seed=5))
        await claims_taken(coordinator, before + 1)  # the worker waits for it
        task.cancel()
        assert (await asyncio.wait_for(waiting, 5)).text == "reply to q seed 5"
        assert follow_inner.calls == 2

    try:
        asyncio.run(scenario())
    finally:
        lead_budget.close()
        w.close()


def test_a_dropped_owner_is_refused_and_a_wait_is_bounded(coordinator: Coordinator) -> None:
    """A claim that reaches the core after its owner left holds no key (else a waiting
    worker would wait for nobody); a wait for a holder that never answers ends after
    ``wait`` seconds with ``taken``: the worker sends the request itself."""
    from pytest_ragbench.budget.core import BudgetCore

    core = BudgetCore(call_later=lambda delay, fn: None)
    core.drop_owner("gone")
    replies: list[dict[str, Any]] = []
    core.handle("gone", {"op": "claim", "id": 1, "key": "k"}, replies.append)
    core.handle("here", {"op": "claim", "id": 1, "key": "k"}, replies.append)
    assert [(r["ok"], r.get("state")) for r in replies] == [(False, None), (True, "mine")]

    lead, w = coordinator.local_budget(), worker(coordinator)

    async def scenario() -> None:
        held = await lead.claim("slow", consume=False)
        assert held.state == "mine"
        got = await w.claim("slow", wait=0.1)
        assert got.state == "taken"
        await w.atotals()  # one connection keeps order: the withdrawal has arrived
        held.publish({"text": "late"})  # the withdrawn wait gets nothing
        assert (await w.claim("slow")).state == "done"

    try:
        asyncio.run(scenario())
    finally:
        lead.close()
        w.close()


@pytest.mark.parametrize("local", ["budget", "plain"])
def test_failures_of_the_controller_itself_are_not_handed_over(
        coordinator: Coordinator, local: str) -> None:
    """Its budget client refusing, its own time limit: the worker did not meet them, so it
    sends the request itself instead of recording them. (Its circuit breaker open on a down
    endpoint is handed over: see test_the_worker_gets_the_controllers_response_object.)"""
    from pytest_ragbench.budget.api import BudgetError

    fail = {"budget": BudgetError("refused"),
            "plain": LLMError("timed out: the call took longer than case_timeout 1 s")}[local]
    lead_budget, w = coordinator.local_budget(), worker(coordinator)
    ask = [{"role": "user", "content": "q"}]

    async def scenario() -> None:
        follow_inner = Counting()
        lead = wrap(Counting(fail=fail), lead_budget, "lead")
        with pytest.raises(type(fail)):
            await lead.chat(ask)
        assert (await wrap(follow_inner, w, "follow").chat(ask)).text == "reply to q seed None"
        assert follow_inner.calls == 1

    try:
        asyncio.run(scenario())
    finally:
        lead_budget.close()
        w.close()


def test_the_endpoints_own_failure_is_a_provider_error() -> None:
    """What the built-in client raises for the endpoint's answer is what the exchange hands
    over (a ProviderError); a plain LLMError stays with the process that met it."""
    import httpx

    from pytest_ragbench.llm.openai import OpenAIChat

    transport = httpx.MockTransport(
        lambda request: httpx.Response(400, json={"error": {"message": "bad max_tokens"}}))

    async def scenario() -> None:
        async with OpenAIChat("http://example.invalid/v1", "m", transport=transport) as llm:
            with pytest.raises(ProviderError, match=r"HTTP 400: bad max_tokens$"):
                await llm.chat([{"role": "user", "content": "q"}])

    asyncio.run(scenario())


def test_finished_keys_keep_no_entry_and_workers_stop_asking_after_the_lead(
        coordinator: Coordinator) -> None:
    from pytest_ragbench.budget.exchange import Exchange

    ex = Exchange()
    replies: list[dict[str, Any]] = []
    ex.lead("lead")
    ex.claim("lead", 1, "k1", False, replies.append)
    ex.publish("lead", 1, "v1")
    ex.claim("w", 1, "k1", True, replies.append)  # handed out: nothing left of it
    ex.claim("w", 2, "k2", True, replies.append)
    ex.unclaim("w", 2, True)  # sent by the worker itself
    ex.claim("lead", 2, "k3", False, replies.append)
    ex.publish("lead", 2, "v3")  # nobody asked yet
    assert ex.open_keys == 1
    ex.claim("lead", 3, "k1", False, replies.append)  # finished keys are still skipped
    ex.claim("lead", 4, "k2", False, replies.append)
    ex.drop_owner("lead")
    ex.claim("w", 3, "k4", True, replies.append)  # k3 waits for its asker: keep asking
    ex.unclaim("w", 3, True)
    ex.claim("w", 4, "k3", True, replies.append)
    ex.claim("w", 5, "k5", True, replies.append)  # nothing more to hand out
    ex.unclaim("w", 5, True)
    assert [(r["state"], r.get("lead")) for r in replies] == [
        ("mine", None), ("done", None), ("mine", None), ("mine", None), ("taken", None),
        ("taken", None), ("mine", None), ("done", None), ("mine", False)]
    assert ex.open_keys == 0 and not ex._finished

    lead_budget, w = coordinator.local_budget(), worker(coordinator)
    lead_budget.lead()
    lead_budget.close()  # the head start ended
    ask = [{"role": "user", "content": "q"}]

    async def scenario() -> None:
        follow = wrap(Counting(), w, "follow")
        await follow.chat(ask)
        assert not follow.asking
        await follow.chat(ask, seed=1)

    try:
        asyncio.run(scenario())
        assert coordinator.totals()["exchange"]["claims"] == 1  # no round trip after that
    finally:
        w.close()


class Timers:
    """A ``call_later`` whose callbacks the test fires."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, Any]] = []

    def __call__(self, delay: float, callback: Any) -> None:
        self.pending.append((delay, callback))

    def fire(self) -> None:
        pending, self.pending = self.pending, []
        for _delay, callback in pending:
            callback()


def test_a_worker_waits_for_the_leaders_claim_in_a_scope_it_leads() -> None:
    """The head start claims its suite's requests in collection order; a worker that came
    up behind it and prefetched cases ahead of it waits for its claims (is parked) instead of
    sending those requests itself, in the scopes the leader said it still leads."""
    from pytest_ragbench.budget.exchange import PARK_TIMEOUT, Exchange

    timers = Timers()
    ex = Exchange(timers)
    got: dict[str, list[dict[str, Any]]] = {}

    def ask(owner: str, ident: int, key: str, scope: str | None = None) -> None:
        ex.claim(owner, ident, key, True, got.setdefault(key, []).append, scope)

    lead: list[dict[str, Any]] = []
    ex.lead("lead", ["s"])
    ask("w", 1, "k1", "s")
    assert got["k1"] == [] and ex.stats.parked == 1  # no answer yet: parked
    assert [d for d, _ in timers.pending] == [PARK_TIMEOUT]
    ex.claim("lead", 1, "k1", False, lead.append)
    assert lead[-1]["state"] == "mine"  # the leader sends it ...
    ex.publish("lead", 1, "v1")
    assert got["k1"] == [{"ok": True, "state": "done", "value": "v1"}]  # ... the worker gets it
    timers.fire()  # the timer of a key the leader claimed does nothing
    assert len(got["k1"]) == 1 and ex.open_keys == 0
    # outside the scopes it leads (another suite, or none given) a key is the asker's at once
    ask("w", 2, "k2", "other")
    ask("w", 3, "k3")
    assert [got[k][0]["state"] for k in ("k2", "k3")] == ["mine", "mine"]
    ex.unclaim("w", 2, True)
    ex.unclaim("w", 3, True)
    # a second worker asking a parked key waits with the first
    ask("w", 4, "k4", "s")
    ask("v", 1, "k4", "s")
    ex.claim("lead", 2, "k4", False, lead.append)
    ex.publish("lead", 2, "v4")
    assert [r["state"] for r in got["k4"]] == ["done", "taken"]
    # a key the leader does not claim in time: the first waiter's own, the leader skips it
    ask("w", 5, "k5", "s")
    timers.fire()
    assert got["k5"] == [{"ok": True, "state": "mine"}]
    ex.claim("lead", 3, "k5", False, lead.append)
    assert lead[-1]["state"] == "taken"
    ex.unclaim("w", 5, True)
    # a withdrawn wait leaves nothing behind: the leader's claim is a fresh one
    ask("w", 6, "k6", "s")
    ex.unclaim("w", 6, False)
    assert got["k6"] == [{"ok": True, "state": "withdrawn"}] and ex.open_keys == 0
    ex.claim("lead", 4, "k6", False, lead.append)
    assert lead[-1]["state"] == "mine"
    ex.unclaim("lead", 4, True)
    # the leader is done with the scope: what waits for it is the asker's, nothing new waits
    ask("w", 7, "k7", "s")
    ex.lead("lead", [])
    assert got["k7"] == [{"ok": True, "state": "mine"}]
    ask("w", 8, "k8", "s")
    assert got["k8"] == [{"ok": True, "state": "mine"}]
    ex.unclaim("w", 7, True)
    ex.unclaim("w", 8, True)
    # the leader goes away (its thread ended): the asker's, and told to stop asking
    ex.lead("lead", ["s"])
    ask("w", 9, "k9", "s")
    ex.drop_owner("lead")
    assert got["k9"] == [{"ok": True, "state": "mine", "lead": False}]
    assert ex.stats.parked == 6


def test_without_a_timer_no_claim_is_parked() -> None:
    from pytest_ragbench.budget.exchange import Exchange

    ex = Exchange()
    replies: list[dict[str, Any]] = []
    ex.lead("lead", ["s"])
    ex.claim("w", 1, "k", True, replies.append, "s")
    assert replies == [{"ok": True, "state": "mine"}]


def test_a_worker_over_tcp_waits_for_the_controllers_claim(coordinator: Coordinator) -> None:
    lead, w = coordinator.local_budget(), worker(coordinator)

    async def scenario() -> None:
        lead.lead(["suite.yaml"])
        waiting = asyncio.ensure_future(w.claim("k", scope="suite.yaml"))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # parked until the controller claims it
        mine = await lead.claim("k", consume=False)
        assert mine.state == "mine"
        mine.publish({"text": "from the controller"})
        got = await asyncio.wait_for(waiting, 5)
        assert (got.state, got.value) == ("done", {"text": "from the controller"})
        # another suite's request is the worker's own at once
        own = await asyncio.wait_for(w.claim("other", scope="other.yaml"), 5)
        assert own.state == "mine"
        own.release(done=True)

    try:
        asyncio.run(scenario())
        assert coordinator.totals()["exchange"]["parked"] == 1
    finally:
        lead.close()
        w.close()


def test_scopes_that_are_not_a_list_of_strings_are_refused() -> None:
    from pytest_ragbench.budget.core import BudgetCore

    core = BudgetCore(call_later=lambda delay, callback: None)  # type: ignore[arg-type,return-value]
    replies: list[dict[str, Any]] = []
    core.handle("lead", {"op": "lead", "id": 1, "scopes": "suite.yaml"}, replies.append)
    core.handle("lead", {"op": "lead", "id": 2, "scopes": ["a", 1]}, replies.append)
    core.handle("lead", {"op": "lead", "id": 3, "scopes": ["a"]}, replies.append)
    assert [r["ok"] for r in replies] == [False, False, True]
    assert "scopes must be a list of strings" in replies[0]["message"]


def test_a_key_the_leader_gave_back_is_not_parked() -> None:
    """A leader that gives a key back (a budget refusal, a cancellation) will not ask it
    again: a worker's later claim of it is its own at once."""
    from pytest_ragbench.budget.exchange import Exchange

    ex = Exchange(Timers())
    replies: list[dict[str, Any]] = []
    ex.lead("lead", ["s"])
    ex.claim("lead", 1, "k", False, replies.append)
    ex.unclaim("lead", 1, False)
    ex.claim("w", 1, "k", True, replies.append, "s")
    assert [r["state"] for r in replies] == ["mine", "mine"] and ex.stats.parked == 0
