"""Per-case time limits of retrievers and pipelines (``case_timeout``) in the runtime.

A case past its limit is an error naming the component, the stage and the limit; the
component is called once for it (not again by each later case's look-ahead); the other cases
go on. No pytest run inside: tests/test_budget_wired.py runs the limits in one.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from virtual_clock import VirtualClockLoop

from pytest_ragbench.execution.runtime import CaseClock, CloseWarning, SuiteRuntime
from pytest_ragbench.llm import deadline
from pytest_ragbench.registry import BuildContext, Registry
from pytest_ragbench.suite.loader import load_suite

#: Far above what a fast case takes (10 ms idle, 32 ms at most under a load of 10 on 2 cores).
#: No test waits for it: see StallClock.
LIMIT = 0.2
#: How long a slow call waits at most (it is released when its test ends).
SLOW = 30.0
N_CASES = 8
SLOW_CASE = "q3"

ITEMS = "".join(
    f"    - {{_id: q{i}, text: '{'slow' if f'q{i}' == SLOW_CASE else 'fast'} question {i}', "
    f"relevant: {{d{i}: 1}}, reference_answer: 'document {i}'}}\n" for i in range(N_CASES))

# An answer metric (token_f1, answered by the offline extractive LLM) makes the runtime look
# ahead: each case retrieves and starts the answers of the cases after it.
RETRIEVER_SUITE = textwrap.dedent("""\
    name: limits
    dataset:
      corpus: corpus.jsonl
      items:
    {items}retrievers:
      slow: {{case_timeout: {limit}}}
    llm: {{type: extractive}}
    metrics: [recall@10, token_f1]
""").format(items=ITEMS, limit=LIMIT)

PIPELINE_SUITE = textwrap.dedent("""\
    name: app_limits
    dataset:
      corpus: corpus.jsonl
      items:
    {items}pipelines:
      app: {{case_timeout: {limit}}}
    metrics: [recall@10, token_f1]
""").format(items=ITEMS, limit=LIMIT)


class Release(threading.Event):
    """Set when the test ends: a slow call left running in the background returns. A slow
    synchronous call waits for it in :meth:`block`, which :class:`StallClock` sees."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked = threading.Semaphore(0)

    def block(self) -> None:
        if not self.is_set():
            self.blocked.release()
        self.wait(SLOW)


class StallClock(CaseClock):
    """The runtime's clock in these tests. A synchronous call that blocks until the test's end
    (:meth:`Release.block`) can only end past its limit: the runtime's wait for it ends then,
    as the limit's passing would end it, and a fast call's wait ends with the call, as
    before. Async components run on a virtual clock (tests/virtual_clock.py), where a slow
    one's limit passes at once."""

    def __init__(self, release: Release) -> None:
        self.release = release

    def wait(self, done: threading.Event, timeout: float) -> bool:
        given_up = time.monotonic() + SLOW
        while not done.wait(0.001):
            if self.release.blocked.acquire(blocking=False) or time.monotonic() > given_up:
                return False
        return True

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return VirtualClockLoop()


