"""Time limits whose clock stops while the calls they bound wait for the run's slots.

An endpoint's ``case_timeout`` bounds one call, ``generation.timeout`` one case's
generation and judging. The slots they wait for (``concurrency``, ``rpm``, ``tpm``) are the
run's, shared by every xdist worker, while each worker opens as many cases as the run has
slots: with a plain clock the same case met its limit or not depending on how many workers
queued for the same slots (16 of 16 cases within the limit at ``-n 0``, 9 of 16 at ``-n 2``).
A :class:`Deadline` counts the time its calls are sent, answered and backed off, and the
work between them, but not the time during which every call it bounds waits for a slot, so
the same case meets the same limit whatever ``-n`` is.

The deadlines that bound the running code are held in a context variable: tasks started
inside :func:`within` (a case's judge calls) inherit them, and the clients mark their calls
with :func:`call` and their waits with :func:`waiting_for_slot`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

# the deadlines bounding the running code, outermost first; a context variable because a
# limit belongs to the task that runs under it and to the tasks that one starts, not to an
# object that several cases share
_BOUNDING: ContextVar[tuple[Deadline, ...]] = ContextVar("ragbench_deadlines", default=())


class Deadline:
    """A time limit of ``limit`` seconds on the event loop's clock that stops while every
    call it bounds waits for a slot (and at least one does)."""

    def __init__(self, limit: float, loop: asyncio.AbstractEventLoop,
                 on_expiry: Callable[[], None]) -> None:
        self.limit = limit
        self.expired = False
        self._loop = loop
        self._on_expiry = on_expiry
        self._counted = 0.0  # seconds counted before the current running stretch
        self._since: float | None = None  # when the current running stretch began
        self._calls = 0
        self._waiting = 0
        self._timer: asyncio.TimerHandle | None = None

    def used(self) -> float:
        """The seconds counted so far."""
        running = 0.0 if self._since is None else self._loop.time() - self._since
        return self._counted + running

    def start(self) -> None:
        """Start the clock (it stops by itself while every call waits for a slot)."""
        self._run()

    def stop(self) -> None:
        """Stop the clock for good: the work is over."""
        self._halt()

    def _run(self) -> None:
        if self._since is not None or self.expired:
            return
        self._since = self._loop.time()
        self._timer = self._loop.call_at(self._since + max(self.limit - self._counted, 0.0),
                                         self._expire)

    def _halt(self) -> None:
        if self._since is not None:
            self._counted += self._loop.time() - self._since
            self._since = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self.expired = True
        self._on_expiry()

    def _update(self) -> None:
        if self._waiting and self._waiting == self._calls:
            self._halt()
        else:
            self._run()

    def _enter_call(self, delta: int) -> None:
        self._calls += delta
        self._update()

    def _enter_wait(self, delta: int) -> None:
        self._waiting += delta
        self._update()


async def within(limit: float, work: Callable[[], Awaitable[T]]) -> T:
    """``await work()`` under a :class:`Deadline` of ``limit`` seconds; raises
    ``TimeoutError`` when it runs out (the work is cancelled first).

    Unlike ``asyncio.wait_for`` the time during which every call of ``work`` waits for one of
    the run's slots is not counted. The work runs as a task of its own, which inherits the
    deadline with the caller's context.
    """
    loop = asyncio.get_running_loop()
    task: asyncio.Future[T] | None = None

    def expire() -> None:
        if task is not None and not task.done():
            task.cancel()

    deadline = Deadline(limit, loop, expire)
    token = _BOUNDING.set((*_BOUNDING.get(), deadline))
    try:
        task = asyncio.ensure_future(work())
    finally:
        _BOUNDING.reset(token)
    deadline.start()
    try:
        # cancelling this task cancels the work it awaits, as with wait_for
        return await task
    except asyncio.CancelledError:
        if deadline.expired and not _cancelling():
            raise TimeoutError(f"past its time limit of {limit:g} s") from None
        raise
    finally:
        deadline.stop()


def _cancelling() -> bool:
    """Whether the running task itself was asked to stop (Python 3.11+ can tell), not
    only the work it awaits."""
    current = asyncio.current_task()
    cancelling = getattr(current, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False


def expired() -> bool:
    """Whether a deadline bounding the running code has run out (its work is being
    cancelled): a call cancelled for it was too slow, not abandoned."""
    return any(d.expired for d in _BOUNDING.get())


@contextlib.contextmanager
def call() -> Iterator[None]:
    """Mark one call (its attempts and backoff) under the running deadlines."""
    bounding = _BOUNDING.get()
    for deadline in bounding:
        deadline._enter_call(1)
    try:
        yield
    finally:
        for deadline in bounding:
            deadline._enter_call(-1)


@contextlib.contextmanager
def waiting_for_slot() -> Iterator[None]:
    """Mark a call's wait for one of the run's slots: not counted while every call of a
    deadline waits."""
    bounding = _BOUNDING.get()
    for deadline in bounding:
        deadline._enter_wait(1)
    try:
        yield
    finally:
        for deadline in bounding:
            deadline._enter_wait(-1)
