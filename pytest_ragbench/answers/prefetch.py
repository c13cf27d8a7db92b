"""Prefetching: the LLM work of the items a process will run, ahead on one event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


# -- prefetching -----------------------------------------------------------------------------


class Prefetcher:
    """Runs coroutines concurrently on a private event loop in a background thread.

    :meth:`submit` schedules ``coro_factory()`` under a key (at most ``concurrency`` run at a
    time, started in submission order); :meth:`result` blocks the calling thread until that
    key's result is ready. Results can be collected in any order; each is handed out once.
    :meth:`close` cancels whatever is still pending and stops the loop.
    """

    def __init__(self, concurrency: int = 16, *, name: str = "ragbench-prefetch") -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = concurrency
        self._loop = asyncio.new_event_loop()
        self._semaphore = asyncio.Semaphore(concurrency)  # binds to the loop on first wait
        self._lock = threading.Lock()
        self._futures: dict[Hashable, concurrent.futures.Future[Any]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Prefetcher(concurrency={self.concurrency}, pending={self.pending})"

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private loop (for objects that must be created on it)."""
        return self._loop

    @property
    def pending(self) -> int:
        """Submitted keys whose work has not finished yet."""
        with self._lock:
            return sum(1 for f in self._futures.values() if not f.done())

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _bounded(self, coro_factory: Callable[[], Awaitable[T]]) -> T:
        async with self._semaphore:
            return await coro_factory()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the prefetcher is closed")

    def submit(self, key: Hashable, coro_factory: Callable[[], Awaitable[Any]]) -> bool:
        """Schedule ``coro_factory()`` under ``key``; False (and nothing done) if ``key`` is
        already pending or uncollected. The factory is called on the loop, when a slot frees."""
        with self._lock:
            self._check_open()
            if key in self._futures:
                return False
            self._futures[key] = asyncio.run_coroutine_threadsafe(
                self._bounded(coro_factory), self._loop
            )
            return True

    def ready(self, key: Hashable) -> bool:
        """Whether ``key``'s work is done (so :meth:`result` would not block)."""
        with self._lock:
            future = self._futures.get(key)
        return future is not None and future.done()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._futures

    def result(self, key: Hashable, timeout: float | None = None) -> Any:
        """Wait for ``key``'s result and return it (or raise what its coroutine raised).

        Raises ``KeyError`` for a key never submitted (or already collected),
        ``TimeoutError`` when ``timeout`` seconds pass first (the work goes on and the key
        can be waited for again), ``RuntimeError`` when the work was cancelled by
        :meth:`close` or when called from the prefetcher's own thread (it would deadlock).
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("Prefetcher.result() called from the prefetcher's own loop")
        with self._lock:
            future = self._futures.get(key)
        if future is None:
            raise KeyError(key)
        try:
            value = future.result(timeout)
        except concurrent.futures.CancelledError:
            raise RuntimeError(f"prefetched work for {key!r} was cancelled") from None
        except concurrent.futures.TimeoutError:
            if future.done():  # the coroutine itself raised a TimeoutError
                self._forget(key, future)
                raise
            raise TimeoutError(f"prefetched work for {key!r} not done after {timeout} s") from None
        except BaseException:
            self._forget(key, future)
            raise
        self._forget(key, future)
        return value

    def _forget(self, key: Hashable, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            if self._futures.get(key) is future:
                del self._futures[key]

    def call(self, coro_factory: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run ``coro_factory()`` on the loop now (outside the concurrency bound) and wait."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("Prefetcher.call() called from the prefetcher's own loop")
        with self._lock:
            self._check_open()

        async def run() -> T:
            return await coro_factory()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def close(self, finalizer: Callable[[], Awaitable[None]] | None = None,
              timeout: float = 30.0) -> None:
        """Cancel pending work, await ``finalizer()`` on the loop (e.g. closing clients that
        live on it), stop the loop and join the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(
                    self._shutdown(finalizer), self._loop
                ).result(timeout)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout)

    async def _shutdown(self, finalizer: Callable[[], Awaitable[None]] | None) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if finalizer is not None:
            await finalizer()


