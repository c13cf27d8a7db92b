"""``--ragbench-resume``: the pytest side of resuming a run (the domain is
:mod:`pytest_ragbench.results.resume`).

Registered in every process. At the end of collection each case item gets its case key (every
record carries it, resumed or not) and, when resuming, the earlier record it replays: the item
still runs as a pytest item, so pytest's counts, ``-v`` lines and junit stay whole, but its
setup takes the earlier record instead of retrieving. Items that ``--lf`` (or ``-k``, ``-m``)
deselected keep their earlier record too: it travels to the controller with the process's first
case report, so that the new run holds every case. Under ``--lf``/``--ff`` the cases pytest
remembers as failed run again.

The controller resolves which earlier runs to look at before anything runs (its own run
folder does not exist yet) and hands that list to each xdist worker, with which of them were
still going then; each process then takes the same run as every other: the newest that holds
one of its collected suites and was not going, or with the bare option, for each suite the
newest run of it when unfinished (:func:`~pytest_ragbench.results.resume.pick_run`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .collect import RECORD_KEY, USAGE_ERROR_ATTR, CaseItem, case_name, session_error
from .options import RESUME_NEWEST_UNFINISHED

if TYPE_CHECKING:
    from .results.resume import EarlierRun, SuiteKeys

RESUME_INPUT = "ragbench_resume"
#: On each case's setup report: {"reused": bool, "why": reason | None}.
RESUME_ATTR = "ragbench_resume"
#: On the first case report of each process: {"from", "injected": {nodeid: record} for the
#: cases this process collected but does not run, "why": {nodeid: reason} for every case
#: not reused}.
RESUME_RUN_ATTR = "ragbench_resume_run"


def runs_root(config: pytest.Config) -> Path:
    """The folder run folders are written to (``--ragbench-out``, else .ragbench/runs)."""
    out = config.getoption("ragbench_out")
    return (config.invocation_params.dir / out) if out else config.rootpath / ".ragbench" / "runs"


class CaseResume:
    """Case keys and replays of one process (see the module docstring)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._collected: list[CaseItem] = []
        self._keys: dict[str, SuiteKeys] = {}
        self._why: dict[str, str] = {}
        self._payload: dict[str, Any] | None = None
        self._earlier_run: EarlierRun | None = None
        #: The newest run of these suites when the bare option passed it over as finished.
        self._finished: Path | None = None
        #: Older unfinished runs some suites took that the bare option did not resume (a run
        #: resumes one run), with those suites.
        self._passed_over: list[tuple[Path, list[str]]] = []
        workerinput = getattr(config, "workerinput", None)
        self._on_worker = workerinput is not None
        #: Run folders to resume from, newest first; None: not resuming.
        self.candidates: list[str] | None = None
        #: Resume only when the newest run of the suites is unfinished (the default).
        self.unfinished_only = False
        #: An xdist worker's: each candidate's chain of runs (it and the runs it resumed)
        #: with the size of their records on the controller, which its own copies must
        #: match (None: this process resolved the candidates, or shares its files).
        self.chains: list[list[list[Any]]] | None = None
        #: An xdist worker's: whether each candidate's run was still going on the controller
        #: (a run's process is known alive only on its own host, and every worker must pick
        #: the same run).
        self.running: list[bool] | None = None
        #: The controller's: what it sends its workers (see pytest_configure_node).
        self._running: list[bool] | None = None
        self._chains: list[list[list[Any]]] | None = None
        if workerinput is not None:
            given = workerinput.get(RESUME_INPUT)
            if isinstance(given, dict):
                self.candidates = list(given["folders"])
                self.unfinished_only = bool(given["unfinished_only"])
                chains = given.get("chains")
                self.chains = list(chains) if chains is not None else None
                running = given.get("running")
                self.running = [bool(r) for r in running] if running is not None else None
        else:
            ref = config.getoption("ragbench_resume", None)
            if ref is not None:
                self._resolve(ref)

    def _resolve(self, ref: str) -> None:
        from .results.resume import ResumeError, resolve_run_folder, run_folders

        root = runs_root(self.config)
        # "latest" here is the newest run of these suites (the out folder's latest link may
        # be another suite's run, which holds nothing to resume)
        if ref not in (RESUME_NEWEST_UNFINISHED, "latest"):
            try:
                folder = resolve_run_folder(ref, root, self.config.invocation_params.dir,
                                            history=self._history_path())
            except ResumeError as exc:
                raise pytest.UsageError(f"ragbench: {exc}") from None
            self._check_holds_a_suite(ref, folder)
            self.candidates = [str(folder)]
            return
        self.candidates = [str(p) for p in run_folders(root)]
        # --lf reruns what failed in the newest run, finished or not; "latest" names it
        self.unfinished_only = ref == RESUME_NEWEST_UNFINISHED and not self._lf_active()

    def _check_holds_a_suite(self, ref: str, folder: Path) -> None:
        """A run named on purpose that holds none of the run's suites is a usage error:
        resuming from it reuses nothing, and the whole run would be paid for again. Known
        here only when the ``--ragbench`` suites are all the run collects: test paths (on
        the command line, or the ini's beside its ``ragbench_suites``) may find more (their
        runs say "nothing to resume" at the end)."""
        from .state import STATE_KEY, suites_alone

        if not suites_alone(self.config):
            return
        from .headstart import suite_id
        from .results.resume import run_suites

        rootdir = self.config.rootpath
        wanted = {sid for path in self.config.stash[STATE_KEY].explicit
                  if (sid := suite_id(path, rootdir)) is not None}
        held = run_suites(folder)
        if wanted and held and not wanted & held:
            raise pytest.UsageError(
                f"ragbench: --ragbench-resume={ref}: run {folder.name} holds "
                f"{', '.join(sorted(held))}, none of the suites of this run "
                f"({', '.join(sorted(wanted))}): nothing to resume from it")

    def _history_path(self) -> Path:
        """The run history run numbers, ``last`` and ``best`` are looked up in."""
        from .results.runfolder import DEFAULT_HISTORY

        given = self.config.getoption("ragbench_history", None)
        if given:
            return self.config.invocation_params.dir / given
        return self.config.rootpath / DEFAULT_HISTORY

    def _lf_active(self) -> bool:
        return bool(self.config.getoption("lf", False) or self.config.getoption("failedfirst",
                                                                                False))

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.candidates is not None:
            from .hosts import moves_workers
            from .results.resume import chain_sizes
            from .results.runfolder import is_running

            folders = [Path(p) for p in self.candidates]
            if self._running is None:
                # decided once for every worker, replacements too: each deciding for itself,
                # a run of these suites in another terminal finishing between two workers'
                # collection made them resume from different runs
                self._running = [is_running(p) for p in folders]
            given: dict[str, Any] = {"folders": self.candidates,
                                     "unfinished_only": self.unfinished_only,
                                     "running": self._running}
            # a worker in another folder or on another host sees its own files at these
            # paths: it checks them. One in this folder reads the very files (their sizes
            # may change meanwhile: a run of these suites in another terminal finishing)
            if moves_workers([str(getattr(getattr(node, "gateway", None), "spec", ""))]):
                if self._chains is None:
                    self._chains = [chain_sizes(p) for p in folders]
                given["chains"] = self._chains
            node.workerinput[RESUME_INPUT] = given

    @pytest.hookimpl(tryfirst=True)
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if not self._on_worker and getattr(report, USAGE_ERROR_ATTR, False):
            # a worker's usage error (see above), raised before any other plugin shows it as
            # a collection error: the run ends as the same run without workers does
            raise pytest.UsageError(str(report.longrepr))
        self._collected += [x for x in (report.result or []) if isinstance(x, CaseItem)]

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Under ``--lf`` with resume, the cases the earlier run did not finish (stopped by
        ``-x``, a crash) run too: pytest's last-failed plugin, whose selection comes after
        this, would deselect them as not failed, and no record would stand for them."""
        if self.candidates is None or not self._lf_active():
            return
        lf = self.config.pluginmanager.get_plugin("lfplugin")
        lastfailed = getattr(lf, "lastfailed", None)
        if not getattr(lf, "active", False) or not isinstance(lastfailed, dict) \
                or not lastfailed:
            return  # nothing remembered as failed: every item runs or is reused
        from .results.resume import ResumeError

        try:
            earlier = self._earlier()
        except ResumeError:
            return  # a worker's: reported by the hook below, as one collection error
        if earlier is None:
            return
        for item in items:
            # the plugin's keys: the node's structured id (pytest 9), else its node id
            key = getattr(item, "id", item.nodeid)
            if not isinstance(item, CaseItem) or key in lastfailed:
                continue
            keys = self._suite_keys(item)
            if keys is None or earlier.reusable(keys, item.retriever, item.case_id,
                                                item.run)[0] is None:
                # kept by --lf as a failure would be; it leaves the list once it passes
                lastfailed[key] = True

    @pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
    def pytest_collection_modifyitems_host(self, session: pytest.Session,
                                           items: list[pytest.Item]) -> None:
        """On an xdist worker, the run to resume as this host sees it, before any case: a run
        folder of the controller's that is missing here, or another copy of it (another host
        without a shared filesystem), is one collection error, as the controller's own
        resume errors are usage errors; the worker would run every case again, or resume from
        another run than the controller's. A run whose records cannot be read is the usage
        error it is at ``-n 0`` (raised on a worker, it ended the run as an INTERNALERROR
        that only said no worker was left; then in a collection error, exit 1 against
        ``-n 0``'s 4): the report carries it to the controller, which raises it."""
        if self.candidates is None or not self._on_worker or not self._collected:
            return
        from .results.resume import NotOnThisHostError, ResumeError

        try:
            self._earlier()
        except ResumeError as exc:
            self.candidates = None  # nothing runs: no payload, no replays
            session_error(session, f"ragbench: {exc}",
                          usage_error=not isinstance(exc, NotOnThisHostError))
            items.clear()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        from .state import STATE_KEY

        if not self._collected:
            return
        state = self.config.stash[STATE_KEY]
        earlier = self._earlier()
        selected = {id(item) for item in session.items}
        rerun = self._last_failed()
        injected: dict[str, dict[str, Any]] = {}
        why: dict[str, str] = {}
        for item in self._collected:
            keys = self._suite_keys(item)
            if keys is None:
                continue
            item.case_key = keys.case_key(item.retriever, item.case_id, item.run)
            if earlier is None:
                continue
            rec, reason = earlier.reusable(keys, item.retriever, item.case_id, item.run)
            if id(item) in selected:
                if rec is not None and item.nodeid not in rerun:
                    item.replay = rec
                elif reason is not None:
                    self._why[item.nodeid] = reason
            elif rec is not None:
                rec = {**rec, "xfail": None}
                suite_file = item._suite_file()
                state.runtime(suite_file.nodeid, suite_file.path).rejudge(rec)
                if item.xfail_reason is not None:
                    from .records import mark_expected_failure

                    mark_expected_failure(rec, item.xfail_reason,
                                          applied=item._xfail_applied())
                injected[item.nodeid] = rec
            elif reason is not None:
                why[item.nodeid] = reason
        if earlier is not None:
            self._carry_uncollected(earlier, injected, why)
            self._charge_reused([*(i.replay for i in self._collected if i.replay is not None),
                                 *injected.values()])
        clock = self._clock(earlier, injected)
        if self.candidates is not None:
            self._payload = {"from": earlier.run_id if earlier else None,
                             # the bare option passed the newest run over as finished: the
                             # run says which, and how many of its cases a resume would run
                             "finished": self._finished_run(),
                             # unfinished runs of other suites it left (one run is resumed)
                             "passed_over": [[folder.name, suites]
                                             for folder, suites in self._passed_over],
                             "folder": str(earlier.folder) if earlier else None,
                             "clock": clock, "injected": injected,
                             # with the reasons of the cases run now: a worker that dies in
                             # one never sends that case's setup report, which says it too
                             "why": {**self._why, **why}}
        self._collected = []

    def _charge_reused(self, records: list[dict[str, Any]]) -> None:
        """A resumed run is one run under its suites' ``max_cost``: what the cases it reuses
        cost counts before its first request (resumed with the same cap, it used to spend
        the cap again). Each process computes the same sums from the same collection.
        With the requests that cost and how many of them were priced from estimated token
        counts: a spend resting on estimates says so resumed or not."""
        from .llm.usage import PaidBefore
        from .state import STATE_KEY

        spent: dict[str, PaidBefore] = {}
        for rec in records:
            cost = rec.get("cost")
            # a request priced at $0 was charged too (as one of the cap's requests)
            if isinstance(cost, int | float) and math.isfinite(cost) and cost >= 0:
                usage = rec.get("usage") if isinstance(rec.get("usage"), dict) else {}
                requests = _count(usage.get("requests"))
                # a judge batch's share of a request may be none of it, yet estimated:
                # never more estimated requests than the case's own
                estimated = min(_count(usage.get("estimated")), requests)
                paid = spent.get(str(rec["suite"]), PaidBefore())
                spent[str(rec["suite"])] = PaidBefore(paid.usd + float(cost),
                                                      paid.charges + requests,
                                                      paid.estimated + estimated)
        state = self.config.stash[STATE_KEY]
        for sid, paid in spent.items():
            runtime = state.known_runtime(sid)
            if runtime is not None:
                runtime.count_spent_before(paid)

    def _clock(self, earlier: EarlierRun | None,
               injected: dict[str, dict[str, Any]]) -> float | None:
        """Score this run's new cases against the clock of the run it resumes (None: its
        own) when it keeps a record of that run, so that its records are those of one run.
        One that keeps none is a run of its own: its clock moves on. Every xdist worker
        collects the same cases and decides the same."""
        if earlier is None or earlier.clock is None:
            return None
        if not injected and not any(item.replay is not None for item in self._collected):
            return None
        from .state import STATE_KEY

        self.config.stash[STATE_KEY].set_clock(earlier.clock)
        return earlier.clock

    def _carry_uncollected(self, earlier: EarlierRun, injected: dict[str, dict[str, Any]],
                           why: dict[str, str]) -> None:
        """Carry over, as for deselected cases, the earlier records of the cases of these
        suites that were never made into items: node ids on the command line
        (``suite.yaml::bm25::q1``, ``suite.yaml::bm25``) leave the other cases uncollected,
        and the new run would have held only the cases it ran."""
        from .state import STATE_KEY

        made = {item.nodeid for item in self._collected}
        files = {item.nodeid.split("::")[0]: item._suite_file() for item in self._collected}
        applied = self._collected[0]._xfail_applied()
        state = self.config.stash[STATE_KEY]
        for sid, suite_file in files.items():
            if sum(n.split("::")[0] == sid for n in made) >= state.collected.get(sid, 0):
                continue  # every case has its item (the usual run): nothing to carry
            keys = self._suite_keys(self._collected_of(sid))
            if keys is None:
                continue
            runtime = state.runtime(sid, suite_file.path)
            suite = runtime.suite
            for spec in suite.systems:
                for q in runtime.dataset.queries:
                    for run in range(suite.runs):
                        nodeid = f"{sid}::{spec.name}::{case_name(q.id, run, suite.runs)}"
                        if nodeid in made:
                            continue
                        rec, reason = earlier.reusable(keys, spec.name, q.id, run)
                        if rec is not None:
                            rec = {**rec, "xfail": None}
                            runtime.rejudge(rec)
                            if q.id in suite.xfail:
                                from .records import mark_expected_failure

                                mark_expected_failure(rec, suite.xfail[q.id], applied=applied)
                            injected[nodeid] = rec
                        elif reason is not None:
                            why[nodeid] = reason

    def _collected_of(self, sid: str) -> CaseItem:
        return next(i for i in self._collected if i.nodeid.split("::")[0] == sid)

    def _earlier(self) -> EarlierRun | None:
        if self.candidates is None:
            return None
        if self._earlier_run is not None:
            return self._earlier_run
        from .results.resume import ResumeError, pick_run

        suites = {item.nodeid.split("::")[0] for item in self._collected}
        finished: list[Path] = []
        passed_over: list[tuple[Path, list[str]]] = []
        try:
            self._earlier_run = pick_run((Path(p) for p in self.candidates), suites,
                                         unfinished_only=self.unfinished_only,
                                         chains=self.chains, running=self.running,
                                         finished=finished, passed_over=passed_over)
            self._finished = finished[0] if finished else None
            self._passed_over = passed_over
            return self._earlier_run
        except ResumeError as exc:
            if self._on_worker:
                raise  # one collection error (see the hook above)
            raise pytest.UsageError(f"ragbench: {exc}") from None

    def _finished_run(self) -> list[Any] | None:
        """``[run id, errored cases]`` of the newest run of these suites when the bare
        option passed it over as finished."""
        if self._finished is None:
            return None
        from .results.resume import errored_cases

        return [self._finished.name, errored_cases(self._finished)]

    def _last_failed(self) -> set[str]:
        """Node ids ``--lf``/``--ff`` remember as failed: they run again."""
        lf = self.config.pluginmanager.get_plugin("lfplugin")
        if lf is None or not getattr(lf, "active", False):
            return set()
        return {str(k) for k in getattr(lf, "lastfailed", {})}

    def _suite_keys(self, item: CaseItem) -> SuiteKeys | None:
        suite_file = item._suite_file()
        sid = suite_file.nodeid
        if sid not in self._keys:
            from . import __version__
            from .errors import RagbenchError
            from .results.resume import SuiteKeys, annotations_hash
            from .state import STATE_KEY

            runtime = self.config.stash[STATE_KEY].runtime(sid, suite_file.path)
            try:
                saving = self.config.getoption("ragbench_save_run", None)
                dataset = runtime.dataset
                self._keys[sid] = SuiteKeys.of(runtime.suite, sid, dataset.content_hash,
                                               __version__,
                                               annotations=annotations_hash(dataset),
                                               depth=runtime.suite.k if saving else 0)
            except (RagbenchError, OSError):
                # The suite file changed under the run: its cases get no key (never reused).
                return None
        return self._keys[sid]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """An xdist worker that reported no case puts the payload into ``workeroutput``:
        when every worker died in its first case (and their replacements had nothing left to
        run), the reused records of the cases not run now reached the controller with no
        report, and the resumed run held the crashed cases alone."""
        output = getattr(self.config, "workeroutput", None)
        if output is not None and self._payload is not None and any(
                isinstance(item, CaseItem) for item in session.items):
            output[RESUME_RUN_ATTR] = self._payload
            self._payload = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if call.when == "setup" and isinstance(item, CaseItem) and self.candidates is not None:
            # reused when its setup took the earlier record: a skip mark (or a conftest's
            # setup hook that raised) stopped it before, and it holds no record of that run
            setattr(report, RESUME_ATTR, {
                "reused": item.replay is not None and RECORD_KEY in item.stash,
                "why": self._why.get(item.nodeid)})
            if self._payload is not None:
                setattr(report, RESUME_RUN_ATTR, self._payload)
                self._payload = None
        return report


def _count(value: Any) -> int:
    """A record's request count (0 when missing or not a count: records of every version)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
