"""xdist controller: the suites' LLM work starts while the workers boot.

See :mod:`pytest_ragbench.execution.headstart` for what the controller does and
:mod:`pytest_ragbench.budget.exchange` for how its responses reach the workers. This module
decides when: only in a plain whole-suite run, where the controller knows exactly which cases
the workers will run, and only for suites whose cases it answers exactly as a worker would.
Anything else keeps the workers doing all of their own LLM work:

- options that select or stop early (``-k``, ``-m``, ``--lf``, ``--deselect``, node ids,
  ``-x`` / ``--maxfail``, ``--sw``, ``--ragbench-resume``, ``--collect-only``), or move
  cases between workers (``--dist worksteal``, ``--dist each``), a
  ``pytest_ragbench_make_component`` hook, a suite outside the rootdir;
- a collection hook (``pytest_collection_modifyitems``, ``pytest_collection``,
  ``pytest_ignore_collect``, ``pytest_itemcollected``) or a hook that runs before a case
  (``pytest_runtest_setup``, ``pytest_runtest_protocol``) of a plugin or conftest other than
  those known to select nothing (:data:`SELECTION_FREE_PLUGINS`): a conftest deselecting or
  skipping cases or a sharding plugin (pytest-split, pytest-shard) changes what the workers
  run, unseen here (a case a conftest skips in its setup was paid for by the head start, and
  with ``max_cost`` the cases that did run were refused);
- per suite: a ``conftest.py`` between the rootdir and the suite's folder (included) that the
  controller has not loaded: its hooks (selection, components) act on the workers only;
- per suite: an LLM other than the built-in ``openai`` one, a judge batching items
  (``items_per_call`` > 1), a time limit on its cases (``case_timeout``, the generation's
  ``timeout``), a retriever that is not built-in and local (``bm25``, ``run``,
  ``dense`` with the ``hashing`` embedder, ``hybrid`` of those), pipelines under test, a
  corpus over :data:`MAX_UNSHARED_DOCUMENTS` documents when indexes cannot be shared through
  pytest's cache directory.

As a last check, the first worker's collection must hold every case the head start
planned; otherwise it stops at once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from .hosts import is_remote_spec
from .registry import BUILTIN_ORIGIN

if TYPE_CHECKING:
    from .execution.headstart import HeadStart, SuitePlan
    from .state import RagbenchState
    from .suite.model import ComponentSpec, Suite

LOCAL_RETRIEVERS = ("bm25", "run", "dense", "hybrid")

#: Without pytest's cache directory (``-p no:cacheprovider``) every process builds its own
#: index: above this many documents the controller's copy would cost the host more (memory,
#: cores the booting workers need) than the head start gains.
MAX_UNSHARED_DOCUMENTS = 50_000

#: Top-level module names of plugins whose collection hooks select no case beyond the
#: options :func:`blocker` checks. Any other implementation may deselect or shard cases the
#: controller would then request for nothing.
SELECTION_FREE_PLUGINS = frozenset({
    "_pytest", "pytest", "xdist", "pytest_ragbench", "pytest_asyncio", "hypothesis",
    "_hypothesis_pytestplugin", "anyio",
    # its plain pytest_runtest_protocol reruns failed cases (--reruns, its ini, a flaky mark):
    # it runs every case, then some again
    "pytest_rerunfailures"})

COLLECTION_HOOKS = ("pytest_collection_modifyitems", "pytest_collection",
                    "pytest_ignore_collect", "pytest_itemcollected")

#: Hooks that run before a case and may skip it (a case's LLM work is done in its setup);
#: their wrappers are left out, as they time or observe a case rather than skip it.
RUN_HOOKS = ("pytest_runtest_setup", "pytest_runtest_protocol")

#: Default of the ``ragbench_worker_nice`` ini value.
WORKER_NICE = 10

#: Run in a new worker (execnet's ``remote_exec``) before xdist's own code: raise the
#: process's niceness by the step received, answer the new niceness (None where the platform
#: or a sandbox refuses it: the worker then goes on as it is).
LOWER_PRIORITY = """
import os
step = channel.receive()
try:
    niceness = os.nice(step)
except (AttributeError, OSError):
    niceness = None
