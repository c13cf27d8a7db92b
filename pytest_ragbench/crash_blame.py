"""xdist: a worker that dies in its look-ahead is not blamed on the item it was reporting.

See :mod:`pytest_ragbench.execution.ahead`. Each worker keeps the queries its look-ahead is in
(in a component: a retriever, a pipeline) in a file of a folder the controller made. When a
worker dies while reporting an item and that file names other queries, the controller:

- runs the item again (xdist's ``pytest_handlecrashitem``: the crash report becomes a rerun,
  the item goes back to the pending ones); crashing again in queries already suspected, or
  when xdist has no restart left, it is the crashed case, and an item put back that never
  ran again (the run stopped first) is recorded as one by the session;
- tells every worker started from then on (the crashed one's replacement) not to look ahead
  into those queries: their cases run their components in their own item, where a crash is
  charged to them, and a second bad query no longer costs a worker per case ahead of it.

Only with a scheduler that can take an item back (xdist's ``load``, ``worksteal`` and the
plugin's own); otherwise xdist's crash report stands.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import pytest

from .execution.ahead import AheadMarker, query_key, read_marker
from .scheduling import query_of

#: workerinput keys: the markers' folder, and the queries not to look ahead into.
WORKERINPUT_DIR = "ragbench_ahead_dir"
WORKERINPUT_SKIP = "ragbench_no_ahead"
#: the markers' folders: ``ragbench-ahead-<random>`` in the temp folder, each holding the lock
#: of its ``owner.lock`` for as long as its controller runs
DIR_PREFIX = "ragbench-ahead-"
OWNER_LOCK = "owner.lock"
#: A folder is only judged once its lock file is this old (seconds): its controller locks it
#: right after making it, so one that is younger may be unlocked for being set up.
SETUP_GRACE = 60.0


def markers_dir(parent: str | None = None) -> tuple[Path, IO[bytes]]:
    """A new folder for this controller's markers, and the open file that holds its lock,
    after removing the folders whose controllers are gone (a SIGKILL'd run never removes its
    own; each one would stay in the temp folder for good). Raises OSError when the folder
    cannot be made or locked (a file system without locks).

    A folder is gone when nobody holds its lock: unlike a pid, that holds across pid
    namespaces (containers sharing ``/tmp``).
    """
    # here, not at the top: the retrievers package is not for runs without suites
    from .retrievers.cachelock import hold_lock

    base = Path(parent or tempfile.gettempdir())
    _remove_abandoned(base)
    folder = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=base))
    try:
        lock = hold_lock(folder / OWNER_LOCK)
        if lock is None:  # pragma: no cover - a new folder's file nobody else has opened
            raise OSError(f"{folder / OWNER_LOCK}: cannot be locked")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, lock


def _remove_abandoned(base: Path) -> None:
    import time

    from .retrievers.cachelock import hold_lock

    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            if not entry.name.startswith(DIR_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            lock_path = Path(entry.path) / OWNER_LOCK
            try:
                if now - lock_path.stat().st_mtime < SETUP_GRACE:
                    continue  # maybe not locked yet
                held = hold_lock(lock_path)
            except OSError:
                continue  # no lock file (an older version's folder), or another user's
            if held is None:
                continue  # its controller runs
            held.close()  # before removing it: Windows removes no open file
            shutil.rmtree(entry.path, ignore_errors=True)


def worker_marker(config: pytest.Config) -> AheadMarker | None:
    """This xdist worker's marker (None in any other process)."""
    given = getattr(config, "workerinput", None) or {}
    folder, worker = given.get(WORKERINPUT_DIR), given.get("workerid")
    if not isinstance(folder, str) or not isinstance(worker, str):
        return None
    return AheadMarker(Path(folder) / f"{worker}.ahead", given.get(WORKERINPUT_SKIP) or ())


class CrashBlame:
    """The controller's side (registered only where xdist starts workers)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._dir: Path | None = None
        self._lock: IO[bytes] | None = None  # holds the folder's lock while this run lives
        self._off = False  # no markers folder could be made
        self.suspects: set[str] = set()
        # items put back after a crash, and those of them that reported again
        self._rerun: set[str] = set()
        self._back: set[str] = set()

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self._dir is None and not self._off:
            try:
                self._dir, self._lock = markers_dir()
            except OSError:
                # no folder or no lock for it (a file system without locks): the run goes
                # on without crash blame, as a worker on another host does
                self._off = True
        if self._dir is None:
            return
        node.workerinput[WORKERINPUT_DIR] = str(self._dir)
        node.workerinput[WORKERINPUT_SKIP] = sorted(self.suspects)

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport,
                               sched: Any) -> bool | None:
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        if self._dir is None or gateway is None or not self._restarts_left():
            return None  # no worker would run it again: xdist's crash report stands
        ahead = read_marker(self._dir / f"{gateway.id}.ahead")
        own = query_key(crashitem.split("::", 1)[0], query_of(crashitem))
        others = {key for key in ahead if key != own}
        if not others or (crashitem in self._rerun and others <= self.suspects):
            # it died in its own case (or nothing says otherwise), or again in queries
            # already known to crash: charged to it
            return None
        try:
            sched.mark_test_pending(crashitem)
        except (NotImplementedError, AttributeError, ValueError):
            return None  # this scheduler cannot take an item back
        self._rerun.add(crashitem)
        self._back.discard(crashitem)
        self.suspects.update(others)
        report.outcome = "rerun"  # type: ignore[assignment]
        report.longrepr = (f"{report.longrepr} while retrieving ahead for "
                           f"{', '.join(sorted(ahead))}: run again")
        setattr(report, "ragbench_rerun", True)  # noqa: B010 - a report attribute of ours
        return True

    def _restarts_left(self) -> bool:
        """Whether xdist replaces the worker that just died (it counts it after this hook)."""
        dsession = self.config.pluginmanager.get_plugin("dsession")
        limit = getattr(dsession, "_max_worker_restart", None)
        failed = getattr(dsession, "_failed_nodes_count", 0)
        return limit is None or failed + 1 <= limit

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not getattr(report, "ragbench_rerun", False):
            if report.nodeid in self._rerun:
                self._back.add(report.nodeid)
            return
        # junitxml opened an entry for the report it does not know how to end: an empty
        # <testcase/>, read by CI as a passed test without a name (the item's own report
        # comes when it runs again)
        with contextlib.suppress(Exception):
            from _pytest.junitxml import xml_key

            xml = self.config.stash.get(xml_key, None)
            if xml is not None:
                # pytest 9 keys its reporters by the report's id, pytest 8 by its node id
                key = (getattr(report, "id", report.nodeid), getattr(report, "node", None))
                reporter = xml.node_reporters.pop(key, None)
                if reporter is not None:
                    xml.node_reporters_ordered.remove(reporter)

    def never_ran(self) -> list[str]:
        """Items put back after a crash that never reported again (the run stopped first):
        the session records them as the crash they were, unless the run was interrupted."""
        return sorted(self._rerun - self._back)

    def pytest_report_teststatus(self, report: pytest.TestReport) -> Any:
        if getattr(report, "ragbench_rerun", False):
            return "rerun", "R", ("RERUN", {"yellow": True})
        return None

    def pytest_unconfigure(self) -> None:
        if self._lock is not None:
            self._lock.close()  # before removing it: Windows removes no open file
            self._lock = None
        if self._dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
