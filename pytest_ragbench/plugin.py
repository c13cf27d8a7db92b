"""pytest entry point (pytest11) of pytest-ragbench: options, configuration and collection hooks.

Per-process state is in :mod:`pytest_ragbench.state`. The controller-side aggregation lives in
:mod:`pytest_ragbench.session`, imported at one boundary (``_ControllerStart``): only on the
controller (``not hasattr(config, "workerinput")``) and only in a run that has ragbench cases;
workers only collect and run cases. The hooks this plugin adds are in
:mod:`pytest_ragbench.hookspecs`, the fixtures in :mod:`pytest_ragbench.fixtures`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import hookspecs, options
from .collect import RECORD_KEY, CaseItem, SuiteFile
from .collect import session_error as _collection_error
from .errors import RagbenchError
from .hosts import (
    HOSTS_INPUT,
    ControllerPaths,
    HostPathError,
    moves_workers,
    parse_address,
    resolve_host,
    separate_suite_args,
    suite_node_id,
    unsendable_args,
)
from .registry import Registry
from .resuming import CaseResume
from .state import (
    DIST_EACH_INPUT,
    IDENTITY_ATTR,
    REPORT_ATTR,
    RUN_START_INPUT,
    STATE_KEY,
    WORKERINPUT_EXCHANGE,
    RagbenchState,
    suites_alone,
)
from .suite.files import is_suite_file


class _ControllerStart:
    """Controller only: starts the controller session once the run turns out to have cases.

    :mod:`pytest_ragbench.session` imports aggregation, statistics, history and the renderers;
    this is the one place it is imported (as pytest-xdist imports its ``DSession`` only in
    distribution mode). Explicit suites start it at configure, so its usage checks come
    before collection; suites found by collection, ``ragbench_suite`` tests and hand-written
    ``ragbench_record`` tests start it when their items or first record show up. It also
    hands every arriving record to ``pytest_ragbench_case_result``.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.session: Any = None
        # What the xdist workers collected and the failures so far, for a session started
        # after the fact (it counts failed items for the verdict).
        self._node_ids: list[tuple[Any, list[str]]] = []
        self._failed: list[pytest.TestReport] = []
        # Whether the workers' collection holds ragbench cases (None: none reported yet).
        self._collected_cases: bool | None = None

    def start(self) -> Any:
        if self.session is None:
            from .session import RagbenchSession

            self.session = RagbenchSession(self.config)
            self.config.pluginmanager.register(self.session, "ragbench-session")
        return self.session

    def _has_cases(self, nodeids: Any) -> bool:
        explicit = self.config.stash[STATE_KEY].explicit
        for nodeid in nodeids:
            path = Path(nodeid.split("::")[0])
            if is_suite_file(path) or (self.config.rootpath / path).resolve() in explicit:
                return True
        return False

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.session is None and any(
                isinstance(item, CaseItem) or "ragbench_record" in getattr(
                    item, "fixturenames", ()) for item in session.items):
            # Registered during this hook's call: pluggy does not add it to the call.
            self.start().pytest_collection_finish(session)

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # xdist runs only when every worker collected the same ids: asked once
        if self._collected_cases is None:
            self._collected_cases = self._has_cases(ids)
        has_cases = self._collected_cases
        if has_cases:
            # this worker took SIGTERM as a Ctrl-C before it reported (worker_exits.py)
            self.config.stash[STATE_KEY].worker_exits.takes_sigterm(node.gateway)
        if self.session is None:
            self._node_ids.append((node, ids))
            if has_cases:
                self.start().pytest_xdist_node_collection_finished(node, ids)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rec = getattr(report, REPORT_ATTR, None)
        # a hand-written test of a suite's case says so in its setup report, before any
        # record: its worker may crash in the test, and the session records that crash
        if not isinstance(rec, dict) and not isinstance(getattr(report, IDENTITY_ATTR, None),
                                                        dict):
            if self.session is None and report.failed:
                self._failed.append(report)
            return
        if self.session is None:
            # A hand-written record under xdist: the controller saw only node ids.
            session = self.start()
            for node, ids in self._node_ids:
                session.pytest_xdist_node_collection_finished(node, ids)
            for earlier in self._failed:
                session.pytest_runtest_logreport(earlier)
            session.pytest_runtest_logreport(report)
            self._node_ids, self._failed = [], []
        if isinstance(rec, dict):
            self.config.hook.pytest_ragbench_case_result(record=rec, config=self.config)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.addoption(parser)
    group = parser.getgroup("ragbench")
    group.addoption(
        "--ragbench-list", action="store_true", default=False,
        help="show every available ragbench component (retrievers, pipelines, LLMs, embedders, "
             "metrics) with its origin and parameters, then exit",
    )
    group.addoption(
        "--ragbench-budget-address", default=None, metavar="HOST[:PORT]",
        help="xdist: the address the run budget coordinator listens on and workers connect "
             "to (default 127.0.0.1 on a free port; with ssh gateways all interfaces, "
             "advertised as this machine's name)",
    )
    parser.addini("ragbench_llm", type="string", default="",
                  help="LLM for the ragbench_llm fixture: a type name or a JSON mapping")
    parser.addini("ragbench_embedder", type="string", default="",
                  help="embedder for the ragbench_embedder fixture: a type name or a JSON "
                       "mapping")
    parser.addini("ragbench_gc_freeze", type="bool", default=True,
                  help="exempt the heap built by collection from Python's cyclic garbage "
                       "collector until the run ends, and collect it once at exit, when "
                       "ragbench cases were collected (faster; set false if your tests rely "
                       "on collecting cycles created before the first test)")
    parser.addini("ragbench_worker_nice", type="string", default="",
                  help="xdist: how much the workers on the controller's machine lower their "
                       "CPU priority (niceness) while it leads the LLM work, so that their "
                       "start-up does not delay its requests (default 10; 0 turns it off)")


