"""What a worker's look-ahead is doing, written where the controller finds it after a crash.

A case retrieves (or asks its pipeline for) the cases after it, so that their LLM work is in
flight while items report in order. A component that kills the process there (``os._exit``,
a segfault, the OOM killer) was charged by xdist to the item being reported: an innocent case
lost its result, and every replacement worker looked ahead into the same query and crashed
again, until xdist's restarts ran out and cases were never run. While the look-ahead is in a
component, :class:`AheadMarker` keeps the queries it is for in a small file; the controller
(``pytest_ragbench.crash_blame``) reads it when a worker dies, runs the reported item again,
and tells later workers not to look ahead into those queries, so that they crash, if they
do, in their own item.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path


def query_key(suite_id: str, case_id: str) -> str:
    """How a marker names a query: ``suite id::case id``."""
    return f"{suite_id}::{case_id}"


class AheadMarker:
    """The queries a process's look-ahead is in, kept in ``path`` (one per line).

    ``skip``: queries never looked ahead into (those a crash was blamed on).
    """

    def __init__(self, path: Path, skip: Iterable[str] = ()) -> None:
        self.path = path
        self.skip = frozenset(skip)
        self._lock = threading.Lock()
        self._active: list[str] = []
        self._fd: int | None = None
        self._unwritable = False

    def allows(self, suite_id: str, case_id: str) -> bool:
        """Whether the look-ahead may run ``case_id``'s component before its item."""
        return query_key(suite_id, case_id) not in self.skip

    @contextlib.contextmanager
    def running(self, suite_id: str, case_ids: Iterable[str]) -> Iterator[None]:
        """Say, for as long as the block runs, that the look-ahead is in these queries."""
        keys = [query_key(suite_id, c) for c in case_ids]
        with self._lock:
            self._active += keys
            self._write()
        try:
            yield
        finally:
            with self._lock:
                for key in keys:
                    self._active.remove(key)
                self._write()

    def _write(self) -> None:
        # written in place (no rename): what is on disk the moment the process dies counts
        if self._fd is None:
            if self._unwritable:
                return
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            except OSError:
                # a worker on another host, where the controller's folder is not: a crash
                # there is charged as xdist charges it (tried once, not at every case)
                self._unwritable = True
                return
        with contextlib.suppress(OSError):
            data = "".join(f"{k}\n" for k in self._active).encode("utf-8", "replace")
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def read_marker(path: Path) -> list[str]:
    """The queries a dead process's look-ahead was in (empty when none or unreadable)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line]
