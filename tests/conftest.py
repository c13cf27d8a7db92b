"""Shared helpers for plugin tests: a small suite written into a pytester directory."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import forked_workers
import httpcore  # noqa: F401
import httpx  # noqa: F401
import numpy  # noqa: F401
import pytest
import scipy.stats  # noqa: F401

# Imported before any in-process pytester run: pytester restores sys.modules afterwards, and a
# second import of numpy's extensions fails, while a second httpcore would no longer be the one
# httpx maps exceptions from.


def _import_the_package() -> None:
    """Import every module of pytest_ragbench once, before any in-process pytester run.

    A module first imported inside such a run is dropped again when the run ends, so the next
    run compiles and assertion-rewrites it anew (without bytecode caching, e.g. under
    PYTHONDONTWRITEBYTECODE, that is most of a small run's time). Tests of what a run imports
    use subprocesses.
    """
    import pytest_ragbench

    for info in pkgutil.walk_packages(pytest_ragbench.__path__, "pytest_ragbench."):
        if not info.name.endswith(".__main__"):  # __main__ runs the CLI
            importlib.import_module(info.name)


_import_the_package()

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

BASE_INI = "[pytest]\npythonpath = .\nasyncio_default_fixture_loop_scope = function\n"

DOCS = [
    {"_id": "d1", "title": "Espresso grind", "text": "Espresso needs a fine grind and 9 bar."},
    {"_id": "d2", "title": "Cold brew", "text": "Cold brew steeps coarse grounds for hours."},
    {"_id": "d3", "title": "Milk steaming", "text": "Steam milk to about 60 degrees."},
    {"_id": "d4", "title": "Descaling", "text": "Descale the kettle and machine with citric acid."},
    {"_id": "d5", "title": "Pour over",
     "text": "Pour over uses a medium fine grind and a gooseneck."},
    {"_id": "d6", "title": "Beans", "text": "Store beans airtight away from light."},
]

QUERIES = [
    {"_id": "q1", "text": "espresso grind size", "relevant": {"d1": 2, "d5": 1},
     "type": "factoid", "difficulty": "easy", "tags": ["espresso"]},
    {"_id": "q2", "text": "how long to steep cold brew", "relevant": {"d2": 2, "d3": 0},
     "type": "numeric", "difficulty": "hard", "tags": ["cold_brew", "numeric"]},
    {"_id": "q3", "text": "milk temperature for steaming", "relevant": {"d3": 2},
     "type": "numeric", "difficulty": "easy", "tags": ["milk", "numeric"]},
    {"_id": "q4", "text": "remove scale with citric acid", "relevant": {"d4": 1},
     "type": "how_to", "difficulty": "hard", "tags": ["cleaning"]},
    {"_id": "q5", "text": "keeping beans fresh", "relevant": {"d6": 2, "d2": 0},
     "type": "how_to", "difficulty": "medium", "tags": ["beans"]},
]

# A valid suite over DOCS and QUERIES that the suite-error tests break one thing of.
LOADER_SUITE = """\
name: e
dataset:
  corpus: corpus.jsonl
  queries: queries.jsonl
retrievers:
  bm25: {}
metrics: [ndcg@10, recall@10]
"""

# ten levels of nine aliases of the level below: 9**10 strings from under 700 bytes
ALIAS_BOMB = "l0: &l0 lol\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 11))

OVERLAP_RETRIEVER = '''
import os

class Overlap:
    """Scores documents by words shared with the query (test retriever)."""

    def __init__(self, fail_on: str = "", crash_on: str = "", interrupt_on: str = "",
                 drop: str = ""):
        self.fail_on, self.crash_on, self.interrupt_on = fail_on, crash_on, interrupt_on
        self.drop = set(drop.split(",")) if drop else set()

    def index(self, corpus):
        self.docs = [(d.id, set((d.title + " " + d.text).lower().replace(".", "").split()))
                     for d in corpus]

    def retrieve(self, query, k):
        if self.fail_on and self.fail_on in query:
            raise RuntimeError("backend unavailable")
        if self.crash_on and self.crash_on in query:
            os._exit(3)
        if self.interrupt_on and self.interrupt_on in query:
            raise KeyboardInterrupt
        q = set(query.lower().split())
        scored = [(i, float(len(q & t))) for i, t in self.docs if i not in self.drop]
        scored = [s for s in scored if s[1] > 0]
        scored.sort(key=lambda x: (-x[1], x[0]))
        return scored[:k]
'''


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def error_sections(out: str) -> dict[str, list[str]]:
    """The lines of each "ERROR collecting <name>" block of a pytest run's output, by name.

    One inner run can collect several broken suite files (each inner run costs start-up
    time): each file gets its own block, the one a run of that file alone shows. A second
    block for the same name fails the calling test.
    """
    sections: dict[str, list[str]] = {}
    name = None
    for line in out.splitlines():
        header = re.fullmatch(r"_+ ERROR collecting (.+?) _+", line)
        if header:
            name = header.group(1)
            assert name not in sections, f"two error blocks for {name}:\n{out}"
            sections[name] = []
        elif name is not None and (line.startswith(("=", "_")) or not line.strip()):
            name = None
        elif name is not None:
            sections[name].append(line)
    return sections


def latest_run(root: Path) -> Path:
    """The newest run folder under the default output root."""
    return (root / ".ragbench" / "runs" / "latest").resolve()


@pytest.fixture
def mini_suite(pytester: pytest.Pytester):
    """Write the mini dataset, a retriever module and a suite; returns a writer for variants."""
    write_jsonl(pytester.path / "corpus.jsonl", DOCS)
    write_jsonl(pytester.path / "queries.jsonl", QUERIES)
    pytester.makepyfile(overlap_retriever=OVERLAP_RETRIEVER)
    # xdist workers started from an in-process pytester run inherit the outer interpreter's
    # startup sys.path, so the retriever module is found through pytest's pythonpath ini.
    pytester.makeini(BASE_INI)

    def write(body: str = "", name: str = "suite.yaml", **params: str) -> Path:
        ret_params = "".join(f"\n    {k}: {json.dumps(v)}" for k, v in params.items())
        text = textwrap.dedent(body) if body else (
            "name: mini\n"
            "dataset:\n  corpus: corpus.jsonl\n  queries: queries.jsonl\n"
            "retrievers:\n  overlap:\n    type: overlap_retriever:Overlap" + ret_params + "\n"
            "metrics: [ndcg@10, recall@10, mrr@10]\n"
        )
        path = pytester.path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(params=["libyaml", "python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The suite loader, with LibYAML's parser (the default) or the pure-Python one."""
    import yaml

    from pytest_ragbench.suite import loader

    if request.param == "python":
        monkeypatch.setattr(loader, "SAFE_LOADER", yaml.SafeLoader)
    return loader


# -- the unit / e2e split ------------------------------------------------------------------
# `pytest -m unit` runs the fast domain tests (everything under tests/unit/, no pytest run
# inside); `pytest -m e2e` runs the tests that drive a whole pytest run through `pytester`;
# `pytest -m "not e2e"` skips the slow end-to-end part. tests/unit/test_markers.py checks it.

UNIT_DIR = Path(__file__).resolve().parent / "unit"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: a plain unit test of the domain (tests/unit/)")
    config.addinivalue_line("markers", "e2e: drives a whole pytest run through pytester")
    if not hasattr(config, "workerinput"):
        _write_the_package_bytecode()


#: A RAM-backed filesystem for the tests' temporary folders, where there is one.
MEMORY_FS = Path("/dev/shm")
#: Prefix of this suite's temporary folders there; each has a lock file beside it
#: (``<folder>.lock``), held by its session while it runs.
MEMORY_TMP_PREFIX = "ragbench-tests-"
#: The free space ``/dev/shm`` must have for them (a whole serial session writes about 80 MB).
MEMORY_TMP_MIN_FREE = 1 << 30
#: A folder without a lock file this old is a dead session's (one younger may be a session
#: between making its folder and locking it).
MEMORY_TMP_UNLOCKED_GRACE = 60.0


@pytest.hookimpl(tryfirst=True, specname="pytest_configure")  # before tmp_path reads it
def pytest_configure_memory_tmp(config: pytest.Config) -> None:
    """Put the temporary folders (``tmp_path``, pytester's) in memory when the machine has
    ``/dev/shm`` with room to spare (:data:`MEMORY_TMP_MIN_FREE`) and no ``--basetemp`` was
    given (``RAGBENCH_TESTS_DISK_TMP=1`` keeps them on disk).

    About 400 inner runs each write a run folder, reports and the run history; the history
    is SQLite, whose commit and closing checkpoint wait for the disk (fsync): on this
    machine's disk that was 30-45 ms of a small in-process run's 70-80 ms. The product's
    writes are the same either way; only the disk's wait is gone. xdist gives each worker
    its own folder under this one. The folder is removed when the session passed; one left
    by a session that has ended (failed, killed) is removed at the next start, as pytest
    keeps only its last few. A session holds a lock on a file beside its folder (not in it:
    pytest empties a given basetemp), so that a session in another PID namespace sharing
    ``/dev/shm`` is seen to be alive.
    """
    if (hasattr(config, "workerinput") or config.option.basetemp
            or os.environ.get("RAGBENCH_TESTS_DISK_TMP")):
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no /dev/shm either
        return
    import tempfile
    import time

    try:
        if shutil.disk_usage(MEMORY_FS).free < MEMORY_TMP_MIN_FREE:
            return  # a container's small /dev/shm (Docker gives 64 MiB): the disk
        for old in MEMORY_FS.glob(f"{MEMORY_TMP_PREFIX}*"):
            if old.is_dir() and not old.is_symlink():
                _remove_if_dead(old, fcntl, time.time())
        folder = tempfile.mkdtemp(prefix=MEMORY_TMP_PREFIX, dir=MEMORY_FS)
        lock = open(f"{folder}.lock", "w")  # noqa: SIM115 (held until the process ends)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # no /dev/shm, or not writable: pytest's default place
        return
    config.option.basetemp = folder
    config.stash[_MEMORY_TMP] = (Path(folder), lock)


def _remove_if_dead(folder: Path, fcntl: Any, now: float) -> None:
    """Remove ``folder`` and its lock file when no session holds the lock (or, without a
    lock file, when it is older than :data:`MEMORY_TMP_UNLOCKED_GRACE`)."""
    lock_path = Path(f"{folder}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR)  # never made here: its session makes it
    except FileNotFoundError:
        try:
            if now - folder.stat().st_mtime > MEMORY_TMP_UNLOCKED_GRACE:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass
        return
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        shutil.rmtree(folder, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
    except OSError:  # BlockingIOError: its session runs
        pass
    finally:
        os.close(fd)


_MEMORY_TMP = pytest.StashKey[tuple[Path, Any]]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    held = session.config.stash.get(_MEMORY_TMP, None)
    if held is not None and exitstatus == 0:
        folder, lock = held
        shutil.rmtree(folder, ignore_errors=True)
        Path(f"{folder}.lock").unlink(missing_ok=True)
        lock.close()


def _write_the_package_bytecode() -> None:
    """Write the package's bytecode before any test starts a new interpreter.

    Subprocess runs and the xdist workers of inner runs (over a hundred processes in all)
    each import the package. Where nothing writes its bytecode (an editable install under
    PYTHONDONTWRITEBYTECODE, as on the CI machine), every one of them compiled all of its
    modules again, about 0.5 s each. Written once here, as pip writes an installed package's
    at install; up to date, the check costs a few milliseconds.
    """
    import compileall

    import pytest_ragbench

    compileall.compile_dir(Path(pytest_ragbench.__file__).parent, quiet=2)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze this process's heap once the tests are collected.

    It holds every imported module (numpy, scipy, pydantic, hypothesis, the package) and the
    collected tests for the whole session; each full collection (the automatic ones and the
    two pytest forces at the end of each in-process run) walked all of it, about 9 s of a
    serial run. The plugin leaves a heap frozen by someone else as it is, so inner runs do not
    thaw it (tests/test_run_costs.py checks both ways).
    """
    import gc

    gc.collect()
    gc.freeze()
    session.config.stash[_FROZEN_AT_COLLECTION] = gc.get_freeze_count()


#: How many objects this session froze after collection (see pytest_collection_finish).
_FROZEN_AT_COLLECTION = pytest.StashKey[int]()


@pytest.fixture
def unfrozen_heap() -> Iterator[None]:
    """This process's heap as a fresh pytest process has it: nothing frozen (this conftest
    freezes it after collection, see pytest_collection_finish above)."""
    import gc

    frozen = gc.get_freeze_count()
    gc.unfreeze()
    yield
    if frozen:
        gc.freeze()


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Iterator[object]:
    """Keep pytest's assertion-rewritten test modules while this session collects them.

    Under PYTHONDONTWRITEBYTECODE pytest rewrites all ~90 test modules at every start (about
    2.8 s here, and again in each worker of ``pytest -n 2``), as nothing keeps what it wrote.
    Kept (``tests/__pycache__``, as any run without that variable keeps it), the next run
    reads them in 0.7 s. Only during this collection: in-process runs later write theirs into
    pytester's temporary folders as the variable says.
    """
    import sys

    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    try:
        return (yield)
    finally:
        sys.dont_write_bytecode = before


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the markers added here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if UNIT_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.unit)
        if "pytester" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


#: Installed pytest plugins that inner runs do not need (see _outputs_as_on_a_developer_machine).
UNRELATED_PLUGINS = ("langsmith_plugin", "hypothesispytest", "anyio", "platformdirs")


@pytest.fixture(autouse=True)
def _outputs_as_on_a_developer_machine(request: pytest.FixtureRequest,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner pytest runs print the same whether or not this one runs in CI.

    pytest writes the whole message of each error in its short summary when ``CI`` or
    ``BUILD_NUMBER`` is set, so a test that counts how often a message appears would count it
    twice on a CI machine only.
    """
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BUILD_NUMBER", raising=False)
    # Inner runs (in-process, subprocess and their xdist workers) load every installed pytest
    # plugin; these are unrelated to ragbench and cost each new process time to import
    # (langsmith's, installed with the LangChain extra, about 0.6 s).
    if "pytester" in request.fixturenames:
        pytester = request.getfixturevalue("pytester")  # it clears PYTEST_ADDOPTS at start
        if "unfrozen_heap" not in request.fixturenames:
            _in_process_runs_ask_nothing_of_the_frozen_heap(pytester, monkeypatch,
                                                            request.config)
        request.getfixturevalue("quick_interrupt_memo")
        forked_workers.install(request.getfixturevalue("_zygote"), monkeypatch)
    # Plain asserts: rewriting makes pytest list every installed distribution's files at each
    # start (about a quarter of a small in-process run); no test here reads an inner run's
    # assertion introspection.
    skip = " ".join(f"-p no:{name}" for name in UNRELATED_PLUGINS) + " --assert=plain"
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{os.environ.get('PYTEST_ADDOPTS', '')} {skip}".strip())


@pytest.fixture(scope="session")
def _zygote() -> Iterator[forked_workers.Zygote]:
    """The warm interpreter that the xdist workers of in-process inner runs are forked from
    (see tests/forked_workers.py: about a hundred such runs each started two interpreters)."""
    zygote = forked_workers.Zygote()
    yield zygote
    zygote.close()


#: Arguments that start xdist workers (-n, --numprocesses, --dist, -d, --tx).
XDIST_ARGS = ("-n", "--numprocesses", "--dist", "-d", "--tx")


def _in_process_runs_ask_nothing_of_the_frozen_heap(pytester: pytest.Pytester,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   config: pytest.Config) -> None:
    """In-process runs are told to leave the heap alone instead of finding out.

    This session froze its heap (pytest_collection_finish above), so an in-process run finds
    it frozen and leaves it as it is, the plugin's rule for a host that froze its own heap;
    but finding out walks every frozen object (``gc.get_freeze_count``: 13-30 ms on this
    session's heap, over 200 runs about 6 s). With ``ragbench_gc_freeze`` off the run neither
    asks nor freezes: the same outcome. tests/test_run_costs.py checks the freeze, the check
    and the rule on an unfrozen heap (the ``unfrozen_heap`` fixture, which turns this off).
    Not for runs with xdist workers: the option would reach them, and a fresh process whose
    heap is not frozen takes longer to exit (about 0.3 s, waited for by the controller). Their
    controller, this process, is given the answer instead: the count this session froze
    (about 90 such runs asked, 20-80 ms each as the frozen heap grows over the session).
    """
    import gc

    from pytest_ragbench import state

    frozen = config.stash.get(_FROZEN_AT_COLLECTION, 0)
    if frozen and state.gc is gc:
        monkeypatch.setattr(state, "gc", _GcOfAFrozenSession(frozen))
    inline_run = pytester.inline_run

    def run(*args: Any, **kwargs: Any) -> pytest.HookRecorder:
        if any(str(a).startswith(XDIST_ARGS) for a in args):
            return inline_run(*args, **kwargs)
        return inline_run("-o", "ragbench_gc_freeze=false", *args, **kwargs)

    monkeypatch.setattr(pytester, "inline_run", run)


class _GcOfAFrozenSession:
    """The ``gc`` module as the plugin's state sees it in this session's in-process runs: the
    same, but ``get_freeze_count`` answers with the count frozen after collection (nonzero,
    all the plugin asks) instead of walking every frozen object."""

    def __init__(self, frozen: int) -> None:
        self._frozen = frozen

    def get_freeze_count(self) -> int:
        return self._frozen

    def __getattr__(self, name: str) -> Any:
        import gc

        return getattr(gc, name)


@pytest.fixture
def quick_interrupt_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs that end on a KeyboardInterrupt (a Ctrl-C, the SIGTERM a run turns
    into one, pytest's own ``Session.Interrupted`` of a collection error or a stop) skip a
    traceback nobody sees.

    pytest's terminal reporter keeps ``excinfo.getrepr(funcargs=True)`` of the interrupt that
    ends such a run and, without ``--full-trace``, prints only its crash line: the same in
    the native form. The long form re-parses the source file of every frame (0.1-0.2 s per
    run). Every test that uses ``pytester`` gets it (see _outputs_as_on_a_developer_machine).
    """
    from _pytest.terminal import TerminalReporter

    full = TerminalReporter.pytest_keyboard_interrupt

    def memo(self: TerminalReporter, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        if self.config.option.fulltrace:
            full(self, excinfo)
        else:
            self._keyboardinterrupt_memo = excinfo.getrepr(funcargs=True, style="native")

    monkeypatch.setattr(TerminalReporter, "pytest_keyboard_interrupt", memo)