class Calls:
    """The query texts a component was called with, in order (from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.texts: list[str] = []

    def add(self, text: str) -> None:
        with self._lock:
            self.texts.append(text)

    def of(self, case_id: str) -> int:
        return sum(1 for t in self.texts if t.endswith(f" {case_id[1:]}"))


class SlowRetriever:
    """Returns the query's own document first; on the slow query it waits until ``release``
    is set (at most ``SLOW`` s)."""

    def __init__(self, calls: Calls, mode: str, release: Release) -> None:
        self.calls, self.mode, self.release = calls, mode, release

    def index(self, corpus: Sequence[Any]) -> None:
        self.ids = [d.id for d in corpus]

    def _hits(self, text: str) -> list[tuple[str, float]]:
        own = f"d{text.rsplit(' ', 1)[1]}"
        return [(own, 2.0), *((d, 1.0) for d in self.ids if d != own)][:10]

    def retrieve(self, text: str, k: int) -> Any:
        self.calls.add(text)
        if self.mode == "async":
            return self._aretrieve(text)
        if text.startswith("slow"):
            self.release.block()
        return self._hits(text)

    async def _aretrieve(self, text: str) -> list[tuple[str, float]]:
        if text.startswith("slow"):
            await _released(self.release)
        return self._hits(text)


async def _released(release: threading.Event) -> None:
    deadline = time.monotonic() + SLOW
    while not release.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


class SlowApp:
    """A RAG application under test that waits on the slow query as SlowRetriever does."""

    def __init__(self, calls: Calls, mode: str, release: Release) -> None:
        self.calls, self.mode, self.release = calls, mode, release

    def _output(self, text: str) -> dict[str, Any]:
        n = text.rsplit(" ", 1)[1]
        return {"answer": f"document {n}", "contexts": [{"id": f"d{n}"}]}

    def answer(self, query: Any) -> Any:
        self.calls.add(query.text)
        if self.mode.startswith("async"):
            return self._aanswer(query.text)
        if query.text.startswith("slow"):
            self.release.block()
        return self._output(query.text)

    async def _aanswer(self, text: str) -> dict[str, Any]:
        if text.startswith("slow"):
            try:
                await _released(self.release)
            except asyncio.CancelledError:
                if self.mode != "async-ignoring-cancel":
                    raise
                await asyncio.sleep(LIMIT)  # a bare ``except:`` that answers anyway
        return self._output(text)


@pytest.fixture
def release() -> Iterator[Release]:
    event = Release()
    yield event
    event.set()


@pytest.fixture
def runtime_of(tmp_path: Path, release: Release) -> Iterator[Callable[..., SuiteRuntime]]:
    rows = [{"_id": f"d{i}", "text": f"document {i}"} for i in range(N_CASES)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    made: list[SuiteRuntime] = []

    def make(text: str, kind: str, name: str, factory: Callable[[], Any],
             clock: CaseClock | None = None) -> SuiteRuntime:
        path = tmp_path / "suite.yaml"
        path.write_text(text, encoding="utf-8")
        registry = Registry(use_entry_points=False)
        registry.add(kind, name, factory, origin="the test")
        runtime = SuiteRuntime(load_suite(path, None), "suite.yaml", registry, BuildContext(),
                               clock=clock or StallClock(release))
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


def _run_all(run_one: Callable[[str, list[str]], dict[str, Any]]
             ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``run_one(case, the cases after it)`` for every case in order, as collected items run
    (each looking ahead at the ones after it); the slow case's record, and the others' by
    case id."""
    ids = [f"q{i}" for i in range(N_CASES)]
    by_id = {}
    for i, cid in enumerate(ids):
        rec = run_one(cid, ids[i + 1:])
        by_id[rec["case_id"]] = rec
    return by_id.pop(SLOW_CASE), by_id


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_retrieval_past_its_limit_is_one_call_and_one_error(runtime_of, release,
                                                              mode: str) -> None:
    calls = Calls()
    runtime = runtime_of(RETRIEVER_SUITE, "retriever", "slow",
                         lambda: SlowRetriever(calls, mode, release))
    slow, by_id = _run_all(lambda cid, rest: runtime.run_case(
        "slow", cid, upcoming=lambda: rest, upcoming_runs=lambda: [(c, 0) for c in rest]))
    assert slow["status"] == "error"
    assert slow["error"]["stage"] == "retrieve" and slow["error"]["type"] == "TimeoutError"
    assert slow["error"]["message"] == (
        f"retriever 'slow' timed out: the retrieval took longer than its case_timeout {LIMIT:g} s")
    # every other case retrieved and answered
    assert all(r["status"] == "ok" and r["metrics"]["token_f1"] is not None
               for r in by_id.values()), by_id
    # the slow query was asked once: the cases before it looked ahead at it, and neither they
    # nor the case itself tried again after the first timeout
    assert calls.of(SLOW_CASE) == 1, calls.texts
    assert all(calls.of(cid) == 1 for cid in by_id), calls.texts
    # The case run again later in the process (a plugin rerunning failures) retrieves again:
    # a look-ahead's failure stands for the runs it was found for, not for good.
    release.set()
    again = runtime.run_case("slow", SLOW_CASE, upcoming=lambda: [],
                             upcoming_runs=lambda: [])
    assert again["status"] == "ok" and calls.of(SLOW_CASE) == 2, again.get("error")


