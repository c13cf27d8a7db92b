"""The controller's head start thread (execution/headstart.py): it stops at once when asked
(Ctrl-C, the end of the run) or when the workers collected other cases, gives back what it
held, closes what it built, and says once why it failed."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pytest_ragbench.execution.headstart import HeadStart, PlannedCase, SuitePlan


class Budget:
    def __init__(self) -> None:
        self.closed = 0
        self.led: list[list[str]] = []  # the scopes of each lead() call

    def close(self) -> None:
        self.closed += 1

    def lead(self, scopes: Any = None) -> None:
        self.led.append(list(scopes))


class Prefetcher:
    concurrency = 2

    def __init__(self) -> None:
        self.pending = 0  # submitted cases not finished


class Pipeline:
    """Answers nothing until released (a request in flight), or fails on ``result``."""

    exchanged = True
    slots = Prefetcher.concurrency

    def __init__(self) -> None:
        self.prefetcher = Prefetcher()
        self.release = threading.Event()
        self.closed = False

    def result(self, key: Any) -> dict[str, Any]:
        if not self.release.wait(30):
            raise AssertionError("never released")
        if self.closed:
            raise RuntimeError("the pipeline is closed")
        return {}

    def close(self) -> None:
        self.closed = True
        self.release.set()


class Runtime:
    suite_id = "s.yaml"

    def __init__(self) -> None:
        self.pipe = Pipeline()
        self.asked: list[tuple[str, str, int]] = []
        self.calls: list[int] = []  # cases per prefetch_answers call
        self.closed = False

    def pipeline(self) -> Pipeline:
        return self.pipe

    def prefetch_answers(self, name: str, cases: Any) -> list[Any]:
        keys = [(name, cid, run) for cid, run in cases]
        self.asked += keys
        self.pipe.prefetcher.pending += len(keys)
        self.calls.append(len(keys))
        return keys

    def cancel_answers(self) -> None:
        self.pipe.close()

    def close(self) -> None:
        self.closed = True


def plan(runtime: Runtime, n: int = 10) -> list[SuitePlan]:
    cases = tuple(PlannedCase("bm25", f"q{i}", 0, f"s.yaml::bm25::q{i}") for i in range(n))
    return [SuitePlan(runtime, cases)]  # type: ignore[arg-type]


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.001)


class StepClock:
    """The clock :meth:`HeadStart.wait_first_wave` polls on: each poll's sleep waits for the
    test's :meth:`step` (or for :meth:`run`), then moves the clock on by its length."""

    def __init__(self) -> None:
        self.now = 0.0
        self.polls = 0
        self._steps = threading.Semaphore(0)
        self._running = False

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if not self._running:
            self._steps.acquire()
        self.now += seconds
        self.polls += 1

    def step(self, polls: int) -> None:
        """Let ``polls`` more polls happen, and wait until they have."""
        target = self.polls + polls
        self._steps.release(polls)
        try:
            wait_until(lambda: self.polls >= target)
        except AssertionError:
            raise AssertionError(f"the wait stopped polling after {self.polls} polls") from None

    def run(self) -> None:
        """Let every poll happen at once from now on."""
        self._running = True
        self._steps.release()  # a poll waiting for its step


def stepped(plan: Any, budget: Any, clock: StepClock) -> HeadStart:
    return HeadStart(plan, budget, clock=clock.time, sleep=clock.sleep).start()


def test_stop_cancels_in_flight_work_and_releases_everything() -> None:
    runtime, budget = Runtime(), Budget()
    head = HeadStart(lambda stopped: plan(runtime), budget).start()
    # a window of 2 x concurrency cases goes out ahead, a slot's worth (concurrency) at a
    # time; then it waits for the oldest before the next slot's worth
    wait_until(lambda: len(runtime.asked) == 4)
    time.sleep(0.05)
    assert len(runtime.asked) == 4 and head.running
    assert runtime.calls == [2, 2]
    started = time.monotonic()
    head.stop()
    assert time.monotonic() - started < 5  # no hang at exit
    assert not head.running
    assert runtime.pipe.closed and runtime.closed and budget.closed >= 1
    assert head.error is None  # stopping is no failure


