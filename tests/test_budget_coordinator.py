"""One budget per run, across real processes: a coordinator, worker processes with their own
clients, and a real local HTTP server that counts what really reached it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from virtual_clock import JumpingClock

from pytest_ragbench.budget import (
    Adaptive,
    Coordinator,
    CoordinatorClient,
    CoordinatorError,
    PoolLimits,
)
from pytest_ragbench.budget.core import BudgetCore
from pytest_ragbench.budget.testing import hold_and_wait, pooled_worker
from pytest_ragbench.llm.testing import FakeOpenAIServer, echo_reply

# Not fork: the parent runs server threads, which fork would copy in an undefined state. A fork
# server forks each worker from a clean single-threaded process that imported the budget code
# once (set_forkserver_preload below), instead of one fresh interpreter importing it per worker.
START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
CTX = multiprocessing.get_context(START)


@pytest.fixture
def coordinator() -> Iterator[Coordinator]:
    with Coordinator() as running:
        yield running


@dataclass
class WorkerPool:
    """Worker processes spawned once for this module; each job starts from a fresh client."""

    processes: list[Any]
    jobs: list[Any]
    gos: list[Any]
    results: Any

    def next(self, expected: int, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.results.get(timeout=0.2)
            except queue.Empty:
                pass
            dead = [p for p in self.processes[:expected] if not p.is_alive()]
            if dead:
                raise RuntimeError(f"worker process exited with code {dead[0].exitcode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no message from a worker within {timeout:g} s")


@pytest.fixture(scope="module")
def workers() -> Iterator[WorkerPool]:
    if START == "forkserver":
        # the workers' target lives there, so a forked worker imports nothing more
        CTX.set_forkserver_preload(["pytest_ragbench.budget.testing"])
    results = CTX.Queue()
    jobs = [CTX.Queue() for _ in range(POOL_SIZE)]
    gos = [CTX.Queue() for _ in range(POOL_SIZE)]
    processes = [CTX.Process(target=pooled_worker, args=(jobs[i], gos[i], results), daemon=True)
                 for i in range(POOL_SIZE)]
    for process in processes:
        process.start()
    yield WorkerPool(processes, jobs, gos, results)
    # Every job has reported: nothing is left to finish, and a clean interpreter exit in each
    # process would only add to the wait.
    for process in processes:
        process.kill()
    for process in processes:
        process.join(timeout=10)


POOL_SIZE = 4  # the most workers any test here runs at once


def run_workers(workers: WorkerPool, coordinator: Coordinator, server: FakeOpenAIServer,
                count: int, **spec: Any) -> list[dict[str, Any]]:
    """Run one job on each of ``count`` workers to completion; return their reports."""
    host, port = coordinator.address
    for i in range(count):
        workers.jobs[i].put({
            "address": f"{host}:{port}", "token": coordinator.token,
            "base_url": server.base_url, "pool": "endpoint", "name": f"gw{i}", **spec,
        })
    # every worker warm before the measured part starts in any of them (as a barrier would)
    readies = [workers.next(count) for _ in range(count)]
    assert all(message.get("ready") for message in readies), readies
    for i in range(count):
        workers.gos[i].put(True)
    reports = [workers.next(count) for _ in range(count)]
    assert [r.get("error") for r in reports] == [None] * count
    return reports


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(start <= t < start + window for t in times) for start in times)


class _Gate:
    """Holds every request a server accepts (its reply function blocks) until :meth:`run`
    lets one through, once what the coordinator granted has all reached the server and what
    the server answered has all been released: the endpoint then counts in flight exactly
    what the run's budget does, however late a loaded machine runs the workers."""

    def __init__(self) -> None:
        self._passes = threading.Semaphore(0)

    def reply(self, messages: Any) -> str:
        if not self._passes.acquire(timeout=60):
            raise RuntimeError("the gate let nothing through for 60 s")
        return echo_reply(messages)

    def run(self, server: FakeOpenAIServer, client: CoordinatorClient,
            stop: threading.Event) -> None:
        def answered() -> int:  # accepted requests that have left the server
            return len(server.arrival_times()) - server.in_flight - server.refused

        def limit(pool: dict[str, Any]) -> int:
            return int(pool["adaptive"]["level"] if "adaptive" in pool else pool["concurrency"])

        while not stop.is_set():
            pool = client.totals()["pools"]["endpoint"]
            settled = (pool["requests"] == len(server.arrival_times())  # no grant on its way
                       and pool["in_flight"] == server.in_flight  # nor a reply to a worker
                       and pool["throttled"] == server.refused
                       # nor an acquire to the coordinator, while callers are waiting
                       and (pool["in_flight"] >= limit(pool) or pool["waiting"] == 0))
            if settled and server.in_flight > 0:
                before = answered()
                self._passes.release()
                # until it has left the server, which still counts it
                while answered() <= before and not stop.is_set():
                    time.sleep(0.0005)
            else:
                time.sleep(0.0005)


