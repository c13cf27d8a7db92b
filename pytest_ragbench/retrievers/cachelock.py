"""An exclusive lock on a file next to an on-disk index, so one process builds it.

Several processes on a host (xdist workers) that want the same index queue on the lock; the
first builds the index and renames it into place, the others find it built when they get the
lock and load it. ``flock`` on POSIX; on Windows ``msvcrt.locking`` on the first byte.

A process that uses an entry (has it memory-mapped) holds a shared lock on a second file,
``<entry>.use``, for as long as it does (:func:`use_lease`), and touches it: its mtime is the
entry's last use. ``ragbench cache prune`` removes an entry only holding both files' locks
exclusively, without waiting (see :mod:`.indexcache`), and then deletes them too. Every lock
here is taken on an open file that must still be the one at its path once locked: a process
that opened a lock file just before it was deleted locks again the file now there, so deleting
them never lets two processes hold "the" lock at once.
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


def _try_shared(fh: IO[bytes]) -> None:
    """Take a shared lock, waiting (POSIX only: the caller checks the platform)."""
    import fcntl

    fcntl.flock(fh.fileno(), fcntl.LOCK_SH)


def _still_there(fh: IO[bytes], path: Path) -> bool:
    """Whether the locked open file is still the one at ``path`` (not deleted meanwhile by a
    prune, which holds the lock while it deletes the file)."""
    if os.name == "nt":  # pragma: no cover - a file open here cannot be deleted there
        return True
    try:
        return os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
    except OSError:
        return False


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
    while True:
        fh = path.open("a+b")
        if not _try_lock(fh, wait=False):
            fh.close()
            return None
        if _still_there(fh, path):
            return fh
        fh.close()


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if needed), waiting for it."""
    while True:
        with path.open("a+b") as fh:
            _try_lock(fh, wait=True)
            if not _still_there(fh, path):
                continue
            try:
                yield
            finally:
                _unlock(fh)
            return


def use_lease(path: Path) -> IO[bytes] | None:
    """Hold a shared lock on ``path`` (an entry's ``.use`` file, created if needed) and mark
    the entry used now: the open file, which keeps the lease until closed; None where the
    file cannot be written (a read-only cache: nothing prunes it either) or on Windows, where
    a pruner cannot remove the files of an entry a process has mapped anyway.

    Waits only while a prune removes the entry (it never waits itself, so no cycle)."""
    if os.name == "nt":  # pragma: no cover - not run on the POSIX CI
        with contextlib.suppress(OSError):
            path.touch()
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fh = path.open("a+b")
            _try_shared(fh)
            if _still_there(fh, path):
                os.utime(path)
                return fh
            fh.close()
    except OSError:
        return None


@contextlib.asynccontextmanager
async def exclusive_lock_async(path: Path) -> AsyncIterator[None]:
    """:func:`exclusive_lock` for a coroutine: waits by polling, so the event loop runs on
    meanwhile and a cancelled wait leaves nothing behind (a thread blocked in ``flock`` would
    keep the file open and take the lock after its waiter was gone)."""
    while True:
        with path.open("a+b") as fh:
            while not _try_lock(fh, wait=False):
                await asyncio.sleep(_POLL)
            if not _still_there(fh, path):
                continue
            try:
                yield
            finally:
                _unlock(fh)
            return


def remove_stale_builds(folder: Path, entry: str) -> None:
    """Remove what builders of the cache entry ``entry`` killed midway (SIGKILL, a cancelled
    CI job) left in ``folder``: their temporary folders (``.ENTRY.*``, the size of the entry
    itself), which nothing else would ever remove. Call it holding the entry's lock, so that
    none of them belongs to a build still running."""
    import shutil

    for leftover in folder.glob(f".{entry}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