def _suite_args(config: pytest.Config) -> list[Path]:
    given = [config.invocation_params.dir / raw for raw in config.getoption("ragbench") or []]
    given += [config.rootpath / raw for raw in config.getini("ragbench_suites") or []]
    paths: list[Path] = []
    for p in given:
        try:
            resolved = p.resolve()
        except (OSError, RuntimeError):  # a symlink loop raises one or the other
            raise pytest.UsageError(f"ragbench: {p}: cannot read the suite file: symbolic "
                                    "link loop") from None
        if resolved.is_dir():
            raise pytest.UsageError(f"ragbench: {p}: is a directory; expected a suite file "
                                    "(.yaml, .yml or .json)")
        if not resolved.is_file():
            raise pytest.UsageError(f"ragbench: suite file not found: {resolved}")
        paths.append(resolved)
    return list(dict.fromkeys(paths))


@pytest.hookimpl(tryfirst=True, specname="pytest_configure")
def pytest_configure_worker_priority(config: pytest.Config) -> None:
    # The controller lowers its workers' priority as each starts (headstart.py): a bad value
    # is a usage error before the head start or any worker starts.
    from .headstart import worker_nice

    if not hasattr(config, "workerinput"):
        worker_nice(config)
        _check_cache_path(config)
        _check_gc_freeze(config)


def _check_gc_freeze(config: pytest.Config) -> None:
    """A ``ragbench_gc_freeze`` that is no boolean: a usage error naming the option and its
    file (pytest's own says only "invalid truth value", where the run first reads it)."""
    try:
        config.getini("ragbench_gc_freeze")
    except (ValueError, pytest.UsageError) as exc:  # pytest >= 9 raises the latter
        where = f" in {config.inipath}" if config.inipath else ""
        raise pytest.UsageError(f"ragbench: ini option ragbench_gc_freeze{where}: expected true "
                                f"or false ({exc})") from None


