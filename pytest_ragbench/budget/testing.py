"""A load-generating worker process for tests and benchmarks of the shared run budget.

:func:`worker_main` runs in a separate process (``multiprocessing``, any start method): it
connects to a :class:`~.server.Coordinator`, sends chat requests to an OpenAI-compatible URL
through the shared budget, the way an LLM client does (acquire, send, release with the
outcome, charge), and reports what it saw. Everything in and out is plain data.
"""

from __future__ import annotations

import asyncio
import os
import queue
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from .api import BudgetExceeded, RunBudget
from .client import CoordinatorClient

CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "one two three"}]}


@dataclass
class WorkerSpec:
    """What one worker process does.

    ``requests``: how many successful requests to send in total (``None``: until
    ``seconds`` have passed); ``tasks``: concurrent tasks (more than the pool allows, so the
    budget is what limits them); ``cost_key`` / ``usd_per_request``: charge each success;
    ``retry_throttled``: send a request refused with 429 again (after its lease released).
    Costs are charged through ``Lease.release(usd=...)``.
    """

    address: str
    token: str
    base_url: str
    pool: str
    requests: int | None = 10
    seconds: float | None = None
    tasks: int = 8
    tokens: int = 0
    cost_key: str | None = None
    usd_per_request: float = 0.0
    retry_throttled: bool = True
    name: str = ""


@dataclass
class WorkerReport:
    """What one worker saw (plain data)."""

    ok: int = 0
    throttled: int = 0
    timeouts: int = 0
    errors: int = 0
    charged: float = 0.0
    budget_errors: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


async def drive(budget: RunBudget, spec: WorkerSpec, ready: Any = None) -> WorkerReport:
    """Send ``spec``'s requests through ``budget``; return what happened.

    ``ready``: a ``multiprocessing.Barrier`` that every worker waits at, once warm, so
    process start-up does not skew timings.
    """
    report = WorkerReport(started=time.monotonic())
    deadline = None if spec.seconds is None else report.started + spec.seconds
    remaining = [spec.requests]

    def more() -> bool:
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if remaining[0] is None:
            return True
        if remaining[0] <= 0:
            return False
        remaining[0] -= 1
        return True

    limits = httpx.Limits(max_connections=spec.tasks, max_keepalive_connections=spec.tasks)
    async with httpx.AsyncClient(base_url=spec.base_url, limits=limits, timeout=30) as http:

        async def one() -> bool:
            """Send one request until it is not throttled; False when the budget says stop."""
            while True:
                try:
                    lease = await budget.acquire(spec.pool, tokens=spec.tokens,
                                                 cost_key=spec.cost_key)
                except BudgetExceeded as exc:
                    report.budget_errors.append(str(exc))
                    return False
                try:
                    response = await http.post("/chat/completions", json=CHAT_BODY)
                except httpx.TimeoutException:
                    lease.release("timeout")
                    report.timeouts += 1
                    continue
                except BaseException:
                    lease.release("aborted")
                    raise
                if response.status_code == 429:
                    retry_after = response.headers.get("retry-after")
                    lease.release("throttled",
                                  retry_after=float(retry_after) if retry_after else None)
                    report.throttled += 1
                    if spec.retry_throttled:
                        continue
                    return True
                if response.status_code != 200:
                    lease.release("error")
                    report.errors += 1
                    return True
                usage = response.json().get("usage", {})
                usd = spec.usd_per_request if spec.cost_key is not None else None
                lease.release("ok", tokens_used=int(usage.get("total_tokens", 0)), usd=usd)
                report.ok += 1
                report.charged += usd or 0.0
                return True

        if ready is not None:
            # connections open and code warm before the measured part starts in every process
            # every connection a task will use, so no request pays a TCP connect later
            await asyncio.gather(*(http.get("/models") for _ in range(spec.tasks)))
            await asyncio.to_thread(ready.wait, 60)
            report.started = time.monotonic()
            if deadline is not None:
                deadline = report.started + (spec.seconds or 0.0)

        async def task() -> None:
            while more():
                if not await one():
                    return

        await asyncio.gather(*(task() for _ in range(spec.tasks)))
    report.finished = time.monotonic()
    return report


def worker_main(spec: dict[str, Any], results: Any, ready: Any = None) -> None:
    """Process entry point: run :func:`drive` on a coordinator client; put the report dict
    (or ``{"error": text}``) on the ``results`` queue."""
    try:
        worker = WorkerSpec(**spec)
        budget = CoordinatorClient(worker.address, worker.token, name=worker.name)
        try:
            report = asyncio.run(drive(budget, worker, ready))
            # a totals round trip flushes this connection's fire-and-forget charges first
            budget.totals()
        finally:
            budget.close()
        results.put(asdict(report))
    except Exception as exc:  # the parent test shows it; a silent child would just hang it
        results.put({"error": f"{type(exc).__name__}: {exc}"})


class _StartLine:
    """A start line for one job of :func:`pooled_worker`: :func:`drive` calls ``wait`` once
    warm; it says so on ``results`` and blocks until the parent puts anything on ``go``."""

    def __init__(self, results: Any, go: Any) -> None:
        self.results, self.go = results, go

    def wait(self, timeout: float) -> None:
        self.results.put({"ready": True})
        self.go.get(timeout=timeout)


def pooled_worker(jobs: Any, go: Any, results: Any) -> None:
    """Process entry point: run :func:`worker_main` for each spec dict from the ``jobs`` queue
    until ``None``, so a test module pays for starting a process once, not once per test.

    Before each job's measured part it puts ``{"ready": True}`` on ``results`` and waits for
    an item on ``go`` (the parent sends one once every worker is ready); then the job's report
    follows on ``results`` as with :func:`worker_main`."""
    while (spec := jobs.get()) is not None:
        worker_main(spec, results, _StartLine(results, go))


def hold_and_wait(spec: dict[str, Any], results: Any) -> None:
    """Process entry point: take ``spec["slots"]`` leases of ``spec["pool"]``, say so on
    ``results``, then sleep until killed (a crashed worker holding slots)."""
    budget = CoordinatorClient(spec["address"], spec["token"], name="holder")

    async def hold() -> None:
        for _ in range(int(spec["slots"])):
            await budget.acquire(spec["pool"])
        results.put({"held": int(spec["slots"]), "pid": os.getpid()})
        await asyncio.sleep(3600)

    asyncio.run(hold())


def collect(processes: list[Any], results: Any, timeout: float = 120.0) -> list[dict[str, Any]]:
    """One report per process from ``results``; fails fast if a process dies without one."""
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(reports) < len(processes):
        try:
            reports.append(results.get(timeout=0.2))
            continue
        except queue.Empty:
            pass
        dead = [p for p in processes if p.exitcode not in (None, 0)]
        if dead:
            raise RuntimeError(f"worker process exited with code {dead[0].exitcode} "
                               "without a report")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no report from {len(processes) - len(reports)} worker "
                               f"process(es) within {timeout:g} s")
    for process in processes:
        process.join(timeout=10)
    return reports
