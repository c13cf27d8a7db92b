"""Fixtures for hand-written tests over a suite's cases (registered by the plugin).

Parametrize a test function over a suite's cases with the marker::

    @pytest.mark.ragbench_suite("suites/qa.ragbench.yaml", retriever="bm25")
    def test_top_hit_is_fresh(ragbench_case, ragbench_retriever, ragbench_record):
        hits = ragbench_retriever.retrieve(ragbench_case)
        ragbench_record.evaluate(hits)                   # the suite's metrics on these hits
        ragbench_record("fresh_top1", float(is_fresh(hits[0][0])))
        assert hits

The path is relative to the test file's folder. Without ``retriever=`` the test runs for every
retriever of the suite (ids ``<retriever>-<query id>``), or for every pipeline of a suite that
has no retriever; ``retriever=`` may name a pipeline too (the test then asks the application
itself and scores its answer with ``ragbench_record.score``). Alternatively
``@pytest.mark.parametrize("ragbench_case", cases("suite.yaml", retriever="bm25"),
indirect=True)`` with :func:`cases`.

Fixtures:

``ragbench_case``
    the current :class:`~pytest_ragbench.datasets.Query` (id, text, labels, metadata).
``ragbench_retriever``
    a :class:`RetrieverHandle` for the case's retriever (or the marker's, or the suite's first):
    ``retrieve(query_or_text, k=None)`` runs it synchronously on the plugin's event loop (also
    when called from an async test) and checks the hits like a collected item;
    ``.component`` is the retriever object itself. The retriever is the same instance
    collected items use: built once per process, closed at the end of the session.
``ragbench_llm`` / ``ragbench_embedder``
    the component named by ``@pytest.mark.ragbench_components(llm=SPEC, embedder=SPEC)`` or
    by the ini options ``ragbench_llm`` / ``ragbench_embedder`` (a type name or a JSON
    mapping such as ``{"type": "hashing", "dim": 64}``); built once per process per spec and
    closed at the end of the session. A registered type is called as in a suite, under its
    call guard (retries, limits: the keys ``concurrency``, ``retries``, ``backoff``, ``rpm``,
    ``tpm``, ``timeout``, ``case_timeout``). Both are async (``await llm.chat(...)``); a
    session-long client should be used from one event loop, e.g.
    ``@pytest.mark.asyncio(loop_scope="session")``.
``ragbench_record``
    a :class:`CaseRecorder`: ``ragbench_record(name, value)`` records a metric,
    ``ragbench_record.evaluate(hits)`` scores hits with the suite's metrics, and
    ``ragbench_record.score(answer, contexts)`` scores an answer with the suite's answer
    metrics (lexical, judged, custom criteria, third-party: one judge request per test, as
    for a collected item), DeepEval's ``assert_test`` pattern::

        @pytest.mark.ragbench_suite("suites/qa.ragbench.yaml", retriever="bm25")
        def test_my_rag_app(ragbench_case, ragbench_record):
            out = my_app.ask(ragbench_case.text)
            scores = ragbench_record.score(out.answer, [c.text for c in out.sources])
            assert scores["faithfulness"] >= 0.8

    When the test
    passes or fails, a record in the same schema as a collected case is attached to its report
    and aggregated by the controller like any case, as suite ``<test file>::<function>`` (so
    its summary is separate from the collected suite's), status ``ok`` or ``failed``. Metric
    directions of such records are taken as "higher is better".
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .errors import RagbenchError
from .records import (
    CaseRecord,
    add_answer,
    clean_float,
    error_record,
    failure_message,
    make_record,
)

if TYPE_CHECKING:
    from .datasets import Query
    from .execution.runtime import SuiteRuntime
    from .state import RagbenchState
    from .suite.model import Suite


@dataclass(frozen=True)
class CaseRef:
    """One (suite file, retriever, query id) a test is parametrized with."""

    suite: str  # absolute path of the suite file
    retriever: str
    case_id: str


RECORDER_KEY = pytest.StashKey["CaseRecorder"]()


def _state(config: pytest.Config) -> RagbenchState:
    from .state import STATE_KEY

    return config.stash[STATE_KEY]


def suite_id_for(config: pytest.Config, path: Path) -> str:
    """The id collected items of the suite file ``path`` have (its node id)."""
    try:
        return path.resolve().relative_to(config.rootpath.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def cases(path: str | Path, retriever: str | None = None) -> list[Any]:
    """``pytest.param`` values over a suite's cases, for ``parametrize(..., indirect=True)``.

    A relative ``path`` is resolved against the folder of the calling module. Only the suite
    and its dataset are read (built-in and installed metrics; conftest-registered retrievers
    are checked when the test runs).
    """
    from .suite.loader import load_suite

    p = Path(path)
    if not p.is_absolute():
        caller = inspect.stack()[1].filename
        p = Path(caller).resolve().parent / p
    from .datasets import load_dataset

    try:
        suite = load_suite(p, None)
        dataset = load_dataset(suite.dataset)
    except RagbenchError as exc:
        # called while the test module is imported: the message alone, as the
        # ragbench_suite marker gives it, not a traceback through the plugin's loader
        raise pytest.fail.Exception(f"cases: {exc}", pytrace=False) from None
    problem = _unknown_system(suite, retriever)
    if problem is not None:
        raise pytest.fail.Exception(f"cases: {p}: {problem}", pytrace=False)
    chosen = _systems(suite, retriever)
    return [
        pytest.param(CaseRef(str(p.resolve()), r, q.id),
                     id=q.id if len(chosen) == 1 else f"{r}-{q.id}")
        for r in chosen for q in dataset.queries
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize tests marked ``ragbench_suite`` that use ``ragbench_case`` or ``_record``."""
    marker = metafunc.definition.get_closest_marker("ragbench_suite")
    if marker is None:
        return
    if not {"ragbench_case", "ragbench_record"} & set(metafunc.fixturenames):
        return
    if "ragbench_case_ref" not in metafunc.fixturenames:
        return
    # An explicit parametrize of ragbench_case (cases()) takes precedence over the marker.
    for m in metafunc.definition.iter_markers("parametrize"):
        argnames = m.args[0] if m.args else ""
        names = argnames.split(",") if isinstance(argnames, str) else list(argnames)
        if "ragbench_case" in [n.strip() for n in names]:
            return
    path, retriever = _marker_args(marker, metafunc.definition.path)
    state = _state(metafunc.config)
    try:
        suite = state.load_suite(path)
        runtime = state.runtime(suite_id_for(metafunc.config, path), path)
        queries = runtime.dataset.queries
        # Hand-written tests retrieve and score but generate no answers.
        runtime.prepare(answers=False)
    except RagbenchError as exc:
        # Not chained: pytest would show the message twice.
        raise pytest.fail.Exception(f"ragbench_suite: {exc}", pytrace=False) from None
    problem = _unknown_system(suite, retriever)
    if problem is not None:
        pytest.fail(f"ragbench_suite: {path} has {problem}", pytrace=False)
    chosen = _systems(suite, retriever)
    refs = [CaseRef(str(path), r, q.id) for r in chosen for q in queries]
    ids = [ref.case_id if len(chosen) == 1 else f"{ref.retriever}-{ref.case_id}"
           for ref in refs]
    metafunc.parametrize("ragbench_case_ref", refs, ids=ids, indirect=True)


