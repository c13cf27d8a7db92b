"""pytest entry point (pytest11) of pytest-ragbench: options, collection and per-process state.

The controller-side aggregation lives in :mod:`pytest_ragbench.session` and is registered only
where ``not hasattr(config, "workerinput")``; workers only collect and run cases. The hooks this
plugin adds are in :mod:`pytest_ragbench.hookspecs`, the fixtures in
:mod:`pytest_ragbench.fixtures`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import hookspecs, options
from .collect import RECORD_KEY, CaseItem, SuiteFile
from .errors import ComponentError, RagbenchError, SuiteError
from .registry import BuildContext, Registry, split_spec
from .suite_files import is_suite_file

if TYPE_CHECKING:
    from .datasets import Document
    from .runtime import SuiteRuntime
    from .suite import Suite

# The suite parser (with YAML), datasets, metrics and runtimes are imported when a suite is
# loaded: every pytest run in an environment with the plugin installed imports this module.

STATE_KEY = pytest.StashKey["RagbenchState"]()
REPORT_ATTR = "ragbench_record"
# On the first case report of each process: {suite id: cases the suite holds as collected}.
COLLECTED_ATTR = "ragbench_collected"
RUN_START_INPUT = "ragbench_run_start"


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
        self._runtimes: dict[str, SuiteRuntime] = {}
        self._markers: set[str] = set()
        self._registered: set[tuple[str, str]] = set()
        self._components: dict[tuple[str, str], Any] = {}
        self._froze_heap = False
        #: Suites collected in this process by node id (checked and built, see collect.py).
        self.collected_suites: dict[str, Suite] = {}
        self.collected: dict[str, int] = {}
        self.collected_sent = False

    def cache_dir(self) -> Path | None:
        cache = getattr(self.config, "cache", None)
        if cache is None:
            return None
        return Path(cache.mkdir("ragbench"))

    def ensure_registered(self) -> None:
        """Call each ``pytest_ragbench_register`` implementation not called yet, once.

        Implementations are called one by one (not through the hook caller) so that every
        name they add is attributed to the conftest or plugin that added it.
        """
        hook = self.config.hook.pytest_ragbench_register
        for impl in hook.get_hookimpls():
            key = (impl.plugin_name, getattr(impl.function, "__qualname__", repr(impl.function)))
            if key in self._registered:
                continue
            self._registered.add(key)
            origin = plugin_origin(self.config, impl.plugin, impl.plugin_name, impl.function)
            args = {"registry": self.registry}
            with self.registry.origin(origin):
                impl.function(*[args[a] for a in impl.argnames if a in args])

    def build_context(self, base_dir: Path) -> BuildContext:
        cache_path = self.config.getoption("ragbench_cache_path", None)
        return BuildContext(
            cache_dir=self.cache_dir(), base_dir=base_dir, registry=self.registry,
            run_start=self.run_start,
            llm_cache_path=(self.config.invocation_params.dir / cache_path) if cache_path
            else None,
            llm_cache_mode=self.config.getoption("ragbench_cache", None),
        )

    def load_suite(self, path: Path) -> Suite:
        """The validated suite at ``path``: schema, metrics and every component's parameters."""
        path = path.resolve()
        if path not in self._suites:
            self.ensure_registered()
            ctx = self.build_context(path.parent)
            # Names only a make-component hook knows cannot be checked before building.
            known = None if self.hook.active() else self.registry.names("retriever")

            def resolve(name: str, params: Mapping[str, Any]) -> Any:
                from .metrics.spec import resolve_metric

                return resolve_metric(name, params, registry=self.registry, context=ctx)

            from .suite import load_suite

            suite = load_suite(path, known, resolve)
            self._check_components(suite, ctx)
            self._suites[path] = suite
        return self._suites[path]

    def _check_components(self, suite: Suite, ctx: BuildContext) -> None:
        siblings = {r.name: (r.type, dict(r.params)) for r in suite.retrievers}
        for spec in suite.retrievers:
            try:
                self.registry.check("retriever", spec.type, spec.params,
                                    replace(ctx, siblings=siblings, name=spec.name))
            except ComponentError as exc:
                raise SuiteError(str(exc), file=suite.path, key=spec.key or None,
                                 line=spec.line) from None

    def runtime(self, suite_id: str, path: Path) -> SuiteRuntime:
        """The process-wide runtime of a suite, created on first use."""
        if suite_id not in self._runtimes:
            suite = self.load_suite(path)
            ctx = self.build_context(suite.path.parent)
            from .runtime import SuiteRuntime

            self._runtimes[suite_id] = SuiteRuntime(suite, suite_id, self.registry, ctx)
        return self._runtimes[suite_id]

    def component(self, kind: str, spec: Any) -> Any:
        """A component for fixtures, built once per process per spec; closed by :meth:`close`."""
        type_name, params = split_spec(kind, spec)
        key = (kind, json.dumps([type_name, params], sort_keys=True, default=repr))
        if key not in self._components:
            self.ensure_registered()
            ctx = self.build_context(self.config.rootpath)
            self.registry.check(kind, type_name, params, ctx)
            self._components[key] = self.registry.build(kind, type_name, params, ctx)
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

    def freeze_heap(self) -> None:
        """Exempt every object alive now from the cyclic garbage collector until :meth:`thaw_heap`.

        After collection the heap holds the interpreter's modules, the items and the suites'
        datasets, and it lives for the whole run. Each full collection walks all of it: pytest
        alone forces two at its end, and the automatic ones triggered by the index build and
        the records cost as much again (about 0.1 s on NFCorpus, 15% of the run). Frozen objects
        are still freed by reference counting; only cycles among them wait for the thaw.
        """
        if not self._froze_heap:
            gc.freeze()
            self._froze_heap = True

    def thaw_heap(self) -> None:
        """Hand the frozen objects back to the collector (a no-op when nothing was frozen)."""
        if self._froze_heap:
            gc.unfreeze()
            self._froze_heap = False

    def close_runtimes(self) -> None:
        """Close and drop every suite runtime (retrievers, indexes, datasets)."""
        for rt in self._runtimes.values():
            rt.close()
        self._runtimes.clear()

    def close(self) -> None:
        self.close_runtimes()
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


