"""An exclusive lock on a file next to an on-disk index, so one process builds it.

Several processes on a host (xdist workers) that want the same index queue on the lock; the
first builds the index and renames it into place, the others find it built when they get the
lock and load it. ``flock`` on POSIX; on Windows ``msvcrt.locking`` on the first byte. The lock
file stays: deleting it while another process waits on it would let a third one lock a new
file meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

# How often a coroutine waiting for the lock tries again (it must not block its event loop).
_POLL = 0.05


def _try_lock(fh: IO[bytes], *, wait: bool) -> bool:
    if os.name == "nt":  # pragma: no cover - not run on the POSIX CI
        import msvcrt

        while True:
            try:
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not wait:
                    return False
            time.sleep(_POLL)  # LK_LOCK would give up after 10 s; this keeps waiting
    import fcntl

    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _unlock(fh: IO[bytes]) -> None:
    if os.name == "nt":  # pragma: no cover - not run on the POSIX CI
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def hold_lock(path: Path) -> IO[bytes] | None:
    """Take the exclusive lock of the file ``path`` (created if needed) without waiting: the
    open file, which holds it until closed, or None when another process holds it."""
    fh = path.open("a+b")
    if _try_lock(fh, wait=False):
        return fh
    fh.close()
    return None


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if needed), waiting for it."""
    with path.open("a+b") as fh:
        _try_lock(fh, wait=True)
        try:
            yield
        finally:
            _unlock(fh)


@contextlib.asynccontextmanager
async def exclusive_lock_async(path: Path) -> AsyncIterator[None]:
    """:func:`exclusive_lock` for a coroutine: waits by polling, so the event loop runs on
    meanwhile and a cancelled wait leaves nothing behind (a thread blocked in ``flock`` would
    keep the file open and take the lock after its waiter was gone)."""
    with path.open("a+b") as fh:
        while not _try_lock(fh, wait=False):
            await asyncio.sleep(_POLL)
        try:
            yield
        finally:
            _unlock(fh)


def remove_stale_builds(folder: Path, entry: str) -> None:
    """Remove what builders of the cache entry ``entry`` killed midway (SIGKILL, a cancelled
    CI job) left in ``folder``: their temporary folders (``.ENTRY.*``, the size of the entry
    itself), which nothing else would ever remove. Call it holding the entry's lock, so that
    none of them belongs to a build still running."""
    import shutil

    for leftover in folder.glob(f".{entry}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
