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
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from typing import Any

#: How long a worker told to exit has before it is killed (xdist's teardown gives as long).
EXIT_TIMEOUT = 10.0


class WorkerExits:
    """The workers the controller told to exit, until they are reaped. Registered as a
    plugin on the controller (see the module docstring)."""

    def __init__(self, timeout: float = EXIT_TIMEOUT) -> None:
        self.timeout = timeout
        self._exited: list[Any] = []

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


def _process(gateway: Any) -> subprocess.Popen[bytes] | None:
    """The local process behind a gateway (a popen or ssh one), as execnet's own teardown
    reaps it (``Group.terminate``); None for one without (a socket gateway)."""
    popen = getattr(getattr(gateway, "_io", None), "popen", None)
    return popen if isinstance(popen, subprocess.Popen) else None