channel.send(niceness)
"""

#: How long the controller waits for a new worker's answer to :data:`LOWER_PRIORITY`.
LOWER_PRIORITY_TIMEOUT = 10.0


def _plugin_module(plugin: object) -> str:
    name = getattr(plugin, "__name__", None) if isinstance(plugin, ModuleType) else None
    return name or type(plugin).__module__ or ""


def selecting_hook(config: pytest.Config) -> str | None:
    """A collection or run hook of a plugin that may select or skip cases (its hook and
    plugin's name)."""
    for hook_name in (*COLLECTION_HOOKS, *RUN_HOOKS):
        for impl in getattr(config.pluginmanager.hook, hook_name).get_hookimpls():
            if hook_name in RUN_HOOKS and (impl.hookwrapper or impl.wrapper):
                continue  # a wrapper times or observes the case (pytest-timeout, a timer)
            module = _plugin_module(impl.plugin)
            if module.split(".")[0] not in SELECTION_FREE_PLUGINS:
                return f"{hook_name} of {impl.plugin_name}"
    return None


def unloaded_conftest(config: pytest.Config, suite: Path) -> Path | None:
    """A ``conftest.py`` from the rootdir down to ``suite``'s folder that the controller has
    not loaded (the workers load it when they collect the suite), if any."""
    loaded = set()
    for plugin in config.pluginmanager.get_plugins():
        file = getattr(plugin, "__file__", None) if isinstance(plugin, ModuleType) else None
        if file:
            loaded.add(Path(file).resolve())
    root = config.rootpath.resolve()
    folder = suite.resolve().parent
    for directory in (folder, *folder.parents):
        conftest = directory / "conftest.py"
        if conftest.is_file() and conftest.resolve() not in loaded:
            return conftest
        if directory == root:
            break
    return None


def blocker(config: pytest.Config, state: RagbenchState) -> str | None:
    """Why this run gets no head start (None: it gets one), from its options alone."""
    if hasattr(config, "workerinput"):
        return "a worker"
    # -n N becomes --dist load only in xdist's pytest_cmdline_main
    if config.getoption("dist", "no") == "no" and not config.getoption("numprocesses", None):
        return "no xdist workers"
    if not state.explicit:
        return "no --ragbench suites"
    option = config.option
    chosen = {
        "-k": getattr(option, "keyword", ""),
        "-m": getattr(option, "markexpr", ""),
        "--lf": getattr(option, "lf", False),
        "--deselect": getattr(option, "deselect", None),
        "-x/--maxfail": getattr(option, "maxfail", 0),
        "--sw": getattr(option, "stepwise", False) or getattr(option, "stepwise_skip", False),
        "--collect-only": getattr(option, "collectonly", False),
        "--setup-only/--setup-plan": (getattr(option, "setuponly", False)
                                      or getattr(option, "setupplan", False)),
        "an informational option": any(getattr(option, name, False) for name in (
            "help", "version", "markers", "showfixtures", "show_fixtures_per_test",
            "ragbench_list")),
        "--ragbench-resume": getattr(option, "ragbench_resume", None),
        "node ids": any("::" in str(arg) for arg in config.args),
        # a stolen case moves to a worker that never got the response handed over for it
        # (sent again, or read from the cache at no cost); with each, every worker runs it
        "--dist worksteal/each": getattr(option, "dist", "no") in ("worksteal", "each"),
    }
    for name, value in chosen.items():
        if value:
            return f"{name} given"
    if state.hook.active():
        return "a pytest_ragbench_make_component hook builds components"
    hook = selecting_hook(config)
    if hook is not None:
        return f"a hook may select or skip cases: {hook}"
    return None


def suite_id(path: Path, rootdir: Path) -> str | None:
    """The node id of a suite file's collector (None outside the rootdir)."""
    try:
        return PurePosixPath(path.relative_to(rootdir)).as_posix()
    except ValueError:
        return None


def _builtin(state: RagbenchState, kind: str, type_name: str) -> bool:
    try:
        return state.registry.resolve(kind, type_name).origin == BUILTIN_ORIGIN
    except Exception:
        return False


def _local_retriever(state: RagbenchState, spec: ComponentSpec,
                     siblings: Mapping[str, ComponentSpec], seen: tuple[str, ...] = ()) -> bool:
    """Whether the controller builds ``spec`` exactly as a worker does, sending nothing."""
    if spec.type not in LOCAL_RETRIEVERS or not _builtin(state, "retriever", spec.type):
        return False
    if spec.type == "dense":
        embedder = spec.params.get("embedder")
        kind = embedder.get("type") if isinstance(embedder, Mapping) else embedder
        return kind == "hashing"
    if spec.type == "hybrid":
        parts = spec.params.get("retrievers")
        if not isinstance(parts, Sequence) or isinstance(parts, str):
            return False
        return all(isinstance(p, str) and p in siblings and p not in seen
                   and _local_retriever(state, siblings[p], siblings, (*seen, spec.name))
                   for p in parts)
    return True


def _time_limited(suite: Suite) -> bool:
    """Whether a ``case_timeout`` (a retriever's, an endpoint's) or the generation's
    ``timeout`` bounds the suite's cases: a limit the controller's call meets need not be
    met by the worker's, or the other way round, so a request it stopped was sent again by
    the worker, and one made for a case whose retrieval then timed out on its worker was paid
    for nothing."""
    rag = suite.rag
    if rag is None:
        return False
    endpoints = [c.endpoint for c in (rag.llm, rag.judge.llm if rag.judge else None,
                                      rag.embedder) if c is not None]
    return (any(r.timeout is not None for r in suite.retrievers)
            or rag.generation.timeout is not None
            or any(e is not None and e.case_timeout is not None for e in endpoints))


def eligible(state: RagbenchState, suite: Suite) -> bool:
    """Whether the controller can answer ``suite``'s cases exactly as a worker would."""
    rag = suite.rag
    if rag is None or suite.pipelines or not suite.retrievers:
        return False
    llms = [rag.llm, *([rag.judge.llm] if rag.judge is not None and rag.judge.llm else [])]
    if not any(llm.type == "openai" for llm in llms) or any(
            llm.type not in ("openai", "extractive") for llm in llms):
        return False
    if rag.judge is not None and rag.judge.items_per_call > 1:
        return False
    if _time_limited(suite):
        return False
    siblings = {r.name: r for r in suite.retrievers}
    return all(_local_retriever(state, r, siblings) for r in suite.retrievers)


class HeadStartPlugin:
    """Controller plugin: starts the head start (at configure), checks it against the first
    worker's collection, stops it at the end and says once if it failed."""

    def __init__(self, config: pytest.Config, state: RagbenchState,
                 suites: Mapping[str, Path]) -> None:
        self.config = config
        self.state = state
        self.suites = dict(suites)
        self.head_start: HeadStart | None = None
        #: The suites the head start validated, by path (written on its thread, read when a
        #: worker is configured: a suite not there yet is validated by the worker itself).
        self.validated: dict[Path, Suite] = {}
        self._packed: tuple[tuple[str, ...], dict[str, Any]] | None = None

    def _plan(self, budget: Any, stopped: Callable[[], bool]) -> list[SuitePlan]:
        from .collect import case_name
        from .execution.headstart import PlannedCase, SuitePlan
        from .execution.prechecks import scope_problems
        from .execution.runtime import SuiteRuntime

        state = self.state
        plans: list[SuitePlan] = []
        runtime: SuiteRuntime | None = None
        try:
            for sid, path in self.suites.items():
                # each step may take seconds (a big dataset): a stop does not wait for them all
                if stopped():
                    break
                try:
                    suite = state.load_suite(path)
                except Exception:
                    continue  # a bad suite: the workers report it, as a collection error
                self.validated[suite.path] = suite
                if not eligible(state, suite) or stopped():
                    continue
                runtime = SuiteRuntime(suite, sid, state.registry,
                                       state.build_context(suite.path.parent))
                runtime.run_budget = lambda: budget
                runtime.exchange_role = "lead"
                if stopped() or not runtime.answer_metrics or (
                        state.cache_dir() is None
                        and len(runtime.dataset.corpus) > MAX_UNSHARED_DOCUMENTS) or (
                        scope_problems((*suite.gates, *suite.thresholds),
                                       runtime.dataset.queries)):
                    # (a gate scope no query matches: the workers stop at it, before any
                    # request of theirs; the head start sends none either)
                    runtime.close()
                    runtime = None
                    continue
                # in collection order, named as collect.py names the items
                cases = tuple(
                    PlannedCase(spec.name, q.id, run, f"{sid}::{spec.name}::"
                                + case_name(q.id, run, suite.runs))
                    for spec in suite.retrievers for q in runtime.dataset.queries
                    for run in range(suite.runs))
                try:
                    pipeline = runtime.pipeline()
                except Exception:
                    # its LLM setup fails: the workers report it, the other suites go on
                    runtime.close()
                    runtime = None
                    continue
                # the clients import httpx at their first request; the controller sends the
                # run's first requests while its workers boot, so it imports it now
                import httpx  # noqa: F401

                plans.append(SuitePlan(runtime, cases,
                                       pipeline.slots if pipeline.exchanged else 0))
                runtime = None
            if plans and self._cli_gate_problems(plans):
                # the workers stop the whole run at a --ragbench-gate typo, before any
                # request: the head start sends none either
                for plan in plans:
                    plan.runtime.close()
                return []
        except BaseException:
            # what was built is nobody else's to close
            for built in [*(p.runtime for p in plans), *([runtime] if runtime else [])]:
                with contextlib.suppress(Exception):
                    built.close()
            raise
        return plans

    def _cli_gate_problems(self, plans: Sequence[SuitePlan]) -> bool:
        """Whether ``--ragbench-gate`` has a problem the workers' collection reports (a
        metric, system or query scope no suite has). Scopes are judged only when every
        suite was planned here (the others' queries were not read); a suite that did not
        load leaves it to the workers (their requests are then their own, as without a
        head start)."""
        gates = self.config.getoption("ragbench_gate", None) or []
        if not gates:
            return False
        if len(self.validated) < len(self.suites):
            return True
        from .execution.prechecks import suites_gate_problems

        suites = {f"{s.name} [{s.path}]": s for s in self.validated.values()}
        queries = ({f"{p.runtime.suite.name} [{p.runtime.suite.path}]":
                    p.runtime.dataset.queries for p in plans}
                   if len(plans) == len(suites) else None)
        return bool(suites_gate_problems(gates, suites, queries))

    def start(self) -> None:
        from .execution.headstart import HeadStart

        state = self.state
        # registration hooks run here, once, not on the head start's thread
        try:
            state.ensure_registered()
        except Exception:
            # a registration the registry refuses, or the hook's own error: no head start
            # (it was an INTERNALERROR); each worker reports it as its collection error, as
            # a run without -n does
            return
        budget = state.controller_budget("head-start")
        # before any worker asks: until this budget closes, the workers' claims are answered
        # by the exchange; after, they stop asking
        budget.lead()
        self.head_start = HeadStart(lambda stopped: self._plan(budget, stopped),
                                    budget).start()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_newgateway(self, gateway: Any) -> None:
        """Lower the CPU priority of a new worker on this machine while the head start runs
        (by ``ragbench_worker_nice``), before xdist's own code starts in it.

        The controller's head start sends the run's requests while the workers boot and
        hands every response to the worker whose case needs it, so its threads are on the
        LLM work's critical path. A worker's boot (imports, plugins, suite, index,
        collection) takes about a second of CPU; with more processes than cores it took the
        cores from the controller, whose requests then went out late. Lowered from the
        worker's own configuration, the priority came after its imports and plugin loading,
        a third of that second (at ``-n 4`` on 2 cores, the slots of the first round of
        responses sat idle 100 ms each instead of 40 ms). A niceness only ever goes up for
        an unprivileged process, so the worker keeps it to its end; the head start runs only
        for suites whose cases wait on an LLM endpoint, where a worker's own CPU work is
        small. One that found nothing to lead has ended by now (workers start after its
        first wave, or after it ended); a worker on another machine takes no core from the
        controller. A worker that cannot lower its priority or does not answer in time
        goes on as it is.
        """
        spec = getattr(gateway, "spec", None)
        if not self.running or spec is None or is_remote_spec(str(spec)):
            return
        step = worker_nice(self.config)
        if step <= 0:
            return
        try:
            channel = gateway.remote_exec(LOWER_PRIORITY)
            channel.send(step)
            channel.receive(LOWER_PRIORITY_TIMEOUT)
        except Exception:  # execnet's errors, a timeout: the worker starts as it would
            return

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Hand the suites validated so far to a worker on this machine (see
        :mod:`pytest_ragbench.suite.handoff`): it then skips their validation (YAML, the
        pydantic schema: about 0.2 s of CPU each) while the LLM phase needs the cores."""
        spec = getattr(getattr(node, "gateway", None), "spec", None)
        if spec is None or not same_python_here(str(spec)) or not self.validated:
            return
        from .state import SUITES_INPUT
        from .suite.handoff import handed_over

        suites = list(self.validated.values())
        paths = tuple(str(s.path) for s in suites)
        if self._packed is None or self._packed[0] != paths:  # once, not once per worker
            self._packed = (paths, handed_over(suites, self.state.registry))
        if self._packed[1]["suites"]:
            node.workerinput[SUITES_INPUT] = self._packed[1]

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if self.head_start is not None:
            self.head_start.restrict(ids)

    def tail(self, cases: Sequence[str]) -> int:
        """How many of the last ragbench ``cases`` one worker takes (see
        :meth:`~pytest_ragbench.execution.headstart.HeadStart.tail`)."""
        return self.head_start.tail(cases) if self.head_start is not None else 0

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.stop()

    def stop(self) -> None:
        if self.head_start is not None:
            self.head_start.stop()

    @property
    def running(self) -> bool:
        """Whether the head start is still at work (planning or answering)."""
        return self.head_start is not None and self.head_start.running

    def pytest_unconfigure(self) -> None:
        self.stop()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        error = self.head_start.error if self.head_start is not None else None
        if error:
            terminalreporter.write_line(
                f"ragbench: the controller's LLM head start stopped early (the workers did "
                f"the rest): {error}", yellow=True)


def same_python_here(spec: str) -> bool:
    """Whether an xdist ``--tx`` spec starts its workers on this machine with this
    interpreter: ``popen`` without ``python=`` (another environment may hold another version
    of the plugin) or ``via=`` (another machine's popen)."""
    if is_remote_spec(spec):
        return False
    return not any(part.startswith(("python=", "via=")) for part in spec.split("//"))


def worker_nice(config: pytest.Config) -> int:
    """The ``ragbench_worker_nice`` ini value (a usage error when it is not an integer)."""
    raw = str(config.getini("ragbench_worker_nice")).strip()
    try:
        return int(raw) if raw else WORKER_NICE
    except ValueError:
        raise pytest.UsageError(
            f"ragbench: ini ragbench_worker_nice: expected an integer (0 turns it off), got "
            f"{raw!r}") from None


def install(config: pytest.Config, state: RagbenchState) -> list[str]:
    """Register the head start on an xdist controller when the run's options allow one; the
    ids of the suites it may lead (their workers are told to ask the run's exchange first).

    Which suites it leads is decided on its thread (reading a suite here would delay every
    worker's start); a worker's client asking for a suite the controller does not lead only
    ever hears that the request is its own.
    """
    if blocker(config, state) is not None or os.environ.get("RAGBENCH_NO_HEAD_START"):
        return []
    # outside the rootdir a suite's node id is pytest's to choose; a conftest the workers
    # load and the controller did not may deselect its cases or replace its components
    suites = {sid: path for path in state.explicit
              if (sid := suite_id(path, config.rootpath)) is not None
              and unloaded_conftest(config, path) is None}
    if suites:
        plugin = HeadStartPlugin(config, state, suites)
        config.pluginmanager.register(plugin, "ragbench-head-start")
        # now, not at session start: every moment before the workers report counts
        plugin.start()
        # the rest of the controller's start and the workers' boot wait for the first
        # requests (bounded; see HeadStart.wait_first_wave)
        if plugin.head_start is not None:
            plugin.head_start.wait_first_wave()
            if config.getini("ragbench_gc_freeze"):
                # The head start's imports, suite and index now fill the controller's heap,
                # which no collection freezes (the controller collects nothing): each
                # automatic full collection walked all of it mid-run, 40-60 ms with the GIL
                # held, and every slot whose response came back meanwhile sat idle. Frozen
                # as a process that runs cases is (thawed at the end as any run's heap).
                state.freeze_heap()
    return sorted(suites)
