"""An event loop running in a thread of its own, handed work from any other thread.

The run budget's core runs on one (callers on any loop or thread share its state without
locks), and so does a suite's event loop once a pipeline is asked for several cases at once
(:mod:`pytest_ragbench.execution.asking`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread of its own until :meth:`stop`.

    :meth:`start` begins an awaitable on it in the caller's context (a context variable the
    caller set, a tracing span, reaches the component as it would on the caller's thread).
    """

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop if loop is not None else asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self, awaitable: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Begin ``awaitable`` on the loop; its future (cancelling it cancels the work).

        A ``SystemExit`` or ``KeyboardInterrupt`` it raises is the caller's, as it would be
        on the caller's own loop: raised out of a task, asyncio stops the loop with it, and
        every call waiting on the loop (this one too) waited forever."""
        context = contextvars.copy_context()
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        async def guarded() -> tuple[Any, BaseException | None]:
            try:
                return await awaitable, None
            except (SystemExit, KeyboardInterrupt) as exc:
                return None, exc

        def begin() -> None:
            if result.cancelled():
                with contextlib.suppress(Exception):
                    awaitable.close()  # type: ignore[attr-defined]
                return
            # the task copies the context current when it is made: the caller's (one that is
            # not awaitable after all raises the caller's TypeError in it)
            task = context.run(asyncio.ensure_future, guarded())

            def done(finished: asyncio.Future[tuple[Any, BaseException | None]]) -> None:
                if result.done():
                    return
                if finished.cancelled():
                    result.cancel()
                elif finished.exception() is not None:
                    result.set_exception(finished.exception())  # type: ignore[arg-type]
                else:
                    value, stopped = finished.result()
                    if stopped is not None:
                        result.set_exception(stopped)
                    else:
                        result.set_result(value)

            task.add_done_callback(done)
            result.add_done_callback(
                lambda f: self.loop.call_soon_threadsafe(task.cancel) if f.cancelled() else None)

        self.loop.call_soon_threadsafe(begin)
        return result

    def run(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` on the loop and wait for it here; interrupted (Ctrl-C), the
        work is cancelled before the interruption goes on."""
        future = self.start(awaitable)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                future.cancel()
            raise

    def stop(self, timeout: float = 5.0, *, cancel: bool = False) -> bool:
        """Stop the loop (``cancel``: cancel what still runs on it first), wait for the
        thread and close the loop; whether it stopped (a callback that blocks the loop keeps
        it running, and it is left behind, not closed)."""
        if self.loop.is_closed():
            return True

        async def cancel_all() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if cancel:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self.loop.close()
        return True