class _CaseResultRelay:
    """Controller only: hands every arriving record to ``pytest_ragbench_case_result``."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rec = getattr(report, REPORT_ATTR, None)
        if isinstance(rec, dict):
            self.config.hook.pytest_ragbench_case_result(record=rec, config=self.config)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.addoption(parser)
    group = parser.getgroup("ragbench")
    group.addoption(
        "--ragbench-list", action="store_true", default=False,
        help="show every available ragbench component (retrievers, LLMs, embedders, metrics) "
             "with its origin and parameters, then exit",
    )
    parser.addini("ragbench_llm", type="string", default="",
                  help="LLM for the ragbench_llm fixture: a type name or a JSON mapping")
    parser.addini("ragbench_embedder", type="string", default="",
                  help="embedder for the ragbench_embedder fixture: a type name or a JSON "
                       "mapping")
    parser.addini("ragbench_gc_freeze", type="bool", default=True,
                  help="exempt the heap built by collection from Python's cyclic garbage "
                       "collector until the run ends, when ragbench cases were collected "
                       "(faster; set false if your tests rely on collecting cycles created "
                       "before the first test)")


def _suite_args(config: pytest.Config) -> list[Path]:
    paths: list[Path] = []
    invocation = config.invocation_params.dir
    for raw in config.getoption("ragbench") or []:
        paths.append((invocation / raw).resolve())
    for raw in config.getini("ragbench_suites") or []:
        paths.append((config.rootpath / raw).resolve())
    for p in paths:
        if not p.is_file():
            raise pytest.UsageError(f"ragbench: suite file not found: {p}")
    return list(dict.fromkeys(paths))


@pytest.hookimpl(tryfirst=True, specname="pytest_configure")
def pytest_configure_quiet_asyncio(config: pytest.Config) -> None:
    # Before pytest-asyncio's own pytest_configure, which warns (see asyncio_setup).
    from .asyncio_setup import quiet_unset_fixture_loop_scope

    quiet_unset_fixture_loop_scope(config)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ragbench: a case collected from a ragbench suite")
    config.addinivalue_line(
        "markers", "ragbench_suite(path, retriever=None): parametrize the test over the cases "
                   "of a ragbench suite (fixtures ragbench_case, ragbench_record)")
    config.addinivalue_line(
        "markers", "ragbench_components(llm=SPEC, embedder=SPEC): the components the "
                   "ragbench_llm and ragbench_embedder fixtures build")
    state = RagbenchState(config)
    config.stash[STATE_KEY] = state
    # Cleanups run last-in first-out and this hook runs before pytest's own plugins' (they
    # registered earlier), so the thaw comes after pytest's closing garbage collections: those
    # stay cheap, and a process that runs pytest again (pytester, an IDE) gets its heap back.
    config.add_cleanup(state.thaw_heap)
    from . import fixtures

    config.pluginmanager.register(fixtures, "ragbench-fixtures")
    state.explicit = _suite_args(config)
    if state.explicit:
        _add_suites_to_args(config, state.explicit)
    if not hasattr(config, "workerinput"):
        from .session import RagbenchSession

        config.pluginmanager.register(RagbenchSession(config), "ragbench-session")
        config.pluginmanager.register(_CaseResultRelay(config), "ragbench-case-result")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if not config.option.ragbench_list:
        return None
    from .listing import render_listing

    # As pytest's own --markers: configure (conftests and plugins registered), print, exit.
    config._do_configure()
    try:
        state = config.stash[STATE_KEY]
        tw = config.get_terminal_writer()
        try:
            state.ensure_registered()
        except RagbenchError as exc:
            tw.line(f"ragbench: {exc}", red=True)
            return 1
        for text, markup in render_listing(state.registry):
            tw.line(text, **markup)
    finally:
        config._ensure_unconfigure()
    return 0


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: send the run's start time to each worker."""
    state = node.config.stash.get(STATE_KEY, None)
    if state is not None:
        node.workerinput[RUN_START_INPUT] = state.run_start