def _check_cache_path(config: pytest.Config) -> None:
    """``--ragbench-cache-path`` that cannot be the response cache: a usage error before any
    request (at the first case, every case errored, in refresh mode after paying)."""
    given = config.getoption("ragbench_cache_path", None)
    if not given:
        return
    from .llm.cache import cache_path_problem

    path = config.invocation_params.dir / given
    problem = cache_path_problem(path, config.getoption("ragbench_cache", None) or "on")
    if problem:
        raise pytest.UsageError(f"ragbench: --ragbench-cache-path {given}: {path} {problem}")


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
    if not hasattr(config, "workerinput"):
        # xdist controller: the workers told to exit as they finished are reaped at the
        # session's finish, as xdist's teardown reaps them (worker_exits.py); the cleanup is
        # for a run that ends without one
        config.pluginmanager.register(state.worker_exits, "ragbench-worker-exits")
        config.add_cleanup(state.worker_exits.reap)
        from .crash_blame import CrashBlame

        config.pluginmanager.register(CrashBlame(config), "ragbench-crash-blame")
    from . import fixtures

    config.pluginmanager.register(fixtures, "ragbench-fixtures")
    state.explicit = _explicit_suites(config, state)
    if state.explicit:
        _add_suites_to_args(config, state.explicit)
    if getattr(config.option, "markers", False):
        _register_query_markers(state, [*state.explicit, *_discovered_suites(config)])
    if not hasattr(config, "workerinput"):
        _check_gateways(config)
        starter = _ControllerStart(config)
        config.pluginmanager.register(starter, "ragbench-controller-start")
        if state.explicit:
            # the session's usage checks (outputs, history, baseline) come before any request
            starter.start()
            from .headstart import install

            state.head_start = install(config, state)
            if state.head_start:
                # its requests go out before the workers have collected: a SIGTERM then
                # ended the run with the signal's exit status (143), no summary, no record
                starter.session.catch_sigterm()
        from .report.progress import ProgressReporter

        config.pluginmanager.register(ProgressReporter(config, state.budget_totals),
                                      "ragbench-progress")
    # Every process: case keys for the records, and the replays of a resumed run.
    config.pluginmanager.register(CaseResume(config), "ragbench-resume")


def _discovered_suites(config: pytest.Config) -> list[Path]:
    """The suite files collection would find under the command line's paths (or
    ``testpaths``, or the current folder)."""
    from .suite.files import find_suite_files

    base = config.invocation_params.dir
    args = [a for a in config.args if not a.startswith("-")] if config.args else []
    if not args or args == [str(base)]:
        args = list(config.getini("testpaths")) or [str(base)]
    roots = [base / a.split("::")[0] for a in args]
    return find_suite_files(roots, skip=list(config.getini("norecursedirs")))


def _check_gateways(config: pytest.Config) -> None:
    """Usage errors of a run whose xdist gateways move the workers, before xdist starts."""
    tx = [str(t) for t in config.getoption("tx", None) or []]
    # without a --dist mode xdist starts no gateway, whatever --tx says; nor for a run that
    # ends before its session (--collect-only skips xdist, --ragbench-list, --markers, --help)
    if config.getoption("dist", "no") != "no" and moves_workers(tx) and not any(
            config.getoption(name, False)
            for name in ("collectonly", "ragbench_list", "markers", "help", "version")):
        _check_sendable_args(config)
    address = config.getoption("ragbench_budget_address", None)
    if address:
        try:
            parse_address(address)
        except ValueError as exc:
            raise pytest.UsageError(f"ragbench: --ragbench-budget-address={exc}") from None


