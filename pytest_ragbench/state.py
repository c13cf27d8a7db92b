"""Per-process state of pytest-ragbench: suites, runtimes, the component registry.

One :class:`RagbenchState` lives in ``config.stash[STATE_KEY]`` of every pytest process
(controller and workers). This module defines no hooks; the plugin, collection, fixtures and the
controller session all import it, and it imports none of them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import inspect
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .errors import ComponentError, RagbenchError
from .registry import BuildContext, Registry, split_spec
from .worker_exits import WorkerExits

if TYPE_CHECKING:
    from .budget import Coordinator, RunBudget
    from .datasets import Document
    from .execution.ahead import AheadMarker
    from .execution.runtime import SuiteRuntime
    from .hosts import HostPaths
    from .suite.model import ComponentSpec, Suite

# The suite parser (with YAML), datasets, metrics and runtimes are imported when a suite is
# loaded: every pytest run in an environment with the plugin installed imports this module.

STATE_KEY = pytest.StashKey["RagbenchState"]()
REPORT_ATTR = "ragbench_record"
#: The setup report's attribute naming the case a hand-written test runs (fixtures.py): a
#: worker that crashes in the test sends no record, and the controller records the crash.
IDENTITY_ATTR = "ragbench_case_identity"
# On the first case report of each process: {suite id: cases the suite holds as collected}.
COLLECTED_ATTR = "ragbench_collected"
# With it: {suite id: {query id: type, difficulty, tags}}, the queries that have any.
QUERY_META_ATTR = "ragbench_query_meta"
# With it: {suite id: JSON text of {query id: query text}}, one string per suite: the
# controller parses it only for a case that died without its record (a 100,000-query
# suite's texts as a dict took each worker and the controller half a second to serialise).
QUERY_TEXTS_ATTR = "ragbench_query_texts"
# With it, from an xdist worker: {suite id: {"spec": SuiteSpec, "runs": N, "suite_hash": H}},
# the suites as the worker validated them, for a controller that could not (a conftest.py of
# the suite's folder, which only the workers load, registers a metric it names).
SPECS_ATTR = "ragbench_specs"
RUN_START_INPUT = "ragbench_run_start"
#: ``workerinput`` key: the controller runs under ``--dist each`` (a worker's own
#: ``config.option.dist`` is reset by xdist).
DIST_EACH_INPUT = "ragbench_dist_each"
#: The ``workerinput`` key of the suites a controller hands its workers (suite/handoff.py):
#: {"registry": the controller's registry fingerprint, "suites": {resolved path: pickle}}.
SUITES_INPUT = "ragbench_suites"
#: ``workerinput`` key: the suite ids whose LLM work the controller gives a head start; the
#: workers' LLM clients for them ask the run's request exchange first (budget/exchange.py).
WORKERINPUT_EXCHANGE = "ragbench_exchange"
#: Key of ``workeroutput`` under which an xdist worker sends the texts of the documents its
#: records show, per suite id, so that the controller need not read the corpora again.
SHOWN_TEXTS_OUTPUT = "ragbench_shown_texts"


class _MakeComponentHook:
    """Lets the registry ask ``pytest_ragbench_make_component`` implementations first."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def active(self) -> bool:
        return bool(self.config.hook.pytest_ragbench_make_component.get_hookimpls())

    def make(self, kind: str, name: str, params: Mapping[str, Any],
             context: BuildContext) -> Any:
        return self.config.hook.pytest_ragbench_make_component(
            kind=kind, name=name, params=params, context=context)


def plugin_origin(config: pytest.Config, plugin: object, plugin_name: str,
                  function: Any = None) -> str:
    """How ``--ragbench-list`` and conflict messages name where a registration came from."""
    module = inspect.getmodule(function) if function is not None else None
    file = getattr(plugin, "__file__", None) or getattr(module, "__file__", None)
    if file and Path(file).name == "conftest.py":
        path = Path(file).resolve()
        try:
            shown = path.relative_to(config.rootpath.resolve()).as_posix()
        except ValueError:
            shown = str(path)
        return f"conftest {shown}"
    pm = config.pluginmanager
    pairs: list[tuple[object, Any]] = (
        list(pm.list_plugin_distributions()) if hasattr(pm, "list_plugin_distributions")
        else [(p, getattr(d, "_dist", d)) for p, d in pm.list_plugin_distinfo()]
    )
    for candidate, dist in pairs:
        if candidate is plugin:
            return f"plugin {plugin_name} (distribution {dist.metadata['Name']} {dist.version})"
    return f"plugin {plugin_name}"


