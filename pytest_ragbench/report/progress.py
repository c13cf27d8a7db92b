"""Progress of long runs: LLM requests done and in flight, tokens, cost and an ETA, while the
cases run (controller only).

The figures come from the run budget, which sees every request of the run (serially the
process's :class:`~pytest_ragbench.budget.LocalBudget`, under xdist the controller's
:class:`~pytest_ragbench.budget.Coordinator`), and from the case reports as they arrive (items
done, the cost of finished cases when no cost cap counts it live). Nothing is shown while no
LLM request was made, so retrieval-only runs print as before.

Lines are written between items (from the report hooks: a thread could not write while a case
runs, pytest captures the output then). On a terminal the line is rewritten in place while
nothing else was written after it; after pytest's own output a new line starts, at most every
``ragbench_progress_interval`` seconds; elsewhere (CI logs) a plain line is written as often;
with ``-q`` and no terminal, nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from ..state import REPORT_ATTR
from .format import count, duration, money

#: Seconds between in-place updates on a terminal.
TTY_INTERVAL = 1.0


@dataclass(frozen=True)
class Progress:
    """The run's LLM work so far, as one line shows it."""

    items_done: int
    items_total: int | None
    requests: int
    in_flight: int
    waiting: int
    tokens: int
    cost: float | None
    elapsed: float

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far (None before the first item or without a total)."""
        if not self.items_total or not self.items_done:
            return None
        left = max(0, self.items_total - self.items_done)
        return self.elapsed / self.items_done * left

    def line(self) -> str:
        items = (f"{self.items_done}/{self.items_total}" if self.items_total
                 else str(self.items_done))
        waiting = f", {self.waiting} waiting" if self.waiting else ""
        cost = money(self.cost) if self.cost is not None else "cost unknown (no prices)"
        return (f"ragbench progress: {items} items, {self.requests} LLM requests done, "
                f"{self.in_flight} in flight{waiting}, {count(self.tokens)} tokens, {cost}, "
                f"{duration(self.elapsed)} elapsed, ETA {duration(self.eta)}")


def progress_of(totals: Mapping[str, Any] | None, *, items_done: int, items_total: int | None,
                elapsed: float, case_cost: float | None) -> Progress | None:
    """The progress from the run budget's ``totals`` (None: no LLM request yet).

    ``case_cost`` is the cost the finished cases carried; a cost cap's live spend (every
    request, finished case or not) replaces it when the run has one."""
    pools = (totals or {}).get("pools") or {}
    requests = sum(int(p.get("requests") or 0) for p in pools.values())
    if not requests:
        return None
    in_flight = sum(int(p.get("in_flight") or 0) for p in pools.values())
    cost = float(totals["spent"]) if (totals or {}).get("costs") else case_cost
    return Progress(items_done, items_total, requests - in_flight, in_flight,
                    sum(int(p.get("waiting") or 0) for p in pools.values()),
                    sum(int(p.get("tokens") or 0) for p in pools.values()), cost, elapsed)


class ProgressReporter:
    """A controller plugin writing :class:`Progress` lines while the cases run.

    ``totals`` reads the run budget's figures (None while no budget was used);
    ``clock`` is for tests."""

    def __init__(self, config: pytest.Config,
                 totals: Callable[[], Mapping[str, Any] | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._totals = totals
        self._clock = clock
        self._interval = _interval(config.getini("ragbench_progress_interval"))
        self._t0: float | None = None
        self._last = -float("inf")
        self._items_total: int | None = None
        self._items_done = 0
        self._case_cost: float | None = None
        self._owned_width: int | None = None  # our status line's width while it is current

    def _reporter(self) -> Any:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None or self._interval <= 0:
            return None
        if not getattr(tr, "isatty", False) and self.config.get_verbosity() < 0:
            return None
        return tr

    # -- what the run tells us ----------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.items:
            self._items_total = len(session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # every worker collects the same items
        self._items_total = len(ids)

    def pytest_runtest_logstart(self) -> None:
        if self._t0 is None:
            self._t0 = self._clock()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rec = getattr(report, REPORT_ATTR, None)
        if isinstance(rec, dict) and rec.get("cost") is not None:
            self._case_cost = (self._case_cost or 0.0) + float(rec["cost"])
        if report.when == "teardown":
            # between items: pytest has written this item's result and not the next one's
            self._items_done += 1
            self.update()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        tr = self._reporter()
        if tr is not None and self._owns_line(tr):
            tr.write("\n")
        self._owned_width = None

    # -- writing ---------------------------------------------------------------------------

    def update(self, *, force: bool = False) -> Progress | None:
        """Write the progress line if one is due; returns what it wrote (None: nothing)."""
        tr = self._reporter()
        if tr is None:
            return None
        now = self._clock()
        tty = bool(getattr(tr, "isatty", False))
        owned = tty and self._owns_line(tr)
        # in place every second; a new line (CI logs, or after pytest's output) per interval
        due = self._last + (TTY_INTERVAL if owned else self._interval)
        if not force and now < due:
            return None
        try:
            totals = self._totals()
        except Exception:
            # a budget that is closing or slow to answer: progress is a courtesy, it never
            # fails the run
            return None
        progress = progress_of(totals, items_done=self._items_done,
                               items_total=self._items_total,
                               elapsed=now - (self._t0 if self._t0 is not None else now),
                               case_cost=self._case_cost)
        if progress is None:
            return None
        self._last = now
        text = progress.line()
        if not tty:
            # write_line ends pytest's line of dots; the next dots go on the line after ours
            # (without the file name again, and without a blank line)
            fspath = tr.currentfspath
            tr.write_line(text)
            tr.currentfspath = fspath
            return progress
        if _current_width(tr) and not owned:
            tr.write("\n")
        if owned:
            tr.rewrite(text, erase=True)
        else:
            tr.write(text)
        # the line is left open to be rewritten; pytest's next result starts a fresh line
        # (with its file name) instead of being appended to it
        tr.currentfspath = None
        self._owned_width = _current_width(tr)
        return progress

    def _owns_line(self, tr: Any) -> bool:
        return self._owned_width is not None and _current_width(tr) == self._owned_width


def _interval(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise pytest.UsageError(f"ragbench: ini option ragbench_progress_interval: expected "
                                f"seconds (a number >= 0, 0 = off), got {value!r}")
    return seconds


def _current_width(tr: Any) -> int:
    return int(getattr(getattr(tr, "_tw", None), "width_of_current_line", 0) or 0)
