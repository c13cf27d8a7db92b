"""The xdist controller's head start: the suite's LLM work begins while the workers boot.

A worker spends seconds starting (process, imports, collection, index) before its first
case, and with the whole LLM phase after that, ``-n 2`` was slower than ``-n 0``. The
controller, idle until the workers report, runs the same answer path as ``-n 0`` (retrieval,
generation, judging, in collection order, through the run budget) on a thread of its own.
Its pipelines lead the run's request exchange (:mod:`pytest_ragbench.answers.exchange`):
every response it obtains is handed to the worker whose case asks for it, a request a worker
claimed first is skipped, and its own case results are thrown away. Items still run on the
workers and report as usual; only the responses come earlier.

Nothing here imports pytest; :mod:`pytest_ragbench.headstart` decides when to start it.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RagbenchError, exception_text
from .runtime import SuiteRuntime

#: How many of its own window's worth of cases the head start keeps submitted ahead of the
#: oldest unfinished one (bounds its memory on large suites; the budget bounds the rest).
AHEAD = 2

#: How long :meth:`HeadStart.stop` waits for the thread. It is a daemon and gives back
#: what it holds when it ends; a step it cannot leave early (building an index) must not
#: hold up the end of the run or a Ctrl-C.
JOIN_TIMEOUT = 2.0

#: The longest the controller's start and its workers' boot wait for the head start's first
#: window of cases (see :meth:`HeadStart.wait_first_wave`): loading a large corpus or
#: building its index takes longer, and the workers' own start-up then overlaps it.
FIRST_WAVE_WAIT = 2.0

#: After the first window is submitted, how long :meth:`HeadStart.wait_first_wave` waits at
#: most for its requests to be granted their slots (and so sent), and how often it looks.
SEND_WAIT = 0.25
SEND_POLL = 0.002

#: How many rounds of the last suite's requests (its pipeline's slots each) one worker
#: answers alone at the end of the run (see :meth:`HeadStart.tail`).
TAIL_ROUNDS = 2


@dataclass(frozen=True)
class PlannedCase:
    """One case the head start answers: its retriever, query and repetition, and its node id
    (to check it against what the workers collected)."""

    system: str
    case_id: str
    run: int
    nodeid: str


@dataclass(frozen=True)
class SuitePlan:
    """A suite's runtime (built for the head start, never shared), its cases in order, and
    how many of them its pipeline answers at once (its ``slots``; 0: it leaves them to the
    workers)."""

    runtime: SuiteRuntime
    cases: tuple[PlannedCase, ...]
    slots: int = 0


class HeadStart:
    """Runs ``plan()``'s cases on a daemon thread until done or :meth:`stop`.

    ``plan(stopped)`` is called on the thread (loading suites takes time the workers'
    start-up covers) and checks ``stopped()`` between its steps; every runtime it returns is
    closed here, reached or not. ``budget`` is the controller's own client of the run
    budget, closed by :meth:`stop` (which gives back whatever the head start still held).
    A failure stops the head start and is kept in :attr:`error` (the workers then do the
    rest); a suite problem (:class:`~pytest_ragbench.errors.RagbenchError`) is left to the
    workers to report. ``clock`` and ``sleep`` are what :meth:`wait_first_wave` polls the
    sending on (default: the real ones; tests step them).
    """

    def __init__(self, plan: Callable[[Callable[[], bool]], Sequence[SuitePlan]],
                 budget: Any, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._plan = plan
        self._budget = budget
        self._clock = clock
        self._sleep = sleep
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._runtimes: list[SuiteRuntime] = []
        self._planned: set[str] | None = None
        # the cases it answers (of suites whose pipeline leads the exchange): their suite's slots
        self._slots_of: dict[str, int] = {}
        self._collected: set[str] | None = None
        self._thread: threading.Thread | None = None
        # set once a first window of cases is submitted, or the head start has ended
        self._first_wave = threading.Event()
        #: Why the head start stopped early, when it failed (shown once by the plugin).
        self.error: str | None = None
        #: Cases whose answer work was started.
        self.submitted = 0
        # the pipeline it answers with (its open cases end the first wave's wait)
        self._pipeline: Any = None

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else "running"
        return f"HeadStart({state}, submitted={self.submitted})"

    def start(self) -> HeadStart:
        self._thread = threading.Thread(target=self._run, name="ragbench-head-start",
                                        daemon=True)
        self._thread.start()
        return self

    def wait_first_wave(self, timeout: float = FIRST_WAVE_WAIT) -> bool:
        """Wait until a first window of cases (``AHEAD`` x concurrency) is submitted and
        their first requests are out (or the head start has ended, or ``timeout`` passed).

        The xdist controller calls this before it starts the workers: booting them takes
        every core for a second or more, and the head start's own preparation (loading the
        suite, its imports, the index) then took as long again, so the LLM phase began
        later than at ``-n 0``. Once the first requests are out the head start mostly waits
        on the endpoint and the workers boot meanwhile. Submitted is not yet sent: the
        first request makes the HTTP client and imports its connection stack (about 50 ms),
        and the others wait for it; with the workers starting meanwhile the first went out
        alone and the other 15 of a 16-slot pool 25-50 ms later (at ``-n 0`` all 16 within
        25 ms). So the wait goes on until every case still open has a request out (granted
        its slot) or a pool has every slot in use, at most :data:`SEND_WAIT` more (a pool
        held back by ``rpm`` grants slowly); a case answered from the response cache takes
        no slot and is not waited for. Over the first 0.4 s the slots were 13.3-14.0 of 16
        busy on average without it, 13.5-14.4 with it (14.7-14.9 at ``-n 0``). Returns
        False only when ``timeout`` passed before the first window was submitted (or the
        head start ended).
        """
        started = self._clock()
        if not self._first_wave.wait(timeout):
            return False
        deadline = min(started + timeout, self._clock() + SEND_WAIT)
        while self.running and not self._wave_sent() and self._clock() < deadline:
            self._sleep(SEND_POLL)
        return True

    def _wave_sent(self) -> bool:
        """Whether every case still open has a request in flight, or some pool of the run
        budget has every slot in use."""
        pipeline = self._pipeline
        try:
            pools = dict(self._budget.totals().get("pools") or {})
            open_cases = pipeline.prefetcher.pending if pipeline is not None else self.submitted
        except Exception:
            return True  # nothing to wait on: the budget or the pipeline is closed
        in_flight = 0
        for pool in pools.values():
            level = (pool.get("adaptive") or {}).get("level") or pool.get("concurrency")
            busy = int(pool.get("in_flight") or 0)
            if level and busy >= int(level):
                return True
            in_flight += busy
        return in_flight >= open_cases

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def restrict(self, nodeids: Sequence[str]) -> None:
        """The workers collected ``nodeids``: when some planned case is not among them (a
        selection the controller did not foresee), stop, so that no request is made for a
        case that will not run."""
        collected = set(nodeids)
        with self._lock:
            planned = self._planned
            if planned is None:
                self._collected = collected  # checked once the plan is known
                return
        if not planned <= collected:
            self.stop()

    def tail(self, cases: Sequence[str]) -> int:
        """How many of the last ``cases`` (the workers' ragbench cases, node ids in collection
        order) one worker should take (:func:`pytest_ragbench.scheduling.deal`): the head
        start answers in collection order, so the other workers then end
        :data:`TAIL_ROUNDS` rounds of responses before the last one and exit while it still
        runs. The rounds are those of the suite of the last case; at most half the cases; 0
        unless the head start is at work and answers every one of them."""
        with self._lock:
            slots_of = self._slots_of
        if not cases or not self.running:
            return 0
        size = min(TAIL_ROUNDS * slots_of.get(cases[-1], 0), len(cases) // 2)
        if size <= 0 or not all(c in slots_of for c in cases[-size:]):
            return 0
        return size

    def stop(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Stop: cancel what is in flight, give back every claim, wait for the thread.
        Idempotent; safe from any thread but the head start's own."""
        self._stopped.set()
        self._first_wave.set()
        with self._lock:
            runtimes = list(self._runtimes)
        for runtime in runtimes:
            with contextlib.suppress(Exception):
                runtime.cancel_answers()
        with contextlib.suppress(Exception):
            self._budget.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            plans = list(self._plan(self._stopped.is_set))
            planned = {c.nodeid for p in plans for c in p.cases}
            with self._lock:
                self._planned = planned
                self._slots_of = {c.nodeid: p.slots for p in plans if p.slots > 0
                                  for c in p.cases}
                collected = self._collected
                # all of them now: a stop cancels and the end closes those never reached too
                self._runtimes.extend(p.runtime for p in plans)
            if self._stopped.is_set():
                # stop() may have run before they were known here: cancel them as it would
                for plan in plans:
                    with contextlib.suppress(Exception):
                        plan.runtime.cancel_answers()
                return
            if collected is not None and not planned <= collected:
                return
            # workers that come up behind the head start wait for its claims in these
            # suites rather than sending their prefetched cases' requests themselves (see
            # pytest_ragbench.budget.exchange); a suite answered is no longer waited for
            scopes = [plan.runtime.suite_id for plan in plans]
            self._budget.lead(scopes)
            for n, plan in enumerate(plans):
                if self._stopped.is_set():
                    return
                self._answer(plan)
                self._budget.lead(scopes[n + 1:])
        except Exception as exc:
            if not self._stopped.is_set() and not isinstance(exc, RagbenchError):
                self.error = exception_text(exc)
        finally:
            # runtimes first: their requests in flight are cancelled and their claims and
            # spend posted before the budget's close gives back what is still held (the
            # other way round a key goes back while its request is out: sent twice)
            with self._lock:
                runtimes, self._runtimes = self._runtimes, []
            for runtime in runtimes:
                with contextlib.suppress(Exception):
                    runtime.cancel_answers()
                with contextlib.suppress(Exception):
                    runtime.close()
            with contextlib.suppress(Exception):
                self._budget.close()
            self._first_wave.set()

    def _answer(self, plan: SuitePlan) -> None:
        runtime = plan.runtime
        pipeline = runtime.pipeline()
        if not pipeline.exchanged:
            return  # its requests would not be handed over: the workers send them
        self._pipeline = pipeline
        # cases go out a slot's worth at a time: one batched retrieval and one hand-over to
        # the pipeline's loop fill every slot, where case by case the first requests went
        # out one retrieval apart (about 3 ms each)
        chunk = max(1, pipeline.slots)
        window = chunk * AHEAD
        pending: collections.deque[Any] = collections.deque()
        cases = plan.cases
        for start in range(0, len(cases), chunk):
            while len(pending) + chunk > window and not self._stopped.is_set():
                self._collect(pipeline, pending.popleft())
            if self._stopped.is_set():
                return
            for system, group in itertools.groupby(cases[start:start + chunk],
                                                   key=lambda c: c.system):
                keys = runtime.prefetch_answers(system, [(c.case_id, c.run) for c in group])
                self.submitted += len(keys)
                pending.extend(keys)
            if len(pending) >= window:
                self._first_wave.set()
        self._first_wave.set()
        while pending and not self._stopped.is_set():
            self._collect(pipeline, pending.popleft())

    @staticmethod
    def _collect(pipeline: Any, key: Any) -> None:
        # the case result is the worker's to make; only the responses it obtained matter
        with contextlib.suppress(Exception):
            pipeline.result(key)
