"""A pipeline with a ``ragbench_concurrency`` above 1 is asked for that many cases at once, ahead of
their items (pytest_ragbench.execution.asking), in the runtime. No pytest run inside:
tests/test_pipelines_e2e.py asks an http service through one."""

from __future__ import annotations

import asyncio
import contextvars
import json
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_ragbench.execution.runtime import SuiteRuntime
from pytest_ragbench.registry import BuildContext, Registry
from pytest_ragbench.suite.loader import load_suite

N_CASES = 8
#: Long enough for any wait below never to run out on a loaded machine; no test waits for it.
PATIENCE = 10.0

SUITE = textwrap.dedent("""\
    name: asking
    dataset:
      corpus: corpus.jsonl
      items:
    {items}pipelines:
      app: {{{options}}}
    metrics: [recall@10, token_f1]
""")

#: What a test sets in its own context: a component sees it as on the caller's thread.
TRACE: contextvars.ContextVar[str] = contextvars.ContextVar("trace", default="unset")


def _suite(options: str = "") -> str:
    items = "".join(f"    - {{_id: q{i}, text: 'question {i}', relevant: {{d{i}: 1}}, "
                    f"reference_answer: 'document {i}'}}\n" for i in range(N_CASES))
    return SUITE.format(items=items, options=options)


class InFlight:
    """How many answers are running at once, at most, and the loops and threads they ran on;
    the first ``gather`` answers wait (at most PATIENCE) until that many are in flight, which
    only a pipeline asked for them at once gets past in time."""

    def __init__(self, gather: int) -> None:
        self.gather = gather
        self.lock = threading.Lock()
        self.now = self.most = self.started = 0
        self.all_in = threading.Event()
        self.loops: set[int] = set()
        self.threads: set[str] = set()
        self.traces: set[str] = set()
        self.cancelled = 0
        self.release = threading.Event()  # set when the test ends: a hung call returns
        self.hung_in_daemon: bool | None = None

    def enter(self) -> bool:
        """Count an answer in; whether it is one of the first ``gather``."""
        with self.lock:
            self.now += 1
            self.started += 1
            self.most = max(self.most, self.now)
            if self.now >= self.gather:
                self.all_in.set()
            self.threads.add(threading.current_thread().name)
            self.traces.add(TRACE.get())
            return self.started <= self.gather

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def _output(query: Any) -> dict[str, Any]:
    n = query.id[1:]
    if query.id == "q5":
        raise ValueError("no answer for q5")
    return {"answer": f"document {n}", "contexts": [{"id": f"d{n}"}]}


class AsyncApp:
    """An async application that takes ``concurrency`` questions at once."""

    def __init__(self, seen: InFlight, concurrency: Any, hangs: str = "") -> None:
        self.seen, self.ragbench_concurrency, self.hangs = seen, concurrency, hangs
        self.closed_on: int | None = None

    async def answer(self, query: Any) -> dict[str, Any]:
        self.seen.loops.add(id(asyncio.get_running_loop()))
        first = self.seen.enter()
        try:
            if first:
                await asyncio.wait_for(asyncio.to_thread(self.seen.all_in.wait, PATIENCE),
                                       PATIENCE)
            if query.id == self.hangs:
                await asyncio.sleep(PATIENCE)  # past its case_timeout
            return _output(query)
        except asyncio.CancelledError:
            self.seen.cancelled += 1
            raise
        finally:
            self.seen.leave()

    async def aclose(self) -> None:
        self.closed_on = id(asyncio.get_running_loop())


class SyncApp:
    """A synchronous application, safe to call from several threads."""

    def __init__(self, seen: InFlight, concurrency: Any, hangs: str = "") -> None:
        self.seen, self.ragbench_concurrency, self.hangs = seen, concurrency, hangs

    def answer(self, query: Any) -> dict[str, Any]:
        first = self.seen.enter()
        try:
            if first:
                self.seen.all_in.wait(PATIENCE)
            if query.id == self.hangs:
                self.seen.hung_in_daemon = threading.current_thread().daemon
                self.seen.release.wait(PATIENCE)  # past its case_timeout
            return _output(query)
        finally:
            self.seen.leave()


