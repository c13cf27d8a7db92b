"""An asyncio event loop on a virtual clock, for tests of code timed by the loop's clock.

The clock stands still while callbacks run and, when nothing is ready and no I/O is pending,
jumps to the next timer: ``asyncio.sleep(5)`` takes no real time, and the times a test reads
are exact whatever the machine's load. Only for coroutines that wait on the loop's own timers:
work in other threads or on sockets takes real time the clock does not see (the loop then
waits for it in real time only when no timer is due).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import selectors
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pytest_ragbench.budget.api import RunBudget
from pytest_ragbench.budget.core import BudgetCore

T = TypeVar("T")


class _Selector:
    """The loop's selector, except that a wait for a timer moves the clock instead."""

    def __init__(self, inner: selectors.BaseSelector, loop: VirtualClockLoop) -> None:
        self._inner = inner
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:  # no timer due: only I/O (a call_soon_threadsafe) can wake it
            return self._inner.select(None)
        events = self._inner.select(0)
        if not events:
            self._loop.advance(timeout)
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose :meth:`time` is virtual, starting at 0."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        # asyncio's loop waits for its next timer in its selector's select(timeout)
        self._selector = _Selector(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += max(seconds, 0.0)


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only by :meth:`advance` (from any thread), starting at
    0. A server on 127.0.0.1 that advances it by its answer time while it answers makes the
    loop's timeouts count exactly the answers they are under, however late a loaded machine
    runs the client (a timer never fires on real time passing). To make the loop look at
    its clock before the server answers (a timeout past which it will not), wake it:
    ``loop.call_soon_threadsafe(lambda: None)``."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


class InlineBudget(RunBudget):
    """A run budget whose core answers in the caller's thread, at once, on ``loop``'s clock
    and timers. :class:`~pytest_ragbench.budget.local.LocalBudget` answers from its own
    thread, in real time, and a :class:`VirtualClockLoop` waiting for that answer with a
    timer due jumps to the timer: with this one the waits for a slot are as virtual as the
    rest. Use it from ``loop``'s thread only."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._core = BudgetCore(call_later=loop.call_later, clock=loop.time)

    def _deliver(self, message: dict[str, Any], future: concurrent.futures.Future[Any] | None
                 ) -> None:
        def reply(payload: dict[str, Any]) -> None:
            if future is not None and not future.done():
                future.set_result(payload)

        self._core.handle("inline", message, reply)

    def close(self) -> None:
        self._core.drop_owner("inline")


@dataclass(order=True)
class _JumpTimer:
    when: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class JumpingClock:
    """A clock for a run budget's core on a real event loop (``Coordinator(clock=...)``).

    It stands still, starting at 0; a timer the core sets fires, the clock jumping to its
    time, as soon as the loop is free and ``settled()`` holds (looked at every half
    millisecond until it does). The core's rate windows and pauses then pass with no real
    waiting and are exact on this clock, while ``settled`` (say, no request in flight) keeps
    what comes in real time (replies, the token counts they settle) in the window it belongs
    to, whatever the machine's load. Used from the loop's thread only, as the core is."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 settled: Callable[[], bool] = lambda: True) -> None:
        self.settled = settled
        self._loop = loop
        self._now = 0.0
        self._timers: list[_JumpTimer] = []
        self._seq = itertools.count()
        self._looking = False

    def time(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _JumpTimer:
        timer = _JumpTimer(self._now + max(delay, 0.0), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        self._look(0.0)
        return timer

    def _look(self, after: float) -> None:
        if not self._looking:
            self._looking = True
            self._loop.call_later(after, self._fire)

    def _fire(self) -> None:
        self._looking = False
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return
        if not self.settled():
            self._look(0.0005)
            return
        timer = heapq.heappop(self._timers)
        self._now = max(self._now, timer.when)
        timer.callback()
        if self._timers:
            self._look(0.0)


def run(main: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    """Run ``main()`` to its end on a new :class:`VirtualClockLoop`, as :func:`asyncio.run`
    does (tasks left over are cancelled): its result and the virtual seconds it took. Its
    exception is raised as it is."""
    loop = VirtualClockLoop()
    asyncio.set_event_loop(loop)
    try:
        result = loop.run_until_complete(main())
        return result, loop.time()
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def raises_after(expected: type[BaseException], main: Callable[[], Awaitable[Any]]) -> float:
    """Run ``main()`` as :func:`run` does, expecting it to raise ``expected``: the virtual
    seconds until it did. Fails the test when it returns or raises anything else."""
    clock: list[float] = []

    async def timed() -> None:
        try:
            await main()
        except expected:
            clock.append(asyncio.get_running_loop().time())
            return
        raise AssertionError(f"{expected.__name__} not raised")

    run(timed)
    return clock[0]