def _add_suites_to_args(config: pytest.Config, suites: list[Path]) -> None:
    """Make the suites collection arguments; alone when no test paths were given explicitly."""
    explicit_args = config.args_source == pytest.Config.ArgsSource.ARGS
    current = list(config.args) if explicit_args else []
    have = set()
    for a in current:
        try:
            have.add((config.invocation_params.dir / a.split("::")[0]).resolve())
        except OSError:
            continue
    current += [str(p) for p in suites if p not in have]
    config.args[:] = current


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> SuiteFile | None:
    state = parent.config.stash[STATE_KEY]
    if is_suite_file(file_path) or file_path.resolve() in state.explicit:
        return SuiteFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    # Last, so the items are those that will run: the checks come before the first of them
    # and before any answer is prefetched.
    _check_cli_gates(session, items)


def _check_cli_gates(session: pytest.Session, items: list[pytest.Item]) -> None:
    """``--ragbench-gate`` on a metric no collected suite computes: one collection error.

    Nothing runs then, so a typo costs no request. Each xdist worker finds the same problem
    and reports the same text, which the controller shows once; its items are dropped so the
    workers have nothing to run (without xdist the collection error stops the run anyway).
    """
    gates = session.config.getoption("ragbench_gate", None) or []
    state = session.config.stash.get(STATE_KEY, None)
    if not gates or state is None or not state.collected_suites:
        return
    from .prechecks import cli_gate_problems

    # By file: two suite files may share a name but not their metrics.
    suites = {f"{s.name} [{nodeid}]": [m.name for m in s.metrics]
              for nodeid, s in state.collected_suites.items()}
    problems = cli_gate_problems(gates, suites)
    if problems:
        _collection_error(session, "\n".join(f"ragbench: {p}" for p in problems))
        items.clear()


def _collection_error(session: pytest.Session, message: str) -> None:
    """Report ``message`` as a collection error of the whole session (not of one file)."""
    report = pytest.CollectReport(nodeid="", outcome="failed", longrepr=message, result=[])
    session.config.hook.pytest_collectreport(report=report)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.getini("ragbench_gc_freeze") and any(
            isinstance(item, CaseItem) for item in session.items):
        session.config.stash[STATE_KEY].freeze_heap()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Count the cases each suite holds, as collected and before ``-k``, ``-m``,
    ``--deselect`` or ``--lf`` deselect any: the M of "N of M cases"."""
    items = [x for x in (report.result or []) if isinstance(x, CaseItem)]
    if not items:
        return
    state = items[0].config.stash[STATE_KEY]
    for item in items:
        sid = item.nodeid.split("::")[0]
        state.collected[sid] = state.collected.get(sid, 0) + 1


def _attach_collected(item: pytest.Item, report: pytest.TestReport) -> None:
    """Send the collection counts to the controller once per process, with a case report."""
    state = item.config.stash[STATE_KEY]
    if not state.collected_sent and state.collected:
        state.collected_sent = True
        setattr(report, COLLECTED_ATTR, dict(state.collected))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "setup" and isinstance(item, CaseItem):
        rec = item.stash.get(RECORD_KEY, None)
        if rec is not None:
            # A plain attribute survives xdist's report serialisation (it copies __dict__).
            setattr(report, REPORT_ATTR, rec)
        _attach_collected(item, report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Any:
    try:
        return (yield)
    finally:
        # Every item and session fixture is done and the records are aggregated (the
        # controller aggregates first among the session-finish hooks, so that its gates reach
        # junitxml). Dropping the indexes and datasets now rather than at unconfigure returns
        # their memory before pytest's closing work, and spares its full collections the walk
        # when the heap is not frozen.
        state = session.config.stash.get(STATE_KEY, None)
        if state is not None:
            state.close_runtimes()


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.close()


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(STATE_KEY, None)
    if state is None or not state.explicit:
        return None
    return [f"ragbench suites: {', '.join(str(p) for p in state.explicit)}"]


__all__ = ["REPORT_ATTR", "STATE_KEY", "RagbenchError", "RagbenchState", "Registry"]
