"""xdist controller: a worker that finished is told to exit at once, not in xdist's teardown.

xdist tells its workers to exit only in its session teardown, once the last one is done,
and then waits until every worker process has ended. A finished worker has sent everything
(its ``workeroutput`` came with its last message), so here each one is told to exit as it
finishes: those done early shut down while the others still run, and the last one has begun
its interpreter's shutdown by the time the controller has aggregated the run.

Once no gateway is left in xdist's execnet group, its teardown waits for none of them, so
:class:`WorkerExits` waits for (and reaps) every worker told to exit here, in its own
``pytest_sessionfinish``: like xdist's, an ordinary one, so that the ``trylast`` hooks of
other plugins and the terminal summary still come after every worker has ended (a worker's
last output on the shared stderr then comes before the summary, as with xdist alone). The
same wait runs as a config cleanup for a run that ends without a session finish.

A worker that crashed, and one reached through another gateway (``via=``: xdist's ``--px``
proxies, which its teardown ends after the workers behind them), stay with xdist.

An interrupted run (Ctrl-C, or SIGTERM, which the controller turns into one) stops its
workers on this machine at once, with a SIGTERM each takes as a Ctrl-C. A Ctrl-C at a
terminal reaches every process of the group; a signal sent to the controller's process alone
(``kill``, ``timeout``, a supervisor) did not: xdist's teardown let the workers run the cases
they were handed for 5 s more (execnet's grace before it interrupts them) while nobody
recorded them, and a resume ran them again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from .sigterm import replace_sigterm

#: How long a worker told to exit has before it is killed (xdist's teardown gives as long).
EXIT_TIMEOUT = 10.0


class WorkerExits:
    """The workers the controller told to exit, until they are reaped. Registered as a
    plugin on the controller (see the module docstring)."""

    def __init__(self, timeout: float = EXIT_TIMEOUT) -> None:
        self.timeout = timeout
        self._exited: list[Any] = []
        # the workers that reported collecting ragbench cases, having taken SIGTERM as a
        # Ctrl-C first (:func:`interrupt_on_sigterm`); any other would die of one outright
        self._stoppable: list[Any] = []

    def takes_sigterm(self, gateway: Any) -> None:
        """The worker behind ``gateway`` collected cases (and so takes SIGTERM as a Ctrl-C)."""
        if all(g is not gateway for g in self._stoppable):
            self._stoppable.append(gateway)

    def pytest_keyboard_interrupt(self) -> None:
        """The run was interrupted: SIGTERM to each worker on this machine still up that
        collected cases, which it takes as a Ctrl-C (:func:`interrupt_on_sigterm`), so that
        it stops its case in progress instead of running cases whose reports the controller
        no longer takes. The others (still collecting, or without cases) are left to xdist."""
        if os.name != "posix":  # os.kill would terminate the worker with no teardown
            return
        exited = {id(g) for g in self._exited}
        for gateway in self._stoppable:
            if id(gateway) in exited or not _local(gateway):
                continue
            popen = _process(gateway)
            if popen is not None and popen.poll() is None:
                with contextlib.suppress(OSError):
                    os.kill(popen.pid, signal.SIGTERM)

    def finished(self, gateway: Any, error: object) -> bool:
        """A worker went down (``pytest_testnodedown``); whether it was told to exit."""
        if error is not None or getattr(getattr(gateway, "spec", None), "via", None):
            return False
        try:
            gateway.exit()
        except Exception:  # a gateway already closed (execnet's errors): xdist's to end
            return False
        self._exited.append(gateway)
        return True

    def pytest_sessionfinish(self) -> None:
        self.reap()

    def reap(self) -> None:
        """Wait until every worker told to exit has ended, killing one still up after
        :attr:`timeout` seconds (and every one left when the wait is interrupted)."""
        exited, self._exited = self._exited, []
        deadline = time.monotonic() + self.timeout
        waiting = list(exited)
        try:
            for gateway in exited:
                with contextlib.suppress(Exception):
                    gateway.join(max(0.0, deadline - time.monotonic()))
                popen = _process(gateway)
                if popen is not None:
                    try:
                        popen.wait(max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        popen.kill()
                        popen.wait()
                waiting.remove(gateway)
        finally:
            # a Ctrl-C during the wait: no worker is left behind, unreaped
            for gateway in waiting:
                popen = _process(gateway)
                if popen is not None and popen.poll() is None:
                    with contextlib.suppress(OSError):
                        popen.kill()
                        popen.wait()


def interrupt_on_sigterm() -> Callable[[], None] | None:
    """On an xdist worker: SIGTERM ends its session as Ctrl-C does (``KeyboardInterrupt`` in
    the main thread: the case in progress stops, the session's teardown runs), once; a later
    SIGTERM is ignored, as the first is already stopping it (the controller kills a worker
    that does not end in time). This is how :meth:`WorkerExits.pytest_keyboard_interrupt`
    stops the workers; SIGINT is left as it is, so a run started as a background job (SIGINT
    ignored) still ignores a Ctrl-C at its terminal. Returns what puts the previous handler
    back; None where none was installed (not the main thread, no POSIX signals, SIGTERM
    ignored on purpose)."""
    if os.name != "posix":
        return None
    received = False

    def handle(signum: int, frame: Any) -> None:
        nonlocal received
        if not received:
            received = True
            raise KeyboardInterrupt("SIGTERM")

    return replace_sigterm(handle, keep_ignored=True)


def _local(gateway: Any) -> bool:
    """Whether a worker runs in a process of its own on this machine (a ``popen`` gateway not
    reached through another one): the process :func:`_process` finds is then the worker's
    (for an ssh gateway it is the ssh client)."""
    spec = getattr(gateway, "spec", None)
    return bool(getattr(spec, "popen", False)) and not getattr(spec, "via", None)


def _process(gateway: Any) -> subprocess.Popen[bytes] | None:
    """The local process behind a gateway (a popen or ssh one), as execnet's own teardown
    reaps it (``Group.terminate``); None for one without (a socket gateway)."""
    popen = getattr(getattr(gateway, "_io", None), "popen", None)
    return popen if isinstance(popen, subprocess.Popen) else None
