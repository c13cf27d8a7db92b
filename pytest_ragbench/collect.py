"""pytest collection: a suite file becomes one item per (system, query).

A system is a retriever or a pipeline (the user's RAG system); node ids read
``path/to/suite.yaml::<retriever or pipeline>::<query id>``. Query ``type``, ``difficulty``
and ``tags`` become markers (``type_factoid``, ``difficulty_hard``, ``tag_numeric``), registered
as they are met so ``--strict-markers`` accepts them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .errors import RagbenchError
from .records import USER_PROPERTY, mark_expected_failure

if TYPE_CHECKING:
    from .state import RagbenchState

RECORD_KEY = pytest.StashKey[dict[str, Any]]()


def marker_name(prefix: str, value: str) -> str:
    """A valid marker name for a query attribute, e.g. ``difficulty_hard``."""
    slug = re.sub(r"\W+", "_", value.strip().lower()).strip("_") or "none"
    return f"{prefix}_{slug}"


class SuiteFile(pytest.File):
    """A suite file; collecting it validates the suite, reads the dataset and builds the
    suite's components (see :meth:`~pytest_ragbench.execution.runtime.SuiteRuntime.prepare`)."""

    def _state(self) -> RagbenchState:
        from .state import STATE_KEY

        return self.config.stash[STATE_KEY]

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        state = self._state()
        runtime = state.runtime(self.nodeid, self.path)
        dataset = runtime.dataset
        # Before any item, once per suite: a bad parameter or an unset key is one collection
        # error here rather than an error per item, and no request has been sent yet.
        runtime.prepare()
        state.collected_suites[self.nodeid] = runtime.suite
        seen: set[str] = set()
        for q in dataset.queries:
            names = [marker_name("tag", t) for t in q.tags]
            if q.type:
                names.append(marker_name("type", q.type))
            if q.difficulty:
                names.append(marker_name("difficulty", q.difficulty))
            for name in names:
                if name not in seen:
                    seen.add(name)
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
        for q, run in ((q, r) for q in runtime.dataset.queries for r in range(runs)):
            # Repeated runs of a case sit next to each other, so a worker that gets one tends
            # to get the others (and their cached contexts).
            name = q.id if runs == 1 else f"{q.id}[run{run}]"
            reason = runtime.suite.xfail.get(q.id)
            item = CaseItem.from_parent(self, name=name, retriever=self.name, case_id=q.id,
                                        run=run, xfail_reason=reason)
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


class CaseItem(pytest.Item):
    """One query against one retriever. The work happens in setup so that a component that
    fails shows as an ERROR, and a missed per-query threshold as a FAILURE."""

    def __init__(self, *, retriever: str, case_id: str, run: int = 0,
                 xfail_reason: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retriever = retriever
        self.case_id = case_id
        self.run = run
        #: The suite's ``xfail`` reason for this case (the item carries the matching mark).
        self.xfail_reason = xfail_reason

    def _suite_file(self) -> SuiteFile:
        node = self.parent.parent if self.parent else None
        assert isinstance(node, SuiteFile)
        return node

    def setup(self) -> None:
        suite_file = self._suite_file()
        runtime = suite_file._state().runtime(suite_file.nodeid, suite_file.path)
        if runtime.suite.is_pipeline(self.retriever):
            rec = runtime.run_pipeline_case(self.retriever, self.case_id, run=self.run,
                                            upcoming_runs=self.upcoming_cases)
        else:
            rec = runtime.run_case(self.retriever, self.case_id, run=self.run,
                                   upcoming=self.upcoming_case_ids,
                                   upcoming_runs=self.upcoming_cases)
        if self.xfail_reason is not None:
            mark_expected_failure(rec, self.xfail_reason, applied=self._xfail_applied())
        self.stash[RECORD_KEY] = rec
        for name, value in rec["metrics"].items():
            # Per-metric properties so --junitxml carries the scores.
            self.user_properties.append((f"{USER_PROPERTY}.{name}", value))
        if rec["status"] == "error":
            from .report.failure import format_case_failure

            # pytrace=False: the record says what went wrong; a traceback of the plugin would not.
            pytest.fail(format_case_failure(rec), pytrace=False)

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
        return [(it.case_id, it.run) for it in candidates
                if isinstance(it, CaseItem) and it.parent is group]

    def runtest(self) -> None:
        rec = self.stash[RECORD_KEY]
        if rec["status"] == "failed":
            from .report.failure import format_case_failure

            pytest.fail(format_case_failure(rec), pytrace=False)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"ragbench {self.retriever}::{self.case_id}"


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
