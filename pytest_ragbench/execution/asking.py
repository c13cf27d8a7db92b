"""Asking a pipeline for the answers of several cases at once, ahead of their items.

A pipeline whose object has a ``ragbench_concurrency`` attribute above 1 (the http pipeline's
``concurrency`` parameter, the LangChain and LlamaIndex adapters' one, or any application that
sets it: a name of its own, so that an application's ``concurrency`` setting for its own use
does not have it called from several threads) is
asked for up to that many cases at once while items report in order, each item waiting for
its own answer. Asked one case at a time, an http pipeline with ``concurrency: 8`` in front
of a service that takes one second an answer took six seconds for six cases.

How it is timed: a case's wall time (its ``latency_ms`` when the pipeline reports none) runs
from the moment it is asked, one of the ``concurrency`` slots in hand, to its answer, on an
event loop that keeps running between items (:mod:`pytest_ragbench.loopthread`): what the
service queues at that load is in it, as its clients would see it, and the items' reporting
is not.

Where it runs: an async ``answer()`` on the runtime's own event loop, which from the first such
pipeline on runs in a thread of its own for the rest of the run (what an async pipeline opens,
an httpx client, a lock, belongs to the loop that first used it, so every later call of the
suite's async components goes there too); a synchronous ``answer()`` in ``concurrency``
threads, so it must be safe to call from several threads at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from ..datasets import Query
from ..errors import exception_text
from ..llm import deadline as limits
from ..loopthread import LoopThread


def ask_concurrency(instance: Any) -> int | str:
    """How many cases pipeline ``instance`` takes at once (its ``ragbench_concurrency``
    attribute, 1 without one), or what is wrong with the attribute."""
    try:
        value = getattr(instance, "ragbench_concurrency", None)
    except Exception as exc:  # a property of the application's: its error, not a traceback
        return (f"its ragbench_concurrency (the cases it is asked for at once) could not be "
                f"read: "
                f"{exception_text(exc)}")
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return (f"its ragbench_concurrency (the cases it is asked for at once) must be a whole "
                f"number >= 1, got {value!r}")
    return value


class Asker:
    """Asks pipeline ``instance`` for cases' answers, at most ``concurrency`` at once.

    :meth:`submit` starts a case under a key; :meth:`result` waits for it and hands back the
    raw output and the call's wall time in ms, or raises what ``failed`` makes of its
    exception (``timed_out()`` past ``limit`` seconds, the pipeline's ``case_timeout``).
    ``looking_ahead(case_ids)`` marks a call made ahead of its item for as long as it runs.
    """

    def __init__(self, instance: Any, concurrency: int, loop: LoopThread, *,
                 limit: float | None, failed: Callable[[BaseException], Exception],
                 timed_out: Callable[[], Exception],
                 looking_ahead: Callable[[list[str]], contextlib.AbstractContextManager[Any]],
                 name: str = "") -> None:
        self.concurrency = concurrency
        self._instance = instance
        self._loop = loop
        self._limit = limit
        self._failed = failed
        self._timed_out = timed_out
        self._looking_ahead = looking_ahead
        self._slots = asyncio.Semaphore(concurrency)
        self._name = name
        self._in_threads = not inspect.iscoroutinefunction(getattr(instance, "answer", None))
        self._asked: dict[Hashable, concurrent.futures.Future[tuple[Any, float]]] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._asked

    def keys(self) -> list[Hashable]:
        """The cases asked and not yet collected."""
        with self._lock:
            return list(self._asked)

    def answered(self) -> list[Hashable]:
        """The cases asked whose answer (or error) is in, not yet collected."""
        with self._lock:
            return [k for k, f in self._asked.items() if f.done()]

    def settle(self) -> None:
        """Wait until none of the cases asked is still running (their answers stay in,
        to be collected)."""
        with self._lock:
            pending = list(self._asked.values())
        concurrent.futures.wait(pending)

    def submit(self, key: Hashable, query: Query, *, ahead: bool) -> None:
        """Ask for ``query``'s answer under ``key`` (nothing if it is asked already)."""
        with self._lock:
            if key not in self._asked:
                self._asked[key] = self._loop.start(self._ask(query, ahead))

    def result(self, key: Hashable) -> tuple[Any, float]:
        """Wait for ``key``'s answer: (raw output, wall ms); raises its case's error."""
        with self._lock:
            future = self._asked[key]
        try:
            return future.result()
        except BaseException:
            if not future.done():  # interrupted while waiting: the call is not left running
                future.cancel()
            raise
        finally:
            with self._lock:
                if self._asked.get(key) is future and future.done():
                    del self._asked[key]

    async def _ask(self, query: Query, ahead: bool) -> tuple[Any, float]:
        async with self._slots:
            marking = self._looking_ahead([query.id]) if ahead else contextlib.nullcontext()
            t0 = time.perf_counter()
            with marking:
                try:
                    if self._limit is None:
                        raw = await self._call(query)
                    else:
                        raw = await limits.within(self._limit, lambda: self._call(query))
                except (asyncio.TimeoutError, TimeoutError) as exc:
                    raise (self._timed_out() if self._limit is not None
                           else self._failed(exc)) from None
                except (Exception, SystemExit, asyncio.CancelledError) as exc:
                    # a SystemExit fails its case only, and so does a CancelledError the
                    # application raised (this call cancelled, nobody waits for its case)
                    raise self._failed(exc) from exc
            return raw, (time.perf_counter() - t0) * 1000.0

    async def _call(self, query: Query) -> Any:
        raw = await self._in_thread(query) if self._in_threads else self._instance.answer(query)
        if inspect.isawaitable(raw):
            raw = await raw
        return raw

    def _in_thread(self, query: Query) -> asyncio.Future[Any]:
        """A synchronous ``answer(query)`` in a daemon thread of its own: one past its limit
        is left to finish in the background and does not hold the process at its exit (a
        thread pool's workers are waited for then)."""
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Any] = loop.create_future()
        context = contextvars.copy_context()

        def hand(value: Any, error: BaseException | None) -> None:
            if answered.done():  # given up on (its limit ran out)
                return
            if error is not None:
                answered.set_exception(error)
            else:
                answered.set_result(value)

        def target() -> None:
            try:
                value = context.run(self._instance.answer, query)
            except BaseException as exc:  # handed to the case
                error: BaseException | None = exc
                value = None
            else:
                error = None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(hand, value, error)

        threading.Thread(target=target, name=f"ragbench-answer-{self._name}",
                         daemon=True).start()
        return answered

    def close(self) -> None:
        """Cancel the cases asked and never collected (a run stopped early); a synchronous
        call already running is left to finish in its thread."""
        with self._lock:
            pending, self._asked = list(self._asked.values()), {}
        for future in pending:
            future.cancel()