@contextlib.contextmanager
def _gated_server(client: CoordinatorClient, **options: Any) -> Iterator[FakeOpenAIServer]:
    """A fake endpoint whose requests a :class:`_Gate` answers one at a time."""
    gate = _Gate()
    stop = threading.Event()
    with FakeOpenAIServer(reply=gate.reply, **options) as server:
        answering = threading.Thread(target=gate.run, args=(server, client, stop))
        answering.start()
        try:
            yield server
        finally:
            stop.set()
            answering.join()


def test_processes_sharing_a_coordinator_never_exceed_concurrency(
        coordinator: Coordinator, workers: WorkerPool) -> None:
    client = CoordinatorClient(coordinator.address, coordinator.token)
    client.declare("endpoint", PoolLimits(concurrency=3))
    # the server answers one request at a time, once the run is settled (see _Gate): all
    # the run allows are then in flight at the server, however late a loaded machine sends
    with _gated_server(client) as server:
        # 3 processes x 6 tasks each want 18 requests in flight; the run allows 3
        reports = run_workers(workers, coordinator, server, 3, requests=12, tasks=6)
        assert sum(r["ok"] for r in reports) == 36
        assert server.count("/v1/chat/completions") == 36
        assert server.max_in_flight == 3  # never more, and the limit was really used
    pool = client.totals()["pools"]["endpoint"]
    assert pool["max_in_flight"] == 3
    assert pool["requests"] == 36
    assert pool["in_flight"] == 0
    client.close()


# A test-sized "minute". The windows are checked on the times the coordinator granted the
# requests, on its own clock: a request arrives a little after its grant, and on a loaded
# 2-core machine one window's arrivals came over 100 ms late while the next window's were on
# time, so windows counted from arrivals held more than the rate now and then. That clock is
# a JumpingClock (tests/virtual_clock.py): a window passes once every request granted in it
# has been answered and released, with no real waiting.
PERIOD = 0.3


@pytest.fixture
def jumping_coordinator() -> Iterator[Coordinator]:
    """A coordinator whose core runs on a :class:`JumpingClock` that jumps to the core's next
    timer (a rate window, a Retry-After pause) once no request is in flight."""
    running: list[Coordinator] = []

    def settled() -> bool:
        core = running[0]._core
        assert core is not None
        return all(pool["in_flight"] == 0 for pool in core.totals()["pools"].values())

    with Coordinator(clock=lambda loop: JumpingClock(loop, settled)) as coordinator:
        running.append(coordinator)
        yield coordinator


@dataclass
class Grants:
    """The coordinator's grants in this test: its clock at each (``at``), and the real
    (monotonic) time of each (``real``)."""

    at: list[float]
    real: list[float]


@pytest.fixture
def grant_times(monkeypatch: pytest.MonkeyPatch) -> Grants:
    grants = Grants([], [])
    grant = BudgetCore._grant

    def recorded(core: BudgetCore, pool: Any, waiter: Any, now: float) -> None:
        grants.at.append(now)
        grants.real.append(time.monotonic())
        grant(core, pool, waiter, now)

    monkeypatch.setattr(BudgetCore, "_grant", recorded)
    return grants


def each_after_a_grant(arrivals: list[float], grants: Grants) -> bool:
    """Whether the server saw every request only after the coordinator had granted one more
    (the server and the coordinator run in this process, on the same monotonic clock)."""
    return len(arrivals) == len(grants.real) and all(
        a >= g for a, g in zip(sorted(arrivals), sorted(grants.real), strict=True))


def test_rpm_holds_across_processes(jumping_coordinator: Coordinator, workers: WorkerPool,
                                    grant_times: Grants) -> None:
    coordinator = jumping_coordinator
    client = CoordinatorClient(coordinator.address, coordinator.token)
    # at most 5 requests in any PERIOD
    client.declare("endpoint", PoolLimits(rpm=5, period=PERIOD))
    with FakeOpenAIServer() as server:
        reports = run_workers(workers, coordinator, server, 3, requests=5, tasks=5)
        arrivals = server.arrival_times()
    assert sum(r["ok"] for r in reports) == 15
    assert each_after_a_grant(arrivals, grant_times)
    # windows of 5 at 0, 1 and 2 periods: per-process buckets would send all 15 at once
    assert max(grant_times.at) - min(grant_times.at) >= 2 * PERIOD
    assert max_in_window(grant_times.at, PERIOD) <= 5
    client.close()


