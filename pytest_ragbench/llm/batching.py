"""Several requests made at the same time, sent as one call: the judge's ``items_per_call``.

A :class:`CallBatcher` collects the requests of concurrent units of work ("cases": one item's
generation and judging) and hands them to one ``call(group, payloads)`` of at most ``size``
payloads sharing a group. It never waits for a batch to fill up: a group is sent as soon as it
holds ``size`` requests, and every queued request is sent as soon as each open case is waiting
for a batch (queued or in flight), so nobody else could join; a case leaving (done, failed,
cancelled) is a reason to look again; so is :meth:`release`, whose :meth:`hold` lets the code
that starts cases (in another thread, say) keep partial batches waiting while it is still
starting more. Within a call payloads are in the order their cases
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

G = TypeVar("G", bound=Hashable)
P = TypeVar("P")
R = TypeVar("R")

__all__ = ["CallBatcher"]


class _Case:
    """One open unit of work; ``waiting`` counts its requests queued or in flight."""

    __slots__ = ("seq", "waiting")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.waiting = 0


@dataclass
class _Request(Generic[P, R]):
    order: tuple[int, int]
    payload: P
    future: asyncio.Future[R]
    case: _Case = field(repr=False)


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
        self.calls = 0
        """Calls made so far."""
        self.sizes: list[int] = []
        """The number of payloads of each call, in the order the calls were made."""

    def __repr__(self) -> str:
        queued = sum(len(q) for q in self._queues.values())
        return (f"CallBatcher(size={self.size}, open={self._open}, queued={queued}, "
                f"calls={self.calls})")

    @contextlib.contextmanager
    def case(self) -> Iterator[None]:
        """Mark the code inside (and the tasks it starts) as one case: while it is open and
        not waiting for a batch, partial batches wait for it. Nested uses are one case."""
        if self._current.get() is not None:
            yield
            return
        token = self._current.set(_Case(next(self._seq)))
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1
            self._current.reset(token)
            self._schedule_check()

    def hold(self) -> None:
        """Count one more open case that is not waiting: e.g. the code still starting cases,
        whose next case may join a partial batch. Undone by :meth:`release`."""
        self._open += 1

    def release(self) -> None:
        """Undo one :meth:`hold`."""
        self._open -= 1
        self._schedule_check()

    async def request(self, group: G, payload: P) -> R:
        """Queue ``payload`` in ``group`` and wait for its result from the call it joins."""
        if self._current.get() is None:
            # a request outside any case is a case of its own
            with self.case():
                return await self.request(group, payload)
        case = self._current.get()
        assert case is not None
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        entry = _Request((case.seq, next(self._seq)), payload, future, case)
        queue = self._queues.setdefault(group, [])
        queue.append(entry)
        self._wait(case, +1)
        self._schedule_check()
        try:
            return await future
        finally:
            if entry in queue:  # cancelled before its batch was sent
                queue.remove(entry)
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
        if self._waiting_cases >= self._open:
            for group, queue in self._queues.items():
                while queue:
                    self._send(group, queue)

    def _send(self, group: G, queue: list[_Request[P, R]]) -> None:
        queue.sort(key=lambda r: r.order)
        batch = queue[: self.size]
        del queue[: self.size]
        self.calls += 1
        self.sizes.append(len(batch))
        loop = asyncio.get_running_loop()
        task = contextvars.Context().run(loop.create_task, self._run(group, batch))
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
