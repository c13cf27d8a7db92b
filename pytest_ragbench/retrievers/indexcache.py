"""The on-disk index cache as a whole: what it holds, and removing entries safely.

The ``bm25`` and ``dense`` retrievers keep one folder per corpus and parameters
(``bm25-<key>``, ``dense-<key>``) under pytest's cache folder (``.pytest_cache/d/ragbench``).
A new key never replaces an old folder, so without pruning the cache only grows. Each entry
has a lock file (``<entry>.lock``, held while it is built) and a use file (``<entry>.use``,
held shared by every process that has it mapped, and touched when one starts to: its mtime is
the entry's last use). See :mod:`.cachelock`.

:func:`scan` lists the entries; :func:`prune_entry` removes one only when it can take both
files' locks without waiting, so an entry being built or in use by a run is kept and said so.
A lock or use file that exists but cannot be opened (a folder in its place, another user's
file) leaves the entry's state unknown: it is kept, and :class:`LockFileError` names the file.
No pytest here: ``ragbench cache`` calls these.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from ..results.runfolder import folder_size
from .cachelock import hold_lock

__all__ = ["CacheEntry", "LockFileError", "PruneOutcome", "prune_entry", "scan",
           "sweep_orphans"]

#: Folder names of entries, and of what a build killed midway left (``.bm25-<key>.*.tmp``).
_ENTRY = re.compile(r"^(bm25|dense)-[0-9a-f]{8,64}$")
_UNFINISHED = re.compile(r"^\.((?:bm25|dense)-[0-9a-f]{8,64})\..+$")
_LOCK_FILE = re.compile(r"^((?:bm25|dense)-[0-9a-f]{8,64})\.(lock|use)$")

PruneOutcome = Literal["removed", "in use", "being built"]


class LockFileError(Exception):
    """An entry's lock or use file cannot be opened, so whether a run is building or using
    the entry cannot be known (and the entry must be kept)."""

    def __init__(self, path: Path, error: OSError) -> None:
        self.path = path
        self.reason = error.strerror or str(error)
        super().__init__(f"cannot open {path}: {self.reason}")


def _lock(path: Path) -> IO[bytes] | None:
    """:func:`hold_lock` of ``path``, its failure to open the file as :class:`LockFileError`."""
    try:
        return hold_lock(path)
    except OSError as exc:
        raise LockFileError(path, exc) from None


@dataclass(frozen=True)
class CacheEntry:
    """One folder of the index cache.

    ``entry`` is the name of the cache entry it belongs to (its own name, or for an
    ``unfinished`` build's temporary folder the entry that build was making); ``last_used``
    is epoch seconds (the use file's mtime, else the folder's); ``in_use`` whether a process
    holds it now, and ``state_unknown`` why that cannot be known, when a lock or use file
    exists but cannot be opened (both only filled in by :func:`scan` with ``probe``).
    """

    path: Path
    kind: str
    entry: str
    size: int
    last_used: float
    unfinished: bool = False
    in_use: bool = False
    state_unknown: str | None = None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _held(path: Path) -> bool:
    """Whether another process holds a lock on ``path`` (an existing lock file; one that does
    not exist is held by nobody, and is not created here: that would reset a last use).
    Raises :class:`LockFileError` when the file is there but cannot be opened."""
    if os.name == "nt":  # pragma: no cover - not run on the POSIX CI
        return False
    import fcntl

    try:
        # for writing, as a prune's and a run's locks open it: one this user can only read
        # (another user's) would look free here and then stop the prune
        fh = path.open("r+b")
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise LockFileError(path, exc) from None
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False


def scan(folder: Path, *, probe: bool = True) -> list[CacheEntry]:
    """The entries and unfinished builds in the cache ``folder``, oldest last use first.

    With ``probe``, each entry's ``in_use`` says whether a process holds it (being built or
    mapped) at this moment.
    """
    found: list[CacheEntry] = []
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return []
    for child in children:
        if not child.is_dir() or child.is_symlink():
            continue
        whole = _ENTRY.match(child.name)
        partial = None if whole else _UNFINISHED.match(child.name)
        if whole is None and partial is None:
            continue
        entry = child.name if whole else partial.group(1)  # type: ignore[union-attr]
        own = _mtime(child)
        if own is None:
            continue
        used = _mtime(folder / f"{entry}.use") if whole else None
        in_use, unknown = False, None
        if probe:
            try:
                in_use = _held(folder / f"{entry}.lock") or (
                    whole is not None and _held(folder / f"{entry}.use"))
            except LockFileError as exc:
                unknown = str(exc)
        found.append(CacheEntry(child, entry.split("-", 1)[0], entry, folder_size(child),
                                max(own, used or own), unfinished=partial is not None,
                                in_use=in_use, state_unknown=unknown))
    found.sort(key=lambda e: (e.last_used, e.path.name))
    return found


def prune_entry(entry: CacheEntry) -> PruneOutcome:
    """Remove ``entry`` (a cache folder from :func:`scan`) unless a process holds it.

    Takes the entry's build lock and then its use lock, both exclusively and without
    waiting: a build under way, or a run that has the entry mapped, keeps it ("being built",
    "in use"). Holding both, the folder is renamed out of the way (a reader arriving now
    finds no entry and builds it again, as after any miss) and the two lock files are
    deleted; the folder's files are then removed without any lock held.

    Raises :class:`LockFileError`, removing nothing, when either file cannot be opened (or
    created): a build or a run may hold the entry, unseen.
    """
    folder = entry.path.parent
    lock = _lock(folder / f"{entry.entry}.lock")
    if lock is None:
        return "being built"
    trash: Path | None = None
    try:
        if entry.unfinished:
            # nothing uses a build's leftovers; the build lock says no build is running
            trash = entry.path
        else:
            use = _lock(folder / f"{entry.entry}.use")
            if use is None:
                return "in use"
            try:
                trash = Path(tempfile.mkdtemp(dir=folder, prefix=f".{entry.entry}.",
                                              suffix=".pruned"))
                try:
                    os.rename(entry.path, trash / "entry")
                except OSError:
                    # a file of it is open where files in use cannot be moved (Windows)
                    os.rmdir(trash)
                    trash = None
                    return "in use"
                with contextlib.suppress(OSError):
                    os.unlink(folder / f"{entry.entry}.use")
            finally:
                use.close()
        with contextlib.suppress(OSError):
            os.unlink(folder / f"{entry.entry}.lock")
    finally:
        lock.close()
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return "removed"


def sweep_orphans(folder: Path) -> int:
    """Delete the lock and use files of entries that are gone (pruned by an older version,
    removed by hand, or looked for where the cache could not be written), each only while
    holding it without waiting; the number deleted."""
    removed = 0
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError:
        return 0
    present = set(names)
    for name in names:
        m = _LOCK_FILE.match(name)
        if m is None or m.group(1) in present or any(
                n.startswith(f".{m.group(1)}.") for n in names):
            continue
        path = folder / name
        if not path.is_file():
            continue
        try:
            held = hold_lock(path)
        except OSError:
            continue
        if held is None:
            continue
        try:
            os.unlink(path)
            removed += 1
        except OSError:
            pass
        finally:
            held.close()
    return removed