def test_tpm_holds_across_processes_with_settled_estimates(
        jumping_coordinator: Coordinator, workers: WorkerPool, grant_times: Grants) -> None:
    coordinator = jumping_coordinator
    client = CoordinatorClient(coordinator.address, coordinator.token)
    client.declare("endpoint", PoolLimits(tpm=50, period=PERIOD))
    with FakeOpenAIServer() as server:
        # estimated 10 tokens, settled to the reply's real 7 ("one two three" + "echo: ...")
        reports = run_workers(workers, coordinator, server, 3, requests=6, tasks=6, tokens=10)
        arrivals = server.arrival_times()
        used = {r.body["messages"][0]["content"] for r in server.requests}
    assert used == {"one two three"}
    assert sum(r["ok"] for r in reports) == 18
    assert each_after_a_grant(arrivals, grant_times)
    # 7 tokens each: at most 7 requests fit 50 tokens in a window, so 18 need 3 windows
    assert max_in_window(grant_times.at, PERIOD) <= 7
    assert max(grant_times.at) - min(grant_times.at) >= 2 * PERIOD
    client.close()


def test_max_cost_holds_across_processes(
        coordinator: Coordinator, workers: WorkerPool) -> None:
    client = CoordinatorClient(coordinator.address, coordinator.token)
    client.declare("endpoint", PoolLimits(concurrency=4))
    client.declare_cost("suite", 1.0)
    with FakeOpenAIServer(latency=0.02) as server:
        reports = run_workers(workers, coordinator, server, 4, requests=20, tasks=4,
                              cost_key="suite", usd_per_request=0.1)
    spent = client.totals()["costs"]["suite"]["spent"]
    charged = sum(r["charged"] for r in reports)
    assert spent == pytest.approx(charged)
    # the cap, plus at most the calls in flight (concurrency 4) when it was reached
    assert 1.0 <= spent <= 1.0 + 4 * 0.1 + 1e-9
    messages = [m for r in reports for m in r["budget_errors"]]
    assert len(messages) == 4 * 4  # every task of every worker was stopped by the cap
    # errors show the run's spend, not one worker's share of it
    shown = [float(m.split("spent $")[1].split(" ")[0]) for m in messages]
    assert min(shown) >= 1.0
    client.close()


async def queued_at(coordinator: Coordinator, waiting: int) -> None:
    """Until ``waiting`` acquires wait at the coordinator for the pool "endpoint"."""
    for _ in range(5000):
        if coordinator.totals()["pools"]["endpoint"]["waiting"] == waiting:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{waiting} acquires never waited at the coordinator")


def test_a_crashed_worker_releases_its_slots(coordinator: Coordinator) -> None:
    client = CoordinatorClient(coordinator.address, coordinator.token)
    client.declare("endpoint", PoolLimits(concurrency=2))
    host, port = coordinator.address
    results = CTX.Queue()
    holder = CTX.Process(target=hold_and_wait, args=({
        "address": f"{host}:{port}", "token": coordinator.token, "pool": "endpoint",
        "slots": 2}, results))
    holder.start()
    try:
        assert results.get(timeout=30)["held"] == 2
        assert client.totals()["pools"]["endpoint"]["in_flight"] == 2

        async def blocked_then_granted() -> float:
            waiter = asyncio.ensure_future(client.acquire("endpoint"))
            await queued_at(coordinator, 1)  # both slots are held by the other process
            assert not waiter.done()
            start = time.monotonic()
            holder.kill()  # SIGKILL: no goodbye, only the closed socket tells
            lease = await asyncio.wait_for(waiter, 5)
            lease.release()
            return time.monotonic() - start

        waited = asyncio.run(blocked_then_granted())
        assert waited < 2.0
        assert client.totals()["pools"]["endpoint"]["in_flight"] == 0
    finally:
        holder.kill()
        holder.join(timeout=10)
        client.close()


