"""xdist controller: a worker that finished exits at once and is reaped at the very end.

xdist tells its workers to exit only once the last one is done, then waits in its session
teardown until every worker process has ended, and only then does pytest print the summary.
A finished worker has sent everything (its ``workeroutput`` came with its last message), so
here each one is told to exit as it finishes: those done early shut down while the others
still run, and the last one's interpreter shutdown overlaps the controller's own end of run
(summary, reports, unconfigure) instead of preceding it.

Once no gateway is left in xdist's execnet group, its teardown waits for none of them, so
:meth:`WorkerExits.reap` waits for (and reaps) every worker told to exit here, as that
teardown would have: in a cleanup, after the summary. A worker that crashed, and one another
gateway reaches its host through (``via=``), stay with xdist.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from typing import Any

#: How long a worker told to exit has before it is killed (xdist's teardown gives as long).
EXIT_TIMEOUT = 10.0


class WorkerExits:
    """The controller's record of its workers: which still run, which were told to exit."""

    def __init__(self, timeout: float = EXIT_TIMEOUT) -> None:
        self.timeout = timeout
        #: The gateway ids of the workers still running.
        self.live: set[str] = set()
        #: The gateway ids other gateways go through (``via=``): never told to exit here.
        self._vias: set[str] = set()
        self._exited: list[Any] = []

    def started(self, gateway: Any) -> None:
        """A worker's gateway was configured."""
        self.live.add(gateway.id)
        via = getattr(getattr(gateway, "spec", None), "via", None)
        if via:
            self._vias.add(str(via))

    def finished(self, gateway: Any, error: object) -> bool:
        """A worker went down (``pytest_testnodedown``); whether it was told to exit."""
        self.live.discard(gateway.id)
        if error is not None or gateway.id in self._vias:
            return False
        try:
            gateway.exit()
        except Exception:  # a gateway already closed (execnet's errors): xdist's to end
            return False
        self._exited.append(gateway)
        return True

    def reap(self) -> None:
        """Wait until every worker told to exit has ended, killing one still up after
        :attr:`timeout` seconds."""
        exited, self._exited = self._exited, []
        deadline = time.monotonic() + self.timeout
        for gateway in exited:
            left = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(Exception):
                gateway.join(left)
            # execnet's own teardown reaps through the same handle (Group.terminate); a
            # gateway without a local process (a socket one) has none
            popen = getattr(getattr(gateway, "_io", None), "popen", None)
            if not isinstance(popen, subprocess.Popen):
                continue
            try:
                popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