def test_other_cases_collected_stop_it() -> None:
    runtime, budget = Runtime(), Budget()
    head = HeadStart(lambda stopped: plan(runtime), budget).start()
    wait_until(lambda: runtime.asked)
    head.restrict([f"s.yaml::bm25::q{i}" for i in range(10)])  # all planned: goes on
    assert head.running
    head.restrict(["s.yaml::bm25::q1"])  # -k in a conftest, say: stop
    wait_until(lambda: not head.running)
    assert runtime.closed and budget.closed >= 1


def test_collection_known_before_the_plan_is_checked_too() -> None:
    runtime, budget = Runtime(), Budget()
    gate = threading.Event()

    def slow_plan() -> list[SuitePlan]:
        gate.wait(5)
        return plan(runtime)

    head = HeadStart(lambda stopped: slow_plan(), budget).start()
    head.restrict(["s.yaml::bm25::q1"])
    gate.set()
    wait_until(lambda: not head.running)
    assert runtime.asked == []


@pytest.mark.parametrize("kind", ["bug", "suite", "bare"])
def test_a_failure_is_kept_once_and_the_workers_do_the_rest(kind: str) -> None:
    from pytest_ragbench.errors import SuiteError

    budget = Budget()

    def broken() -> list[SuitePlan]:
        if kind == "suite":
            raise SuiteError("bad key", file="s.yaml")
        if kind == "bare":
            raise ValueError()
        raise KeyError("index")

    head = HeadStart(lambda stopped: broken(), budget).start()
    wait_until(lambda: not head.running)
    assert budget.closed == 1
    # a suite problem is the workers' to report (a collection error); a bug is said once;
    # one without a message reads as its type, not "ValueError: " (a colon and nothing)
    assert head.error == {"suite": None, "bug": "KeyError: 'index'", "bare": "ValueError"}[kind]


def test_after_a_failure_runtimes_close_before_the_budget() -> None:
    """The budget's close gives back the keys still held: requests still in flight must be
    cancelled (and their spend posted) first, or a worker sends them again."""
    log: list[str] = []

    class LoggingBudget(Budget):
        def close(self) -> None:
            log.append("budget")
            super().close()

    class Failing(Runtime):
        def pipeline(self) -> Pipeline:
            raise RuntimeError("boom")

        def cancel_answers(self) -> None:
            log.append("cancel")

        def close(self) -> None:
            log.append("runtime")
            super().close()

    head = HeadStart(lambda stopped: plan(Failing()), LoggingBudget()).start()  # type: ignore[arg-type]
    wait_until(lambda: not head.running)
    assert head.error == "RuntimeError: boom"
    assert log == ["cancel", "runtime", "budget"]


def test_every_planned_runtime_is_closed_and_a_slow_plan_step_holds_up_no_stop() -> None:
    first, second = Runtime(), Runtime()
    cases = plan(first)[0].cases
    head = HeadStart(lambda stopped: [SuitePlan(first, cases), SuitePlan(second, cases)],  # type: ignore[arg-type]
                     Budget()).start()
    wait_until(lambda: first.asked)
    head.stop()
    assert first.closed and second.closed  # the second suite was never reached

    gate, seen = threading.Event(), []

    def slow(stopped: Any) -> list[SuitePlan]:
        seen.append(stopped())
        gate.wait(10)  # building a big index, say
        seen.append(stopped())  # checked between steps: the next one is not started
        return []

    head = HeadStart(slow, Budget()).start()
    wait_until(lambda: seen)
    started = time.monotonic()
    # a short bound (JOIN_TIMEOUT by default): the step goes on 10 s, the stop only waits this
    head.stop(timeout=0.1)
    assert time.monotonic() - started < 1.5
    gate.set()
    wait_until(lambda: not head.running)
    assert seen == [False, True]


def test_the_first_wave_is_out_once_a_window_of_cases_is_submitted() -> None:
    """The controller holds its own start and the workers' boot until then (bounded)."""
    runtime, budget = Runtime(), Budget()
    gate = threading.Event()

    def slow_plan() -> list[SuitePlan]:
        gate.wait(5)  # loading the suite, its index
        return plan(runtime)

    head = HeadStart(lambda stopped: slow_plan(), budget).start()
    try:
        assert head.wait_first_wave(0.05) is False  # still planning: the wait times out
        gate.set()
        assert head.wait_first_wave(5) is True
        # a whole window (2 x concurrency) was submitted before the wait ended
        assert len(runtime.asked) >= 2 * Prefetcher.concurrency
        assert head.running  # and the rest goes on while the workers boot
    finally:
        head.stop()