def test_adaptive_concurrency_finds_a_hidden_limit(
        coordinator: Coordinator, workers: WorkerPool) -> None:
    client = CoordinatorClient(coordinator.address, coordinator.token)
    hidden = 6
    client.declare("endpoint", PoolLimits(adaptive=Adaptive(max=32, start=2)))
    # the server answers one request at a time, once the run is settled (see _Gate): the
    # level moves on what the endpoint counts, not on how late a loaded machine sends
    with _gated_server(client, refuse_above=hidden) as server:
        reports = run_workers(workers, coordinator, server, 3, requests=40, tasks=12)
        refused = server.refused
    pool = client.totals()["pools"]["endpoint"]
    adaptive = pool["adaptive"]
    ok = sum(r["ok"] for r in reports)
    assert ok == 120
    assert sum(r["throttled"] for r in reports) == refused == pool["throttled"]
    assert hidden / 2 <= adaptive["level"] <= hidden + 1
    assert adaptive["max_level"] <= hidden + 2  # it probed past the limit, not far past it
    assert adaptive["max_level"] >= hidden  # and it did find it
    assert adaptive["bound"] == 32
    # each overshoot costs a 429 or two before the cut, and growth is slow
    assert 1 <= refused <= 0.1 * ok
    assert pool["max_in_flight"] <= hidden + 2
    client.close()


def test_retry_after_from_a_refusing_endpoint_pauses_every_worker(
        jumping_coordinator: Coordinator, workers: WorkerPool, grant_times: Grants) -> None:
    coordinator = jumping_coordinator
    client = CoordinatorClient(coordinator.address, coordinator.token)
    client.declare("endpoint", PoolLimits(adaptive=Adaptive(max=16, start=8)))
    # every 429 pauses the pool for Retry-After, on the coordinator's (jumping) clock: only a
    # pause moves it, so the grants' times show exactly what the pauses held back
    with FakeOpenAIServer(latency=0.025, refuse_above=2, refuse_retry_after="0.1") as server:
        reports = run_workers(workers, coordinator, server, 2, requests=8, tasks=8)
        arrivals = server.arrival_times()
        refused = server.refused
    assert sum(r["ok"] for r in reports) == 16
    assert each_after_a_grant(arrivals, grant_times)
    gaps = [b - a for a, b in itertools.pairwise(grant_times.at)]
    # the pause held every worker back, not just the refused one: no grant to any of them
    # for the whole Retry-After (to float rounding), and none before the first refusal
    assert refused >= 1
    assert max(gaps) >= 0.1 - 1e-9
    assert client.totals()["pools"]["endpoint"]["adaptive"]["level"] <= 4
    client.close()


def test_wrong_token_is_refused_and_nothing_leaks(coordinator: Coordinator) -> None:
    with pytest.raises(CoordinatorError, match="refused this worker: wrong token") as info:
        CoordinatorClient(coordinator.address, "not-the-token")
    assert coordinator.token not in str(info.value)
    # a peer speaking garbage is disconnected, and the coordinator keeps serving
    with socket.create_connection(coordinator.address, timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
        reply = json.loads(raw.makefile("rb").readline())
        assert reply["ok"] is False and reply["error"] == "auth"
    client = CoordinatorClient(coordinator.address, coordinator.token)
    assert client.totals()["spent"] == 0
    client.close()


def test_losing_the_coordinator_fails_waiting_calls_clearly() -> None:
    coordinator = Coordinator().start()
    client = CoordinatorClient(coordinator.address, coordinator.token)
    client.declare("endpoint", PoolLimits(concurrency=1))

    async def wait_then_lose() -> None:
        held = await client.acquire("endpoint")
        waiter = asyncio.ensure_future(client.acquire("endpoint"))
        await queued_at(coordinator, 1)
        coordinator.stop()
        with pytest.raises(CoordinatorError, match="lost the run budget coordinator at"):
            await asyncio.wait_for(waiter, 5)
        held.release()  # releasing into a lost connection must not raise
        with pytest.raises(CoordinatorError, match="lost the run budget coordinator"):
            await client.acquire("endpoint")

    asyncio.run(wait_then_lose())
    client.close()


def test_an_acquire_is_a_local_round_trip(coordinator: Coordinator) -> None:
    client = CoordinatorClient(coordinator.address, coordinator.token)
    client.declare("endpoint", PoolLimits(concurrency=4, rpm=1_000_000, tpm=10**9))

    async def many() -> float:
        start = time.perf_counter()
        for _ in range(300):
            lease = await client.acquire("endpoint", tokens=10)
            lease.release(tokens_used=12)
        return (time.perf_counter() - start) / 300

    per_acquire = asyncio.run(many())
    assert per_acquire < 0.005  # < 1 ms on an idle machine; slack for a loaded CI box
    assert client.totals()["pools"]["endpoint"]["requests"] == 300
    client.close()


def test_workerinput_round_trip_connects(coordinator: Coordinator) -> None:
    entry = coordinator.workerinput()
    assert all(isinstance(v, str) for v in entry.values())
    client = CoordinatorClient.from_workerinput(entry, name="gw0")
    assert client is not None
    assert coordinator.connections == 1
    client.close()
    assert CoordinatorClient.from_workerinput({}) is None