def collect_then_freeze() -> None:
    """At interpreter exit: one full collection, then the survivors are exempt from the
    shutdown's own collections (they are freed as their modules are cleared)."""
    gc.collect()
    gc.freeze()


def suites_alone(config: pytest.Config) -> bool:
    """Whether the explicit suites are all the run collects: ``--ragbench`` suites with no
    test path on the command line. The ``ragbench_suites`` ini's are collected beside
    ``testpaths`` (or the current folder) then, and beside the paths given."""
    return (config.args_source != pytest.Config.ArgsSource.ARGS
            and bool(config.getoption("ragbench", None)))


class RagbenchState:
    """Everything the plugin keeps for one pytest process: suites, runtimes, the registry."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.hook = _MakeComponentHook(config)
        self.registry = Registry(hook=self.hook)
        self.explicit: list[Path] = []
        workerinput = getattr(config, "workerinput", None) or {}
        # Workers take the controller's start time, so time-dependent metrics (temporal nDCG)
        # agree across processes.
        self.run_start = float(workerinput.get(RUN_START_INPUT, time.time()))
        self._suites: dict[Path, Suite] = {}
        # xdist worker: the suites its controller validated (see suite/handoff.py)
        self._handed: dict[str, Any] = dict(workerinput.get(SUITES_INPUT) or {})
        self._runtimes: dict[str, SuiteRuntime] = {}
        self._ahead: AheadMarker | None = None
        self._ahead_made = False
        self._markers: set[str] = set()
        self._registered: set[tuple[str, str]] = set()
        # a registration the registry refused: said again to every later caller, whose
        # registry lacks what that hook would have added after it
        self._registration_error: ComponentError | None = None
        self._components: dict[tuple[str, str], Any] = {}
        self._froze_heap = False
        # a heap someone else froze (see freeze_heap) stays theirs for the whole run
        self._heap_frozen_elsewhere = False
        #: Suites collected in this process by node id (checked and built, see collect.py).
        self.collected_suites: dict[str, Suite] = {}
        #: Cases each suite holds as collected, before any deselection (suite id -> count):
        #: a suite file's (collect.py), or a hand-written test's that records them
        #: (fixtures.py); sent to the controller once, with a case report.
        self.collected: dict[str, int] = {}
        self.collected_sent = False
        #: Per suite id, the type, difficulty and tags of its queries that have any (collect.py):
        #: sent with the counts, for the record the controller makes of a case whose worker
        #: crashed (it holds no dataset), which scoped gates select on.
        self.query_meta: dict[str, dict[str, dict[str, Any]]] = {}
        #: Per suite id, its queries' texts as JSON ``{query id: text}`` (collect.py), sent
        #: with them: the controller's record of a crashed case shows its query as any does.
        self.query_texts: dict[str, str] = {}
        #: xdist controller: its workers, which exit as each finishes (worker_exits.py).
        self.worker_exits = WorkerExits()
        # In an xdist worker of a run that writes reports: per suite id, the documents this
        # worker's records show.
        self._shown: dict[str, dict[str, None]] | None = (
            {} if hasattr(config, "workerinput")
            and not config.getoption("ragbench_no_output", False) else None)
        # The run's budget: a coordinator in an xdist controller, the budget of this process
        # (its client, or a LocalBudget at -n 0) where cases run. Made on first use.
        self._coordinator: Coordinator | None = None
        self._run_budget: RunBudget | None = None
        #: xdist worker: the controller's rootdir as found on this host (see hosts.py), and
        #: the node ids the explicit suites keep there.
        self.host: HostPaths | None = None
        self.suite_node_ids: dict[Path, str] = {}
        #: xdist worker: why the controller's suites are not on this host (hosts.py).
        self.host_error: str | None = None
        #: xdist controller: the suites whose LLM work it gives a head start (headstart.py).
        self.head_start: list[str] = []
        self._dataset_digests: list[dict[str, str]] | None = None

    def invocation_dir(self) -> Path:
        """The folder options relative to the working directory resolve against: the
        controller's, as found on this host."""
        return self.host.cwd if self.host is not None else self.config.invocation_params.dir

    def cache_dir(self) -> Path | None:
        """The folder of the on-disk index cache (None without pytest's cache provider, or
        where its folder cannot be made: pytest only warns when it cannot write its cache, and
        the indexes are then built in memory)."""
        cache = getattr(self.config, "cache", None)
        if cache is None:
            return None
        try:
            return Path(cache.mkdir("ragbench"))
        except OSError:
            return None

    def ensure_registered(self) -> None:
        """Call each ``pytest_ragbench_register`` implementation not called yet, once.

        Implementations are called one by one (not through the hook caller) so that every
        name they add is attributed to the conftest or plugin that added it.
        """
        if self._registration_error is not None:
            # not "unknown retriever 'mine'" for the next suite file: the cause, again
            raise ComponentError(str(self._registration_error))
        hook = self.config.hook.pytest_ragbench_register
        for impl in hook.get_hookimpls():
            key = (impl.plugin_name, getattr(impl.function, "__qualname__", repr(impl.function)))
            if key in self._registered:
                continue
            self._registered.add(key)
            origin = plugin_origin(self.config, impl.plugin, impl.plugin_name, impl.function)
            args = {"registry": self.registry}
            try:
                with self.registry.origin(origin):
                    impl.function(*[args[a] for a in impl.argnames if a in args])
            except ComponentError as exc:
                # a registration the registry refused: one message naming where it was made,
                # not a traceback through the plugin
                self._registration_error = ComponentError(
                    f"{origin}: pytest_ragbench_register: {exc}")
                raise ComponentError(str(self._registration_error)) from None

    def set_clock(self, clock: float) -> None:
        """Score time-dependent metrics against ``clock`` (epoch seconds) instead of this run's
        start: a resumed run takes the clock of the run it resumes. Before any case runs."""
        from dataclasses import replace

        self.run_start = clock
        for runtime in self._runtimes.values():
            runtime.ctx = replace(runtime.ctx, run_start=clock)

    def build_context(self, base_dir: Path) -> BuildContext:
        cache_path = self.config.getoption("ragbench_cache_path", None)
        return BuildContext(
            cache_dir=self.cache_dir(), base_dir=base_dir, registry=self.registry,
            run_start=self.run_start,
            llm_cache_path=(self.invocation_dir() / cache_path) if cache_path
            else None,
            llm_cache_mode=self.config.getoption("ragbench_cache", None),
        )

    def load_suite(self, path: Path) -> Suite:
        """The validated suite at ``path``: schema, metrics and every component's parameters."""
        path = path.resolve()
        if path not in self._suites:
            self.ensure_registered()
            if self._handed:
                from .suite.handoff import take

                handed = take(self._handed, self.registry, path)
                if handed is not None:
                    self._suites[path] = handed
                    return handed
            # Names only a make-component hook knows cannot be checked before building.
            checked = not self.hook.active()
            suite = self._parse_suite(path, checked=checked, components=True)
            self._suites[path] = suite
        return self._suites[path]

    def _parse_suite(self, path: Path, *, checked: bool, components: bool = False) -> Suite:
        """The suite file at ``path`` parsed, its metrics resolved, with ``checked`` its
        systems' type names checked against the registry, and with ``components`` their
        parameters."""
        ctx = self.build_context(path.parent)
        known = self.registry.names("retriever") if checked else None
        known_pipelines = self.registry.names("pipeline") if checked else None

        def resolve(name: str, params: Mapping[str, Any]) -> Any:
            from .metrics.spec import resolve_metric

            return resolve_metric(name, params, registry=self.registry, context=ctx)

        def check(kind: str, spec: ComponentSpec, retrievers: Sequence[ComponentSpec]) -> None:
            siblings = {r.name: (r.type, dict(r.params)) for r in retrievers}
            self.registry.check(kind, spec.type, spec.params,
                                replace(ctx, siblings=siblings, name=spec.name))

        from .suite.loader import load_suite

        return load_suite(path, known, resolve, known_pipelines,
                          check if components else None)

    def suite_for_spec(self, path: Path) -> Suite:
        """The suite at ``path`` for what the controller aggregates and matches baselines by
        (its name, metrics and their directions, systems, gates and settings).

        The validated suite when this process can validate it; else, for an xdist
        controller that has not loaded the ``conftest.py`` of the suite's folder (only the
        workers collect there), the file with the systems' types left unchecked: those are
        the workers' to check, and a spec without them dropped the suite's gates. Not kept:
        nothing here builds a component from it. RagbenchError when even that fails.
        """
        try:
            return self.load_suite(path)
        except RagbenchError:
            if not hasattr(self.config, "workerinput") and not self.hook.active():
                return self._parse_suite(path.resolve(), checked=False)
            raise

    def explicit_dataset_digests(self) -> list[dict[str, str]]:
        """xdist controller: the digests of each explicit suite's dataset as read here (see
        :meth:`Dataset.digests <pytest_ragbench.datasets.Dataset.digests>`), which a worker
        on another host or in another folder compares with its own copy's (hosts.py).

        Read once per run, and only when a ``--tx`` gateway moves its workers (``chdir=``,
        another host): workers in this folder read the very files read here. ``{}`` for a
        suite that does not load here (its workers report why).
        """
        if self._dataset_digests is None:
            from .hosts import moves_workers

            self._dataset_digests = []
            if moves_workers([str(tx) for tx in self.config.getoption("tx", None) or []]):
                from .datasets import load_dataset
                from .suite.loader import load_dataset_spec

                for path in self.explicit:
                    try:
                        # the dataset alone: the suite's components may come from a conftest
                        # only its workers load
                        digests = load_dataset(load_dataset_spec(path)).digests()
                    except Exception:
                        digests = {}
                    self._dataset_digests.append(digests)
        return self._dataset_digests

    def _ahead_marker(self) -> AheadMarker | None:
        """An xdist worker's marker of what its look-ahead is in (see crash_blame.py)."""
        if not self._ahead_made:
            from .crash_blame import worker_marker

            self._ahead, self._ahead_made = worker_marker(self.config), True
        return self._ahead

    def known_runtime(self, suite_id: str) -> SuiteRuntime | None:
        """The runtime of a suite this process collected (None: not one)."""
        return self._runtimes.get(suite_id)

    def runtime(self, suite_id: str, path: Path) -> SuiteRuntime:
        """The process-wide runtime of a suite, created on first use."""
        if suite_id not in self._runtimes:
            suite = self.load_suite(path)
            if self.config.getoption("ragbench_save_run", None):  # its files hold the top k
                suite = replace(suite, record_depth=max(suite.record_depth, suite.k))
            ctx = self.build_context(suite.path.parent)
            from .execution.runtime import SuiteRuntime

            runtime = SuiteRuntime(suite, suite_id, self.registry, ctx)
            runtime.run_budget = self.run_budget
            runtime.ahead = self._ahead_marker()
            if suite_id in ((getattr(self.config, "workerinput", None) or {}).get(
                    WORKERINPUT_EXCHANGE) or ()):
                # the controller gives the LLM work a head start: ask its exchange first
                runtime.exchange_role = "follow"
            self._runtimes[suite_id] = runtime
        return self._runtimes[suite_id]

    # -- the run budget -------------------------------------------------------------------

    def coordinator_workerinput(self) -> dict[str, str]:
        """xdist controller: what a starting worker needs to join the run's budget.

        The coordinator starts with the first worker, so runs without workers open no port.
        """
        if self._coordinator is None:
            from .budget import Coordinator
            from .hosts import budget_bind

            # ssh workers (``--tx ssh=...``) need a reachable address, bound with the token
            host, port = budget_bind(self.config.getoption("ragbench_budget_address", None),
                                     [str(tx) for tx in self.config.getoption("tx", None) or []],
                                     [str(px) for px in self.config.getoption("px", None) or []])
            try:
                self._coordinator = Coordinator(host=host, port=port).start()
            except OSError as exc:
                raise pytest.UsageError(f"ragbench: cannot listen for the run budget on "
                                        f"{host}:{port}: {exc}") from None
        return self._coordinator.workerinput()

    def controller_budget(self, name: str) -> RunBudget:
        """xdist controller: a client of the run's coordinator for work done in this process
        itself (its LLM head start); close it when done."""
        self.coordinator_workerinput()
        assert self._coordinator is not None
        return self._coordinator.local_budget(name)

    def run_budget(self) -> RunBudget:
        """The run budget as this process sees it: the coordinator's client in an xdist
        worker, a :class:`~pytest_ragbench.budget.LocalBudget` otherwise."""
        if self._run_budget is None:
            from .budget.wiring import process_budget

            workerinput = getattr(self.config, "workerinput", None)
            name = str(workerinput.get("workerid", "")) if workerinput else ""
            self._run_budget = process_budget(workerinput, name=name)
        return self._run_budget

    def budget_totals(self) -> dict[str, Any] | None:
        """The run's budget totals (controller; None when no budget was used)."""
        if self._coordinator is not None:
            totals = self._coordinator.totals()
        elif self._run_budget is not None:
            totals = self._run_budget.totals()
        else:
            return None
        return totals if totals.get("pools") or totals.get("costs") else None

    def close_budget(self) -> None:
        """Close this process's budget client and stop the coordinator (after the runtimes)."""
        budget, self._run_budget = self._run_budget, None
        if budget is not None:
            budget.close()
        coordinator, self._coordinator = self._coordinator, None
        if coordinator is not None:
            coordinator.stop()

    def component(self, kind: str, spec: Any) -> Any:
        """A component for fixtures, built once per process per spec; closed by :meth:`close`."""
        type_name, params = split_spec(kind, spec)
        key = (kind, json.dumps([type_name, params], sort_keys=True, default=repr))
        if key not in self._components:
            from .answers.config import split_call_keys

            self.ensure_registered()
            ctx = self.build_context(self.host.root if self.host is not None
                                     else self.config.rootpath)
            # a registered provider is called as in a suite: under its call guard
            params, limits = split_call_keys(kind, type_name, params)
            self.registry.check(kind, type_name, params, ctx)
            built = self.registry.build(kind, type_name, params, ctx)
            if limits is not None:
                from .llm.guard import CallGuard, GuardedEmbedder, GuardedLLM

                wrapper = GuardedLLM if kind == "llm" else GuardedEmbedder
                built = wrapper(built, CallGuard(f"{kind} {type_name!r}", limits))
            self._components[key] = built
        return self._components[key]

    def register_marker(self, name: str) -> None:
        if name not in self._markers:
            self._markers.add(name)
            self.config.addinivalue_line("markers", f"{name}: ragbench query attribute")

    def corpus(self, suite_id: str) -> Mapping[str, Document] | None:
        """A suite's corpus by document id, for report snippets; None when unreadable.

        From the suite's runtime when this process ran its cases (before
        :meth:`close_runtimes`), else read from the dataset (an xdist controller runs none).
        """
        rt = self._runtimes.get(suite_id)
        try:
            if rt is not None:
                return rt.documents
            from .datasets import load_dataset

            suite = self.load_suite(self.config.rootpath / suite_id)
            return {d.id: d for d in load_dataset(suite.dataset).corpus}
        except (RagbenchError, OSError, ValueError):
            return None

    def attach_collected(self, report: Any) -> None:
        """Send the collection counts to the controller once per process, on a case's
        report (a plain attribute survives xdist's report serialisation)."""
        if not self.collected_sent and self.collected:
            self.collected_sent = True
            for key, value in self._process_data().items():
                setattr(report, key, value)

    def send_unsent_collected(self) -> None:
        """In an xdist worker that reported no case, put the collection counts and query
        metadata :meth:`attach_collected` would have sent into ``workeroutput``: a worker
        that died in its first case sent none, nor does its replacement when nothing is left
        for it to run, and the controller then took a run of one case of five for whole."""
        output = getattr(self.config, "workeroutput", None)
        if output is None or self.collected_sent or not self.collected:
            return
        self.collected_sent = True
        output.update(self._process_data())

    def _process_data(self) -> dict[str, Any]:
        """What this process sends the controller once: the collection counts, the queries'
        metadata and texts and, from an xdist worker, the suites' specs."""
        data: dict[str, Any] = {COLLECTED_ATTR: dict(self.collected)}
        if any(self.query_meta.values()):
            data[QUERY_META_ATTR] = self.query_meta
        if self.query_texts:
            data[QUERY_TEXTS_ATTR] = self.query_texts
        specs = self._worker_specs()
        if specs:
            data[SPECS_ATTR] = specs
        return data

    def _worker_specs(self) -> dict[str, dict[str, Any]]:
        """In an xdist worker, the spec of each suite it collected (see SPECS_ATTR)."""
        if not hasattr(self.config, "workerinput"):
            return {}
        from .results.spec import suite_spec

        return {sid: {"spec": suite_spec(suite), "runs": int(suite.runs),
                      "suite_hash": suite.suite_hash}
                for sid, suite in self.collected_suites.items()}

    def note_shown(self, rec: Mapping[str, Any]) -> None:
        """In an xdist worker, remember the documents a record of this worker shows."""
        if self._shown is not None:
            from .report.documents import add_shown_ids

            add_shown_ids(self._shown, rec)

    def send_shown_texts(self) -> None:
        """In an xdist worker, put the texts of the documents its records show into
        ``workeroutput`` (while the suites' runtimes still hold their corpora)."""
        output = getattr(self.config, "workeroutput", None)
        if self._shown is None or output is None or not self._shown:
            return
        from .report.documents import texts_of

        shown: dict[str, dict[str, str | None]] = {}
        for suite_id, ids in self._shown.items():
            rt = self._runtimes.get(suite_id)
            if rt is not None:
                shown[suite_id] = texts_of(ids, rt.documents)
        output[SHOWN_TEXTS_OUTPUT] = shown

    def freeze_heap(self) -> None:
        """Exempt every object alive now from the cyclic garbage collector until :meth:`thaw_heap`.

        After collection the heap holds the interpreter's modules, the items and the suites'
        datasets, and it lives for the whole run. Each full collection walks all of it: pytest
        alone forces two at its end, and the automatic ones triggered by the index build and
        the records cost as much again (about 0.1 s on NFCorpus, 15% of the run). Frozen objects
        are still freed by reference counting; only cycles among them wait for the thaw.

        A heap something else froze already (the user's conftest, a host running pytest in
        process) is left as it is: the thaw could not tell its objects from ours.
        """
        if self._froze_heap or self._heap_frozen_elsewhere:
            return
        # get_freeze_count walks every frozen object (10-20 ms on a large heap): asked once
        if gc.get_freeze_count():
            self._heap_frozen_elsewhere = True
            return
        gc.freeze()
        self._froze_heap = True

    def thaw_heap(self) -> None:
        """Hand the frozen objects back to the collector (a no-op when nothing was frozen).

        An xdist worker freezes the rest instead: its process ends with the session, and the
        interpreter's shutdown collects a thawed heap several times over (about 0.3 s on a
        worker of a small suite), while the controller waits for every worker to exit.
        """
        if not self._froze_heap:
            return
        if hasattr(self.config, "workerinput"):
            gc.freeze()
            return
        gc.unfreeze()
        self._froze_heap = False
        # The run ends here and the process mostly with it: its shutdown would walk the heap
        # several times (0.15-0.2 s). Once is enough: at exit, collect what is garbage then
        # (its finalizers run, as in any shutdown) and freeze the rest. A process that goes
        # on (pytester, an IDE) keeps its heap until it exits; registered once per process.
        atexit.unregister(collect_then_freeze)
        atexit.register(collect_then_freeze)

    def close_runtimes(self) -> None:
        """Close and drop every suite runtime (retrievers, indexes, datasets)."""
        for rt in self._runtimes.values():
            rt.close()
        self._runtimes.clear()

    def close(self) -> None:
        self.close_runtimes()
        self.close_budget()
        if self._components:
            loop = asyncio.new_event_loop()
            try:
                for comp in self._components.values():
                    for meth in ("aclose", "close"):
                        fn = getattr(comp, meth, None)
                        if callable(fn):
                            # Teardown must not mask results.
                            with contextlib.suppress(Exception):
                                result = fn()
                                if inspect.isawaitable(result):
                                    loop.run_until_complete(result)
                            break
            finally:
                loop.close()
            self._components.clear()


