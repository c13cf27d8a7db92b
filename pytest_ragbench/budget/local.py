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
from typing import Any

from .api import RunBudget
from .core import BudgetCore

_OWNER = "local"


class LoopThread:
    """An asyncio loop running in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class LocalBudget(RunBudget):
    """A :class:`RunBudget` for one process, without sockets."""

    def __init__(self) -> None:
        super().__init__()
        self._runner = LoopThread("ragbench-budget")
        loop = self._runner.loop
        self._core = BudgetCore(call_later=loop.call_later, clock=time.monotonic)
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()

    def __repr__(self) -> str:
        return "LocalBudget()"

    def _deliver(self, message: dict[str, Any], future: concurrent.futures.Future[Any] | None
                 ) -> None:
        if future is not None:
            with self._lock:
                self._pending.add(future)

        def reply(payload: dict[str, Any]) -> None:
            if future is not None:
                with self._lock:
                    self._pending.discard(future)
                if not future.done():
                    future.set_result(payload)

        try:
            self._runner.loop.call_soon_threadsafe(self._core.handle, _OWNER, message, reply)
        except RuntimeError:  # the loop is closed
            reply({"ok": False, "error": "lost", "message": "the run budget was closed"})

    def close(self) -> None:
        """Stop the budget; calls still waiting fail with ``CoordinatorError``."""
        self._runner.stop()
        with self._lock:
            pending, self._pending = self._pending, set()
        for future in pending:
            if not future.done():
                future.set_result({"ok": False, "error": "lost",
                                   "message": "the run budget was closed"})
