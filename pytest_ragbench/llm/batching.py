"""Several requests made at the same time, sent as one call: the judge's ``items_per_call``.

A :class:`CallBatcher` collects the requests of concurrent units of work ("cases": one item's
generation and judging) and hands them to one ``call(group, payloads)`` of at most ``size``
payloads sharing a group. It never waits for a batch to fill up: a group is sent as soon as it
holds ``size`` requests, and every queued request is sent as soon as each open case is waiting
for a batch (queued or in flight), so nobody else could join; a case leaving (done, failed,
cancelled) is a reason to look again. The code that starts the cases (the "feeder", e.g. the
item thread submitting them to a loop) says what it is doing (:meth:`feeding`,
:meth:`awaiting`, :meth:`idle`) so that partial batches also wait while it may still start
more. Within a call payloads are in the order their cases
opened (then their requests), so the composition follows the item order whenever the same
requests are waiting.

The call runs as its own task in an empty context: it belongs to no case, so per-case meters
kept in context variables are not charged for it (the caller splits its cost over the items)
and cancelling one waiter never cancels a call its batch mates wait for.

Nothing here imports pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from . import deadline

G = TypeVar("G", bound=Hashable)
P = TypeVar("P")
R = TypeVar("R")
T = TypeVar("T")

__all__ = ["CallBatcher"]


class _Case:
    """One open unit of work; ``waiting`` counts its requests queued or in flight."""

    __slots__ = ("seq", "tag", "waiting")

    def __init__(self, seq: int, tag: Hashable | None = None) -> None:
        self.seq = seq
        self.tag = tag
        self.waiting = 0


_BUSY = object()  # the feeder is running: it may start more cases any moment


@dataclass
class _Request(Generic[P, R]):
    order: tuple[int, int]
    payload: P
    future: asyncio.Future[R]
    case: _Case = field(repr=False)
    # the time limits of the case that waits (a batch's call is a call of each of its cases)
    bounding: tuple[Any, ...] = field(default=(), repr=False)
    shared: deadline.SharedCall | None = field(default=None, repr=False)
    queued: bool = False
    # the call it went out in, and the requests of that call
    call: asyncio.Task[None] | None = field(default=None, repr=False)
    mates: list[_Request[P, R]] = field(default_factory=list, repr=False)


class CallBatcher(Generic[G, P, R]):
    """Groups concurrent :meth:`request` calls into ``call(group, payloads)`` calls of at most
    ``size`` payloads; ``call`` returns one result per payload, in order (an exception it
    raises is raised to every waiter of that call). See the module documentation for when a
    batch is sent. All methods must be used from one event loop."""

    def __init__(self, size: int,
                 call: Callable[[G, list[P]], Awaitable[Sequence[R]]]) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch size must be an integer >= 1, got {size!r}")
        self.size = size
        self._call = call
        # which case the running code belongs to: tasks a case starts inherit it
        self._current: contextvars.ContextVar[_Case | None] = contextvars.ContextVar(
            f"ragbench_batch_case_{id(self):x}", default=None)
        self._seq = itertools.count()
        self._open = 0
        self._waiting_cases = 0
        self._queues: dict[G, list[_Request[P, R]]] = {}
        self._check_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        # the feeder: None (idle), _BUSY, or the tag of the case it waits for
        self._feeder: object = None
        self._tagged: dict[Hashable, _Case] = {}
        self._finished: set[Hashable] = set()
        self.calls = 0
        """Calls made so far."""
        self.sizes: list[int] = []
        """The number of payloads of each call, in the order the calls were made."""

    def __repr__(self) -> str:
        queued = sum(len(q) for q in self._queues.values())
        return (f"CallBatcher(size={self.size}, open={self._open}, queued={queued}, "
                f"calls={self.calls})")

    @contextlib.contextmanager
    def case(self, tag: Hashable | None = None) -> Iterator[None]:
        """Mark the code inside (and the tasks it starts) as one case: while it is open and
        not waiting for a batch, partial batches wait for it. Nested uses are one case.
        ``tag`` names it for :meth:`awaiting`."""
        if self._current.get() is not None:
            yield
            return
        case = _Case(next(self._seq), tag)
        token = self._current.set(case)
        self._open += 1
        if tag is not None:
            self._tagged[tag] = case
            self._finished.discard(tag)  # a case run again under its old tag is not done
        try:
            yield
        finally:
            self._open -= 1
            self._current.reset(token)
            if tag is not None:
                self._tagged.pop(tag, None)
                if self._feeder == tag:
                    self._feeder = _BUSY  # what the feeder waited for is done: it resumes
                else:
                    self._finished.add(tag)
            self._schedule_check()

    # The feeder is the code that starts cases, typically another thread that submits a burst
    # of cases and then waits for the first one's result. While it is submitting (or about to
    # resume because the case it waits for is done) partial batches wait for it, since its next
    # case may join them; while it waits for a case that waits for a batch, they do not.

    def feeding(self) -> None:
        """The feeder is starting cases."""
        self._feeder = _BUSY

    def awaiting(self, tag: Hashable) -> None:
        """The feeder waits for the case tagged ``tag`` (and resumes when it is done)."""
        if tag in self._finished:
            self._finished.discard(tag)
            self._feeder = _BUSY
        else:
            self._feeder = tag
        self._schedule_check()

    def collected(self, tag: Hashable) -> None:
        """The feeder took the result of the case tagged ``tag`` without waiting: the tag is
        no longer needed (it would otherwise be kept for the whole run)."""
        self._finished.discard(tag)

    def idle(self) -> None:
        """The feeder starts nothing until it says so again."""
        self._feeder = None
        self._schedule_check()

    def _feeder_may_join(self) -> bool:
        if self._feeder is _BUSY:
            return True
        case = self._tagged.get(self._feeder) if self._feeder is not None else None
        # waiting for a case that is running: it resumes (and may start more) when that is done;
        # waiting for a case that has not started or waits for a batch: it cannot go on
        return case is not None and case.waiting == 0

    async def request(self, group: G, payload: P) -> R:
        """Queue ``payload`` in ``group`` and wait for its result from the call it joins."""
        if self._current.get() is None:
            # a request outside any case is a case of its own
            with self.case():
                return await self.request(group, payload)
        case = self._current.get()
        assert case is not None
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        entry = _Request((case.seq, next(self._seq)), payload, future, case,
                         deadline.bounding())
        queue = self._queues.setdefault(group, [])
        queue.append(entry)
        entry.queued = True
        deadline.queue(entry.bounding)
        self._wait(case, +1)
        self._schedule_check()
        try:
            return await future
        finally:
            if entry in queue:  # cancelled before its batch was sent
                queue.remove(entry)
            if entry.queued:
                entry.queued = False
                deadline.queue(entry.bounding, -1)
            if entry.shared is not None:
                entry.shared.leave(entry.bounding)
            if entry.call is not None and not entry.call.done() \
                    and all(r.future.done() for r in entry.mates):
                # every case of the call has gone (their time limits ran out): stop it, as
                # a case's own call is stopped, rather than pay for what nobody records
                entry.call.cancel()
            self._wait(case, -1)
            self._schedule_check()

    async def wait_for(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` (say another case's request whose result this case will share)
        as a request of this case: meanwhile partial batches do not wait for the case."""
        case = self._current.get()
        if case is None:
            return await awaitable
        self._wait(case, +1)
        self._schedule_check()
        try:
            return await awaitable
        finally:
            self._wait(case, -1)
            self._schedule_check()

    def _wait(self, case: _Case, delta: int) -> None:
        before = case.waiting
        case.waiting += delta
        if before == 0 and case.waiting > 0:
            self._waiting_cases += 1
        elif before > 0 and case.waiting == 0:
            self._waiting_cases -= 1

    def _schedule_check(self) -> None:
        # one loop turn later, so requests started together (a gather) queue up first
        if not self._check_pending:
            self._check_pending = True
            asyncio.get_running_loop().call_soon(self._check)

    def _check(self) -> None:
        self._check_pending = False
        for group, queue in self._queues.items():
            while len(queue) >= self.size:
                self._send(group, queue)
        if self._waiting_cases >= self._open and not self._feeder_may_join():
            for group, queue in self._queues.items():
                while queue:
                    self._send(group, queue)

    def _send(self, group: G, queue: list[_Request[P, R]]) -> None:
        queue.sort(key=lambda r: r.order)
        batch = queue[: self.size]
        del queue[: self.size]
        self.calls += 1
        self.sizes.append(len(batch))
        # the call is every waiting case's: it runs under none of their limits (one case's
        # running out must not cancel the others'), and its waits for a slot stop their
        # clocks (llm/deadline.py)
        shared = deadline.SharedCall()
        for r in batch:
            r.shared = shared
            shared.join(r.bounding)
            r.queued = False
            deadline.queue(r.bounding, -1)
        loop = asyncio.get_running_loop()
        task = shared.context().run(loop.create_task, self._run(group, batch))
        for r in batch:
            r.call, r.mates = task, batch
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, group: G, batch: list[_Request[P, R]]) -> None:
        try:
            results = await self._call(group, [r.payload for r in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batched call returned {len(results)} results for "
                                   f"{len(batch)} requests")
        except asyncio.CancelledError:
            for r in batch:
                r.future.cancel()
            raise
        except BaseException as exc:
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
                    _mark_retrieved(r.future)
            return
        for r, result in zip(batch, results, strict=True):
            if not r.future.done():  # a waiter may have been cancelled meanwhile
                r.future.set_result(result)


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    # a waiter cancelled meanwhile never reads it; do not log "exception never retrieved"
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