def _systems(suite: Suite, name: str | None) -> list[str]:
    """The systems a hand-written test runs for: ``name`` (a retriever or a pipeline), else
    every retriever of the suite, or every pipeline of a suite that has no retriever (one
    that tests the user's RAG application: its test ran for no case, skipped as an empty
    parameter set)."""
    if name is not None:
        return [name]
    return [r.name for r in suite.retrievers] or [p.name for p in suite.pipelines]


def _unknown_system(suite: Suite, name: str | None) -> str | None:
    """What is wrong with naming ``name`` in a hand-written test of ``suite``, if anything."""
    retrievers = [r.name for r in suite.retrievers]
    pipelines = [p.name for p in suite.pipelines]
    if name is None or name in retrievers or name in pipelines:
        return None
    kinds = "retriever" if not pipelines else (
        "pipeline" if not retrievers else "retriever or pipeline")
    return f"no {kinds} {name!r} (it has: {', '.join(retrievers + pipelines)})"


def _marker_args(marker: pytest.Mark, test_path: Path) -> tuple[Path, str | None]:
    if not marker.args or not isinstance(marker.args[0], str | Path):
        pytest.fail("ragbench_suite needs the suite file's path: "
                    "@pytest.mark.ragbench_suite('suite.yaml', retriever='bm25')", pytrace=False)
    p = Path(marker.args[0])
    if not p.is_absolute():
        p = test_path.parent / p
    retriever = marker.kwargs.get("retriever")
    if retriever is not None and not isinstance(retriever, str):
        pytest.fail(f"ragbench_suite: retriever must be a name, got {retriever!r}",
                    pytrace=False)
    return p.resolve(), retriever