class BatchingRetriever(SlowRetriever):
    """Also answers many queries in one call, which one case's limit could not bound."""

    def __init__(self, calls: Calls, mode: str, release: Release) -> None:
        super().__init__(calls, mode, release)
        self.batches = 0

    def retrieve_many(self, texts: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        self.batches += 1
        return [self._hits(t) for t in texts]


def test_a_time_limited_retriever_is_never_asked_for_a_batch(runtime_of, release) -> None:
    calls = Calls()
    made: list[BatchingRetriever] = []

    def factory() -> BatchingRetriever:
        made.append(BatchingRetriever(calls, "sync", release))
        return made[-1]

    runtime = runtime_of(RETRIEVER_SUITE, "retriever", "slow", factory)
    slow, by_id = _run_all(lambda cid, rest: runtime.run_case(
        "slow", cid, upcoming=lambda: rest, upcoming_runs=lambda: [(c, 0) for c in rest]))
    assert slow["error"]["type"] == "TimeoutError"
    assert all(r["status"] == "ok" for r in by_id.values())
    assert [r.batches for r in made] == [0]


class QueuedRetriever(SlowRetriever):
    """Async; on the slow query its embedder waits for one of the run's slots (held by other
    workers' requests) half as long again as the limit, then answers at once."""

    async def _aretrieve(self, text: str) -> list[tuple[str, float]]:
        if text.startswith("slow"):
            with deadline.call():
                with deadline.waiting_for_slot():
                    await asyncio.sleep(1.5 * LIMIT)
                await asyncio.sleep(0.01)
        return self._hits(text)


def test_a_retrievals_wait_for_one_of_the_runs_slots_is_not_counted(runtime_of,
                                                                    release) -> None:
    """A dense retriever's openai embedder draws from the run's budget: how long its request
    queues depends on how many workers share the slots, not on the retrieval."""
    calls = Calls()
    runtime = runtime_of(RETRIEVER_SUITE, "retriever", "slow",
                         lambda: QueuedRetriever(calls, "async", release))
    slow, by_id = _run_all(lambda cid, rest: runtime.run_case(
        "slow", cid, upcoming=lambda: rest, upcoming_runs=lambda: [(c, 0) for c in rest]))
    assert slow["status"] == "ok", slow.get("error")
    assert all(r["status"] == "ok" for r in by_id.values())


# async-ignoring-cancel: its late answer was taken, and the case passed past its limit
@pytest.mark.parametrize("mode", ["sync", "async", "async-ignoring-cancel"])
def test_an_answer_past_its_limit_is_an_error_naming_the_pipeline(runtime_of, release,
                                                                  mode: str) -> None:
    calls = Calls()
    runtime = runtime_of(PIPELINE_SUITE, "pipeline", "app",
                         lambda: SlowApp(calls, mode, release))
    slow, by_id = _run_all(lambda cid, rest: runtime.run_pipeline_case(
        "app", cid, upcoming_runs=lambda: [(c, 0) for c in rest]))
    assert slow["status"] == "error"
    assert slow["error"]["stage"] == "answer" and slow["error"]["type"] == "TimeoutError"
    assert slow["error"]["message"] == (
        f"pipeline 'app' timed out: the answer took longer than its case_timeout {LIMIT:g} s")
    assert all(r["status"] == "ok" and r["answer"] == f"document {r['case_id'][1:]}"
               for r in by_id.values()), by_id


class WaitingClock(CaseClock):
    """The real clock, whose wait for a call first waits as a real one would, on a lock that
    is free (a timeout a lock cannot wait for raises as in :meth:`threading.Event.wait`),
    then lets the slow call return."""

    def __init__(self, release: Release) -> None:
        self.release = release

    def wait(self, done: threading.Event, timeout: float) -> bool:
        threading.Lock().acquire(timeout=timeout)
        self.release.set()
        return super().wait(done, timeout)


def test_a_limit_beyond_what_the_platform_can_wait_is_no_limit(runtime_of, release) -> None:
    """``done.wait(1e300)`` raised OverflowError, which the case blamed on the retriever (a
    slow synchronous call met it: an async one hands back its coroutine at once)."""
    calls = Calls()
    text = RETRIEVER_SUITE.replace(f"case_timeout: {LIMIT}", "case_timeout: 1.0e+300")
    runtime = runtime_of(text, "retriever", "slow",
                         lambda: SlowRetriever(calls, "sync", release), WaitingClock(release))
    rec = runtime.run_case("slow", SLOW_CASE)
    assert rec["status"] == "ok", rec.get("error")


def test_a_rerun_retrieves_afresh_while_other_runs_wait(runtime_of, release) -> None:
    """A failed look-ahead stands for one run of its case: run 0 run again (a plugin rerunning
    failures) while run 1 still waits gets a new retrieval, not run 0's old error."""
    calls = Calls()
    text = RETRIEVER_SUITE.replace("metrics:", "runs: 2\nmetrics:")
    runtime = runtime_of(text, "retriever", "slow",
                         lambda: SlowRetriever(calls, "sync", release))

    def run0() -> dict[str, Any]:
        return runtime.run_case("slow", SLOW_CASE, 0, upcoming=lambda: [],
                                upcoming_runs=lambda: [(SLOW_CASE, 1)])

    assert run0()["error"]["type"] == "TimeoutError"
    release.set()
    again = run0()
    assert again["status"] == "ok", again.get("error")
    # run 1 keeps the error its own look-ahead met
    assert runtime.run_case("slow", SLOW_CASE, 1)["error"]["type"] == "TimeoutError"


class SteppedClock(StallClock):
    """StallClock whose monotonic seconds the test moves on by hand."""

    def __init__(self, release: Release) -> None:
        super().__init__(release)
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class BlockThenAwait(SlowRetriever):
    """On the slow query its synchronous part takes most of the limit, then it hands back an
    awaitable that needs half the limit more."""

    clock: SteppedClock

    def retrieve(self, text: str, k: int) -> Any:
        self.calls.add(text)
        if not text.startswith("slow"):
            return self._hits(text)
        self.clock.now += 0.75 * LIMIT

        async def rest() -> list[tuple[str, float]]:
            await asyncio.sleep(0.5 * LIMIT)
            return self._hits(text)

        return rest()


def test_an_awaitable_handed_back_late_gets_only_what_is_left_of_the_limit(
        runtime_of, release) -> None:
    clock = SteppedClock(release)
    retriever = BlockThenAwait(Calls(), "sync", release)
    retriever.clock = clock
    runtime = runtime_of(RETRIEVER_SUITE, "retriever", "slow", lambda: retriever, clock=clock)
    rec = runtime.run_case("slow", SLOW_CASE)
    assert rec["status"] == "error" and rec["error"]["type"] == "TimeoutError", rec["error"]
    assert runtime.run_case("slow", "q1")["status"] == "ok"


class Unclosable:
    """An application whose ``aclose()`` never ends, or whose ``close()`` raises."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def answer(self, query: Any) -> dict[str, Any]:
        return {"answer": "document 0", "contexts": [{"id": "d0"}]}

    def __getattr__(self, name: str) -> Any:
        if name == "aclose" and self.mode == "hangs":
            return lambda: asyncio.Event().wait()
        if name == "close" and self.mode == "raises":
            def close() -> None:
                raise RuntimeError("flush failed")
            return close
        raise AttributeError(name)


@pytest.mark.parametrize(("mode", "message"), [
    ("hangs", r"pipeline 'app': aclose\(\) did not finish within 30 s; left behind"),
    ("raises", r"pipeline 'app': close\(\) raised RuntimeError: flush failed"),
])
def test_a_pipeline_whose_close_hangs_or_raises_is_a_warning_naming_it(
        runtime_of, mode: str, message: str) -> None:
    """An ``aclose()`` that never ended hung the run after its last item (no summary, the
    process never exited); a ``close()`` that raised was swallowed without a word."""
    runtime = runtime_of(PIPELINE_SUITE, "pipeline", "app", lambda: Unclosable(mode))
    assert runtime.run_pipeline_case("app", "q0")["status"] == "ok"
    with pytest.warns(CloseWarning, match=message):
        runtime.close()