@pytest.fixture
def runtime_of(tmp_path: Path) -> Iterator[Callable[..., SuiteRuntime]]:
    rows = [{"_id": f"d{i}", "text": f"document {i}"} for i in range(N_CASES)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    made: list[SuiteRuntime] = []

    def make(factory: Callable[[], Any], options: str = "") -> SuiteRuntime:
        path = tmp_path / "suite.yaml"
        path.write_text(_suite(options), encoding="utf-8")
        registry = Registry(use_entry_points=False)
        registry.add("pipeline", "app", factory, origin="the test")
        runtime = SuiteRuntime(load_suite(path, None), "suite.yaml", registry, BuildContext())
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


def _run_all(runtime: SuiteRuntime, last: int = N_CASES) -> dict[str, dict[str, Any]]:
    """Each case in order, as collected items run, each looking ahead at the ones after it."""
    ids = [f"q{i}" for i in range(N_CASES)]
    by_id = {}
    for i, cid in enumerate(ids[:last]):
        rest = ids[i + 1:]
        rec = runtime.run_pipeline_case("app", cid,
                                        upcoming_runs=lambda rest=rest: [(c, 0) for c in rest])
        by_id[cid] = rec
    return by_id


def _scores(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {cid: (r["status"], r.get("answer"), r["metrics"], (r.get("error") or {}).get("message"))
            for cid, r in records.items()}


@pytest.mark.parametrize("app", [AsyncApp, SyncApp])
def test_a_pipeline_is_asked_for_its_concurrency_of_cases_at_once(runtime_of, app) -> None:
    """Asked one case at a time, the first three answers, each waiting for the others, ran
    out of patience; the records are those of a pipeline asked one at a time."""
    seen = InFlight(gather=3)
    TRACE.set("the caller's")
    records = _run_all(runtime_of(lambda: app(seen, 3)))
    assert seen.all_in.is_set() and seen.most == 3, (seen.most, seen.started)
    assert seen.started == N_CASES  # each case asked once
    assert seen.traces == {"the caller's"}
    if app is SyncApp:  # in threads of its own, never the items' thread
        assert threading.current_thread().name not in seen.threads
    one_at_a_time = InFlight(gather=1)
    alone = _run_all(runtime_of(lambda: app(one_at_a_time, 1)))
    assert one_at_a_time.most == 1
    assert _scores(records) == _scores(alone)
    assert records["q5"]["status"] == "error" and records["q5"]["error"] == {
        "stage": "answer", "type": "ValueError",
        "message": "pipeline 'app' raised ValueError: no answer for q5"}
    assert [r["status"] for c, r in records.items() if c != "q5"] == ["ok"] * (N_CASES - 1)
    assert all(r["latency_ms"] > 0 for r in records.values() if r["status"] == "ok")


@pytest.mark.parametrize("app", [AsyncApp, SyncApp])
def test_a_case_past_its_limit_is_its_own_error_and_the_loop_is_the_answers_to_the_end(
        runtime_of, app) -> None:
    """A synchronous call past its limit is left to finish in its thread, which does not
    hold the process at its exit."""
    seen = InFlight(gather=2)
    apps: list[Any] = []

    def build() -> Any:
        apps.append(app(seen, 4, hangs="q7"))
        return apps[-1]

    runtime = runtime_of(build, "case_timeout: 0.5")
    try:
        records = _run_all(runtime)
    finally:
        seen.release.set()
    assert records["q7"]["error"] == {
        "stage": "answer", "type": "TimeoutError",
        "message": "pipeline 'app' timed out: the answer took longer than its case_timeout 0.5 s"}
    assert records["q6"]["status"] == "ok" and records["q5"]["status"] == "error"
    runtime.close()
    if app is AsyncApp:
        # every answer and aclose() on one loop: what the app opened on it is still its own
        assert len(seen.loops) == 1 and apps[0].closed_on in seen.loops
    else:
        assert seen.hung_in_daemon is True


def test_cases_asked_ahead_of_a_run_that_stopped_are_cancelled_at_its_end(runtime_of) -> None:
    seen = InFlight(gather=4)
    blocked = threading.Event()

    class Stuck(AsyncApp):
        async def answer(self, query: Any) -> dict[str, Any]:
            if query.id != "q0":
                self.seen.enter()
                try:
                    blocked.set()
                    await asyncio.sleep(PATIENCE)
                except asyncio.CancelledError:
                    self.seen.cancelled += 1
                    raise
            return _output(query)

    runtime = runtime_of(lambda: Stuck(seen, 4))
    assert _run_all(runtime, last=1)["q0"]["status"] == "ok"  # then -x stopped the run
    assert blocked.wait(PATIENCE)
    runtime.close()  # does not wait out the answers nobody will report
    assert seen.cancelled == seen.started == 3


@pytest.mark.parametrize("value", [0, "8", 2.5, True])
def test_a_concurrency_that_is_not_a_whole_number_above_zero_is_a_build_error(
        runtime_of, value: Any) -> None:
    runtime = runtime_of(lambda: AsyncApp(InFlight(gather=1), value))
    rec = runtime.run_pipeline_case("app", "q0")
    assert rec["status"] == "error"
    assert rec["error"]["message"] == (
        "pipeline 'app' (app) could not be built: pipeline 'app' (app): its "
        "ragbench_concurrency (the cases it is asked for at once) must be a whole number >= 1, "
        f"got {value!r}")


class Stopping:
    """An async application (``concurrency`` 1) whose answer to q2 raises ``stop``."""

    def __init__(self, stop: type[BaseException]) -> None:
        self.stop = stop

    async def answer(self, query: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        if query.id == "q2":
            raise self.stop(5)
        return _output(query)


def _in_time(call: Callable[[], Any]) -> Any:
    """``call()``'s result or exception, or a test failure when it has not returned within
    PATIENCE (it would have waited forever)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(PATIENCE)
    assert not thread.is_alive(), "the call never returned"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.mark.parametrize("stop", [SystemExit, KeyboardInterrupt])
def test_a_system_exit_or_interrupt_on_the_loop_thread_reaches_the_caller(
        tmp_path, stop) -> None:
    """A suite of two pipelines, the first asked for three cases at once (the suite's event
    loop then runs in a thread of its own): the second's async answer raising SystemExit
    (a case error at concurrency 1) or KeyboardInterrupt (which stops the run) stopped
    that loop instead, and the run waited for its answer forever."""
    rows = [{"_id": f"d{i}", "text": f"document {i}"} for i in range(N_CASES)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "suite.yaml").write_text(
        _suite("type: many").replace("metrics:", "  other: {type: stopping}\nmetrics:"),
        encoding="utf-8")
    registry = Registry(use_entry_points=False)
    registry.add("pipeline", "many", lambda: SyncApp(InFlight(gather=1), 3), origin="the test")
    registry.add("pipeline", "stopping", lambda: Stopping(stop), origin="the test")
    runtime = SuiteRuntime(load_suite(tmp_path / "suite.yaml", None), "suite.yaml", registry,
                           BuildContext())
    try:
        assert runtime.run_pipeline_case("app", "q0")["status"] == "ok"
        assert _in_time(lambda: runtime.run_pipeline_case("other", "q1"))["status"] == "ok"
        if stop is SystemExit:
            rec = _in_time(lambda: runtime.run_pipeline_case("other", "q2"))
            assert rec["error"] == {"stage": "answer", "type": "SystemExit",
                                    "message": "pipeline 'other' raised SystemExit: 5"}
        else:
            with pytest.raises(KeyboardInterrupt):
                _in_time(lambda: runtime.run_pipeline_case("other", "q2"))
        # the loop still runs the suite's async calls
        assert _in_time(lambda: runtime.run_pipeline_case("other", "q3"))["status"] == "ok"
    finally:
        runtime.close()


def test_a_query_that_was_running_when_a_worker_died_is_asked_alone(runtime_of,
                                                                     tmp_path) -> None:
    """Under xdist, a worker that died while its look-ahead was in several queries is
    replaced by one told not to look ahead into them (pytest_ragbench.crash_blame). A query
    of a pipeline asked for several cases at once was then asked with others in flight, so
    that the next crash in it named those too: its item was run again, in a new worker each
    time (a query that kills its worker crashed five workers instead of two), until xdist
    ran out of restarts and charged the crash to whatever item was running."""
    from pytest_ragbench.execution.ahead import AheadMarker, read_marker

    marker = tmp_path / "gw0.ahead"
    go = threading.Event()  # the answers asked ahead of q3 wait for it
    seen: dict[str, Any] = {}

    class App:
        ragbench_concurrency = 3

        def answer(self, query: Any) -> dict[str, Any]:
            if query.id in ("q4", "q5"):
                go.wait(PATIENCE)
            if query.id == "q3":
                seen["marker"] = read_marker(marker)
            return _output(query)

    runtime = runtime_of(App)
    runtime.ahead = AheadMarker(marker, skip=["suite.yaml::q3"])
    ids = [f"q{i}" for i in range(N_CASES)]

    def item(i: int) -> dict[str, Any]:
        return runtime.run_pipeline_case(
            "app", ids[i], upcoming_runs=lambda: [(c, 0) for c in ids[i + 1:]])

    assert [item(i)["status"] for i in range(3)] == ["ok"] * 3  # q4 and q5 asked ahead
    answering = threading.Thread(target=lambda: seen.setdefault("q3", item(3)), daemon=True)
    answering.start()
    # asked alone, q3 waits for q4 and q5: they are let go when it has not started by then
    answering.join(0.3)
    go.set()
    answering.join(PATIENCE)
    assert seen["q3"]["status"] == "ok"
    assert seen["marker"] == []  # nothing else in flight: a crash would be q3's own
    assert [item(i)["status"] for i in range(4, N_CASES)] == ["ok", "error", "ok", "ok"]


def test_a_concurrency_that_raises_when_read_is_a_build_error(runtime_of) -> None:
    """An application whose ``concurrency`` is a property that raised (read from a config
    not loaded yet) stopped collection with a traceback naming neither the suite nor the
    pipeline."""

    class Unready(SyncApp):
        @property  # type: ignore[override]
        def ragbench_concurrency(self) -> int:
            raise RuntimeError("config not loaded")

        @ragbench_concurrency.setter
        def ragbench_concurrency(self, value: Any) -> None:
            pass

    runtime = runtime_of(lambda: Unready(InFlight(gather=1), 4))
    rec = runtime.run_pipeline_case("app", "q0")
    assert rec["status"] == "error"
    assert rec["error"]["message"] == (
        "pipeline 'app' (app) could not be built: pipeline 'app' (app): its "
        "ragbench_concurrency (the cases it is asked for at once) could not be read: "
        "RuntimeError: config not loaded")


@pytest.mark.parametrize("concurrency", [1, 3])
def test_an_answer_that_raises_cancelled_error_is_its_cases_error(runtime_of,
                                                                  concurrency) -> None:
    """An application awaiting a shared future another call cancelled (a request it
    coalesced, whose first asker timed out) raised asyncio.CancelledError: its case was a
    setup error 'asyncio.exceptions.CancelledError' naming no pipeline, and asked with
    others at once 'concurrent.futures._base.CancelledError'."""

    class Coalescing(AsyncApp):
        async def answer(self, query: Any) -> dict[str, Any]:
            if query.id == "q2":
                shared = asyncio.get_running_loop().create_future()
                shared.cancel()
                await shared
            return _output(query)

    records = _run_all(runtime_of(lambda: Coalescing(InFlight(gather=1), concurrency)), last=4)
    assert records["q2"]["error"] == {"stage": "answer", "type": "CancelledError",
                                      "message": "pipeline 'app' raised CancelledError"}
    assert [records[c]["status"] for c in ("q0", "q1", "q3")] == ["ok"] * 3
