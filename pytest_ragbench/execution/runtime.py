"""Per-process execution of a suite's cases: load once, build once, run one case at a time.

Each process (the pytest controller without xdist, or each xdist worker) owns one
:class:`SuiteRuntime` per suite. The dataset is read once, each retriever is built and indexed
once (lazily, on the first case that needs it), and :meth:`SuiteRuntime.run_case` turns one
(retriever, query) into a JSON-safe record (see :mod:`pytest_ragbench.records`).
Nothing here imports pytest.

How a retriever is asked (the first that applies):

1. ``retrieve_case(query, k)`` when the retriever has it: it gets the whole
   :class:`~pytest_ragbench.datasets.Query` (id, text, metadata), for retrievers that answer
   by query id (run files, remote services);
2. ``retrieve_many(queries, k)`` when the retriever has it and the caller says which cases
   this process will run next (``upcoming``): the first case that misses the batch cache
   retrieves the texts of up to :data:`BATCH_LIMIT` upcoming cases of the same retriever in
   one call, and the following cases are served from that batch. Each batched case's
   ``latency_ms`` is the batch's wall time divided by the number of queries in it. If
   ``retrieve_many`` raises or returns a wrong shape, batching is switched off for that
   retriever in this process and every case (this one included) uses ``retrieve``;
3. ``retrieve(text, k)``.

Any of them may be a coroutine function; coroutines run on the runtime's own event loop.
Results are checked per case (a list of (doc_id, score) pairs, at most ``k``, known ids, no
duplicates, finite scores); a violation, an exception or a metric that raises makes that case
an error record and the run goes on. The exception a component raised does not fit in the
record; the case runners hand it, with its traceback, to their ``on_error`` callback, so that
the caller can show the component's own frames (:func:`user_traceback`) or debug them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Literal

from ..datasets import Dataset, Document, Query, load_dataset
from ..errors import ComponentError, RagbenchError, SuiteError, did_you_mean, exception_text
from ..llm import deadline as limits
from ..llm.usage import PaidBefore
from ..loopthread import LoopThread
from ..metrics.retrieval import parse_metric, trec_order
from ..metrics.spec import CaseResult, MetricSpec
from ..records import CaseRecord, add_answer, clean_float, make_record, relevant_ranks
from ..registry import BuildContext, Registry
from ..retrievers.hits import RankedHits
from ..suite.model import ComponentSpec, Suite
from .ahead import AheadMarker
from .asking import Asker, ask_concurrency

#: Most queries one ``retrieve_many`` call receives (bounds the memory of cached batches).
BATCH_LIMIT = 256

Upcoming = Callable[[], Sequence[str]]

Raised = tuple[BaseException, TracebackType | None]
"""An exception a component raised and its traceback as the runtime caught it (kept apart
because re-raising the exception later replaces its ``__traceback__``)."""

OnError = Callable[[BaseException, TracebackType | None], None]
"""Called with a :data:`Raised` when a component's exception makes a case an error."""


class CaseError(RagbenchError):
    """A case could not be evaluated; the message is the reason shown to the user.

    ``cause`` is the exception a component raised, when one did (a :class:`CaseError` passes
    its own cause on); :attr:`raised` keeps it with its traceback as caught here.
    """

    def __init__(self, stage: str, message: str, etype: str = "Error", *,
                 cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.etype = etype
        self.raised: Raised | None = None
        if isinstance(cause, CaseError):
            self.raised = cause.raised
        elif cause is not None:
            self.raised = (cause, cause.__traceback__)


def _glue_paths() -> tuple[str, ...]:
    """Where the frames between the plugin and a component's code live: this package, and
    the event loop and threads the runtime calls components through."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folders = [package, *(os.path.dirname(os.path.abspath(m.__file__ or ""))
                          for m in (asyncio, concurrent.futures))]
    return (*(os.path.join(f, "") for f in folders), os.path.abspath(threading.__file__ or ""))


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from the first frame of the component's own code (the user's retriever, pipeline
    or metric) on: the plugin's frames that called it, and the event loop's and thread's in
    between, are cut. A traceback with no such frame (a built-in component failed) is
    returned whole."""
    glue = _glue_paths()
    entry = tb
    while entry is not None:
        filename = os.path.abspath(entry.tb_frame.f_code.co_filename)
        if not filename.startswith(glue):
            return entry
        entry = entry.tb_next
    return tb


def _fail(rec: CaseRecord | dict[str, Any], stage: str, etype: str, message: str,
          raised: Raised | None = None, on_error: OnError | None = None) -> None:
    """Make ``rec`` an error record; hand the component's exception, if any, to ``on_error``."""
    rec["status"] = "error"
    rec["error"] = {"stage": stage, "type": etype, "message": message}
    if raised is not None and on_error is not None:
        on_error(*raised)


def _fail_case(rec: CaseRecord | dict[str, Any], exc: CaseError,
               on_error: OnError | None) -> None:
    _fail(rec, exc.stage, exc.etype, str(exc), exc.raised, on_error)


def errors_text(errors: Mapping[str, Any]) -> str:
    """A case's errors by metric (or stage) in one message; metrics that failed alike share
    one mention (a generation timeout repeated itself once per judged metric)."""
    by_text: dict[str, list[str]] = {}
    for name, text in errors.items():
        by_text.setdefault(str(text), []).append(str(name))
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in by_text.items())


#: Seconds a component's ``aclose()`` may take at the end of the run before it is left behind.
CLOSE_TIMEOUT = 30.0


class CloseWarning(UserWarning):
    """A retriever's or pipeline's ``close()`` / ``aclose()`` failed or did not finish."""


def _warn_closing(message: str, method: Any = None) -> None:
    """Warn :class:`CloseWarning` ``message``, never raising it: a filter that makes warnings
    errors (``-W error``, an ini's ``filterwarnings = error``) raised it out of the run's end,
    a traceback in place of the ragbench summary and pytest's counts (an xdist worker's was
    lost without a word); it is recorded as the warning it is, for the warnings summary.

    It is located at ``method``, the component's ``close``/``aclose``, when that is Python
    code (the warnings summary named a line of this module, which the user cannot fix)."""
    warning = CloseWarning(message)
    code = getattr(method, "__code__", None)

    def warn() -> None:
        if code is None:
            warnings.warn(warning, stacklevel=3)
        else:
            warnings.warn_explicit(warning, CloseWarning, code.co_filename,
                                   code.co_firstlineno)

    try:
        warn()
    except CloseWarning:
        with warnings.catch_warnings():
            warnings.simplefilter("always", CloseWarning)
            warn()


class CaseClock:
    """What the runtime times a component's ``case_timeout`` on: the real clock. A test may
    give a :class:`SuiteRuntime` one whose waits end as soon as the call waited for can no
    longer end in time, and whose event loop runs on a virtual clock."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""
        return time.monotonic()

    def wait(self, done: threading.Event, timeout: float) -> bool:
        """Wait for a synchronous call running in a thread of its own to set ``done``, at
        most ``timeout`` seconds; whether it did."""
        return done.wait(timeout)

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop that async components run on."""
        return asyncio.new_event_loop()


