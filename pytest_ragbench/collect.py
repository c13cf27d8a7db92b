"""pytest collection: a suite file becomes one item per (system, query).

A system is a retriever or a pipeline (the user's RAG system); node ids read
``path/to/suite.yaml::<retriever or pipeline>::<query id>``. Query ``type``, ``difficulty``
and ``tags`` become markers (``type_factoid``, ``difficulty_hard``, ``tag_numeric``), registered
as they are met so ``--strict-markers`` accepts them.

A case that errors shows one paragraph: the query and the reason. When a component (the user's
retriever, pipeline or metric) raised, ``--tb=long|short|native``, ``-vv`` and ``--fulltrace``
add its traceback, cut to the component's own frames, and ``--pdb`` stops in the frame that
raised: the item re-raises the component's exception instead of a one-line failure.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pytest

from .errors import RagbenchError
from .records import (
    CASE_KEY_FIELD,
    USER_PROPERTY,
    error_record,
    failure_message,
    mark_expected_failure,
    valid_record,
)

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr

    from .state import RagbenchState

TRACEBACK_STYLES = ("long", "short", "native")
"""``--tb`` styles that ask for a component's traceback (``auto``, the default, does with -vv)."""

RECORD_KEY = pytest.StashKey[dict[str, Any]]()
#: Whether a skip mark keeps a case from running (see CaseItem.skipped_by_mark).
SKIPPED_KEY = pytest.StashKey[bool]()

#: On a worker's session-level collection report (True): the error is a usage error.
USAGE_ERROR_ATTR = "ragbench_usage_error"


def marker_name(prefix: str, value: str) -> str:
    """A valid marker name for a query attribute, e.g. ``difficulty_hard``."""
    slug = re.sub(r"\W+", "_", value.strip().lower()).strip("_") or "none"
    return f"{prefix}_{slug}"


def query_marker_names(queries: Iterable[Any]) -> list[str]:
    """The markers the queries' tags, type and difficulty give, each once, in order met."""
    names: dict[str, None] = {}
    for q in queries:
        names.update((marker_name("tag", t), None) for t in q.tags)
        if q.type:
            names[marker_name("type", q.type)] = None
        if q.difficulty:
            names[marker_name("difficulty", q.difficulty)] = None
    return list(names)


def session_error(session: pytest.Session, message: str, *, usage_error: bool = False) -> None:
    """Report ``message`` as a collection error of the whole session (not of one file).

    ``usage_error`` (an xdist worker's): what a run without workers raises as a usage error
    (exit 4) before any item; the controller raises it as one on receiving the report."""
    extra = {USAGE_ERROR_ATTR: True} if usage_error else {}
    report = pytest.CollectReport(nodeid="", outcome="failed", longrepr=message, result=[],
                                  **extra)
    session.config.hook.pytest_collectreport(report=report)


