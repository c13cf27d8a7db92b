"""One budget per run: do concurrency, rpm and max_cost hold whatever the number of workers?

Run from anywhere::

    python benchmarks/budget_coordination.py [--workers 1,2,4] [--latency 0.2] [--quick]

Each "worker" is a separate process (as an xdist worker is) running
:func:`pytest_ragbench.budget.testing.worker_main`: many concurrent tasks sending chat requests
to :class:`~pytest_ragbench.llm.testing.FakeOpenAIServer` (fixed latency; it counts the
requests in flight and records arrival times) through a run budget. Every row is run twice:

- ``shared``: every process is a client of one :class:`~pytest_ragbench.budget.Coordinator`
  (what the plugin does with this package);
- ``per-process``: each process has a coordinator of its own, which behaves like today's
  per-process Semaphore / RateLimiter / CostBudget: the limits multiply with the workers.

Parts: (1) concurrency: max in flight at the server vs the limit, and wall time vs the lower
bound ``requests * latency / concurrency``; (2) rpm, with a scaled-down "minute" (``--period``)
so it runs in seconds: the most requests the server saw in any window of one period vs the
limit, and the wall time vs the least that limit allows; (3) max_cost: the run's spend vs
the cap (allowed overshoot: the calls in flight when it is reached, ``concurrency * usd``);
(4) ``concurrency: auto`` against a server refusing (429) above a hidden concurrency: the level
reached, 429s, and throughput vs ``hidden / latency``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from pytest_ragbench.budget import Adaptive, Coordinator, CoordinatorClient, PoolLimits
from pytest_ragbench.budget.testing import collect, worker_main
from pytest_ragbench.llm.testing import FakeOpenAIServer

CTX = multiprocessing.get_context("spawn")
# the window is held 5% longer than the period: 100 ms of a 2 s "minute" absorbs the
# scheduling jitter of a loaded machine between a grant and the server seeing the request
# (with a real minute the default 2% is 1.2 s)
MARGIN = 0.05


def run(workers: int, server: FakeOpenAIServer, limits: PoolLimits, *, shared: bool,
        max_cost: float | None = None, **spec: Any) -> tuple[list[dict[str, Any]], float]:
    """Run ``workers`` processes; return their reports and the run's spend."""
    with ExitStack() as stack:
        count = 1 if shared else workers
        coordinators = [stack.enter_context(Coordinator()) for _ in range(count)]
        clients = []
        for coordinator in coordinators:
            client = CoordinatorClient(coordinator.address, coordinator.token)
            stack.callback(client.close)
            client.declare("endpoint", limits)
            if max_cost is not None:
                client.declare_cost("run", max_cost)
            clients.append(client)
        results = CTX.Queue()
        ready = CTX.Barrier(workers)
        processes = []
        for i in range(workers):
            coordinator = coordinators[i % count]
            host, port = coordinator.address
            processes.append(CTX.Process(target=worker_main, args=({
                "address": f"{host}:{port}", "token": coordinator.token,
                "base_url": server.base_url, "pool": "endpoint", "name": f"gw{i}",
                "cost_key": "run" if max_cost is not None else None, **spec,
            }, results, ready)))
        for process in processes:
            process.start()
        reports = collect(processes, results, timeout=300)
        errors = [r["error"] for r in reports if "error" in r]
        if errors:
            raise SystemExit(f"a worker failed: {errors[0]}")
        spent = sum(client.totals()["spent"] for client in clients)
        if len(coordinators) == 1:
            spec_totals = clients[0].totals()["pools"]["endpoint"]
            reports[0]["pool"] = spec_totals
        return reports, spent


def wall(reports: Sequence[dict[str, Any]]) -> float:
    return max(r["finished"] for r in reports) - min(r["started"] for r in reports)


def max_in_window(times: Sequence[float], window: float) -> int:
    ordered = sorted(times)
    best, first = 0, 0
    for last, stamp in enumerate(ordered):
        while ordered[first] <= stamp - window:
            first += 1
        best = max(best, last - first + 1)
    return best


