"""Progress of long runs: LLM requests done and in flight, tokens, cost and an ETA, while the
cases run (controller only).

The figures come from the run budget, which sees every request of the run (serially the
process's :class:`~pytest_ragbench.budget.LocalBudget`, under xdist the controller's
:class:`~pytest_ragbench.budget.Coordinator`), and from the case reports as they arrive (items
done, the cost of finished cases when no cost cap counts it live). Nothing is shown while no
LLM request was made, so retrieval-only runs print as before.

On a terminal that takes cursor movements the progress is one status line under pytest's
output, redrawn in place (figures at most every second) and stepping aside whenever anything
else is written (see :class:`StatusLine`); it is drawn from the report hooks, because a thread
could not write while a case runs (pytest captures the output then). Elsewhere (CI logs, a dumb
terminal, ``-s``) a plain line is written at most every ``ragbench_progress_interval``
seconds; with ``-q`` and no terminal, nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from ..state import REPORT_ATTR
from .budget import llm_pools, pool_kind
from .format import count, duration, estimate_note, money, plural

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
    estimated: int = 0  # of the requests done: counted by an estimate (no usage sent)
    cost_estimated: bool = False  # the cost rests in part on estimated token counts
    #: of the requests done, those whose tokens were counted (None: all of them); a refused
    #: or failed one has none, so the estimates are "N of" these
    settled: int | None = None
    #: embedding requests done and their tokens, apart from ``requests`` and ``tokens`` (the
    #: chat requests, which the summary's llm column counts); ``estimated`` and ``settled``
    #: cover both kinds
    embedding_requests: int = 0
    embedding_tokens: int = 0

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
        note = estimate_note(self.estimated,
                             self.requests + self.embedding_requests if self.settled is None
                             else self.settled)
        tokens = self._tokens() + (f" ({note})" if note else "")
        if self.cost is not None and self.cost_estimated:
            cost += " (estimated)"
        return (f"ragbench progress: {items} items, {self._requests()} done, "
                f"{self.in_flight} in flight{waiting}, {tokens}, {cost}, "
                f"{duration(self.elapsed)} elapsed, ETA {duration(self.eta)}")

    def _requests(self) -> str:
        # named by kind: the summary's llm column counts the chat requests only
        if not self.embedding_requests:
            return plural(self.requests, "LLM request")
        embedding = plural(self.embedding_requests, "embedding request")
        return f"{self.requests} LLM + {embedding}" if self.requests else embedding

    def _tokens(self) -> str:
        if not self.embedding_requests:
            return f"{count(self.tokens)} tokens"
        embedding = f"{count(self.embedding_tokens)} embedding tokens"
        return (f"{count(self.tokens)} LLM + {embedding}" if self.requests else embedding)

    def compact(self) -> str:
        """The same figures for an 80-column terminal (the elapsed time left out; ``~``
        before a figure that rests on estimates)."""
        items = (f"{self.items_done}/{self.items_total}" if self.items_total
                 else str(self.items_done))
        waiting = f", {self.waiting} waiting" if self.waiting else ""
        # '~' marks an estimate: the full line's words would push the ETA off 80 columns
        # the chat figures, as the summary's llm column; the embedding requests beside them
        tokens = ("~" if self.estimated else "") + f"{count(self.tokens)} tok"
        cost = (("~" if self.cost_estimated else "") + money(self.cost)
                if self.cost is not None else "cost ?")
        embedding = f" +{self.embedding_requests} emb" if self.embedding_requests else ""
        return (f"ragbench {items}, {self.requests} req{embedding} ({self.in_flight} in flight"
                f"{waiting}), {tokens}, {cost}, ETA {duration(self.eta)}")

    def fit(self, width: int) -> str:
        """The line, or its compact form when the line is wider than ``width``."""
        line = self.line()
        return line if len(line) <= width else self.compact()[:width]


def progress_of(totals: Mapping[str, Any] | None, *, items_done: int, items_total: int | None,
                elapsed: float, case_cost: float | None,
                case_cost_estimated: bool = False) -> Progress | None:
    """The progress from the run budget's ``totals`` (None: no LLM or embedding request yet;
    an ``http`` pipeline's requests are not LLM requests).

    ``case_cost`` is the cost the finished cases carried (``case_cost_estimated``: some of
    it made from estimated token counts); a cost cap's live spend (every request, finished
    case or not) replaces it when the run has one."""
    totals = totals or {}
    pools = llm_pools(totals.get("pools") or {})
    if not sum(int(p.get("requests") or 0) for p in pools.values()):
        return None

    embedding = {key for key in pools if pool_kind(key) == "embedding"}

    def done(embeddings: bool) -> tuple[int, int]:
        """(requests done, tokens) of the chat pools, or of the embedding pools."""
        mine = [p for key, p in pools.items() if (key in embedding) == embeddings]
        return (sum(int(p.get("requests") or 0) - int(p.get("in_flight") or 0) for p in mine),
                sum(int(p.get("tokens") or 0) for p in mine))

    (chat_done, chat_tokens), (embedding_done, embedding_tokens) = done(False), done(True)
    costs = totals.get("costs")
    if costs:
        cost: float | None = float(totals["spent"])
        cost_estimated = any(int(c.get("estimated") or 0) for c in costs.values())
    else:
        cost, cost_estimated = case_cost, case_cost_estimated
    return Progress(items_done, items_total, chat_done,
                    sum(int(p.get("in_flight") or 0) for p in pools.values()),
                    sum(int(p.get("waiting") or 0) for p in pools.values()),
                    chat_tokens, cost, elapsed,
                    sum(int(p.get("estimated") or 0) for p in pools.values()), cost_estimated,
                    sum(int(p["settled"]) if "settled" in p
                        else int(p.get("requests") or 0) - int(p.get("in_flight") or 0)
                        for p in pools.values()),
                    embedding_done, embedding_tokens)


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
        self._case_cost_estimated = False  # a finished case's cost rests on estimated tokens
        self._status: StatusLine | None = None
        self._text: str | None = None  # the status line's current text

    def _reporter(self) -> Any:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None or self._interval <= 0:
            return None
        if not getattr(tr, "isatty", False) and self.config.get_verbosity() < 0:
            return None
        return tr

    def _status_line(self, tr: Any) -> StatusLine | None:
        """The in-place status line on a terminal that can take one (else None: plain lines)."""
        if self._status is None and StatusLine.usable(tr, self.config):
            self._status = StatusLine(tr._tw)
        return self._status

    # -- what the run tells us ----------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.items:
            self._items_total = len(session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # every worker collects the same items
        self._items_total = len(ids)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logstart(self) -> None:
        if self._t0 is None:
            self._t0 = self._clock()
        # pytest may have written the item's file name: show the status again under it for
        # the time the item runs
        self._redraw()

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rec = getattr(report, REPORT_ATTR, None)
        if isinstance(rec, dict) and rec.get("cost") is not None:
            self._case_cost = (self._case_cost or 0.0) + float(rec["cost"])
            usage = rec.get("usage")
            if isinstance(usage, dict) and usage.get("estimated") and rec["cost"]:
                self._case_cost_estimated = True
        if report.when == "teardown":
            # between items: pytest has written this item's result and not the next one's
            self._items_done += 1
            self.update()
        else:
            self._redraw()

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(self) -> None:
        self._redraw()  # after pytest's "[ 40%]" at the end of a line of dots

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        self.close()

    def pytest_unconfigure(self) -> None:
        self.close()

    def close(self) -> None:
        """Take the status line off the terminal for good (pytest's summary follows)."""
        if self._status is not None:
            self._status.close()
        self._text = None

    # -- writing ---------------------------------------------------------------------------

    def _redraw(self) -> None:
        if self._status is not None and self._text is not None:
            self._status.show(self._text)

    def update(self, *, force: bool = False) -> Progress | None:
        """Write the progress line if one is due; returns what it wrote (None: nothing)."""
        tr = self._reporter()
        if tr is None:
            return None
        now = self._clock()
        status = self._status_line(tr)
        # in place every second on a terminal; elsewhere a plain line per interval
        due = self._last + (TTY_INTERVAL if status is not None else self._interval)
        if not force and now < due:
            self._redraw()
            return None
        try:
            totals = self._totals()
        except Exception:
            # a budget that is closing or slow to answer: progress is a courtesy, it never
            # fails the run
            self._redraw()
            return None
        progress = progress_of(totals, items_done=self._items_done,
                               items_total=self._items_total,
                               elapsed=now - (self._t0 if self._t0 is not None else now),
                               case_cost=self._case_cost,
                               case_cost_estimated=self._case_cost_estimated)
        if progress is None:
            return None
        self._last = now
        text = progress.line()
        if status is not None:
            self._text = text = progress.fit(status.width)
            status.show(text)
            return progress
        # Our line goes under pytest's line of dots, and the next dots go on the line after
        # ours (without the file name again, and without a blank line). write_line ends the
        # dots' line only when pytest set a file name for it, which xdist's controller never
        # does.
        fspath = tr.currentfspath
        if int(getattr(tr._tw, "width_of_current_line", 0) or 0):
            tr._tw.line()
        tr.currentfspath = None
        tr.write_line(text)
        tr.currentfspath = fspath
        return progress


class StatusLine:
    """One line under pytest's output, drawn and erased with ANSI cursor movements.

    Every write to pytest's terminal writer goes through its ``write_raw``: wrapping it on
    the writer lets the status line step aside before *anything* is written (pytest's dots,
    its percentages, xdist's messages, other plugins'), so nothing is written over it or
    after it; :meth:`show` puts it back. The line is drawn on the row below the cursor and
    the cursor is returned to where it was, so pytest's idea of its current line (and of the
    room left for ``[ 40%]``) stays true."""

    def __init__(self, tw: Any) -> None:
        self._tw = tw
        self._write_raw = tw.write_raw
        self._column: int | None = None  # where the cursor was when the line was drawn
        self._text = ""  # what the line shows
        tw.write_raw = self._before_write

    @staticmethod
    def usable(tr: Any, config: pytest.Config) -> bool:
        """A terminal that takes cursor movements, with pytest's output not shared with
        writers it does not know: a test printing under ``-s``, the debugger of ``--pdb`` /
        ``--trace`` (it writes through a terminal writer of its own)."""
        tw = getattr(tr, "_tw", None)
        option = config.option
        return (bool(getattr(tr, "isatty", False)) and os.environ.get("TERM") != "dumb"
                and getattr(option, "capture", "fd") != "no"
                and not getattr(option, "usepdb", False) and not getattr(option, "trace", False)
                and callable(getattr(tw, "write_raw", None))
                and isinstance(getattr(tw, "fullwidth", None), int))

    @property
    def width(self) -> int:
        """The room for the line: never the last column, so the terminal has no wrap to undo."""
        return int(self._tw.fullwidth) - 1

    @property
    def shown(self) -> bool:
        """Whether the line is on the screen now."""
        return self._column is not None

    def show(self, text: str) -> None:
        """Draw ``text`` (cut to the terminal's width) on the row below the cursor."""
        width = self.width
        if self._column is not None:
            if self._text == text[:width]:
                return  # already on the screen: nothing was written since
            self._erase()
        column = int(self._tw.width_of_current_line)
        if column >= width or width < 20:
            return  # a line already full (or wrapped): its column cannot be found again
        self._text = text[:width]
        self._write_raw("\n" + self._text, flush=True)
        self._column = column

    def hide(self) -> None:
        if self._column is not None:
            self._erase()

    def close(self) -> None:
        """Hide the line and give the writer its own ``write_raw`` back."""
        self.hide()
        if self._tw.__dict__.get("write_raw") == self._before_write:
            del self._tw.write_raw

    def _erase(self) -> None:
        column, self._column = self._column, None
        # clear our row, go up to pytest's line, back to its column
        self._write_raw("\r\x1b[K\x1b[1A" + (f"\x1b[{column}C" if column else ""), flush=True)

    def _before_write(self, msg: str, *, flush: bool = False) -> None:
        if self._column is not None and msg:
            self._erase()
        self._write_raw(msg, flush=flush)


def _interval(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise pytest.UsageError(f"ragbench: ini option ragbench_progress_interval: expected "
                                f"seconds (a number >= 0, 0 = off), got {value!r}")
    return seconds