class SuiteRuntime:
    """Runs the cases of one suite inside one process. ``clock``: what components' time
    limits are timed on (default: the real clock)."""

    def __init__(self, suite: Suite, suite_id: str, registry: Registry,
                 ctx: BuildContext, *, clock: CaseClock | None = None) -> None:
        self.suite = suite
        self._clock = clock or CaseClock()
        self.suite_id = suite_id
        self.registry = registry
        # Factories see the suite's other retrievers (hybrid fuses them) through the context.
        self.ctx = replace(
            ctx, registry=registry, retriever=self.retriever,
            siblings={r.name: (r.type, dict(r.params)) for r in suite.retrievers},
        )
        self._dataset: Dataset | None = None
        self._queries: dict[str, Query] = {}
        self._doc_ids: frozenset[str] = frozenset()
        self._documents: Mapping[str, Document] = {}
        self._retrievers: dict[str, Any] = {}
        # Built at collection (prepare) and indexed on first use.
        self._built: dict[str, Any] = {}
        self._prepared: set[str] = set()
        self._failed: dict[str, CaseError] = {}
        self._building: list[str] = []
        self._batched: dict[tuple[str, str], tuple[Any, float]] = {}
        self._no_batch: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rag_metrics = [m.name for m in suite.metrics if m.family == "rag"]
        self._pipeline: Any = None
        self._pipeline_error: CaseError | None = None
        # Retrievals done ahead for prefetched answer work: (retriever, case) -> hits, latency.
        self._retrieved: dict[tuple[str, str], tuple[Sequence[tuple[str, float]], float]] = {}
        self._submitted: set[tuple[str, str, int]] = set()
        # Retrievals that failed ahead (timed out, raised, returned a bad result), by
        # (retriever, case, run): that run records the error instead of calling the retriever
        # again (every later look-ahead used to retry it, a timed-out one waiting out its full
        # limit each time); taken when the run records it, so a rerun retrieves afresh.
        self._failed_retrievals: dict[tuple[str, str, int], CaseError] = {}
        # The suite's pipelines (systems under test), built at collection; failures remembered.
        self._systems: dict[str, Any] = {}
        self._system_failed: dict[str, CaseError] = {}
        # Pipeline cases asked ahead (output and wall ms, or the error) and those whose
        # judging was started in the background: (pipeline, case, run).
        self._answered: dict[tuple[str, str, int], tuple[Any, float] | CaseError] = {}
        self._judging: set[tuple[str, str, int]] = set()
        # Pipelines asked for several cases at once (see .asking), None for one at a time;
        # from the first on, the event loop runs in a thread of its own.
        self._askers: dict[str, Asker | None] = {}
        self._loop_thread: LoopThread | None = None
        # The process's run budget (set by the plugin's state); None: a budget per pipeline.
        self.run_budget: Callable[[], Any] | None = None
        # What the suite's ``max_cost`` paid for before this run (the cases a resumed run
        # reuses; see :meth:`count_spent_before`).
        self._spent_before = PaidBefore()
        #: Where an xdist worker says which queries its look-ahead is in (see .ahead).
        self.ahead: AheadMarker | None = None
        #: This process's role in the run's request exchange ("lead": the xdist controller's
        #: head start, "follow": a worker of a run that has one; None: no exchange).
        self.exchange_role: Literal["lead", "follow"] | None = None

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_dataset(self.suite.dataset)
            self._queries = {q.id: q for q in self._dataset.queries}
            self._doc_ids = self._dataset.doc_ids()
            self._documents = {d.id: d for d in self._dataset.corpus}
        return self._dataset

    @property
    def documents(self) -> Mapping[str, Document]:
        """The corpus by document id."""
        _ = self.dataset
        return self._documents

    def query(self, case_id: str) -> Query:
        _ = self.dataset
        return self._queries[case_id]

    def _run(self, value: Any) -> Any:
        """Await ``value`` on this runtime's event loop when a component is async."""
        if not inspect.isawaitable(value):
            return value
        if self._loop_thread is not None:
            return self._loop_thread.run(value)
        if self._loop is None:
            self._loop = self._clock.new_event_loop()
        if not _loop_running_here():
            return self._loop.run_until_complete(value)
        # A hand-written async test (pytest-asyncio) calls the fixtures' synchronous API from
        # inside its own loop, where run_until_complete raises "Cannot run the event loop while
        # another loop is running" (blamed on the component): this loop runs in a thread of
        # its own meanwhile, the caller waiting as for any synchronous call.
        box: dict[str, Any] = {}
        loop = self._loop

        def target() -> None:
            try:
                box["task"] = task = asyncio.ensure_future(value, loop=loop)
                box["value"] = loop.run_until_complete(task)
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        # in the caller's context, as run_until_complete in its thread would: a context
        # variable the test set (a tracing span) reaches the component
        thread = threading.Thread(target=contextvars.copy_context().run, args=(target,),
                                  name="ragbench-loop")
        thread.start()
        try:
            thread.join()
        except BaseException:
            # interrupted (a second Ctrl-C: the test's runner raises it here): the call is
            # cancelled and waited for, or it went on in the thread and the session's
            # teardown failed on closing a loop still running
            task = box.get("task")
            if task is not None:
                loop.call_soon_threadsafe(task.cancel)
            thread.join()
            raise
        if "error" in box:
            raise box["error"]
        return box["value"]

    def retriever(self, name: str) -> Any:
        """The built and indexed retriever ``name``; a failure is remembered, not retried."""
        if name in self._retrievers:
            return self._retrievers[name]
        if name in self._failed:
            raise self._failed[name]
        spec = next((r for r in self.suite.retrievers if r.name == name), None)
        if spec is None:
            have = ", ".join(r.name for r in self.suite.retrievers)
            raise CaseError("index", f"suite {self.suite.name!r} has no retriever {name!r} "
                                     f"(it has: {have})")
        if name in self._building:
            cycle = " -> ".join([*self._building[self._building.index(name):], name])
            raise CaseError("index", f"retrievers depend on each other in a cycle: {cycle}")
        self._building.append(name)
        try:
            instance = self._built.pop(name, None)
            if instance is None:
                instance = self.registry.build("retriever", spec.type, spec.params,
                                               replace(self.ctx, name=name))
            self._run(instance.index(self.dataset.corpus))
        except Exception as exc:
            detail = str(exc) if isinstance(exc, CaseError) else exception_text(exc)
            err = CaseError("index", f"retriever {name!r} ({spec.type}) could not be built or "
                                     f"indexed: {detail}", type(exc).__name__, cause=exc)
            self._failed[name] = err
            raise err from exc
        finally:
            self._building.pop()
        self._retrievers[name] = instance
        return instance

    # -- checks before the first item ------------------------------------------------------

    def prepare(self, *, answers: bool = True) -> None:
        """Check what can be checked before the first case; build each component once.

        Checked: the environment variables the suite names (API keys, ``${VAR}`` headers),
        each retriever's factory with the suite's parameters (built now, indexed on first
        use), and with ``answers`` (for suites with answer metrics) the generation/judging
        pipeline and that some query has the reference answer reference-based metrics need,
        and that each query scope of the suite's gates and thresholds selects some query.
        Every problem goes into ONE :class:`SuiteError`, a line each naming the suite file
        and key path; nothing is indexed and no request is sent. Idempotent.
        """
        wanted = {"retrievers", "answers"} if answers and self._rag_metrics else {"retrievers"}
        todo = wanted - self._prepared
        if not todo:
            return
        from .prechecks import unset_env_problems

        suite = self.suite
        rag = suite.rag if "answers" in todo else None
        # pipelines are prepared with the retrievers: the same checks, the same messages
        specs = suite.systems if "retrievers" in todo else ()
        keys = {_spec_key(r): r for r in specs}
        # Unset variables by the retriever naming them ("" for the answer pipeline).
        unset: dict[str, list[SuiteError]] = {}
        for key, message in unset_env_problems([(k, r.params) for k, r in keys.items()], rag):
            owner = next((k for k in keys if key == k or key.startswith(f"{k}.")), "")
            # the variable's own line (a header a few lines below its retriever's name)
            line = suite.lines.at_key(key) if suite.lines is not None else None
            if line is None and owner:
                line = keys[owner].line
            unset.setdefault(owner, []).append(
                SuiteError(message, file=suite.path, key=key, line=line))
        # What an unset variable explains is not built again.
        problems: list[SuiteError] = []
        for key, spec in keys.items():
            build = (self._build_system if suite.is_pipeline(spec.name)
                     else self._build_retriever)
            problems += unset.get(key) or build(spec)
        if rag is not None:
            if self._needs_answer_pipeline():
                problems += unset.get("") or self._prepare_pipeline()
            problems += self._check_references()
        if "retrievers" in todo:
            problems += self._check_scopes()
            problems += self._check_xfail()
            problems += self._check_metrics_corpus()
        if problems:
            for problem in problems:
                # found after loading (an unset variable of the llm, a cache path): named by
                # key, placed at the key's line as the loader's own errors are
                if (problem.line is None and problem.key and suite.lines is not None
                        and problem.file == str(suite.path)):
                    problem.place(suite.lines.at_key(problem.key))
            if len(problems) == 1:
                raise problems[0]
            # in the order of the file, as the loader's: found in another (the systems, then
            # the llm, then the references its metrics need)
            problems.sort(key=lambda p: (p.line is None, p.line or 0))
            raise SuiteError("\n".join(str(p) for p in problems))
        self._prepared |= todo

    def _build_retriever(self, spec: ComponentSpec) -> list[SuiteError]:
        if spec.name in self._built or spec.name in self._retrievers:
            return []
        try:
            # the run's budget, so that a retriever's endpoint (dense's embedder) holds its
            # concurrency for the whole run, as the suite's own endpoints do
            self._built[spec.name] = self.registry.build(
                "retriever", spec.type, spec.params,
                replace(self.ctx, name=spec.name, run_budget=self.run_budget))
        except Exception as exc:
            detail = str(exc) if isinstance(exc, RagbenchError) else exception_text(exc)
            return [SuiteError(detail, file=self.suite.path, key=_spec_key(spec),
                               line=spec.line)]
        return self._check_retriever(spec, self._built[spec.name])

    def _check_retriever(self, spec: ComponentSpec, instance: Any) -> list[SuiteError]:
        """The methods every case calls, as for a pipeline's ``answer``: without them (a
        factory that forgot to return its object) each case was an error of its own."""
        missing = [signature for signature, names in (("index(corpus)", ("index",)),
                                                      ("retrieve(query, k)",
                                                       ("retrieve", "retrieve_case")))
                   if not any(callable(getattr(instance, n, None)) for n in names)]
        if not missing:
            return []
        return [SuiteError(f"retriever {spec.name!r} ({spec.type}) built "
                           f"{type(instance).__name__}, which has no {' and no '.join(missing)} "
                           "method", file=self.suite.path, key=_spec_key(spec), line=spec.line)]

    def _prepare_pipeline(self) -> list[SuiteError]:
        if self._pipeline is not None:
            return []
        from ..answers.config import ConfigError

        problems = self._registered_problems()
        if problems:
            return problems
        try:
            self._pipeline = self._build_pipeline()
        except Exception as exc:
            text = str(exc) if isinstance(exc, ValueError | RagbenchError) \
                else exception_text(exc)
            if isinstance(exc, ConfigError):
                # each at its own key (a registered LLM's parameters), as a retriever's are
                return [SuiteError(detail, file=self.suite.path, key=key)
                        for key, detail in exc.problems]
            # build_pipeline says "key.path: what is wrong".
            key, sep, detail = text.partition(": ")
            if sep and key and " " not in key:
                return [SuiteError(detail, file=self.suite.path, key=key)]
            return [SuiteError(text, file=self.suite.path)]
        return []

    def _registered_problems(self) -> list[SuiteError]:
        """What is wrong with each LLM or embedder of the user's own type the suite names
        (``llm``, ``judge.llm``, ``embedder``), each parameter at its own key: building stops
        at the first, and a user would meet the next one a run later."""
        from ..answers.config import component_error, registered_components

        rag = self.suite.rag
        if rag is None:
            return []
        problems: list[SuiteError] = []
        for key, kind, name, params in registered_components(rag):
            try:
                self.registry.check(kind, name, params, self.ctx)
            except ComponentError as exc:
                problems += [SuiteError(detail, file=self.suite.path, key=where)
                             for where, detail in component_error(rag.key_prefix + key,
                                                                  exc).problems]
        return problems

    def _check_references(self) -> list[SuiteError]:
        from .prechecks import missing_reference_problem

        queries = self.dataset.queries
        answer_field = self.suite.dataset.answer_field
        components = [m.name for m in self.suite.metrics
                      if m.needs is not None and "references" in m.needs]
        message = missing_reference_problem(
            self._rag_metrics, (q.reference_answers for q in queries), len(queries),
            answer_field, also=components)
        if message is None:
            return []
        return [SuiteError(message, file=self.suite.path,
                           key="dataset.answer_field" if answer_field else "metrics")]

    def _check_metrics_corpus(self) -> list[SuiteError]:
        """What a metric says it cannot mean on the corpus (its optional ``check_corpus``,
        e.g. temporal nDCG whose timestamp field no document has): one value for every
        query, silently, otherwise."""
        found = []
        for i, spec in enumerate(self.suite.metrics):
            checker = getattr(spec.component, "check_corpus", None)
            message = checker(self.dataset.corpus) if callable(checker) else None
            if message:
                found.append(SuiteError(str(message), file=self.suite.path, key=f"metrics[{i}]"))
        return found

    def _check_xfail(self) -> list[SuiteError]:
        """``xfail`` ids the dataset does not hold: a typo there left its case failing and the
        entry unused, silently (one naming a query the selection leaves out is fine)."""
        known = self.dataset.all_query_ids
        unknown = [qid for qid in self.suite.xfail if known and qid not in known]
        if not unknown:
            return []
        document = self.suite.document
        written = document.get("xfail") if isinstance(document, Mapping) else None
        first = unknown[0]
        key = (f"xfail[{list(self.suite.xfail).index(first)}]" if isinstance(written, list)
               else f"xfail.{first}")
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        return [SuiteError(
            f"known failures of queries the dataset does not have: "
            f"{', '.join(repr(q) for q in unknown[:5])}{more}{did_you_mean(first, known)}",
            file=self.suite.path, key=key)]

    def _check_scopes(self) -> list[SuiteError]:
        from .prechecks import scope_problems

        suite, queries = self.suite, self.dataset.queries
        found = []
        for section, checks, places in (("gates", suite.gates, suite.gate_places),
                                        ("thresholds", suite.thresholds,
                                         suite.threshold_places)):
            for i, check in enumerate(checks):
                # each check at its own key and line (a suite built in code has none)
                key, line = places[i] if i < len(places) else (section, None)
                found += [SuiteError(message, file=suite.path, key=key, line=line)
                          for message in scope_problems([check], queries)]
        return found

    def check_hits(self, name: str, hits: Any, k: int) -> Sequence[tuple[str, float]]:
        """Validated ``(doc_id, score)`` pairs of system ``name`` (a retriever or, for hits a
        hand-written test scores on a pipeline's case, a pipeline); :class:`CaseError` names
        what is wrong."""
        _ = self.dataset
        kind = "pipeline" if self.suite.is_pipeline(name) else "retriever"
        return self._check_hits(name, hits, k, kind)

    def _check_hits(self, name: str, hits: Any, k: int,
                    kind: str = "retriever") -> Sequence[tuple[str, float]]:
        who = f"{kind} {name!r}"
        if not isinstance(hits, Sequence) or isinstance(hits, str | bytes):
            raise CaseError("retrieve", f"{who} returned {type(hits).__name__}, "
                                        "expected a list of (doc_id, score) pairs")
        if len(hits) > k:
            raise CaseError("retrieve", f"{who} returned {len(hits)} results, more than k={k}")
        fast = self._check_hits_fast(hits)
        if fast is not None:
            return fast
        # The slow path finds the first offending hit and says what is wrong with it.
        out: list[tuple[str, float]] = []
        seen: set[str] = set()
        for i, hit in enumerate(hits):
            try:
                doc_id, score = hit
                doc_id, score = str(doc_id), float(score)
            except (TypeError, ValueError):
                raise CaseError("retrieve", f"{who} result {i} is {hit!r}, "
                                            "expected a (doc_id, score) pair") from None
            if doc_id not in self._doc_ids:
                raise CaseError("retrieve", f"{who} returned unknown document id "
                                            f"{doc_id!r} at rank {i + 1}")
            if doc_id in seen:
                raise CaseError("retrieve", f"{who} returned document {doc_id!r} "
                                            "twice")
            if not math.isfinite(score):
                raise CaseError("retrieve", f"{who} returned a non-finite score "
                                            f"({score}) for {doc_id!r}")
            seen.add(doc_id)
            out.append((doc_id, score))
        return out

    def _check_hits_fast(self, hits: Sequence[Any]) -> Sequence[tuple[str, float]] | None:
        """The checked hits when every hit is a valid ``(str, float)`` pair, else None.

        Whole-list operations in C instead of a Python loop per hit: the loop costs more than
        a fast retriever's whole query at k=1000. None sends the caller to the per-hit loop,
        which accepts what this path does not bother with (ints, numpy scalars) and names
        the first bad hit. A :class:`RankedHits` comes back as it is: consumers read pairs by
        iterating, so its tuples are made one at a time and dropped, never k at once.
        """
        if not hits:
            return []
        if isinstance(hits, RankedHits):
            ids, scores = hits.ids, hits.scores
        else:
            row_types = set(map(type, hits))
            if not row_types <= {tuple, list} or set(map(len, hits)) != {2}:
                return None
            ids, scores = zip(*hits, strict=True)
        if set(map(type, ids)) != {str} or set(map(type, scores)) != {float}:
            return None
        unique = set(ids)
        if len(unique) != len(ids) or not self._doc_ids.issuperset(unique):
            return None
        # inf and NaN propagate through a sum; finite scores whose sum overflows go to the
        # slow path, which accepts them.
        if not math.isfinite(sum(scores)):
            return None
        if isinstance(hits, RankedHits):
            return hits
        return list(hits) if row_types == {tuple} else list(zip(ids, scores, strict=True))

    def new_record(self, retriever_name: str, case_id: str, run: int = 0) -> CaseRecord:
        """A record for one case with every field present and nothing measured yet."""
        suite = self.suite
        query = self.query(case_id)
        # "xfail" is set by the collected item (CaseItem.setup), where the suite's xfail mark
        # is applied; hand-written tests over the suite's cases carry no such mark.
        return make_record(
            suite=self.suite_id, retriever=retriever_name, case_id=case_id, run=run,
            suite_name=suite.name, suite_hash=suite.suite_hash,
            dataset_hash=self.dataset.content_hash, query=query.text, type=query.type,
            difficulty=query.difficulty, tags=query.tags,
            metrics=[m.name for m in suite.metrics],
            n_relevant=query.num_relevant if query.judged else None,
            no_relevant=query.judged and query.num_relevant == 0,
            unknown_labels={"action": "dropped" if self.dataset.unknown_documents == "drop"
                            else "kept", "documents": list(query.unknown_labels)}
            if query.unknown_labels else None)

    def _case_limit(self, name: str) -> float | None:
        """The ``case_timeout`` of retriever or pipeline ``name`` (None: no limit)."""
        spec = next((r for r in self.suite.systems if r.name == name), None)
        return getattr(spec, "timeout", None)

    def _timed(self, name: str, call: Callable[[], Any]) -> tuple[Any, float]:
        t0 = time.perf_counter()
        limit = self._case_limit(name)
        try:
            raw = self._run(call()) if limit is None else self._within(
                f"retrieve-{name}", call, limit, lambda: self._timeout_error(name, limit))
        except CaseError:
            raise
        except (Exception, SystemExit) as exc:
            # a SystemExit is a failure of its case, as pytest counts it in a test: raised
            # while retrieving ahead it errored every case up to the one that raised it
            raise CaseError("retrieve", f"retriever {name!r} raised {exception_text(exc)}",
                            type(exc).__name__, cause=exc) from exc
        return raw, (time.perf_counter() - t0) * 1000.0

    def _within(self, what: str, call: Callable[[], Any], limit: float,
                timed_out: Callable[[], CaseError]) -> Any:
        """``call()`` (awaited if async) bounded by a component's ``case_timeout``; raises
        ``timed_out()`` past it (``what`` names the thread).

        A synchronous call cannot be interrupted, so it runs in a thread of its own that is
        left to finish in the background when the limit passes; the case records the
        timeout and the run goes on.
        """
        # a wait longer than the platform allows (threading.TIMEOUT_MAX, about 292 years)
        # raised OverflowError: such a limit is no limit
        limit = min(limit, threading.TIMEOUT_MAX)
        deadline = self._clock.monotonic() + limit
        done = threading.Event()
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = call()
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        # in the caller's context, as a call without the limit runs (a tracing span the
        # test or a fixture set reaches the component)
        threading.Thread(target=contextvars.copy_context().run, args=(target,),
                         name=f"ragbench-{what}", daemon=True).start()
        if not self._clock.wait(done, limit):
            raise timed_out()
        if "error" in box:
            raise box["error"]
        value = box["value"]
        if inspect.isawaitable(value):
            remaining = max(deadline - self._clock.monotonic(), 0.0)
            # on the clock of the LLM limits: a wait for one of the run's slots (a dense
            # retriever's openai embedder draws from the run's budget) is not counted, or
            # the same retrieval would time out at -n 2 and not at -n 0
            awaitable = value
            try:
                value = self._run(limits.within(remaining, lambda: awaitable))
            except (asyncio.TimeoutError, TimeoutError):
                raise timed_out() from None
        return value

    @staticmethod
    def _timeout_error(name: str, limit: float) -> CaseError:
        return CaseError("retrieve", f"retriever {name!r} timed out: the retrieval took longer "
                                     f"than its case_timeout {limit:g} s", "TimeoutError")

    def _prefetch(self, name: str, retriever: Any, case_ids: Sequence[str], k: int) -> None:
        """One ``retrieve_many`` call for ``case_ids``; results cached per case."""
        texts = [self.query(c).text for c in case_ids]
        t0 = time.perf_counter()
        try:
            raw = self._run(retriever.retrieve_many(texts, k))
        except Exception:
            self._no_batch.add(name)
            return
        elapsed = (time.perf_counter() - t0) * 1000.0
        if (not isinstance(raw, Sequence) or isinstance(raw, str | bytes)
                or len(raw) != len(case_ids)):
            self._no_batch.add(name)
            return
        each = elapsed / len(case_ids)
        for cid, hits in zip(case_ids, raw, strict=True):
            self._batched[(name, cid)] = (hits, each)

    def _retrieve(self, name: str, retriever: Any, query: Query, k: int,
                  upcoming: Upcoming | None) -> tuple[Any, float]:
        """Raw hits and latency in ms for one case (see the module docs for the order)."""
        if callable(getattr(retriever, "retrieve_case", None)):
            return self._timed(name, lambda: retriever.retrieve_case(query, k))
        # a batch would put many cases under one limit: time-limited retrievers go one by one
        if (upcoming is not None and name not in self._no_batch
                and self._case_limit(name) is None
                and callable(getattr(retriever, "retrieve_many", None))):
            key = (name, query.id)
            if key not in self._batched:
                ids = [query.id]
                for cid in upcoming():
                    if len(ids) >= BATCH_LIMIT:
                        break
                    if cid not in ids and (name, cid) not in self._batched \
                            and cid in self._queries and self._may_look_ahead(cid):
                        ids.append(cid)
                with self._looking_ahead(ids):
                    self._prefetch(name, retriever, ids, k)
            if key in self._batched:
                return self._batched.pop(key)
        return self._timed(name, lambda: retriever.retrieve(query.text, k))

    def retrieve_hits(self, retriever_name: str, query: Query,
                      k: int | None = None) -> tuple[Sequence[tuple[str, float]], float]:
        """Checked hits and latency (ms) of one retrieval, outside any case record.

        Raises :class:`CaseError` like a case would record it.
        """
        k = self.suite.k if k is None else k
        retriever = self.retriever(retriever_name)
        raw, latency = self._retrieve(retriever_name, retriever, query, k, None)
        return self._check_hits(retriever_name, raw, k), latency

    def case_result(self, query: Query, hits: Sequence[tuple[str, float]],
                    latency_ms: float | None) -> CaseResult:
        """What metrics see of one retrieval."""
        _ = self.dataset
        return CaseResult(
            ranked=tuple(trec_order(hits)), scores=dict(hits), k=self.suite.k,
            latency_ms=latency_ms, documents=self._documents, run_start=self.ctx.run_start,
        )

    def _metric_value(self, m: MetricSpec, query: Query, result: CaseResult) -> float | None:
        if m.component is not None:
            return m.compute(query, result)
        # A MetricSpec made by hand (no component): the built-in families still work.
        if m.family == "retrieval":
            return parse_metric(m.name).compute(result.ranked, query.relevant) \
                if query.judged else None
        if m.name == "latency_ms":
            return result.latency_ms
        return None

    def score(self, rec: CaseRecord, query: Query, hits: Sequence[tuple[str, float]],
              latency_ms: float | None, on_error: OnError | None = None) -> None:
        """Fill ``rec``'s latency, retrieved/missed lists, relevant ranks and metrics from
        checked hits.

        A metric that raises makes the record an error (stage ``metric``); its exception goes
        to ``on_error``.
        """
        suite = self.suite
        result = self.case_result(query, hits, latency_ms)
        rec["latency_ms"] = None if latency_ms is None else round(latency_ms, 3)
        scores = result.scores
        grades = query.relevant
        rec["retrieved"] = [
            [d, clean_float(scores[d]), grades.get(d)] for d in result.ranked[: suite.record_depth]
        ]
        rec["record_depth"] = suite.record_depth
        # ``scores`` has exactly the ranked ids as keys: no set of them is needed.
        rec["missed"] = sorted(
            ([d, g] for d, g in grades.items() if g > 0 and d not in scores),
            key=lambda x: (-x[1], x[0]),
        )[: suite.record_depth]
        rec["relevant_ranks"] = relevant_ranks(result.ranked, grades)
        for m in suite.metrics:
            try:
                rec["metrics"][m.name] = clean_float(self._metric_value(m, query, result))
            except Exception as exc:
                _fail(rec, "metric", type(exc).__name__,
                      f"metric {m.name!r} raised {exception_text(exc)}",
                      (exc, exc.__traceback__), on_error)
                return

    # -- generation and judging (suites with an ``llm`` section) ---------------------------

    def _build_pipeline(self) -> Any:
        from ..answers.pipeline import build_pipeline

        return build_pipeline(
            self.suite.rag, base_dir=self.suite.path.parent,
            cache_path_override=self.ctx.llm_cache_path,
            cache_mode_override=self.ctx.llm_cache_mode,
            # registered LLM / embedder types come from this run's registry (conftest too)
            components=lambda kind, name, params: self.registry.build(kind, name, params,
                                                                      self.ctx),
            run_budget=self.run_budget() if self.run_budget is not None else None,
            cost_key=self.suite_id + (f"::{self.suite.rag.key_prefix}"
                                      if self.suite.rag.key_prefix else ""),
            exchange=self.exchange_role if self.run_budget is not None else None,
            exchange_scope=self.suite_id,
            spent_before=self._spent_before,
        )

    def count_spent_before(self, paid: PaidBefore) -> None:
        """Count ``paid`` against the suite's ``max_cost`` as paid before this run (the cases
        a resumed run reuses), before its first case; the pipeline may be built already."""
        self._spent_before = paid
        budget = getattr(self._pipeline, "budget", None)
        if budget is not None:
            if hasattr(budget, "spent_before"):
                budget.spent_before(paid)
            else:  # a per-process CostBudget (no run budget)
                budget.add(paid.usd)

    def pipeline(self) -> Any:
        """The suite's RAG pipeline, built once per process; a failure is remembered."""
        if self._pipeline is None and self._pipeline_error is None:
            try:
                self._pipeline = self._build_pipeline()
            except Exception as exc:
                self._pipeline_error = CaseError(
                    "generation", f"the suite's LLM setup failed: {exc}", type(exc).__name__,
                    cause=exc)
        if self._pipeline_error is not None:
            raise self._pipeline_error
        return self._pipeline

    def _contexts(self, hits: Sequence[tuple[str, float]]) -> list[tuple[str, str]]:
        n = self.pipeline().n_contexts
        out = []
        for doc_id in trec_order(list(hits))[:n]:
            d = self._documents[doc_id]
            out.append((doc_id, f"{d.title}. {d.text}" if d.title else d.text))
        return out

    def _prefetch_answers(self, name: str, cases: Sequence[tuple[str, int]],
                          upcoming: Upcoming | None) -> None:
        """Retrieve the upcoming cases now and start their generation/judging in the
        background, so LLM requests for many items are in flight while items report in order.
        Only cases this process will run are touched, so no call is made twice across workers.
        """
        pipeline = self.pipeline()
        retriever = self.retriever(name)
        for cid, run in cases:
            key = (name, cid, run)
            if key in self._submitted or cid not in self._queries \
                    or key in self._failed_retrievals or not self._may_look_ahead(cid):
                continue
            if (name, cid) not in self._retrieved:
                try:
                    with self._looking_ahead([cid]):
                        raw, latency = self._retrieve(name, retriever, self._queries[cid],
                                                      self.suite.k, upcoming)
                    hits = self._check_hits(name, raw, self.suite.k)
                except CaseError as exc:
                    self._failed_retrievals[key] = exc  # the run records it when it runs
                    continue
                self._retrieved[(name, cid)] = (hits, latency)
            hits, _ = self._retrieved[(name, cid)]
            pipeline.submit(key, self._queries[cid], self._contexts(hits), self._rag_metrics,
                            run=run)
            self._submitted.add(key)

    def prefetch_answers(self, name: str, cases: Sequence[tuple[str, int]]) -> list[Any]:
        """Retrieve ``cases`` (``(case id, run)`` of retriever ``name``) and start their
        generation and judging in the background, as the items of this process would; the
        keys to wait on with ``pipeline().result(key)``. A case whose retrieval fails is left
        out (its item records the error). Raises :class:`CaseError` when the retriever or the
        pipeline cannot be had. The cases are retrieved in one batch where the retriever
        allows (as a process's upcoming items are)."""
        ids = [cid for cid, _ in cases]
        self._prefetch_answers(name, cases, lambda: ids)
        return [(name, cid, run) for cid, run in cases if (name, cid, run) in self._submitted]

    def cancel_answers(self) -> None:
        """Cancel the generation and judging started ahead and close the pipeline (safe from
        another thread than the one running cases; later cases record the closed pipeline)."""
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.close()

    @property
    def answer_metrics(self) -> list[str]:
        """The suite's answer metrics (those the generation/judging pipeline computes)."""
        return list(self._rag_metrics)

    def _answer(self, rec: CaseRecord, name: str, query: Query,
                hits: Sequence[tuple[str, float]], run: int,
                on_error: OnError | None = None) -> None:
        """Merge the generated answer, its metrics, verdicts, usage and cost into ``rec``."""
        key = (name, query.id, run)
        try:
            pipeline = self.pipeline()
            if key in self._submitted:
                self._submitted.discard(key)
                out = pipeline.result(key)
            else:
                out = pipeline.run_case_sync(query, self._contexts(hits), self._rag_metrics,
                                             run=run)
        except CaseError as exc:
            _fail_case(rec, exc, on_error)
            return
        except Exception as exc:  # a bug or a cancelled prefetch: still a recorded error
            _fail(rec, "generation", type(exc).__name__,
                  f"generation failed: {exception_text(exc)}", (exc, exc.__traceback__),
                  on_error)
            return
        add_answer(rec, out)
        for metric, value in out.get("metrics", {}).items():
            if metric in rec["metrics"]:
                rec["metrics"][metric] = clean_float(value)
        errors = out.get("errors") or {}
        if errors:
            rec["status"] = "error"
            stage = "generation" if "generation" in errors else "judge"
            rec["error"] = {"stage": stage, "type": "LLMError",
                            "message": errors_text(errors)}

    def run_case(self, retriever_name: str, case_id: str, run: int = 0,
                 upcoming: Upcoming | None = None,
                 upcoming_runs: Callable[[], Sequence[tuple[str, int]]] | None = None,
                 on_error: OnError | None = None) -> CaseRecord:
        """Evaluate one case and return its record (status "error" carries the reason).

        ``upcoming`` returns the ids of the cases of this retriever this process will run
        next; it enables ``retrieve_many`` batching. ``on_error`` receives the exception a
        component raised when that made the case an error.
        """
        suite = self.suite
        query = self.query(case_id)
        rec = self.new_record(retriever_name, case_id, run)
        if self._rag_metrics and upcoming_runs is not None:
            # A pipeline or retriever that cannot be had fails again below, where this case
            # records it: after its retrieval was measured, when only the answer failed.
            with contextlib.suppress(CaseError):
                self._prefetch_answers(retriever_name, [(case_id, run), *upcoming_runs()],
                                       upcoming)
        try:
            failed = self._failed_retrievals.pop((retriever_name, case_id, run), None)
            if failed is not None:
                raise failed
            if (retriever_name, case_id) in self._retrieved:
                hits, latency = self._retrieved[(retriever_name, case_id)]
                if not any(k[:2] == (retriever_name, case_id) for k in self._submitted
                           if k[2] != run):
                    del self._retrieved[(retriever_name, case_id)]
            else:
                retriever = self.retriever(retriever_name)
                raw, latency = self._retrieve(retriever_name, retriever, query, suite.k,
                                              upcoming)
                hits = self._check_hits(retriever_name, raw, suite.k)
        except CaseError as exc:
            _fail_case(rec, exc, on_error)
            return rec

        self.score(rec, query, hits, latency, on_error)
        return self._finish_case(
            rec, lambda: self._answer(rec, retriever_name, query, hits, run, on_error))

    # -- pipelines: the user's RAG systems under test ---------------------------------------

    def _needs_answer_pipeline(self) -> bool:
        """Whether the generation/judging pipeline is used: retrievers generate answers;
        pipelines bring their own and need it only for judged metrics."""
        return bool(self.suite.retrievers) or bool(self._model_metrics())

    def _model_metrics(self) -> list[str]:
        """The answer metrics that need the suite's judge or embedder."""
        return [m.name for m in self.suite.metrics if m.needs is not None
                and ({"judge", "embedder"} & m.needs
                     or getattr(m.component, "judge_part", None) is not None)]

    def _build_system(self, spec: ComponentSpec) -> list[SuiteError]:
        """Build pipeline ``spec`` now and check it against the suite's queries."""
        if spec.name in self._systems:
            return []
        try:
            # the run's budget, so that an http pipeline's concurrency holds for the whole
            # run, as the suite's endpoints' do
            instance = self.registry.build("pipeline", spec.type, spec.params,
                                           replace(self.ctx, name=spec.name,
                                                   run_budget=self.run_budget))
            # an async factory: built on the loop its pipeline's answers will run on
            instance = self._run(instance)
        except Exception as exc:
            if isinstance(exc, ComponentError) and exc.path and spec.path:
                # one parameter at fault (a langchain factory's object that is not a
                # Runnable): at that key's line, as when it is found at collection
                return spec.errors(self.suite.path, exc)
            detail = str(exc) if isinstance(exc, RagbenchError) else exception_text(exc)
            return [SuiteError(detail, file=self.suite.path, key=_spec_key(spec),
                               line=spec.line)]
        self._systems[spec.name] = instance
        return self._check_system(spec, instance)

    def _check_system(self, spec: ComponentSpec, instance: Any) -> list[SuiteError]:
        problems: list[SuiteError] = []
        if not callable(getattr(instance, "answer", None)):
            problems.append(SuiteError(
                f"pipeline {spec.name!r} ({spec.type}) built {type(instance).__name__}, which "
                "has no answer(query) method", file=self.suite.path, key=_spec_key(spec),
                line=spec.line))
        wrong = ask_concurrency(instance)
        if isinstance(wrong, str):
            problems.append(SuiteError(f"pipeline {spec.name!r} ({spec.type}): {wrong}",
                                       file=self.suite.path, key=_spec_key(spec),
                                       line=spec.line))
        checker = getattr(instance, "check_queries", None)
        if callable(checker):
            for message in checker(self.dataset.queries) or ():
                problems.append(SuiteError(str(message), file=self.suite.path,
                                           key=_spec_key(spec), line=spec.line))
        return problems

    def system(self, name: str) -> Any:
        """The built pipeline ``name``; a failure is remembered, not retried."""
        if name in self._systems:
            return self._systems[name]
        if name in self._system_failed:
            raise self._system_failed[name]
        spec = next((p for p in self.suite.pipelines if p.name == name), None)
        if spec is None:
            have = ", ".join(p.name for p in self.suite.pipelines) or "none"
            raise CaseError("answer", f"suite {self.suite.name!r} has no pipeline {name!r} "
                                      f"(it has: {have})")
        problems = self._build_system(spec)
        if problems:
            err = CaseError("answer", f"pipeline {name!r} ({spec.type}) could not be built: "
                                      + "; ".join(p.detail for p in problems))
            self._systems.pop(name, None)
            self._system_failed[name] = err
            raise err
        return self._systems[name]

    def _ask(self, name: str, instance: Any, query: Query) -> tuple[Any, float]:
        """Call ``answer(query)`` (awaited when async), bounded by the pipeline's
        ``case_timeout``; the raw output and wall time in ms."""
        t0 = time.perf_counter()
        limit = self._case_limit(name)
        try:
            if limit is None:
                raw = self._run(instance.answer(query))
            else:
                raw = self._within(
                    f"answer-{name}", lambda: instance.answer(query), limit,
                    lambda: CaseError("answer", f"pipeline {name!r} timed out: the answer took "
                                                f"longer than its case_timeout {limit:g} s",
                                      "TimeoutError"))
        except CaseError:
            raise
        except (Exception, SystemExit, asyncio.CancelledError) as exc:
            # see _timed; a CancelledError here is the application's own (awaiting a future
            # another of its calls cancelled): an interruption reaches the caller as such
            raise CaseError("answer", f"pipeline {name!r} raised {exception_text(exc)}",
                            type(exc).__name__, cause=exc) from exc
        return raw, (time.perf_counter() - t0) * 1000.0

    def _context_text(self, ctx: Any) -> str | None:
        if ctx.text is not None and ctx.text.strip():
            return str(ctx.text)
        doc = self._documents.get(ctx.id) if ctx.id is not None else None
        if doc is None:
            return None
        return f"{doc.title}. {doc.text}" if doc.title else doc.text

    def _asker(self, name: str) -> Asker | None:
        """What asks pipeline ``name`` for several cases at once; None when it takes one at
        a time (see :mod:`.asking`)."""
        if name in self._askers:
            return self._askers[name]
        instance = self.system(name)
        concurrency = ask_concurrency(instance)
        asker = None
        if isinstance(concurrency, int) and concurrency > 1:
            if self._loop_thread is None:
                if self._loop is None:
                    self._loop = self._clock.new_event_loop()
                self._loop_thread = LoopThread("ragbench-loop", self._loop)
            limit = self._case_limit(name)
            asker = Asker(
                instance, concurrency, self._loop_thread, limit=limit, name=name,
                failed=lambda exc: CaseError(
                    "answer", f"pipeline {name!r} raised {exception_text(exc)}",
                    type(exc).__name__, cause=exc),
                timed_out=lambda: CaseError(
                    "answer", f"pipeline {name!r} timed out: the answer took longer than its "
                              f"case_timeout {limit:g} s", "TimeoutError"),
                looking_ahead=self._looking_ahead)
        self._askers[name] = asker
        return asker

    def _answer_of(self, name: str, instance: Any, query: Query,
                   run: int) -> tuple[Any, float]:
        """Case (``name``, ``query``, ``run``)'s raw output and wall ms: asked ahead, or now."""
        asked = self._answered.pop((name, query.id, run), None)
        if isinstance(asked, CaseError):
            raise asked
        if asked is not None:
            return asked
        asker = self._asker(name)
        if asker is None:
            return self._ask(name, instance, query)
        key = (name, query.id, run)
        if key not in asker and not self._may_look_ahead(query.id):
            # its query was in flight when a worker died (see .ahead): asked with nothing
            # else in flight, so that a crash in it is its own item's, not one more rerun
            # that names the cases around it
            for other in self._askers.values():
                if other is not None:
                    other.settle()
        asker.submit(key, query, ahead=False)
        return asker.result(key)

    def _look_ahead(self, name: str, cases: Sequence[tuple[str, int]]) -> None:
        """Ask pipeline ``name`` for the answers of the next ``cases`` (this case first) when
        it takes several at once, and start judging those that are in, so that the
        pipeline's and the judge's requests of several items are in flight while items
        report in order. At most ``concurrency`` cases (or the judge's, if more) are ahead:
        asked and not yet reported."""
        asker = self._asker(name)
        if asker is None:
            if self._rag_metrics:
                self._prefetch_judging(name, cases)
            return
        if cases and not self._may_look_ahead(cases[0][0]):
            return  # this case is asked alone (see _answer_of)
        judged = self._judged_metrics()
        window = asker.concurrency
        if judged:
            window = max(window, self.pipeline().prefetcher.concurrency)
        ahead = {k for k in (*asker.keys(), *self._answered, *self._judging) if k[0] == name}
        for key in self._to_ask(name, cases, window, ahead):
            asker.submit(key, self._queries[key[1]], ahead=True)
        if not judged:
            return
        for key in asker.answered():
            try:
                self._answered[key] = asked = asker.result(key)
            except CaseError as exc:
                self._answered[key] = exc
                continue
            self._judge_ahead(key, asked[0], judged)

    def _judge_ahead(self, key: tuple[str, str, int], raw: Any, judged: list[str]) -> None:
        """Start judging case ``key``'s answer (``raw``, as the pipeline gave it) in the
        background; an output the case itself will refuse is left to it."""
        from ..pipelines.contract import OutputError, normalise_output

        try:
            output = normalise_output(raw)
        except OutputError:
            return  # the case itself says what is wrong with it
        texts = self._judge_texts(output)
        if texts is None:
            return
        self.pipeline().submit_judgement(("judge", *key), self._queries[key[1]], output.answer,
                                         texts, judged, run=key[2])
        self._judging.add(key)

    def _prefetch_judging(self, name: str, cases: Sequence[tuple[str, int]]) -> None:
        """Ask pipeline ``name`` for the answers of the next cases and start judging them in
        the background, so judge requests of several items are in flight while items report
        in order. At most the judge's ``concurrency`` cases are ahead (asked and not yet
        reported), so a slow pipeline is not asked far ahead of its items; each case is
        asked once, and only cases this process will run are touched."""
        judged = self._judged_metrics()
        if not judged:
            return
        pipeline = self.pipeline()
        instance = self.system(name)
        window = pipeline.prefetcher.concurrency
        ahead = {k for k in (*self._answered, *self._judging) if k[0] == name}
        for key in self._to_ask(name, cases, window, ahead):
            try:
                with self._looking_ahead([key[1]]):
                    asked = self._ask(name, instance, self._queries[key[1]])
            except CaseError as exc:
                self._answered[key] = exc
                continue
            self._answered[key] = asked
            self._judge_ahead(key, asked[0], judged)

    def _to_ask(self, name: str, cases: Sequence[tuple[str, int]], window: int,
                 ahead: set[tuple[str, str, int]]) -> Iterator[tuple[str, str, int]]:
        """The keys of pipeline ``name``'s ``cases`` to ask ahead, in order: those not
        ``ahead`` already, of this process's queries, not blamed for a crash, while fewer
        than ``window`` are ahead (each one yielded joins ``ahead``)."""
        for cid, run in cases:
            key = (name, cid, run)
            if key in ahead or cid not in self._queries or not self._may_look_ahead(cid):
                continue
            if len(ahead) >= window:
                return
            ahead.add(key)
            yield key

    def _may_look_ahead(self, case_id: str) -> bool:
        return self.ahead is None or self.ahead.allows(self.suite_id, case_id)

    def _looking_ahead(self, case_ids: Sequence[str]) -> contextlib.AbstractContextManager[Any]:
        """Say, while a component runs for these queries ahead of their items, that it does
        (a crash there is then not blamed on the item being reported)."""
        if self.ahead is None:
            return contextlib.nullcontext()
        return self.ahead.running(self.suite_id, case_ids)

    def _judged_metrics(self) -> list[str]:
        """The answer metrics handed to the suite's judge: all of them when one needs the
        judge or the embedder (as in :meth:`_judge_pipeline`), else none."""
        return list(self._rag_metrics) if self._model_metrics() else []

    def _judge_texts(self, output: Any) -> list[tuple[str, str]] | None:
        """(id, text) of each context of a pipeline's output; None if one has no text."""
        texts: list[tuple[str, str]] = []
        for i, ctx in enumerate(output.contexts):
            text = self._context_text(ctx)
            if text is None:
                return None
            texts.append((ctx.id or f"context-{i + 1}", text))
        return texts

    def run_pipeline_case(self, name: str, case_id: str, run: int = 0,
                          upcoming_runs: Callable[[], Sequence[tuple[str, int]]] | None = None,
                          on_error: OnError | None = None) -> dict[str, Any]:
        """Evaluate one (pipeline, query) case and return its record (``on_error`` as for
        :meth:`run_case`).

        The record is a retriever case's (``retriever`` holds the pipeline's name, so tables,
        baselines and A/B comparisons treat both alike) plus ``pipeline`` (the same name),
        ``answer``, ``contexts`` (ids, or texts where a context has no id), ``judge``,
        ``usage`` / ``cost`` (the pipeline's reported spend plus the judge's) and
        ``system_usage`` (what the pipeline reported). ``upcoming_runs`` returns the
        (case, run) pairs of this pipeline this process will run next: their answers are
        asked for and judged ahead (see :meth:`_prefetch_judging`).
        """
        from ..pipelines.contract import OutputError, normalise_output

        query = self.query(case_id)
        rec = self.new_record(name, case_id, run)
        rec["pipeline"] = name
        if upcoming_runs is not None:
            # a judge or pipeline that cannot be had fails again below, in this case's record
            with contextlib.suppress(CaseError):
                self._look_ahead(name, [(case_id, run), *upcoming_runs()])
        try:
            instance = self.system(name)
            raw, wall_ms = self._answer_of(name, instance, query, run)
            try:
                output = normalise_output(raw)
            except OutputError as exc:
                raise CaseError("answer", f"pipeline {name!r} returned an output outside the "
                                          f"contract: {exc}", "OutputError") from None
        except CaseError as exc:
            _fail_case(rec, exc, on_error)
            return rec
        latency = output.latency_ms if output.latency_ms is not None else wall_ms
        self._score_pipeline(rec, query, output, latency, on_error)
        return self._finish_case(
            rec, lambda: self._judge_pipeline(rec, name, query, output, run, on_error))

    def _finish_case(self, rec: dict[str, Any], answer_metrics: Callable[[], None],
                     ) -> dict[str, Any]:
        """The tail every case shares once it is scored: its answer metrics (when the suite
        has any), then the per-query thresholds; an error at either step ends the case."""
        if rec["status"] == "error":
            return rec
        if self._rag_metrics:
            answer_metrics()
            if rec["status"] == "error":
                return rec
        self._apply_thresholds(rec)
        return rec

    def _score_pipeline(self, rec: dict[str, Any], query: Query, output: Any,
                        latency_ms: float, on_error: OnError | None = None) -> None:
        """Latency, retrieval metrics over the context ids (in the pipeline's order) and the
        retrieved/missed lists; answer metrics are left to :meth:`_judge_pipeline`."""
        ids: list[str] = []
        scores: dict[str, float] = {}
        n = len(output.contexts)
        for i, ctx in enumerate(output.contexts):
            if ctx.id is None or ctx.id in scores:
                continue
            ids.append(ctx.id)
            # the pipeline's order is its ranking; a missing score stands in by rank
            scores[ctx.id] = ctx.score if ctx.score is not None else float(n - i)
        # Retrieval metrics rank the context ids. An empty list the pipeline gave is a ranking
        # of nothing, scored (0 where the query has relevant documents) as a retriever that
        # found nothing is; contexts without ids, or none given (an answer alone), rank
        # nothing against the labels and leave them n/a.
        ranked = bool(ids) or (output.contexts_given and not output.contexts)
        result = CaseResult(
            ranked=tuple(ids), scores=scores, k=max(self.suite.k, len(ids)),
            latency_ms=latency_ms, documents=self._documents, run_start=self.ctx.run_start,
            answer=output.answer,
            contexts=tuple(t for t in map(self._context_text, output.contexts) if t),
        )
        rec["latency_ms"] = round(latency_ms, 3)
        grades = query.relevant
        rec["retrieved"] = [[d, clean_float(scores[d]), grades.get(d)]
                            for d in ids[: self.suite.record_depth]]
        rec["record_depth"] = self.suite.record_depth
        rec["missed"] = sorted(
            ([d, g] for d, g in grades.items() if g > 0 and d not in scores),
            key=lambda x: (-x[1], x[0]),
        )[: self.suite.record_depth] if ranked else []
        rec["relevant_ranks"] = relevant_ranks(ids, grades) if ranked else {}
        rec["answer"] = output.answer
        rec["contexts"] = [c.id if c.id is not None else (c.text or "")[:200]
                           for c in output.contexts]
        usage = output.usage
        rec["system_usage"] = usage.as_dict() if usage is not None else None
        rec["usage"] = {"prompt_tokens": (usage.prompt_tokens or 0) if usage else 0,
                        "completion_tokens": (usage.completion_tokens or 0) if usage else 0,
                        "requests": 0}
        rec["cost"] = clean_float(usage.cost) if usage is not None and usage.cost is not None \
            else None
        for m in self.suite.metrics:
            if m.family == "rag":
                continue
            if m.family == "retrieval" and not ranked:
                continue
            try:
                rec["metrics"][m.name] = clean_float(self._metric_value(m, query, result))
            except Exception as exc:
                _fail(rec, "metric", type(exc).__name__,
                      f"metric {m.name!r} raised {exception_text(exc)}",
                      (exc, exc.__traceback__), on_error)
                return

    def _judge_pipeline(self, rec: dict[str, Any], name: str, query: Query, output: Any,
                        run: int, on_error: OnError | None = None) -> None:
        """The answer metrics: through the suite's answer pipeline when one needs the judge
        or the embedder (one batched chat call and at most one embedding call per case, as
        for generated answers), else here, without building it."""
        if not self._model_metrics():
            self._score_answer_here(rec, query, output)
            return
        texts: list[tuple[str, str]] = []
        for i, ctx in enumerate(output.contexts):
            text = self._context_text(ctx)
            if text is None:
                rec["status"] = "error"
                rec["error"] = {"stage": "judge", "type": "ContextError", "message": (
                    f"pipeline {name!r} context {i} has no text and its id {ctx.id!r} is not a "
                    "corpus document; judged metrics need the context texts (return them, or "
                    "give the suite the corpus)")}
                return
            texts.append((ctx.id or f"context-{i + 1}", text))
        key = (name, query.id, run)
        try:
            if key in self._judging:
                self._judging.discard(key)
                out = self.pipeline().result(("judge", *key))
            else:
                out = self.pipeline().judge_answer_sync(query, output.answer, texts,
                                                        self._rag_metrics, run=run)
        except CaseError as exc:
            _fail_case(rec, exc, on_error)
            return
        except Exception as exc:
            _fail(rec, "judge", type(exc).__name__,
                  f"judging failed: {exception_text(exc)}", (exc, exc.__traceback__),
                  on_error)
            return
        for metric, value in out.get("metrics", {}).items():
            if metric in rec["metrics"]:
                rec["metrics"][metric] = clean_float(value)
        rec["judge"] = out.get("judge")
        judge_usage = out.get("usage") or {}
        for key in ("prompt_tokens", "completion_tokens", "requests"):
            rec["usage"][key] += int(judge_usage.get(key) or 0)
        judge_cost = clean_float(out.get("cost"))
        if judge_cost is not None:
            rec["cost"] = clean_float((rec["cost"] or 0.0) + judge_cost)
        if out.get("llm_calls") is not None:
            rec["llm_calls"] = out["llm_calls"]
        errors = out.get("errors") or {}
        if errors:
            rec["status"] = "error"
            rec["error"] = {"stage": "judge", "type": "LLMError",
                            "message": errors_text(errors)}

    def score_answer(self, rec: dict[str, Any], query: Query, output: Any) -> None:
        """The suite's answer metrics of an answer made outside its systems (a hand-written
        test): ``output`` is a :class:`~pytest_ragbench.pipelines.contract.PipelineOutput`;
        ``rec`` gets the answer, contexts, metrics, verdicts, usage and cost like a pipeline
        case (an error as its status and error)."""
        rec["answer"] = output.answer
        rec["contexts"] = [c.id if c.id is not None else (c.text or "")[:200]
                           for c in output.contexts]
        rec["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0}
        rec["cost"] = None
        if self._rag_metrics:
            self._judge_pipeline(rec, str(rec["retriever"]), query, output, int(rec["run"]))

    def _score_answer_here(self, rec: dict[str, Any], query: Query, output: Any) -> None:
        """Answer metrics that need no model, on this runtime's loop."""
        from ..metrics.contract import AnswerSample, score_answer

        sample = AnswerSample(
            question=query.text, answer=output.answer,
            contexts=tuple(t for t in map(self._context_text, output.contexts) if t),
            references=tuple(query.reference_answers), query=query)
        metrics = [(m.name, m.component) for m in self.suite.metrics if m.needs is not None]
        result = self._run(score_answer(metrics, sample))
        for metric, value in result.metrics.items():
            rec["metrics"][metric] = clean_float(value)
        if result.verdicts:
            rec["judge"] = result.verdicts
        if result.errors:
            rec["status"] = "error"
            rec["error"] = {"stage": "metric", "type": "MetricError",
                            "message": errors_text(result.errors)}

    def rejudge(self, rec: dict[str, Any]) -> None:
        """A record reused from an earlier run (``--ragbench-resume``) judged by this run's
        per-query thresholds, as this run judges its own cases (the earlier run's verdict
        came from the code that ran it: a scoped threshold was once applied to every case)."""
        if rec.get("status") == "error":
            return
        rec["thresholds"] = []
        rec["status"] = "ok"
        self._apply_thresholds(rec)

    def _apply_thresholds(self, rec: dict[str, Any]) -> None:
        """Per-query thresholds of one case, retriever or pipeline; a failed one fails it.
        A threshold with a scope (``difficulty=hard: recall@10``, ``retriever=bm25: ...``)
        applies to the cases in it only."""
        from ..results.gates import case_in_scope, scope_retriever, scope_text

        for gate in self.suite.thresholds:
            only = scope_retriever(gate.scope)
            if (only is not None and only != rec.get("retriever")) or not case_in_scope(
                    {"type": rec.get("type"), "difficulty": rec.get("difficulty"),
                     "tags": rec.get("tags") or []}, gate.scope):
                continue
            value = rec["metrics"].get(gate.metric)
            # A value that could not be computed (an unjudged query) is counted as NaN in the
            # summary; it neither passes nor fails a per-query threshold.
            passed = None if value is None else gate.passes(value)
            check = {
                "metric": gate.metric, "op": gate.op, "threshold": gate.threshold,
                "value": value, "passed": passed,
                "margin": None if value is None else clean_float(gate.margin(value)),
            }
            if gate.scope:  # which of two bounds on one metric this is
                check["scope"] = scope_text(gate.scope)
            rec["thresholds"].append(check)
            if passed is False:
                rec["status"] = "failed"

    def _close_component(self, name: str, component: Any) -> None:
        for meth in ("aclose", "close"):
            fn = getattr(component, meth, None)
            if not callable(fn):
                continue
            kind = "pipeline" if self.suite.is_pipeline(name) else "retriever"
            try:
                result = fn()
                if inspect.isawaitable(result):
                    self._run(asyncio.wait_for(result, CLOSE_TIMEOUT))
            except (asyncio.TimeoutError, TimeoutError):
                _warn_closing(f"{kind} {name!r}: {meth}() did not finish within "
                              f"{CLOSE_TIMEOUT:g} s; left behind", fn)
            except Exception as exc:
                _warn_closing(f"{kind} {name!r}: {meth}() raised {exception_text(exc)}", fn)
            return

    def close(self) -> None:
        """Close retrievers and pipelines that have a ``close``/``aclose`` and the event loop;
        drop the data. One that raises, or whose ``aclose`` takes longer than
        :data:`CLOSE_TIMEOUT`, is a :class:`CloseWarning` naming it (teardown must not mask
        results, nor hang the run after them)."""
        # Cases asked ahead and never reported (a run stopped early) are not waited for.
        for asker in self._askers.values():
            if asker is not None:
                asker.close()
        self._askers.clear()
        # Built at collection but never indexed (their cases were deselected) count too.
        closed: set[int] = set()
        for name, r in [*self._retrievers.items(), *self._built.items(),
                        *self._systems.items()]:
            if id(r) not in closed:
                closed.add(id(r))
                self._close_component(name, r)
        self._retrievers.clear()
        self._built.clear()
        self._systems.clear()
        if self._pipeline is not None:
            with contextlib.suppress(Exception):
                self._pipeline.close()
            self._pipeline = None
        if self._loop_thread is not None:
            # closed with it; one a callback still blocks is left behind in its thread
            self._loop_thread.stop(cancel=True)
            self._loop_thread, self._loop = None, None
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        # The context refers back to this runtime (a cycle only the garbage collector frees),
        # so the large parts are let go of here, not whenever that collection happens.
        self._dataset = None
        self._queries, self._documents, self._doc_ids = {}, {}, frozenset()
        self._batched.clear()
        self._retrieved.clear()
        self._failed_retrievals.clear()
        self._answered.clear()
        self._judging.clear()


def _loop_running_here() -> bool:
    """Whether an event loop runs in this thread (the caller is a coroutine's code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _spec_key(spec: ComponentSpec) -> str:
    """The key path of a retriever in its suite file (specs made by hand have none)."""
    return spec.key or f"retrievers.{spec.name}"