def _check_sendable_args(config: pytest.Config) -> None:
    """A path argument pytest-xdist cannot send to a moved worker is a usage error naming
    it: xdist stopped on it with an INTERNALERROR once the gateways were up (an existing
    ``--ragbench-baseline base.json``, ``--junitxml out.xml`` or test folder alike)."""
    args = [str(a) for a in config.invocation_params.args]
    given = separate_suite_args(args)
    head = "ragbench: with --tx gateways that use chdir= or another host,"
    if given:
        raise pytest.UsageError(
            f"{head} write --ragbench={given[0]} as one argument: pytest-xdist rewrites "
            "separate path arguments for the workers and stops on this one")
    bad = unsendable_args(args, config.invocation_params.dir, _rsync_roots(config))
    if not bad:
        return
    before, arg = bad[0]
    positional = {str(a) for a in config.args} if config.args_source == \
        pytest.Config.ArgsSource.ARGS else set()
    if before is not None and before.startswith("-") and "=" not in before \
            and arg not in positional:
        one = f"{before}={arg}" if before.startswith("--") else f"{before}{arg}"
        raise pytest.UsageError(
            f"{head} write {one} as one argument: pytest-xdist rewrites separate "
            f"path arguments for the workers and stops on {arg!r}, a path outside its "
            "rsync roots")
    raise pytest.UsageError(
        f"{head} pytest-xdist cannot send the path argument {arg!r} to the workers (it "
        "stops on a path outside its rsync roots): give suites as --ragbench=PATH and "
        "test folders in the ini's testpaths, which each worker finds from its own rootdir "
        "(see docs/many-hosts.md)")


def _rsync_roots(config: pytest.Config) -> list[Path]:
    """The folders pytest-xdist rewrites path arguments against: its own copies of pytest
    and ``_pytest``, ``--rsyncdir`` and the ini's ``rsyncdirs``."""
    import _pytest

    roots = [Path(pytest.__file__).parent, Path(_pytest.__file__).parent]
    try:
        roots += [Path(str(r)) for r in getattr(config.option, "rsyncdir", None) or []]
        roots += [Path(str(r)) for r in config.getini("rsyncdirs") or []]
    except ValueError:  # no such ini option without xdist
        pass
    return [(r if r.is_absolute() else config.invocation_params.dir / r).resolve()
            for r in roots]


def _explicit_suites(config: pytest.Config, state: RagbenchState) -> list[Path]:
    """The run's explicit suites: as given, on the controller (or without xdist); on a worker
    as the controller resolved them, found on this worker's host (see :mod:`.hosts`)."""
    workerinput = getattr(config, "workerinput", None)
    given = workerinput.get(HOSTS_INPUT) if workerinput else None
    if given is None:
        return _suite_args(config)
    try:
        host = resolve_host(ControllerPaths.from_input(given), config.rootpath,
                            config.invocation_params.dir)
    except HostPathError as exc:
        # Reported as a collection error (see _check_cli_gates): a usage error raised here
        # would reach the controller as the worker's traceback.
        state.host_error = f"ragbench: {exc}"
        return []
    state.host = host
    suites = {path.resolve(): node_id for path, node_id in host.suites().items()}
    state.suite_node_ids = {p: n for p, n in suites.items() if n is not None}
    return list(suites)


def _register_query_markers(state: RagbenchState, suites: list[Path]) -> None:
    """Register the query markers of ``suites`` now: ``pytest --markers`` prints before
    collection, which registers them otherwise."""
    from .collect import query_marker_names
    from .datasets import load_dataset

    for path in dict.fromkeys(p.resolve() for p in suites):
        try:
            queries = load_dataset(state.load_suite(path).dataset).queries
        except (RagbenchError, OSError, ValueError) as exc:
            raise pytest.UsageError(f"ragbench: {exc}") from None
        for name in query_marker_names(queries):
            state.register_marker(name)


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
    """xdist controller: send the run's start time and where its suites are to each worker."""
    state = node.config.stash.get(STATE_KEY, None)
    if state is not None:
        node.workerinput[RUN_START_INPUT] = state.run_start
        node.workerinput[DIST_EACH_INPUT] = node.config.getvalue("dist") == "each"
        config = node.config
        node.workerinput[HOSTS_INPUT] = ControllerPaths.of(
            config.rootpath, config.invocation_params.dir, state.explicit,
            state.explicit_dataset_digests()).to_input()
        _join_run_budget(state, node)