def _ref(request: pytest.FixtureRequest) -> CaseRef | None:
    """The case the current test is parametrized with, whichever fixture carries it."""
    return case_ref(request.node)


def _runtime(config: pytest.Config, suite_path: str | Path) -> SuiteRuntime:
    state = _state(config)
    path = Path(suite_path)
    try:
        state.load_suite(path)
        return state.runtime(suite_id_for(config, path), path)
    except RagbenchError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def ragbench_case_ref(request: pytest.FixtureRequest) -> CaseRef | None:
    """The (suite, retriever, query id) of the current test, or None when not parametrized."""
    return getattr(request, "param", None)


@pytest.fixture
def ragbench_case(request: pytest.FixtureRequest, ragbench_case_ref: CaseRef | None) -> Query:
    """The current query of a test parametrized over a suite's cases."""
    ref = getattr(request, "param", None) or ragbench_case_ref
    if not isinstance(ref, CaseRef):
        pytest.fail("ragbench_case needs @pytest.mark.ragbench_suite('suite.yaml') or "
                    "@pytest.mark.parametrize('ragbench_case', cases('suite.yaml'), "
                    "indirect=True)", pytrace=False)
    return _runtime(request.config, ref.suite).query(ref.case_id)


class RetrieverHandle:
    """A suite's retriever for hand-written tests (see the module docs)."""

    def __init__(self, runtime: SuiteRuntime, name: str) -> None:
        self.runtime = runtime
        self.name = name

    @property
    def component(self) -> Any:
        """The built and indexed retriever object."""
        return self.runtime.retriever(self.name)

    def retrieve(self, query: Query | str, k: int | None = None) -> list[tuple[str, float]]:
        """Checked ``(doc_id, score)`` hits for a case (or a bare text), best first."""
        from .datasets import Query

        q = query if isinstance(query, Query) else Query(id="", text=str(query))
        hits, _ = self.runtime.retrieve_hits(self.name, q, k)
        return list(hits)

    def __repr__(self) -> str:
        return f"RetrieverHandle({self.runtime.suite_id}::{self.name})"


@pytest.fixture
def ragbench_retriever(request: pytest.FixtureRequest,
                       ragbench_case_ref: CaseRef | None) -> RetrieverHandle:
    """The current case's retriever (or the ``ragbench_suite`` marker's, or the first)."""
    ref = _ref(request)
    if ref is not None:
        suite_path, name = ref.suite, ref.retriever
    else:
        marker = request.node.get_closest_marker("ragbench_suite")
        if marker is None:
            pytest.fail("ragbench_retriever needs @pytest.mark.ragbench_suite('suite.yaml', "
                        "retriever='name')", pytrace=False)
        path, retriever = _marker_args(marker, request.node.path)
        suite_path = str(path)
        if retriever is None:
            retrievers = _runtime(request.config, path).suite.retrievers
            if not retrievers:
                pytest.fail(f"ragbench_retriever: {path} has no retriever", pytrace=False)
            retriever = retrievers[0].name
        name = retriever
    runtime = _runtime(request.config, suite_path)
    if runtime.suite.is_pipeline(name):
        pytest.fail(f"ragbench_retriever: {name!r} is a pipeline of {suite_path}, not a "
                    "retriever: ask the application yourself and score its answer with "
                    "ragbench_record.score(answer, contexts)", pytrace=False)
    try:
        runtime.retriever(name)
    except RagbenchError as exc:
        problem = str(exc)
    else:
        return RetrieverHandle(runtime, name)
    # outside the except block: the report shows the message once, not a chained exception
    pytest.fail(problem, pytrace=False)


