"""Time limits whose clock stops while the calls they bound wait for the run's slots.

An endpoint's ``case_timeout`` bounds one call, ``generation.timeout`` one case's
generation and judging. The slots they wait for (``concurrency``, ``rpm``, ``tpm``) are the
run's, shared by every xdist worker, while each worker opens as many cases as the run has
slots: with a plain clock the same case met its limit or not depending on how many workers
queued for the same slots (16 of 16 cases within the limit at ``-n 0``, 9 of 16 at ``-n 2``).
A :class:`Deadline` counts the time its calls are sent, answered and backed off, and the
work between them, but not the time during which every call it bounds waits for a slot
(whatever else the case does meanwhile), so the same case meets the same limit whatever
``-n`` is.

A case may wait on a call it does not make: a judge's batch that holds its item
(``items_per_call``), or the identical request another case already sent (the response
cache sends it once). Such a call runs under a :class:`SharedCall`: to each case waiting on
it, it is a call of that case, waiting for a slot while it does.

The limits that bound the running code are held in a context variable: tasks started inside
:func:`within` (a case's judge calls) inherit them, and the clients mark their calls with
:func:`call` and their waits with :func:`waiting_for_slot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Protocol, TypeVar

T = TypeVar("T")


class _Bound(Protocol):
    """What a call reports to: a :class:`Deadline` or a :class:`SharedCall`."""

    expired: bool
    blames_calls: bool

    def _enter_call(self, delta: int) -> None: ...

    def _enter_wait(self, delta: int) -> None: ...


# the limits bounding the running code, outermost first; a context variable because a limit
# belongs to the task that runs under it and to the tasks that one starts, not to an object
# that several cases share
_BOUNDING: ContextVar[tuple[_Bound, ...]] = ContextVar("ragbench_deadlines", default=())


class _Calls:
    """Counts of calls in progress and of those waiting for a slot; ``queued`` when every
    one of them waits (and at least one does)."""

    def __init__(self) -> None:
        self._calls = 0
        self._waiting = 0

    @property
    def queued(self) -> bool:
        return self._waiting > 0 and self._waiting == self._calls

    def _enter_call(self, delta: int) -> None:
        before = self.queued
        self._calls += delta
        self._changed(before)

    def _enter_wait(self, delta: int) -> None:
        before = self.queued
        self._waiting += delta
        self._changed(before)

    def _changed(self, was_queued: bool) -> None:
        raise NotImplementedError


class Deadline(_Calls):
    """A time limit of ``limit`` seconds on the event loop's clock that stops while every
    call it bounds waits for a slot. ``blames_calls``: a call cancelled when it runs out was
    too slow (an endpoint's own ``case_timeout``), not abandoned for a reason of the case's."""

    def __init__(self, limit: float, loop: asyncio.AbstractEventLoop,
                 on_expiry: Callable[[], None], *, blames_calls: bool = False) -> None:
        super().__init__()
        self.limit = limit
        self.blames_calls = blames_calls
        self.expired = False
        self._loop = loop
        self._on_expiry = on_expiry
        self._counted = 0.0  # seconds counted before the current running stretch
        self._since: float | None = None  # when the current running stretch began
        self._timer: asyncio.TimerHandle | None = None
        self._over = False

    def start(self) -> None:
        """Start the clock (it stops by itself while every call waits for a slot)."""
        self._run()

    def stop(self) -> None:
        """Stop the clock for good: the work is over (a task it started that outlives it
        does not start it again)."""
        self._halt()
        self._over = True

    def _run(self) -> None:
        if self._since is not None or self.expired or self._over:
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

    def ran_out(self) -> bool:
        """Whether the limit has run out, also when its timer could not fire: the loop was
        blocked (an ``async def`` calling something synchronous) past it."""
        if self.expired:
            return True
        counted = self._counted
        if self._since is not None:
            counted += self._loop.time() - self._since
        return counted >= self.limit

    def _changed(self, was_queued: bool) -> None:
        if self.queued == was_queued:
            return
        if self.queued:
            self._halt()
        else:
            self._run()


class SharedCall(_Calls):
    """A call that cases wait on without making it: to each case joined to it, one call of
    its own, waiting for a slot while every call made under it does."""

    expired = False
    blames_calls = False

    def __init__(self) -> None:
        super().__init__()
        self._members: list[tuple[_Bound, ...]] = []
        #: the limits of the case whose task makes the call (:meth:`making`): theirs running
        #: out cancels it
        self.maker: tuple[_Bound, ...] = ()

    def join(self, bounding: tuple[_Bound, ...]) -> None:
        """A case bounded by ``bounding`` (see :func:`bounding`) waits on this call."""
        self._members.append(bounding)
        for bound in bounding:
            bound._enter_call(1)
            if self.queued:
                bound._enter_wait(1)

    def leave(self, bounding: tuple[_Bound, ...]) -> None:
        """The case no longer waits on this call (it has its result, or gave up)."""
        for i, member in enumerate(self._members):
            if member is bounding:
                del self._members[i]
                break
        else:
            return
        for bound in bounding:
            if self.queued:
                bound._enter_wait(-1)
            bound._enter_call(-1)

    @contextlib.contextmanager
    def joined(self) -> Iterator[None]:
        """The running code waits on this call inside."""
        bounding = _BOUNDING.get()
        self.join(bounding)
        try:
            yield
        finally:
            self.leave(bounding)

    @contextlib.contextmanager
    def making(self) -> Iterator[None]:
        """The running code makes this call inside (on behalf of every case joined to it,
        itself included): its calls and waits count for them, not for its own limits. Its
        own ``case_timeout`` inside still bounds it."""
        self.maker = _BOUNDING.get()
        with self.joined():
            token = _BOUNDING.set((self,))
            try:
                yield
            finally:
                _BOUNDING.reset(token)
                self.maker = ()

    def context(self) -> contextvars.Context:
        """A fresh context whose code makes this call (for a task started for it)."""
        ctx = contextvars.Context()
        ctx.run(_BOUNDING.set, (self,))
        return ctx

    def _changed(self, was_queued: bool) -> None:
        if self.queued == was_queued:
            return
        delta = 1 if self.queued else -1
        for bounding in list(self._members):
            for bound in bounding:
                bound._enter_wait(delta)


def queue(bounding: tuple[_Bound, ...], delta: int = 1) -> None:
    """A request of a case bounded by ``bounding`` waits in a queue for its call to be made
    (a judge's batch waits to fill): a wait like that for a slot, since how long it takes
    depends on how the other cases fare with theirs. ``delta`` -1 when it leaves it."""
    for bound in bounding:
        if delta > 0:
            bound._enter_call(1)
            bound._enter_wait(1)
        else:
            bound._enter_wait(-1)
            bound._enter_call(-1)


def bounding() -> tuple[_Bound, ...]:
    """The limits bounding the running code (for :meth:`SharedCall.join`)."""
    return _BOUNDING.get()


async def within(limit: float, work: Callable[[], Awaitable[T]], *,
                 blames_calls: bool = False) -> T:
    """``await work()`` under a :class:`Deadline` of ``limit`` seconds; raises
    ``TimeoutError`` when it runs out (the work is cancelled first).

    Unlike ``asyncio.wait_for`` the time during which every call of ``work`` waits for one of
    the run's slots is not counted. The work runs as a task of its own, which inherits the
    deadline with the caller's context. ``blames_calls``: see :class:`Deadline`.
    """
    loop = asyncio.get_running_loop()
    task: asyncio.Future[T] | None = None

    def expire() -> None:
        if task is not None and not task.done():
            task.cancel()

    outer = _BOUNDING.get()
    deadline = Deadline(limit, loop, expire, blames_calls=blames_calls)
    token = _BOUNDING.set((*outer, deadline))
    try:
        task = asyncio.ensure_future(work())
    finally:
        _BOUNDING.reset(token)
    deadline.start()
    try:
        # cancelling this task cancels the work it awaits, as with wait_for
        result = await task
        if deadline.ran_out():
            # a result from work that ignored its cancellation, or that blocked the loop
            # past the limit, came too late all the same
            deadline.expired = True
            raise TimeoutError(f"past its time limit of {limit:g} s")
        return result
    except asyncio.CancelledError:
        # An outer limit that ran out too cancels this caller: its cancellation goes on up
        # (Python 3.10 cannot tell it from this limit's own by the task's count).
        if deadline.expired and not _cancelling() and not _ran_out(outer):
            raise TimeoutError(f"past its time limit of {limit:g} s") from None
        raise
    finally:
        deadline.stop()


def _ran_out(bounding: tuple[_Bound, ...]) -> bool:
    """Whether a limit of the running task (through the case making a shared call) ran out."""
    for bound in bounding:
        if isinstance(bound, Deadline) and bound.expired:
            return True
        if isinstance(bound, SharedCall) and _ran_out(bound.maker):
            return True
    return False


def _cancelling() -> bool:
    """Whether the running task itself was asked to stop (Python 3.11+ can tell), not
    only the work it awaits."""
    current = asyncio.current_task()
    cancelling = getattr(current, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False


def expired() -> bool:
    """Whether the running code's own call limit (``case_timeout``) has run out: a call
    cancelled for it was too slow. A case's limit running out says nothing of the endpoint
    whose call it cancels."""
    return any(b.blames_calls and b.expired for b in _BOUNDING.get())


@contextlib.contextmanager
def call() -> Iterator[None]:
    """Mark one call (its attempts and backoff) under the running limits."""
    bounding = _BOUNDING.get()
    for bound in bounding:
        bound._enter_call(1)
    try:
        yield
    finally:
        for bound in bounding:
            bound._enter_call(-1)


@contextlib.contextmanager
def waiting_for_slot() -> Iterator[None]:
    """Mark a call's wait for one of the run's slots: not counted while every call of a
    limit waits."""
    bounding = _BOUNDING.get()
    for bound in bounding:
        bound._enter_wait(1)
    try:
        yield
    finally:
        for bound in bounding:
            bound._enter_wait(-1)
