"""The test suite's forked xdist workers (tests/forked_workers.py) are in effect and behave as
processes of their own."""

from __future__ import annotations

import os
import select
import signal
import socket
from typing import Any

import forked_workers
import pytest

WORKER_CONFTEST = """
import os
from pathlib import Path

def pytest_configure(config):
    if hasattr(config, "workerinput"):
        Path(f"parent-{os.getpid()}").write_text(str(os.getppid()))
"""


@pytest.mark.skipif(bool(os.environ.get("RAGBENCH_TESTS_REAL_WORKERS")),
                    reason="RAGBENCH_TESTS_REAL_WORKERS asks for real worker processes")
def test_inner_xdist_workers_are_forked_by_the_zygote(pytester: pytest.Pytester,
                                                     _zygote: forked_workers.Zygote) -> None:
    pytester.makeconftest(WORKER_CONFTEST)
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    result = pytester.runpytest("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    parents = [int(p.read_text()) for p in pytester.path.glob("parent-*")]
    assert len(parents) == 2
    # a real worker's parent is this process; a forked one's is the zygote's waiter
    assert os.getpid() not in parents
    assert not _zygote._broken


def test_a_forked_worker_killed_by_a_signal_reports_it_as_popen_does(
        _zygote: forked_workers.Zygote, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_ADDOPTS", "--assert=plain")
    popen = _zygote.spawn(["python", "-u", "-c",
                           "import sys, time; sys.stdout.write('up'); sys.stdout.flush(); "
                           "time.sleep(60)"], dont_write_bytecode=False)
    assert popen is not None
    assert popen.stdout.read(2) == b"up"
    assert popen.poll() is None
    popen.kill()
    assert popen.wait(timeout=10) == -signal.SIGKILL
    assert popen.poll() == -signal.SIGKILL


def test_a_forked_worker_exits_with_its_own_code_in_its_cwd_and_environment(
        _zygote: forked_workers.Zygote, monkeypatch: pytest.MonkeyPatch,
        tmp_path: os.PathLike[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGBENCH_FORK_PROBE", "seen")
    popen = _zygote.spawn(["python", "-u", "-c",
                           "import os, sys; print(os.getcwd(), os.environ['RAGBENCH_FORK_PROBE'],"
                           " sys.argv, sys.path[0] == ''); sys.exit(3)"],
                          dont_write_bytecode=False)
    assert popen is not None
    assert popen.wait(timeout=10) == 3
    assert popen.stdout.read().decode().split() == [str(tmp_path), "seen", "['-c']", "True"]


def test_a_forked_worker_ends_as_an_interpreter_does(
        _zygote: forked_workers.Zygote, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its threads finish and its atexit handlers run before it exits (only the
    interpreter's finalization is skipped), with Python's status for a non-integer exit."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "--assert=plain")
    code = ("import atexit, sys, threading, time\n"
            "atexit.register(print, 'atexit')\n"
            "threading.Thread(target=lambda: (time.sleep(0.05), print('thread'))).start()\n"
            "sys.exit('a message, not a status')\n")
    popen = _zygote.spawn(["python", "-u", "-c", code], dont_write_bytecode=False)
    assert popen is not None
    assert popen.wait(timeout=10) == 1
    assert popen.stdout.read().decode().split() == ["thread", "atexit"]


class _ReadsLate:
    """A socketpair whose first end's first ``recv`` waits until two lines are there: the
    spawner descheduled while a worker that ends at once has its pid and its status sent."""

    def __init__(self, socketpair: Any) -> None:
        self._socketpair = socketpair

    def __call__(self, *args: Any) -> tuple[socket.socket, socket.socket]:
        ours, theirs = self._socketpair(*args)
        late = _LateSocket(fileno=ours.detach())
        return late, theirs


class _LateSocket(socket.socket):
    waited = False

    def recv(self, size: int, flags: int = 0) -> bytes:
        if not self.waited:
            self.waited = True
            while self.recv(64, socket.MSG_PEEK).count(b"\n") < 2:
                select.select([self], [], [], 10)
        return super().recv(size, flags)


def test_a_forked_worker_whose_status_comes_with_its_pid_is_read_whole(
        _zygote: forked_workers.Zygote, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that exits at once can have its pid and its exit status read in one chunk:
    the pid was that whole chunk (ValueError in ``int``, a flaky xdist inner run under load)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "--assert=plain")
    assert _zygote._start() is not None  # its control socketpair made before the late one
    monkeypatch.setattr(forked_workers.socket, "socketpair",
                        _ReadsLate(forked_workers.socket.socketpair))
    popen = _zygote.spawn(["python", "-u", "-c", "import os; os._exit(4)"],
                          dont_write_bytecode=False)
    assert popen is not None
    assert popen.poll() == 4
    assert popen.wait(timeout=10) == 4