def _component_spec(request: pytest.FixtureRequest, kind: str) -> Any:
    marker = request.node.get_closest_marker("ragbench_components")
    if marker is not None and kind in marker.kwargs:
        return marker.kwargs[kind]
    raw = request.config.getini(f"ragbench_{kind}")
    if raw:
        text = str(raw).strip()
        if text.startswith("{"):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                problem = str(exc)
            # outside the except block: the report shows the message once, not the decoder's
            # error and then the message as a chained exception
            pytest.fail(f"ini option ragbench_{kind}: not valid JSON: {problem}", pytrace=False)
        return text
    pytest.fail(f"ragbench_{kind}: no {kind} configured; use "
                f"@pytest.mark.ragbench_components({kind}={{'type': ...}}) or the "
                f"ragbench_{kind} ini option", pytrace=False)


def _component(request: pytest.FixtureRequest, kind: str) -> Any:
    spec = _component_spec(request, kind)
    try:
        return _state(request.config).component(kind, spec)
    except RagbenchError as exc:
        message = f"ragbench_{kind}: {exc}"
    # outside the except block: the report shows the message, not a chained exception
    pytest.fail(message, pytrace=False)


@pytest.fixture
def ragbench_llm(request: pytest.FixtureRequest) -> Any:
    """The configured LLM (built once per process per spec)."""
    return _component(request, "llm")


@pytest.fixture
def ragbench_embedder(request: pytest.FixtureRequest) -> Any:
    """The configured embedder (built once per process per spec)."""
    return _component(request, "embedder")