def split(total: int, workers: int) -> int:
    return -(-total // workers)


def concurrency_part(args: argparse.Namespace) -> None:
    c = args.concurrency
    print(f"\n(1) concurrency: {c}, {args.requests} requests, latency {args.latency:g} s")
    print(f"{'workers':>7} {'mode':>11} {'max in flight':>13} {'limit':>5} "
          f"{'wall s':>7} {'bound s':>7} {'ratio':>6}")
    for workers in args.workers:
        for shared in (True, False):
            with FakeOpenAIServer(latency=args.latency) as server:
                per = split(args.requests, workers)
                reports, _ = run(workers, server, PoolLimits(concurrency=c), shared=shared,
                                 requests=per, tasks=2 * c)
                peak, sent = server.max_in_flight, server.count("/v1/chat/completions")
            bound = sent * args.latency / c
            took = wall(reports)
            mode = "shared" if shared else "per-process"
            flag = "" if peak <= c else "  <- over the limit"
            print(f"{workers:>7} {mode:>11} {peak:>13} {c:>5} {took:>7.2f} {bound:>7.2f} "
                  f"{took / bound:>6.2f}{flag}")


def rpm_part(args: argparse.Namespace) -> None:
    rpm, period = args.rpm, args.period
    total = int(rpm * 2.5)
    print(f"\n(2) rpm: {rpm:g} per {period:g} s window (a scaled minute, held {MARGIN:.0%} "
          f"longer), {total} requests")
    # a sliding window lets rpm through at once, then rpm more one period later
    least = (-(-total // int(rpm)) - 1) * period
    print(f"{'workers':>7} {'mode':>11} {'max in window':>13} {'limit':>5} "
          f"{'wall s':>7} {'least s':>7}")
    for workers in args.workers:
        for shared in (True, False):
            with FakeOpenAIServer(latency=0.01) as server:
                limits = PoolLimits(rpm=rpm, period=period, margin=MARGIN)
                reports, _ = run(workers, server, limits,
                                 shared=shared, requests=split(total, workers), tasks=8)
                arrivals = server.arrival_times()
            peak = max_in_window(arrivals, period)
            mode = "shared" if shared else "per-process"
            flag = "" if peak <= rpm else "  <- over the limit"
            print(f"{workers:>7} {mode:>11} {peak:>13} {rpm:>5g} {wall(reports):>7.2f} "
                  f"{least:>7.2f}{flag}")
    print("  max in window: the most requests the server received in any window of one "
          "period")


def cost_part(args: argparse.Namespace) -> None:
    cap, usd, c = args.max_cost, args.usd, args.concurrency
    allowed = cap + c * usd
    print(f"\n(3) max_cost: ${cap:g}, ${usd:g} per request, concurrency {c} "
          f"(allowed: cap + in flight = ${allowed:.2f})")
    print(f"{'workers':>7} {'mode':>11} {'spent $':>8} {'cap $':>6} {'requests':>8} "
          f"{'refusals':>8}")
    for workers in args.workers:
        for shared in (True, False):
            with FakeOpenAIServer(latency=args.latency / 4) as server:
                reports, spent = run(workers, server, PoolLimits(concurrency=c),
                                     shared=shared, max_cost=cap,
                                     requests=split(int(cap / usd) * 4, workers), tasks=c,
                                     usd_per_request=usd)
                sent = server.count("/v1/chat/completions")
            refusals = sum(len(r["budget_errors"]) for r in reports)
            mode = "shared" if shared else "per-process"
            flag = "" if spent <= allowed + 1e-9 else "  <- over the cap"
            print(f"{workers:>7} {mode:>11} {spent:>8.2f} {cap:>6g} {sent:>8} "
                  f"{refusals:>8}{flag}")


def adaptive_part(args: argparse.Namespace) -> None:
    hidden, seconds = args.hidden, args.seconds
    ideal = hidden / args.latency
    print(f"\n(4) concurrency: auto (max 64) vs a server refusing above {hidden} in flight, "
          f"{seconds:g} s, latency {args.latency:g} s (ideal {ideal:.1f} req/s)")
    print(f"{'workers':>7} {'level':>5} {'max level':>9} {'429s':>5} {'ok':>5} "
          f"{'req/s':>6} {'of ideal':>8}")
    for workers in args.workers:
        with FakeOpenAIServer(latency=args.latency, refuse_above=hidden) as server:
            reports, _ = run(workers, server, PoolLimits(adaptive=Adaptive(max=64)),
                             shared=True, requests=None, seconds=seconds, tasks=32)
            refused = server.refused
        pool = reports[0]["pool"]
        ok = sum(r["ok"] for r in reports)
        rate = ok / wall(reports)
        level = pool["adaptive"]
        print(f"{workers:>7} {level['level']:>5} {level['max_level']:>9} {refused:>5} "
              f"{ok:>5} {rate:>6.1f} {rate / ideal:>8.0%}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4",
                        type=lambda text: [int(n) for n in text.split(",")])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rpm", type=float, default=20)
    parser.add_argument("--period", type=float, default=2.0,
                        help="seconds standing in for a minute (default 2)")
    parser.add_argument("--max-cost", type=float, default=2.0)
    parser.add_argument("--usd", type=float, default=0.1, help="cost of one request")
    parser.add_argument("--hidden", type=int, default=8, help="the server's hidden limit")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="duration of the adaptive run")
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rpm, args.period, args.seconds = 16, 6, 0.5, 2.0
        args.latency = min(args.latency, 0.05)
    started = time.perf_counter()
    concurrency_part(args)
    rpm_part(args)
    cost_part(args)
    adaptive_part(args)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
