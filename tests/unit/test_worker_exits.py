"""WorkerExits: which finished workers the controller lets go, and how it reaps them."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_ragbench.worker_exits import WorkerExits


@dataclass
class _Spec:
    via: str | None = None


@dataclass
class _IO:
    popen: Any = None


@dataclass
class _Gateway:
    """What WorkerExits uses of an execnet gateway."""

    id: str
    spec: _Spec = field(default_factory=_Spec)
    _io: _IO = field(default_factory=_IO)
    exits: int = 0
    joins: list[float | None] = field(default_factory=list)
    fail_exit: bool = False

    def exit(self) -> None:
        if self.fail_exit:
            raise OSError("closed")
        self.exits += 1

    def join(self, timeout: float | None = None) -> None:
        self.joins.append(timeout)


@contextlib.contextmanager
def _children(*seconds: float) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child processes that sleep so long, killed and reaped at the end if still there."""
    procs = [subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({s})"])
             for s in seconds]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_every_worker_that_finished_is_told_to_exit_the_last_one_too() -> None:
    exits = WorkerExits()
    gw0, gw1 = _Gateway("gw0"), _Gateway("gw1")
    assert exits.finished(gw0, None)
    assert exits.finished(gw1, None)
    assert (gw0.exits, gw1.exits) == (1, 1)


def test_a_crashed_worker_and_one_behind_a_proxy_stay_with_xdist() -> None:
    # xdist's teardown ends a --px proxy after the workers behind it; exiting those here
    # would leave it to close the proxy in the same pass as it reaps them
    exits = WorkerExits()
    proxied, crashed, plain = _Gateway("gw0", _Spec(via="hop")), _Gateway("gw1"), _Gateway("gw2")
    assert not exits.finished(crashed, "worker 'gw1' crashed")
    assert not exits.finished(proxied, None)
    assert exits.finished(plain, None)
    assert (proxied.exits, crashed.exits, plain.exits) == (0, 0, 1)
    exits.pytest_sessionfinish()  # the reap, as a plugin's session finish
    assert (proxied.joins, crashed.joins, len(plain.joins)) == ([], [], 1)


def test_a_gateway_that_refuses_to_exit_is_left_to_xdist() -> None:
    exits = WorkerExits()
    gw = _Gateway("gw0", fail_exit=True)
    assert not exits.finished(gw, None)
    exits.reap()
    assert gw.joins == []


#: The reap's timeout in the test below, which waits it out once: over three times what the
#: quick child takes to start and end (0.13-0.15 s at a load of 3).
REAP_TIMEOUT = 0.5


def test_reap_waits_for_each_process_and_kills_one_past_the_timeout() -> None:
    exits = WorkerExits(timeout=REAP_TIMEOUT)
    with _children(0.1, 60) as (quick, stuck):
        gws = [_Gateway("gw0", _io=_IO(quick)), _Gateway("gw1", _io=_IO(stuck))]
        for gw in gws:
            exits.finished(gw, None)
        started = time.monotonic()
        exits.reap()
        took = time.monotonic() - started
        # both reaped: the quick one exited by itself, the stuck one was killed at the
        # deadline, which both shared
        assert quick.returncode == 0
        assert stuck.returncode is not None and stuck.returncode < 0
        assert 0.9 * REAP_TIMEOUT <= took < 5
        # each join was bounded by what was left of the shared deadline: the second one's
        # by the second less the time the first process took to end
        [first_join], [second_join] = (gw.joins for gw in gws)
        assert first_join is not None and second_join is not None
        assert 0 <= second_join <= REAP_TIMEOUT - 0.05
        assert second_join < first_join <= REAP_TIMEOUT
        # a second reap (the cleanup after the session finish) has nothing left to wait for
        started = time.monotonic()
        exits.reap()
        assert time.monotonic() - started < 0.1


def test_an_interrupted_reap_kills_the_workers_it_did_not_wait_for() -> None:
    exits = WorkerExits(timeout=30.0)
    with _children(60, 60) as (first, second):
        real_wait = first.wait
        calls: list[float | None] = []

        def interrupted_wait(timeout: float | None = None) -> int:
            calls.append(timeout)
            if len(calls) == 1:
                raise KeyboardInterrupt  # Ctrl-C while the controller waits
            return real_wait(timeout)

        first.wait = interrupted_wait  # type: ignore[method-assign]
        for n, p in enumerate((first, second)):
            gw = _Gateway(f"gw{n}", _io=_IO(p))
            exits.finished(gw, None)
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            exits.reap()
        # neither is left running nor unreaped, and nobody waited out the timeout
        assert first.returncode is not None and first.returncode < 0
        assert second.returncode is not None and second.returncode < 0
        assert time.monotonic() - started < 5