class CaseRecorder:
    """Collects what a hand-written test measures into a case record (module docs)."""

    def __init__(self, item: pytest.Item, runtime: SuiteRuntime | None,
                 ref: CaseRef | None) -> None:
        self._item = item
        self._runtime = runtime
        self._ref = ref
        self.metrics: dict[str, float | None] = {}
        self._scored: dict[str, Any] | None = None
        self._answered: dict[str, Any] | None = None
        self.latency_ms: float | None = None

    def __call__(self, name: str, value: float | None) -> None:
        """Record metric ``name`` for this case (None or NaN: could not be computed)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a metric name must be a non-empty string, got {name!r}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"metric {name!r}: expected a number, got {value!r}") from None
        self.metrics[name] = clean_float(value)

    metric = __call__

    def latency(self, ms: float) -> None:
        """Record the case's latency in milliseconds."""
        self.latency_ms = float(ms)

    def evaluate(self, hits: Sequence[tuple[str, float]],
                 latency_ms: float | None = None) -> dict[str, float | None]:
        """Score ``hits`` with the suite's metrics (checked like a retriever's results)."""
        if self._runtime is None or self._ref is None:
            raise RagbenchError("ragbench_record.evaluate needs a test parametrized over a "
                                "suite's cases")
        runtime, ref = self._runtime, self._ref
        # what is not iterable goes to the check as it is, which says what it is instead of
        # failing in list() ("'int' object is not iterable" from this line)
        if isinstance(hits, Iterable) and not isinstance(hits, str | bytes):
            hits = list(hits)
        checked = runtime.check_hits(ref.retriever, hits, runtime.suite.k)
        rec = runtime.new_record(ref.retriever, ref.case_id)
        runtime.score(rec, runtime.query(ref.case_id), checked, latency_ms)
        if rec["status"] == "error":
            raise RagbenchError(rec["error"]["message"])
        self._scored = rec
        if latency_ms is not None:
            self.latency_ms = latency_ms
        return dict(rec["metrics"])

    def score(self, answer: str, contexts: Sequence[Any] = (), *, question: str | None = None,
              references: Sequence[str] | None = None) -> dict[str, float | None]:
        """Score ``answer`` and the ``contexts`` it used with the suite's answer metrics.

        ``contexts`` are texts, ``{"id", "text"}`` mappings or corpus document ids given as
        ``{"id": ...}`` (best first). ``question`` and ``references`` default to the case's
        text and reference answers. The record of the test gets the answer, its metrics, the
        judge's verdicts, usage and cost, and aggregates like a collected item. Returns the
        answer metrics' values (None: not computable); raises :class:`RagbenchError` when a
        metric could not be computed because something failed (the judge, a metric).
        """
        from dataclasses import replace

        from .pipelines.contract import OutputError, normalise_output

        if self._runtime is None or self._ref is None:
            raise RagbenchError("ragbench_record.score needs a test parametrized over a "
                                "suite's cases")
        runtime, ref = self._runtime, self._ref
        wanted = {m.name for m in runtime.suite.metrics if m.needs is not None}
        if not wanted:
            raise RagbenchError(f"ragbench_record.score: suite {runtime.suite.name!r} lists no "
                                "answer metric (e.g. token_f1, faithfulness, a criteria entry)")
        query = runtime.query(ref.case_id)
        if question is not None:
            query = replace(query, text=str(question))
        if references is not None:
            if isinstance(references, str):
                references = [references]
            query = replace(query, reference_answers=tuple(str(r) for r in references))
        if not isinstance(contexts, Sequence) or isinstance(contexts, str | bytes):
            raise RagbenchError(f"ragbench_record.score: contexts must be a list, got "
                                f"{type(contexts).__name__}")
        try:
            output = normalise_output({"answer": answer, "contexts": list(contexts)})
        except OutputError as exc:
            raise RagbenchError(f"ragbench_record.score: {exc}") from None
        rec = runtime.new_record(ref.retriever, ref.case_id)
        runtime.score_answer(rec, query, output)
        self._answered = rec
        values = {k: v for k, v in rec["metrics"].items() if k in wanted}
        if rec["status"] == "error":
            raise RagbenchError(f"ragbench_record.score: {rec['error']['message']}")
        return values

    def build(self, report: pytest.TestReport) -> CaseRecord | None:
        """The record for the finished test, or None when it was skipped (an xfailed test,
        whose report is a skip too, failed as expected: its record says so)."""
        wasxfail = getattr(report, "wasxfail", None)
        if report.skipped and wasxfail is None:
            return None
        item = self._item
        suite_id = _suite_of(item)
        if self._runtime is not None and self._ref is not None:
            runtime, ref = self._runtime, self._ref
            base = (self._scored if self._scored is not None
                    else runtime.new_record(ref.retriever, ref.case_id))
            rec = make_record(
                suite=suite_id, retriever=base["retriever"], case_id=base["case_id"],
                run=base["run"],
                suite_name=f"{runtime.suite.name}:{getattr(item, 'originalname', item.name)}",
                suite_hash=base["suite_hash"], dataset_hash=base["dataset_hash"],
                query=base["query"], type=base["type"], difficulty=base["difficulty"],
                tags=base["tags"],
                metrics={**(base["metrics"] if self._scored is not None else {}),
                         **self._answer_metrics(), **self.metrics},
                n_relevant=base["n_relevant"], no_relevant=base["no_relevant"],
                unknown_labels=base["unknown_labels"])
            rec["latency_ms"] = base["latency_ms"]
            rec["retrieved"], rec["missed"] = base["retrieved"], base["missed"]
            if self._answered is not None:
                add_answer(rec, self._answered)
            rec["relevant_ranks"] = base["relevant_ranks"]
        else:
            rec = make_record(suite=suite_id, suite_name=item.name, retriever="-",
                              case_id=item.name, metrics=self.metrics)
        if self.latency_ms is not None:
            rec["latency_ms"] = round(self.latency_ms, 3)
        rec["status"] = "ok" if report.passed else "failed"
        if wasxfail is not None:
            rec["xfail"] = {"reason": str(wasxfail),
                            "outcome": "xpassed" if report.passed else "xfailed"}
        return rec

    def _answer_metrics(self) -> dict[str, float | None]:
        if self._answered is None or self._runtime is None:
            return {}
        wanted = {m.name for m in self._runtime.suite.metrics if m.needs is not None}
        return {k: v for k, v in self._answered["metrics"].items() if k in wanted}