def _join_run_budget(state: RagbenchState, node: Any) -> None:
    """Give each worker the address and token of the run's budget coordinator, so that
    concurrency, rate limits and max_cost hold for the whole run, not per worker."""
    node.workerinput.update(state.coordinator_workerinput())
    if state.head_start:
        node.workerinput[WORKERINPUT_EXCHANGE] = list(state.head_start)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Hand each worker its whole share of ragbench cases up front (dealt in turn, the last
    few to one worker when the head start answers them), so each prefetches all of its LLM
    work (see :mod:`pytest_ragbench.scheduling`); an explicit ``--dist`` wins."""
    from .scheduling import RagbenchScheduling, dist_chosen
    from .suite.files import case_matcher

    state = config.stash.get(STATE_KEY, None)
    if state is None or dist_chosen(config) or config.getvalue("dist") != "load":
        return None
    head_start = config.pluginmanager.get_plugin("ragbench-head-start")
    return RagbenchScheduling(config, log, case_matcher(config.rootpath, state.explicit),
                              head_start.tail if head_start is not None else None)


def _add_suites_to_args(config: pytest.Config, suites: list[Path]) -> None:
    """Make the suites collection arguments: beside the test paths given on the command
    line; without any, ``--ragbench`` suites alone, the ``ragbench_suites`` ini's beside
    ``testpaths`` (or the current folder), as pytest collects without the ini (a bare
    ``pytest`` ran the benchmark alone, its unit tests left out without a word)."""
    current = [] if suites_alone(config) else list(config.args)
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
        # A worker in another folder or on another host keeps the controller's node ids; a
        # --ragbench suite outside the rootdir gets one that tells it from the others
        # (suite_node_id: pytest names every such file argument ""). Files a folder argument
        # finds keep the ids pytest gives them (their path in that folder), the same on
        # every host.
        node_id = state.suite_node_ids.get(file_path.resolve())
        # (unresolved, as pytest relates a file to the rootdir)
        if (node_id is None and file_path.resolve() in state.explicit
                and not file_path.is_relative_to(parent.config.rootpath)):
            node_id = suite_node_id(file_path, parent.config.rootpath)
        if node_id is not None:
            return SuiteFile.from_parent(parent, path=file_path, nodeid=node_id)
        return SuiteFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    # Last, so the items are those that will run: the checks come before the first of them
    # and before any answer is prefetched.
    state = config.stash.get(STATE_KEY, None)
    if state is not None and state.host_error is not None:
        _collection_error(session, state.host_error)
        items.clear()
        return
    if _check_dist_each(session, items):
        return
    _check_cli_gates(session, items)


#: Why ``--dist each`` and a suite's cases do not go together (see :func:`_check_dist_each`).
DIST_EACH_ERROR = (
    "ragbench: --dist each runs every test on every worker: each case of a suite would be "
    "answered, and its LLM calls paid for, once per worker, while a run keeps one record per "
    "case; use another --dist mode (or none: the plugin schedules the cases), and `runs: N` in "
    "the suite to repeat its cases")


def _check_dist_each(session: pytest.Session, items: list[pytest.Item]) -> bool:
    """On an xdist worker of ``--dist each`` with others: a suite's cases (collected from a
    suite file, or hand-written tests that record them) are one collection error, before any
    of them runs. Every worker reports the same text, which the controller shows once."""
    workerinput = getattr(session.config, "workerinput", {})
    if not workerinput.get(DIST_EACH_INPUT) or int(workerinput.get("workercount", 2)) < 2:
        return False  # a lone worker runs each case once
    from .fixtures import records_a_case

    if not any(isinstance(item, CaseItem) or records_a_case(item) for item in items):
        return False
    _collection_error(session, DIST_EACH_ERROR)
    items.clear()
    return True


def _check_cli_gates(session: pytest.Session, items: list[pytest.Item]) -> None:
    """``--ragbench-gate`` on a metric no collected suite computes, or scoped to a system
    or a query type / difficulty / tag none has: one collection error.

    Nothing runs then, so a typo costs no request. Each xdist worker finds the same problem
    and reports the same text, which the controller shows once; its items are dropped so the
    workers have nothing to run (without xdist the collection error stops the run anyway).
    """
    gates = session.config.getoption("ragbench_gate", None) or []
    state = session.config.stash.get(STATE_KEY, None)
    if not gates or state is None or not state.collected_suites:
        return
    from .execution.prechecks import suites_gate_problems

    suites = {f"{s.name} [{nodeid}]": s for nodeid, s in state.collected_suites.items()}
    # Scopes are checked against every suite the gates judge, or not at all: a suite that
    # did not collect (its error stops the run) or one hand-written tests use
    # (``ragbench_suite``, not collected as a suite) may hold the scope's queries.
    complete = session.testsfailed == 0 and not any(
        item.get_closest_marker("ragbench_suite") for item in items)
    queries = {f"{s.name} [{nodeid}]": state.runtime(nodeid, s.path).dataset.queries
               for nodeid, s in state.collected_suites.items()} if complete else None
    problems = suites_gate_problems(gates, suites, queries)
    if problems:
        _collection_error(session, "\n".join(f"ragbench: {p}" for p in problems))
        items.clear()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.getini("ragbench_gc_freeze") and any(
            isinstance(item, CaseItem) for item in session.items):
        session.config.stash[STATE_KEY].freeze_heap()


@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
def pytest_collection_modifyitems_sigterm(config: pytest.Config,
                                          items: list[pytest.Item]) -> None:
    """An xdist worker that collected cases takes SIGTERM as a Ctrl-C from now on: before it
    reports its collection, after which the controller may stop it with one
    (worker_exits.py). Trylast: ``-k`` and ``-m`` have deselected by then, as the controller
    sees it. Other workers, and any run's controller, are left as they are."""
    if not hasattr(config, "workerinput") or not any(
            isinstance(item, CaseItem) for item in items):
        return
    from .worker_exits import interrupt_on_sigterm

    restore = interrupt_on_sigterm()
    if restore is not None:
        config.add_cleanup(restore)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "setup" and isinstance(item, CaseItem):
        longrepr = item.error_repr(call.excinfo) if call.excinfo is not None else None
        if longrepr is not None:
            report.longrepr = longrepr
        rec = item.stash.get(RECORD_KEY, None)
        if rec is None:
            rec = item.setup_error_record(report, call)
        else:
            item.mark_own_xfail(report, rec)
        if rec is not None:
            # A plain attribute survives xdist's report serialisation (it copies __dict__).
            setattr(report, REPORT_ATTR, rec)
            item.config.stash[STATE_KEY].note_shown(rec)
        item.config.stash[STATE_KEY].attach_collected(report)
    return report


# innermost of the session-finish wrappers: inside pytest's warnings capture, so that what
# closing the components warns of (a close() that raised) reaches the warnings summary
@pytest.hookimpl(wrapper=True, trylast=True)
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
            state.send_shown_texts()
            if any(isinstance(item, CaseItem) for item in session.items):
                # a run with cases this worker did not report (as at -n 0, a run that selects
                # none of a suite's cases writes no run)
                state.send_unsent_collected()
            state.close_runtimes()
            # An xdist controller collects nothing, so its heap was not frozen unless its
            # head start froze it (headstart.install): pytest's closing collections would walk
            # every module it imported (0.1 s, after the last worker is done). The thaw at the
            # end hands it back as in any run.
            if (state.explicit and not hasattr(session.config, "workerinput")
                    and session.config.getini("ragbench_gc_freeze")):
                state.freeze_heap()


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
