"""The run budget of a single process (``-n 0``): the core on its own event loop thread.

The core runs on a private loop so that callers on any loop or thread (each pipeline's
prefetcher has its own loop) share one state without locks, exactly as workers share the
coordinator's core.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from ..loopthread import LoopThread
from .api import RunBudget
from .core import BudgetCore

__all__ = ["CoreBudget", "LocalBudget", "LoopThread"]

_OWNER = "local"


#: A queued message and the future its reply resolves; ``None`` for the owner's drop.
_Queued = tuple[dict[str, Any] | None, concurrent.futures.Future[Any] | None]


def _lost() -> dict[str, Any]:
    return {"ok": False, "error": "lost", "message": "the run budget was closed"}


class CoreBudget(RunBudget):
    """A :class:`RunBudget` delivering straight into a :class:`BudgetCore` running on
    ``loop``, as ``owner``: no sockets. :meth:`close` ends the owner (its slots and claims
    are released) but leaves the core and its loop running.

    Messages go through a queue that the loop drains in one callback: a burst of them (the
    releases, publications and next acquires of a round of responses) wakes the core's
    thread once, where a wake-up per message had the two threads hand the GIL back and
    forth on every one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, core: BudgetCore,
                 owner: Hashable = _OWNER) -> None:
        super().__init__()
        self._loop = loop
        self._core = core
        self._owner = owner
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._queue: list[_Queued] = []
        self._drain_scheduled = False
        self._closed = False

    def __repr__(self) -> str:
        return f"CoreBudget(owner={self._owner!r})"

    def _enqueue(self, message: dict[str, Any] | None,
                 future: concurrent.futures.Future[Any] | None) -> bool:
        """Queue, under the lock (so a message is queued before the owner's drop, None, or
        refused, never handled after it); whether the caller must wake the loop."""
        self._queue.append((message, future))
        wake = not self._drain_scheduled
        self._drain_scheduled = True
        return wake

    def _wake(self) -> None:
        # outside the lock: writing to the loop's wake-up socket lets the core's thread run,
        # and its replies take the lock
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nothing queued will be handled
            with self._lock:
                batch, self._queue = self._queue, []
                self._drain_scheduled = False
            for message, future in batch:
                if message is not None:
                    self._replier(future)(_lost())

    def _drain(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
            self._drain_scheduled = False
        for message, future in batch:
            # one callback per message used to keep a failing one from taking the others
            # down; the batch keeps that: each is handled (or fails) on its own
            try:
                if message is None:
                    self._core.drop_owner(self._owner)
                else:
                    self._core.handle(self._owner, message, self._replier(future))
            except Exception as exc:
                # reported as the loop reports a failing callback, and the caller is answered
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "the run budget failed on a message", "exception": exc})
                self._replier(future)({"ok": False, "error": "invalid",
                                       "message": f"the run budget failed: {exc}"})

    def _replier(self, future: concurrent.futures.Future[Any] | None
                 ) -> Callable[[dict[str, Any]], None]:
        def reply(payload: dict[str, Any]) -> None:
            if future is None:
                return
            with self._lock:
                self._pending.discard(future)
            if not future.done():
                future.set_result(payload)
        return reply

    def _deliver(self, message: dict[str, Any], future: concurrent.futures.Future[Any] | None
                 ) -> None:
        with self._lock:
            posted = not self._closed
            if posted:
                if future is not None:
                    self._pending.add(future)
                wake = self._enqueue(message, future)
        if not posted:
            self._replier(future)(_lost())
        elif wake:
            self._wake()

    def _fail_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
        for future in pending:
            if not future.done():
                future.set_result(_lost())

    def close(self) -> None:
        """Release what this owner holds; calls still waiting fail with ``CoordinatorError``.
        Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            wake = self._enqueue(None, None)
        if wake:
            self._wake()
        self._fail_pending()


class LocalBudget(CoreBudget):
    """A :class:`RunBudget` for one process, without sockets: a core on its own loop thread."""

    def __init__(self) -> None:
        runner = LoopThread("ragbench-budget")
        super().__init__(runner.loop,
                         BudgetCore(call_later=runner.loop.call_later, clock=time.monotonic))
        self._runner = runner

    def __repr__(self) -> str:
        return "LocalBudget()"

    def close(self) -> None:
        """Stop the budget; calls still waiting fail with ``CoordinatorError``."""
        with self._lock:
            self._closed = True
        self._runner.stop()
        self._fail_pending()