@pytest.mark.parametrize("end", ["fewer cases than a window", "a failing plan", "stop"])
def test_the_first_wave_wait_ends_when_the_head_start_does(end: str) -> None:
    runtime, budget = Runtime(), Budget()
    gate = threading.Event()

    def planner(stopped: Any) -> list[SuitePlan]:
        if end == "a failing plan":
            raise RuntimeError("no such suite")
        if end == "stop":
            gate.wait(5)
        return plan(runtime, n=1)

    head = HeadStart(planner, budget).start()
    try:
        if end == "stop":
            threading.Timer(0.05, head.stop).start()
        started = time.monotonic()
        assert head.wait_first_wave(5) is True
        assert time.monotonic() - started < 2
    finally:
        gate.set()
        runtime.pipe.release.set()
        head.stop()


def test_cases_go_out_a_slots_worth_at_a_time_one_retriever_per_call() -> None:
    runtime, budget = Runtime(), Budget()
    runtime.pipe.release.set()  # every answer is in at once
    cases = tuple(PlannedCase(system, f"q{i}", 0, f"s.yaml::{system}::q{i}")
                  for system in ("bm25", "dense") for i in range(3))
    head = HeadStart(lambda stopped: [SuitePlan(runtime, cases)], budget).start()  # type: ignore[arg-type]
    wait_until(lambda: not head.running)
    # in collection order, in slots' worths of 2 (concurrency), a retriever per call
    assert runtime.asked == [(c.system, c.case_id, 0) for c in cases]
    assert runtime.calls == [2, 1, 1, 2]
    assert head.submitted == 6 and head.error is None


def test_the_suites_it_leads_are_announced_and_each_dropped_once_answered() -> None:
    """Workers wait for the head start's claims only in the suites it will still answer
    (budget/exchange.py parks them): all of them once planned, none once done."""
    first, second = Runtime(), Runtime()
    second.suite_id = "t.yaml"  # type: ignore[misc]
    for runtime in (first, second):
        runtime.pipe.release.set()
    cases = plan(first)[0].cases
    budget = Budget()
    head = HeadStart(lambda stopped: [SuitePlan(first, cases), SuitePlan(second, cases)],  # type: ignore[arg-type]
                     budget).start()
    wait_until(lambda: not head.running)
    assert head.error is None
    assert budget.led == [["s.yaml", "t.yaml"], ["t.yaml"], []]


class GrantingBudget(Budget):
    """The run budget's totals as the head start reads them: ``granted`` requests of a pool
    of ``concurrency`` slots."""

    def __init__(self, concurrency: int = 100) -> None:
        super().__init__()
        self.granted = 0
        self.concurrency = concurrency

    def totals(self) -> dict[str, Any]:
        return {"pools": {"llm": {"requests": self.granted, "concurrency": self.concurrency,
                                  "in_flight": self.granted}}}