class SuiteFile(pytest.File):
    """A suite file; collecting it validates the suite, reads the dataset and builds the
    suite's components (see :meth:`~pytest_ragbench.execution.runtime.SuiteRuntime.prepare`)."""

    def _state(self) -> RagbenchState:
        from .state import STATE_KEY

        return self.config.stash[STATE_KEY]

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        from .datasets import scope_meta

        state = self._state()
        runtime = state.runtime(self.nodeid, self.path)
        dataset = runtime.dataset
        if state.host is not None:
            from .hosts import HostPathError, dataset_difference

            differs = dataset_difference(state.host, self.path, dataset, runtime.suite.dataset)
            if differs is not None:
                raise HostPathError(f"ragbench: {differs}")
        # Before any item, once per suite: a bad parameter or an unset key is one collection
        # error here rather than an error per item, and no request has been sent yet.
        runtime.prepare()
        state.collected_suites[self.nodeid] = runtime.suite
        # The M of "N of M cases", counted here rather than from the items' collection
        # reports: pytest passes on no report of a collector it only walked through to the
        # node ids given on the command line, and a run narrowed that way counted only the
        # cases it ran (whole, and good for a baseline).
        suite = runtime.suite
        state.collected[self.nodeid] = len(suite.systems) * len(dataset.queries) * suite.runs
        state.query_meta[self.nodeid] = scope_meta(dataset.queries)
        if hasattr(self.config, "workerinput"):
            # only a worker's controller makes records of cases it did not run (crashes)
            state.query_texts[self.nodeid] = json.dumps(
                {q.id: q.text for q in dataset.queries}, ensure_ascii=False)
        for name in query_marker_names(dataset.queries):
            state.register_marker(name)
        for spec in runtime.suite.systems:
            yield RetrieverGroup.from_parent(self, name=spec.name)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        if isinstance(excinfo.value, RagbenchError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class RetrieverGroup(pytest.Collector):
    """The cases of one retriever or pipeline of a suite."""

    def collect(self) -> Iterator[pytest.Item]:
        parent = self.parent
        assert isinstance(parent, SuiteFile)
        runtime = parent._state().runtime(parent.nodeid, parent.path)
        runs = runtime.suite.runs
        spec = next((s for s in runtime.suite.systems if s.name == self.name), None)
        line = spec.line - 1 if spec is not None and spec.line else 0
        for q, run in ((q, r) for q in runtime.dataset.queries for r in range(runs)):
            # Repeated runs of a case sit next to each other, so a worker that gets one tends
            # to get the others (and their cached contexts).
            name = case_name(q.id, run, runs)
            reason = runtime.suite.xfail.get(q.id)
            item = CaseItem.from_parent(self, name=name, retriever=self.name, case_id=q.id,
                                        run=run, xfail_reason=reason, line=line,
                                        **_structured_id(self, name))
            for t in q.tags:
                item.add_marker(marker_name("tag", t))
            if q.type:
                item.add_marker(marker_name("type", q.type))
            if q.difficulty:
                item.add_marker(marker_name("difficulty", q.difficulty))
            item.add_marker("ragbench")
            if reason is not None:
                item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
            yield item


def case_name(case_id: str, run: int, runs: int) -> str:
    """A case's item name: its query id, with ``[runN]`` when the suite repeats its cases
    (``suite.yaml::system::NAME`` is its node id)."""
    return case_id if runs == 1 else f"{case_id}[run{run}]"


def split_case_name(name: str, runs: int | None) -> tuple[str, int]:
    """The query id and repetition of a case's item name, as :func:`case_name` made it from
    a suite of ``runs`` repetitions (None: not known, a ``[runN]`` ending is taken as one)."""
    if runs != 1:
        repeated = re.fullmatch(r"(.*)\[run(\d+)\]", name, flags=re.DOTALL)
        if repeated is not None:
            return repeated.group(1), int(repeated.group(2))
    return name, 0


def _structured_id(parent: pytest.Collector, name: str) -> dict[str, Any]:
    """The ``nodeid`` argument that gives a case the id pytest reads back for its node id
    string.

    pytest (9.2) compares structured ids where ``--lf``, ``--ff``, ``--nf`` and ``--sw`` look
    up what it cached, and parses a cached id string with everything from its first ``[`` as
    parameters. A case made as a child named ``q1[run0]`` (a name, no parameters) never
    matched its own cached id: those options selected nothing in a ``runs: N`` suite (or one
    with ``[`` in a query id) and reran every case. Given as the string, the id is parsed as
    the cached one is (and is the default id on earlier pytest versions)."""
    return {"nodeid": f"{parent.nodeid}::{name}"}


class CaseItem(pytest.Item):
    """One query against one retriever. The work happens in setup so that a component that
    fails shows as an ERROR, and a missed per-query threshold as a FAILURE."""

    def __init__(self, *, retriever: str, case_id: str, run: int = 0,
                 xfail_reason: str | None = None, line: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retriever = retriever
        #: 0-based line of the retriever's (or pipeline's) key in the suite file, for reports
        self.line = line
        self.case_id = case_id
        self.run = run
        #: The suite's ``xfail`` reason for this case (the item carries the matching mark).
        self.xfail_reason = xfail_reason
        #: Set at the end of collection (:mod:`pytest_ragbench.resuming`): the case's key,
        #: and the earlier run's record when this run resumes one and may reuse it.
        self.case_key: dict[str, Any] | None = None
        self.replay: dict[str, Any] | None = None
        # The component's exception setup re-raised, and the traceback it was raised with,
        # until the setup report is made (see error_repr).
        self._raised: tuple[BaseException, TracebackType | None] | None = None

    def _suite_file(self) -> SuiteFile:
        node = self.parent.parent if self.parent else None
        assert isinstance(node, SuiteFile)
        return node

    def setup(self) -> None:
        if self.config.getoption("setuponly", False):  # also --setup-plan
            # The case is the test: these options set up fixtures and run no test (a case
            # run here spent its requests, and its verdict, which the call raises, was lost)
            return
        suite_file = self._suite_file()
        runtime = suite_file._state().runtime(suite_file.nodeid, suite_file.path)
        raised: list[tuple[BaseException, TracebackType | None]] = []

        def on_error(exc: BaseException, tb: TracebackType | None) -> None:
            raised.append((exc, tb))

        if self.replay is not None:
            # Resumed: the earlier record, judged and re-labelled as this run does its own.
            rec = {**copy.deepcopy(self.replay), "xfail": None}
            runtime.rejudge(rec)
        elif runtime.suite.is_pipeline(self.retriever):
            rec = runtime.run_pipeline_case(self.retriever, self.case_id, run=self.run,
                                            upcoming_runs=self.upcoming_cases,
                                            on_error=on_error)
        else:
            rec = runtime.run_case(self.retriever, self.case_id, run=self.run,
                                   upcoming=self.upcoming_case_ids,
                                   upcoming_runs=self.upcoming_cases, on_error=on_error)
        # a component's text with a lone surrogate (an id, an error message) would stop the
        # writer of cases.jsonl, or a worker's report to the controller
        rec = valid_record(rec)
        if self.xfail_reason is not None:
            mark_expected_failure(rec, self.xfail_reason, applied=self._xfail_applied())
        if self.case_key is not None:
            rec[CASE_KEY_FIELD] = self.case_key
        self.stash[RECORD_KEY] = rec
        for name, value in rec["metrics"].items():
            # Per-metric properties so --junitxml carries the scores (a score that could not
            # be computed as "nan", as the gates' properties say it, not Python's "None")
            self.user_properties.append((f"{USER_PROPERTY}.{name}",
                                         "nan" if value is None else value))
        if rec["status"] == "error":
            if raised and (self._shows_traceback() or self.config.getoption("usepdb", False)):
                from .execution.runtime import user_traceback

                exc, tb = raised[-1]
                if not self.config.getoption("fulltrace", False):
                    tb = user_traceback(tb)
                self._raised = (exc, tb)
                # The component's own exception, raised from its own frames: pytest's --pdb
                # post-mortem starts in the frame that raised it. error_repr writes the report.
                raise exc.with_traceback(tb)
            from .report.failure import format_case_failure

            # pytrace=False: the record says what went wrong; a traceback of the plugin would not.
            pytest.fail(format_case_failure(rec), pytrace=False)

    def _shows_traceback(self) -> bool:
        """Whether the options ask for tracebacks beyond pytest's default (``--tb=auto``)."""
        style = self.config.getoption("tbstyle", "auto")
        return (bool(self.config.getoption("fulltrace", False)) or style in TRACEBACK_STYLES
                or (style == "auto" and self.config.get_verbosity() >= 2))

    def error_repr(self, excinfo: pytest.ExceptionInfo[BaseException],
                   ) -> str | TerminalRepr | None:
        """The setup report's text when setup re-raised a component's exception (None for
        any other failure): the record's paragraph, after the component's traceback when the
        options ask for tracebacks. Called once, by the plugin's makereport hook."""
        raised, self._raised = self._raised, None
        if raised is None or excinfo.value is not raised[0]:
            return None
        from .report.failure import format_case_failure

        text = format_case_failure(self.stash[RECORD_KEY])
        if not self._shows_traceback():
            return text
        exc, tb = raised
        fulltrace = bool(self.config.getoption("fulltrace", False))
        info = (excinfo if fulltrace or tb is None
                else pytest.ExceptionInfo.from_exc_info((type(exc), exc, tb)))
        style = self.config.getoption("tbstyle", "auto")
        verbosity = self.config.get_verbosity()
        longrepr = info.getrepr(
            showlocals=bool(self.config.getoption("showlocals", False)),
            style="long" if fulltrace or style not in TRACEBACK_STYLES else style,
            tbfilter=not fulltrace, funcargs=True, truncate_locals=verbosity <= 1)
        # a section (not a string) keeps the crash line of pytest's short summary and
        # survives xdist's report serialisation
        longrepr.addsection("ragbench case", text)
        return longrepr

    def setup_error_record(self, report: pytest.TestReport,
                           call: pytest.CallInfo[None]) -> dict[str, Any] | None:
        """The record of a case whose setup failed before the case ran (a conftest hook
        raised): an error with the query's type, difficulty and tags, so that scoped gates
        count it (the controller's record of a case that sent none has none of them), and
        xfailed when pytest reports it so under an xfail mark (such a report is no failure,
        and the case was lost: a whole run read as partial). None when the case ran, or was
        stopped on purpose before it ran (a skip, ``pytest.xfail()``, an xfail mark with
        ``run=False``), which leaves it unrecorded."""
        if (call.excinfo is None or not (report.failed or hasattr(report, "wasxfail"))
                or isinstance(call.excinfo.value, pytest.skip.Exception | pytest.xfail.Exception)):
            return None
        message = failure_message(report.longrepr)
        suite_file = self._suite_file()
        runtime = suite_file._state().known_runtime(suite_file.nodeid)
        rec: dict[str, Any]
        if runtime is not None:
            rec = dict(runtime.new_record(self.retriever, self.case_id, self.run))
            rec.update(status="error", error={"stage": "setup", "type": "Error",
                                              "message": message})
        else:  # not collected here (cannot be, for an item of it): the minimal record
            rec = dict(error_record(suite=suite_file.nodeid, retriever=self.retriever,
                                    case_id=self.case_id, run=self.run, stage="setup",
                                    message=message))
        rec = valid_record(rec)
        if hasattr(report, "wasxfail"):
            mark_expected_failure(rec, self.xfail_reason or str(report.wasxfail), applied=True)
        return rec

    def mark_own_xfail(self, report: pytest.TestReport, rec: dict[str, Any]) -> None:
        """Fill in ``rec["xfail"]`` from an xfail mark of the user's own (a conftest or a
        plugin adds it; the suite's ``xfail`` key has set it already): the outcome pytest
        reports for the case, derived as for the suite's (the record leaves with this setup
        ``report``, before the call runs), so that the counts, the CSV and the HTML rows say
        xfailed, xpassed or (a strict mark's pass, ``[XPASS(strict)]``) failed, as the verdict
        does. A mark whose ``raises`` the case's failure does not match leaves it a failure."""
        if rec.get("xfail") is not None or not self._xfail_applied():
            return
        from _pytest.skipping import xfailed_key

        xfailed = self.stash.get(xfailed_key, None)
        if xfailed is None:
            return
        status = rec.get("status")
        if status == "error":  # setup raised: pytest's own report says how it took it
            outcome = "xfailed" if hasattr(report, "wasxfail") else None
        elif status == "failed":  # the call raises pytest.fail's exception
            outcome = "xfailed" if _raises_match(xfailed.raises, pytest.fail.Exception(
                "", pytrace=False)) else None
        else:
            outcome = "failed" if xfailed.strict else "xpassed"
        if outcome is not None:
            rec["xfail"] = {"reason": str(xfailed.reason), "outcome": outcome}

    def _xfail_applied(self) -> bool:
        """Whether pytest honours this item's xfail mark: ``--runxfail`` (or disabling the
        skipping plugin) makes it report a listed case as a plain pass or failure."""
        return (self.config.pluginmanager.has_plugin("skipping")
                and not getattr(self.config.option, "runxfail", False))

    def upcoming_case_ids(self) -> list[str]:
        """Ids of the upcoming cases of this suite and retriever (see :meth:`upcoming_cases`)."""
        return list(dict.fromkeys(cid for cid, _ in self.upcoming_cases()))

    def upcoming_cases(self) -> list[tuple[str, int]]:
        """Ids of the cases of this suite and retriever this process will run after this one.

        Without xdist that is the rest of ``session.items`` (after deselection). On an xdist
        worker it is what the controller has already sent to this worker: pytest-xdist has no
        public API for that, so its worker queue is read defensively, and nothing is batched
        if that fails.
        """
        items = self.session.items
        if hasattr(self.config, "workerinput"):
            # xdist registers its WorkerInteractor without a name; find it by type. On a worker
            # the rest of session.items is NOT what it will run, so without the queue: nothing.
            interactor = next((p for p in self.config.pluginmanager.get_plugins()
                               if type(p).__name__ == "WorkerInteractor"), None)
            if interactor is None:
                return []
            candidates = [items[i] for i in _xdist_pending(interactor) if 0 <= i < len(items)]
        else:
            try:
                candidates = items[items.index(self) + 1:]
            except ValueError:
                return []
        group = self.parent
        # Replayed cases need no retrieval or answer, and a case a skip mark keeps from
        # running needs none either (it was answered and judged ahead, paid for and never
        # reported): they are not batched or prefetched.
        return [(it.case_id, it.run) for it in candidates
                if isinstance(it, CaseItem) and it.parent is group and it.replay is None
                and not it.skipped_by_mark()]

    def skipped_by_mark(self) -> bool:
        """Whether a ``skip`` mark, a ``skipif`` whose condition holds, or an
        ``xfail(run=False)`` (without ``--runxfail``) keeps this case from running (a conftest
        adds them); worked out once."""
        skipped = self.stash.get(SKIPPED_KEY, None)
        if skipped is None:
            skipped = self._kept_from_running()
            self.stash[SKIPPED_KEY] = skipped
        return skipped

    def _kept_from_running(self) -> bool:
        # without pytest's skipping plugin no mark keeps an item from running
        if not self.config.pluginmanager.has_plugin("skipping"):
            return False
        if self.get_closest_marker("skip") is not None:
            return True
        from _pytest.skipping import evaluate_skip_marks, evaluate_xfail_marks

        try:
            if (self.get_closest_marker("skipif") is not None
                    and evaluate_skip_marks(self) is not None):
                return True
            # an xfail(run=False) case is reported "[NOTRUN]" without running, as a skip is
            if (self.get_closest_marker("xfail") is not None
                    and not getattr(self.config.option, "runxfail", False)):
                xfailed = evaluate_xfail_marks(self)
                return xfailed is not None and not xfailed.run
        except Exception:  # a bad condition: pytest reports it when the item runs
            return False
        return False

    def runtest(self) -> None:
        rec = self.stash[RECORD_KEY]
        if rec["status"] == "failed":
            from .report.failure import format_case_failure

            pytest.fail(format_case_failure(rec), pytrace=False)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        # a line, not None: pytest's skip reports (a skip mark a conftest adds) require one
        return self.path, self.line, f"ragbench {self.retriever}::{self.case_id}"


def _raises_match(raises: Any, exc: BaseException) -> bool:
    """Whether an xfail mark's ``raises`` (None, a type or tuple of types, or a
    ``pytest.RaisesExc``) takes ``exc`` as the expected failure, as pytest decides it."""
    if raises is None:
        return True
    if isinstance(raises, type | tuple):
        return isinstance(exc, raises)
    matches = getattr(raises, "matches", None)
    return bool(matches(exc)) if callable(matches) else False


def _xdist_pending(interactor: Any) -> list[int]:
    """Indexes of the items an xdist worker has queued (its next item first); [] if unknown."""
    out: list[int] = []
    try:
        nxt = getattr(interactor, "nextitem_index", None)
        if isinstance(nxt, int) and not isinstance(nxt, bool):
            out.append(nxt)
        queue = getattr(interactor, "torun", None)
        lock = getattr(queue, "lock", None)
        if callable(lock):
            with lock() as pending:
                out.extend(i for i in list(pending) if isinstance(i, int)
                           and not isinstance(i, bool))
    except Exception:
        return []
    return out