@pytest.fixture
def ragbench_record(request: pytest.FixtureRequest,
                    ragbench_case_ref: CaseRef | None) -> CaseRecorder:
    """Record per-case metrics from a hand-written test (aggregated like collected cases)."""
    ref = _ref(request)
    runtime = _runtime(request.config, ref.suite) if ref is not None else None
    recorder = CaseRecorder(request.node, runtime, ref)  # type: ignore[arg-type]
    request.node.stash[RECORDER_KEY] = recorder
    return recorder


def case_ref(item: pytest.Item) -> CaseRef | None:
    """The suite case a hand-written test is parametrized with (its ``ragbench_case`` or
    ``ragbench_case_ref``), if any."""
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for name in ("ragbench_case_ref", "ragbench_case"):
        value = callspec.params.get(name)
        if isinstance(value, CaseRef):
            return value
    return None


def _xfailed_setup_record(item: pytest.Item, ref: CaseRef,
                          report: pytest.TestReport) -> CaseRecord:
    """The record of a hand-written test whose setup failed under an xfail mark: an error of
    its case, xfailed. pytest reports it as a skip, which the controller does not record as
    the crash of a failed one (a setup stopped on purpose, by a skip or ``pytest.xfail()``,
    leaves its case unrecorded), and without it the case was lost: a whole run read as
    partial."""
    runtime = _state(item.config).known_runtime(suite_id_for(item.config, Path(ref.suite)))
    meta: dict[str, Any] | None = None
    named: dict[str, str] = {}
    if runtime is not None:
        query = runtime.query(ref.case_id)
        meta = {"query": query.text, "type": query.type, "difficulty": query.difficulty,
                "tags": query.tags}
        named = {"suite_name": f"{runtime.suite.name}:"
                               f"{getattr(item, 'originalname', item.name)}",
                 "suite_hash": runtime.suite.suite_hash}
    rec = error_record(suite=_suite_of(item), retriever=ref.retriever, case_id=ref.case_id,
                       stage="setup", meta=meta, **named,
                       message=failure_message(report.longrepr, "the test's setup failed"))
    rec["xfail"] = {"reason": str(report.wasxfail), "outcome": "xfailed"}
    return rec


def records_a_case(item: pytest.Item) -> bool:
    """Whether a hand-written test records a suite's case (``ragbench_record`` on a test
    parametrized over the cases, by the ``ragbench_suite`` marker or :func:`cases`)."""
    return "ragbench_record" in getattr(item, "fixturenames", ()) and case_ref(item) is not None


def _suite_of(item: pytest.Item) -> str:
    """The suite id of a hand-written test's records: the test's node id without its
    parameters (``test_file.py::test_function``)."""
    return item.nodeid.split("[", 1)[0]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Count the cases each hand-written test records, before ``-k``, ``-m``, ``--deselect``
    or ``--lf`` leave any out (first among these hooks), as a suite file's are counted: a
    run of some of them is then partial ("2 of 5 cases"), not a whole run that passed."""
    from .state import STATE_KEY

    state = config.stash.get(STATE_KEY, None)
    if state is None:
        return
    for item in items:
        if records_a_case(item):
            sid = _suite_of(item)
            state.collected[sid] = state.collected.get(sid, 0) + 1


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "setup" and "ragbench_record" in getattr(item, "fixturenames", ()):
        # only a test that records its case: one that uses ragbench_case alone is an
        # ordinary test, which starts no session and writes no run folder
        ref = case_ref(item)
        if ref is not None:
            from .state import IDENTITY_ATTR, STATE_KEY

            setattr(report, IDENTITY_ATTR, {"suite": _suite_of(item),
                                            "retriever": ref.retriever,
                                            "case_id": ref.case_id})
            item.config.stash[STATE_KEY].attach_collected(report)
            if (call.excinfo is not None and hasattr(report, "wasxfail")
                    and not isinstance(call.excinfo.value,
                                       pytest.skip.Exception | pytest.xfail.Exception)):
                from .state import REPORT_ATTR

                setattr(report, REPORT_ATTR, _xfailed_setup_record(item, ref, report))
    if call.when == "call":
        recorder = item.stash.get(RECORDER_KEY, None)
        if recorder is not None:
            rec = recorder.build(report)
            if rec is not None:
                from .state import REPORT_ATTR

                # A plain attribute survives xdist's report serialisation, as for CaseItems.
                setattr(report, REPORT_ATTR, rec)
    return report