@pytest.mark.parametrize("full", ["every case granted", "a pool full"])
def test_the_first_wave_wait_lasts_until_its_requests_are_granted(
        full: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Submitted is not sent: the workers start once the first window's requests have their
    slots (each case one, or a pool every slot), not while they still go out. The wait's
    bound for the sending (SEND_WAIT) is set far off here, so that only the grants can end
    it (test_the_wait_for_the_first_requests_is_bounded checks the bound)."""
    import pytest_ragbench.execution.headstart as headstart

    monkeypatch.setattr(headstart, "SEND_WAIT", 30.0)
    runtime = Runtime()
    budget = GrantingBudget(concurrency=100 if full == "every case granted" else 3)
    clock = StepClock()
    head = stepped(lambda stopped: plan(runtime), budget, clock)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (head.wait_first_wave(5), done.set()))
    try:
        waiter.start()
        wait_until(lambda: len(runtime.asked) == 2 * Prefetcher.concurrency)
        # the window is submitted, none of its requests granted: the wait looks, and goes on
        clock.step(3)
        assert not done.is_set()
        budget.granted = 2
        clock.step(3)
        assert not done.is_set()
        budget.granted = 4 if full == "every case granted" else 3
        clock.step(1)
        assert done.wait(5)
        assert clock.now < 1  # by the grants: the wait's own bounds are 5 s and 30 s off
    finally:
        clock.run()
        runtime.pipe.release.set()
        head.stop()
        waiter.join(5)


def test_cases_answered_from_the_cache_are_not_waited_for() -> None:
    """A warm response cache answers without a slot: nothing is left to go out."""

    class Cached(Runtime):
        def prefetch_answers(self, name: str, cases: Any) -> list[Any]:
            keys = super().prefetch_answers(name, cases)
            self.pipe.prefetcher.pending -= len(keys)  # done at once
            return keys

    runtime = Cached()
    clock = StepClock()
    clock.run()
    head = stepped(lambda stopped: plan(runtime), GrantingBudget(), clock)
    try:
        assert head.wait_first_wave(5) is True
        assert clock.polls == 0  # nothing to wait for, not SEND_WAIT (0.25 s)
        assert len(runtime.asked) >= 2 * Prefetcher.concurrency
    finally:
        runtime.pipe.release.set()
        head.stop()


def test_the_wait_for_the_first_requests_is_bounded() -> None:
    from pytest_ragbench.execution.headstart import SEND_POLL, SEND_WAIT

    runtime = Runtime()
    clock = StepClock()
    clock.run()
    head = stepped(lambda stopped: plan(runtime), GrantingBudget(), clock)
    try:
        wait_until(lambda: runtime.asked)
        assert head.wait_first_wave(5) is True  # nothing is ever granted (a stuck endpoint)
        assert SEND_WAIT <= clock.now < SEND_WAIT + 2 * SEND_POLL
    finally:
        runtime.pipe.release.set()
        head.stop()


def test_the_last_rounds_of_cases_it_answers_go_to_one_worker() -> None:
    """The workers' scheduler deals the last cases to one worker (scheduling.deal's tail):
    two rounds of the last suite's slots, at most half the cases, and only cases the head
    start answers, while it runs."""
    runtime, budget = Runtime(), Budget()
    cases = plan(runtime, 20)[0].cases
    ids = [c.nodeid for c in cases]
    head = HeadStart(lambda stopped: [SuitePlan(runtime, cases, slots=3)], budget)  # type: ignore[arg-type]
    assert head.tail(ids) == 0  # nothing planned yet
    head.start()
    try:
        wait_until(lambda: runtime.asked)
        assert head.tail(ids) == 6  # 2 rounds x 3 slots
        assert head.tail(ids[:10]) == 5  # half the cases at most
        assert head.tail([*ids, "s.yaml::bm25::other"]) == 0  # the last one is not its own
        assert head.tail([]) == 0
    finally:
        runtime.pipe.release.set()
        head.stop()
    assert head.tail(ids) == 0  # stopped: the workers answer their own cases


def test_no_tail_for_a_suite_its_pipeline_does_not_answer() -> None:
    runtime, budget = Runtime(), Budget()
    cases = plan(runtime, 20)[0].cases
    head = HeadStart(lambda stopped: [SuitePlan(runtime, cases, slots=0)], budget).start()  # type: ignore[arg-type]
    try:
        wait_until(lambda: runtime.asked)
        assert head.tail([c.nodeid for c in cases]) == 0
    finally:
        runtime.pipe.release.set()
        head.stop()


def test_the_tail_is_that_of_the_suite_collected_last() -> None:
    """Its rounds are those of the last case's suite, whatever order the head start answers
    the suites in; a last suite it leaves to the workers has none."""
    answered, left = Runtime(), Runtime()
    answered_cases = plan(answered, 20)[0].cases
    left_cases = tuple(PlannedCase("bm25", f"q{i}", 0, f"t.yaml::bm25::q{i}") for i in range(20))
    head = HeadStart(lambda stopped: [SuitePlan(left, left_cases, slots=0),  # type: ignore[arg-type]
                                      SuitePlan(answered, answered_cases, slots=3)],  # type: ignore[arg-type]
                     Budget()).start()
    try:
        wait_until(lambda: left.asked)  # (the stubs answer in the plans' order)
        ids = [c.nodeid for c in answered_cases]
        others = [c.nodeid for c in left_cases]
        assert head.tail([*others, *ids]) == 6
        assert head.tail([*ids, *others]) == 0
    finally:
        for runtime in (left, answered):
            runtime.pipe.release.set()
        head.stop()
