"""Controller-side session plugin: collects records from reports, writes results as they arrive,
aggregates once at the end, applies gates and baselines, and sets the exit status.

Registered only on the controller (``not hasattr(config, "workerinput")``), so there is one
aggregation path with or without pytest-xdist. Aggregation takes the records and each suite's
spec (:mod:`pytest_ragbench.results.spec`), taken when the run starts and written to the run
folder's ``run.json`` (:mod:`pytest_ragbench.results.runfolder`); no suite file is read at the
end, and ``ragbench report`` can aggregate a run that never reached it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from .collect import split_case_name
from .errors import RagbenchError
from .hosts import gateway_count
from .options import summary_level
from .records import CRASH_STAGE, case_outcome, error_record, failure_message, jsonable
from .report.files import (
    CASES_CSV,
    CASES_JSONL,
    RUN_JSON,
    SUMMARY_JSON,
    SUMMARY_MD,
    JsonlAppender,
    run_start_doc,
    summary_markdown,
    write_cases_csv,
    write_json,
)
from .report.format import one_line
from .report.terminal import render_summary
from .report.views import gate_failure_line, tell_suites_apart
from .results.aggregate import summarize_run
from .results.resume import ResumeTally, resume_line
from .results.runfolder import (
    DEFAULT_HISTORY,
    KEEP_RUNS_INI,
    make_run_folder,
    parse_keep_runs,
)
from .results.settle import settle_shared_calls
from .results.spec import SuiteSpec, read_spec, suite_spec
from .results.verdict import Coverage, make_verdict
from .resuming import RESUME_ATTR, RESUME_RUN_ATTR, runs_root
from .sigterm import drop_lineless_frames, replace_sigterm
from .state import (
    COLLECTED_ATTR,
    IDENTITY_ATTR,
    QUERY_META_ATTR,
    QUERY_TEXTS_ATTR,
    REPORT_ATTR,
    SHOWN_TEXTS_OUTPUT,
    SPECS_ATTR,
    STATE_KEY,
)
from .suite.files import case_matcher

# pytest_ragbench.plugin imports this module only once a run turns out to have ragbench cases,
# so runs without suites pay for none of it. What only some runs write or read lives in
# pytest_ragbench.outputs, imported at one place (RagbenchSession.outputs) when first needed.

# Distribution -> import name. A module already imported reports the version of the code that
# actually ran (and costs nothing); the others are looked up in the installed metadata.
_PACKAGES = {"pytest-ragbench": "pytest_ragbench", "pytest": "pytest", "pytest-xdist": "xdist",
             "numpy": "numpy", "scipy": "scipy", "rank-bm25": "rank_bm25", "httpx": "httpx"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _is_xdist_stop(excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    """Whether a keyboard interrupt is xdist's own stop (at ``-x``), not a Ctrl-C."""
    return type(excinfo.value).__name__ == "Interrupted" and type(
        excinfo.value).__module__.startswith("xdist")


def _interrupted_in(report: pytest.TestReport) -> bool:
    """Whether ``report`` is xdist's crash report of the case an xdist worker was in when a
    KeyboardInterrupt ended it (the worker finished with exit status 2)."""
    node = getattr(report, "node", None)
    output = getattr(node, "workeroutput", None)
    return (report.when not in ("setup", "call", "teardown") and isinstance(output, dict)
            and output.get("exitstatus") == int(pytest.ExitCode.INTERRUPTED))


def _stopped_at_maxfail(config: pytest.Config) -> bool:
    """Whether xdist's controller stopped the run at ``-x`` / ``--maxfail`` (and nothing else
    asked it to stop: a Ctrl-C, a worker's keyboard interrupt)."""
    dsession = config.pluginmanager.get_plugin("dsession")
    stop = getattr(dsession, "shouldstop", None)
    return isinstance(stop, str) and stop.startswith("stopping after ")


def new_run_id() -> str:
    """Sortable and unique: UTC time plus random hex."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _may_be_in_git(folder: Path) -> bool:
    """False only when git could not find a repository from ``folder``: no ``.git`` in it or
    any parent, none of them a bare repository (``HEAD``), and no ``GIT_DIR`` or
    ``GIT_COMMON_DIR`` pointing git elsewhere. Spawning git costs a fork of this process,
    which runs outside a repository (pytester's, CI's temporary folders) skip."""
    if os.environ.get("GIT_DIR") or os.environ.get("GIT_COMMON_DIR"):
        return True
    try:
        # git walks up from the physical working directory, as resolve() gives it
        here = folder.resolve()
        return any((p / ".git").exists() or (p / "HEAD").exists()
                   for p in (here, *here.parents))
    except OSError:  # cannot tell: ask git
        return True


class GitCommitLookup:
    """``git rev-parse HEAD`` started now and read later, so it runs beside the cases."""

    def __init__(self, cwd: Path) -> None:
        self._value: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        if not _may_be_in_git(cwd):
            return
        try:
            self._proc = subprocess.Popen(
                ["git", "rev-parse", "HEAD"], cwd=cwd, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
        except (OSError, subprocess.SubprocessError):
            self._proc = None

    def result(self, timeout: float = 5.0) -> str | None:
        """The commit id; None when git failed or took longer than ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return None
            self._value = (out.strip() or None) if proc.returncode == 0 else None
        return self._value

    def cancel(self) -> None:
        """Stop and reap the process if it is still running (a run that ended early)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.communicate()


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name, module_name in _PACKAGES.items():
        module_version = getattr(sys.modules.get(module_name), "__version__", None)
        if isinstance(module_version, str):
            out[name] = module_version
            continue
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


class RagbenchSession:
    """Aggregates ragbench records on the controller."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.run_id = new_run_id()
        self.started = _now()
        self.t0 = time.monotonic()
        self.records: dict[str, dict[str, Any]] = {}
        self._appender: JsonlAppender | None = None
        self.summary: dict[str, Any] | None = None
        self.baseline_rows: list[dict[str, Any]] = []
        self.messages: list[str] = []
        self.failures: list[str] = []
        self.run_dir: Path | None = None
        self.out_root = runs_root(config)
        self.resume: ResumeTally | None = (
            ResumeTally() if config.getoption("ragbench_resume", None) is not None else None)
        self.write_files = not config.getoption("ragbench_no_output")
        # Per suite id, document id -> shown text (None: not in the corpus), from the workers.
        self.worker_texts: dict[str, dict[str, str | None]] = {}
        self._git: GitCommitLookup | None = None
        self._case_matcher: Callable[[str], bool] | None = None
        # Cases each suite holds as collected (suite id -> count), before any deselection;
        # workers send theirs with their first case report.
        self.collected: dict[str, int] = {}
        # suite id -> query id -> type, difficulty and tags, as the workers collected them
        self._query_meta: dict[str, dict[str, Any]] = {}
        # suite id -> its query texts: JSON as the workers sent it, parsed once when needed
        self._query_texts: dict[str, str | dict[str, str]] = {}
        # node id -> the suite, system and case of a hand-written test (fixtures.py)
        self._identities: dict[str, dict[str, Any]] = {}
        # the case totals run.json holds (None: not written)
        self._run_json_totals: dict[str, int] | None = None
        # Suite id -> the spec aggregation needs (None: the suite file could not be read),
        # taken when the run starts; see _collect_specs.
        self.specs: dict[str, SuiteSpec | None] = {}
        #: The folder of the run this one resumes (written to run.json).
        self.resumed_from: str | None = None
        #: failed cases a resumed run keeps from the earlier one without running them (node id
        #: -> that run): junit shows them as testcases, since no item of theirs reports
        self.reused_failed: dict[str, str] = {}
        # each suite's system names (retrievers and pipelines), for matching a baseline
        self._systems: dict[str, list[str]] = {}
        # the name of each suite this process could not validate (its spec comes later)
        self._names: dict[str, str] = {}
        # each suite's repetitions (runs), for the case of an item name
        self._runs: dict[str, int] = {}
        # each suite's name and hash, for the records of cases that died without one
        self._suite_of: dict[str, dict[str, str]] = {}
        self.items_failed: set[str] = set()
        # items whose call phase reported (a case's record comes with its setup report)
        self._called: set[str] = set()
        self.items_errored: set[str] = set()
        # files (or other collectors) that failed to collect in a run that went on without
        # them: their error made the exit status 1, and the verdict says why
        self.collection_errors: set[str] = set()
        self.verdict: dict[str, Any] | None = None
        self._sigterm = SigtermAsInterrupt()
        # a Ctrl-C (or SIGTERM) reached the controller, as opposed to xdist's stop at -x
        self._keyboard_interrupt = False
        self._write_failed: set[str] = set()
        self.baseline_spec: str | None = config.getoption("ragbench_baseline") or None
        self.baseline_doc: dict[str, Any] | None = None
        self.baseline_label: str | None = None
        self._baseline_matched = False
        self._saved_baseline: Path | None = None
        self.keep_runs = self._keep_runs()
        if self.write_files:
            check_out_dir(self.out_root)
            if not config.getoption("ragbench_no_history"):
                self._check_history()
        if self.baseline_spec:
            self._check_baseline_reference()

    @property
    def outputs(self) -> ModuleType:
        """:mod:`pytest_ragbench.outputs`, imported the first time a run needs it (the one
        place this module imports what only some runs write or read)."""
        from . import outputs

        return outputs

    def _keep_runs(self) -> int | None:
        """The ``ragbench_keep_runs`` ini value; a bad one is a usage error now."""
        try:
            return parse_keep_runs(self.config.getini(KEEP_RUNS_INI))
        except ValueError as exc:
            where = f" in {self.config.inipath}" if self.config.inipath else ""
            raise pytest.UsageError(f"ragbench: {KEEP_RUNS_INI}{where}: {exc}") from None

    # -- arriving results ------------------------------------------------------------------

    def _run_dir(self) -> Path:
        if self.run_dir is None:
            self.run_dir = make_run_folder(self.out_root, self.run_id)
            _point_latest(self.out_root, self.run_id)
        return self.run_dir

    def _add(self, nodeid: str, rec: dict[str, Any]) -> None:
        if nodeid in self.records:
            return
        self.records[nodeid] = rec
        if self._git is None:
            # Asked at the first result, not at start-up: runs without cases never spawn git.
            self._git = GitCommitLookup(self.config.rootpath)
        if self.write_files and "cases" not in self._write_failed:
            try:
                if self._appender is None:
                    self._appender = JsonlAppender(self._run_dir() / CASES_JSONL)
                self._appender.append(rec)
            except OSError as exc:
                # The run goes on: the records stay in memory for the summary.
                self._cannot_write("cases", self.out_root / self.run_id / CASES_JSONL, exc)

    def _cannot_write(self, what: str, path: Path, exc: OSError) -> None:
        """Say once per kind of output that it could not be written."""
        if what in self._write_failed:
            return
        self._write_failed.add(what)
        line = f"ragbench: cannot write {path}: {exc.strerror or exc}"
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(line, red=True)
        else:
            self.messages.append(line)

    def _is_case(self, nodeid: str) -> bool:
        if self._case_matcher is None:
            self._case_matcher = case_matcher(self.config.rootpath,
                                              self.config.stash[STATE_KEY].explicit)
        return nodeid.count("::") == 2 and self._case_matcher(nodeid)

    def _case_of(self, nodeid: str) -> tuple[str, str, str, int]:
        """(suite id, system, query id, repetition) of a case's node id: a repeated case's
        item name ends in ``[runN]``, which is not part of its query id (a record under
        ``q3[run1]`` was a query of its own: in the means' n, and "1 query added" against a
        baseline)."""
        suite, system, name = nodeid.split("::")
        return (suite, system, *split_case_name(name, self._runs.get(suite)))

    def _take_process_data(self, source: Any) -> None:
        """What an xdist process sends once, with its first case report or, when it reported
        no case, in its ``workeroutput`` (``source``: the report, or that output as
        attributes): the cases each suite holds, its queries' metadata, and a resume's
        payload."""
        collected = getattr(source, COLLECTED_ATTR, None)
        if isinstance(collected, dict):
            for sid, n in collected.items():
                self.collected[str(sid)] = max(int(n), self.collected.get(str(sid), 0))
            if self._run_json_totals is not None and self._known_totals() != self._run_json_totals:
                # an xdist worker's totals came after run.json was written: a run killed
                # before its end is re-rendered from that file ("N of M cases")
                self._write_run_json()
        specs = getattr(source, SPECS_ATTR, None)
        if isinstance(specs, dict):
            self._take_worker_specs(specs)
        query_meta = getattr(source, QUERY_META_ATTR, None)
        if isinstance(query_meta, dict):
            for sid, queries in query_meta.items():
                if isinstance(queries, dict):
                    self._query_meta.setdefault(str(sid), {}).update(queries)
        query_texts = getattr(source, QUERY_TEXTS_ATTR, None)
        if isinstance(query_texts, dict):
            for sid, texts in query_texts.items():
                if isinstance(texts, str):
                    self._query_texts.setdefault(str(sid), texts)  # every process's are alike
        # pytest's terminal reporter keeps every report to the end: one copy of each
        # worker's query texts and metadata (megabytes for 100,000 queries) once read here
        # (read on every report: only the first of each process has them, so no lookup
        # that raises is made on the others)
        for attr, value in ((QUERY_META_ATTR, query_meta), (QUERY_TEXTS_ATTR, query_texts)):
            if value is not None:
                with contextlib.suppress(AttributeError, TypeError):
                    delattr(source, attr)
        if self.resume is not None:
            self._resumed(source)

    def _take_worker_specs(self, specs: Mapping[str, Any]) -> None:
        """The specs of the suites this controller could not validate, as a worker did:
        without them their gates went unjudged and their metrics in name order."""
        taken = False
        for sid, data in specs.items():
            sid = str(sid)
            if self.specs.get(sid) is not None or not isinstance(data, Mapping):
                continue
            spec = read_spec(data.get("spec"))
            if spec is None:
                continue
            self.specs[sid] = spec
            self._systems[sid] = [*spec["retrievers"], *spec.get("pipelines", [])]
            runs = data.get("runs")
            if isinstance(runs, int) and not isinstance(runs, bool) and runs > 0:
                self._runs[sid] = runs
            self._suite_of[sid] = {"suite_name": spec["name"],
                                   "suite_hash": str(data.get("suite_hash") or "")}
            taken = True
        if taken and self._run_json_totals is not None:
            self._write_run_json()  # a run killed before its end is re-rendered from it

    def _meta_of(self, suite_id: str, case_id: str) -> dict[str, Any] | None:
        """The text, type, difficulty and tags of a query, for the record of a case that died
        without one. The processes send them with their first case report: when none has come
        for the suite yet (every worker so far died in its first case), the controller reads
        the suite's queries itself, once, so that the crash counts in its gate scopes and
        shows its query as any case does."""
        if suite_id not in self.collected and suite_id not in self._query_meta:
            from .datasets import load_queries, scope_meta

            state = self.config.stash[STATE_KEY]
            self._query_meta[suite_id] = {}  # once, read or not
            try:
                suite = (state.collected_suites.get(suite_id)
                         or state.load_suite(self.config.rootpath / suite_id))
                queries = load_queries(suite.dataset)
                self._query_meta[suite_id] = scope_meta(queries)
                self._query_texts[suite_id] = {q.id: q.text for q in queries}
            except (RagbenchError, OSError, ValueError):
                pass  # e.g. no dataset on this host: the record goes without
        meta = dict(self._query_meta.get(suite_id, {}).get(case_id) or {})
        texts = self._query_texts.get(suite_id)
        if isinstance(texts, str):
            try:
                parsed = json.loads(texts)
            except ValueError:
                parsed = None
            texts = self._query_texts[suite_id] = parsed if isinstance(parsed, dict) else {}
        if texts and isinstance(texts.get(case_id), str):
            meta["query"] = texts[case_id]
        return meta or None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._take_process_data(report)
        if _interrupted_in(report):
            # not a crash: the case was stopped, as a Ctrl-C stops one at -n 0 (no record,
            # the run partial and interrupted; a resume runs it)
            return
        if report.when == "call":
            self._called.add(report.nodeid)
        if report.failed and not hasattr(report, "wasxfail"):
            (self.items_failed if report.when == "call" else self.items_errored).add(
                report.nodeid)
        identity = getattr(report, IDENTITY_ATTR, None)
        if isinstance(identity, dict):
            self._identities[report.nodeid] = identity
        rec = getattr(report, REPORT_ATTR, None)
        if isinstance(rec, dict):
            self._add(report.nodeid, rec)
        elif (report.failed and report.nodeid not in self.records
                and report.nodeid in self._identities):
            # a hand-written test of a suite's case that died without its record (a crashed
            # worker): an error of that case, as for a collected one
            ident = self._identities[report.nodeid]
            self._add(report.nodeid, error_record(
                suite=str(ident["suite"]), retriever=str(ident["retriever"]),
                case_id=str(ident["case_id"]),
                meta=self._meta_of(str(ident["suite"]), str(ident["case_id"])),
                **self._suite_of.get(str(ident["suite"]), {}),
                message=failure_message(report.longrepr),
                stage=CRASH_STAGE if report.when not in ("setup", "call", "teardown")
                else report.when))
        elif report.failed and report.nodeid not in self.records and self._is_case(report.nodeid):
            # The case died before producing a record (a crashed worker, a bug): keep it as an
            # error so it is counted, not lost.
            suite, retriever, case_id, run = self._case_of(report.nodeid)
            self._add(report.nodeid, error_record(
                suite=suite, retriever=retriever, case_id=case_id, run=run,
                meta=self._meta_of(suite, case_id), **self._suite_of.get(suite, {}),
                message=failure_message(report.longrepr),
                stage=CRASH_STAGE if report.when not in ("setup", "call", "teardown")
                else report.when,
            ))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # under xdist the controller gets each worker's failed collection once
        if report.failed:
            self.collection_errors.add(report.nodeid)

    def _resumed(self, source: Any) -> None:
        """Count a resumed run's reuse; add the earlier records of cases not run now."""
        assert self.resume is not None
        info = getattr(source, RESUME_ATTR, None)
        if isinstance(info, dict):
            self.resume.item(source.nodeid, info)
        run = getattr(source, RESUME_RUN_ATTR, None)
        if not isinstance(run, dict) or self.resume.seen:
            return  # every xdist worker sends the same, with its first case
        self.resume.seen = True
        self.resume.run_id = run.get("from")
        finished = run.get("finished")
        if isinstance(finished, list | tuple) and len(finished) == 2:
            self.resume.finished = (str(finished[0]), int(finished[1]))
        self.resume.passed_over = [
            (str(entry[0]), [str(s) for s in entry[1]])
            for entry in run.get("passed_over") or []
            if isinstance(entry, list | tuple) and len(entry) == 2]
        clock = run.get("clock")
        if isinstance(clock, int | float) and not isinstance(clock, bool):
            # under xdist the workers took it; run.json says it for the next resume
            self.config.stash[STATE_KEY].set_clock(float(clock))
        if isinstance(run.get("folder"), str) and self.write_files:
            # before this run's replays: if it stops too, its resume reuses both runs'
            self.resumed_from = run["folder"]
            self._write_run_json()
        for nodeid, why in (run.get("why") or {}).items():
            self.resume.item(str(nodeid), {"why": why})
        for nodeid, rec in (run.get("injected") or {}).items():
            self.resume.item(str(nodeid), {"reused": True})
            self._add(str(nodeid), rec)
            if case_outcome(rec) == "failed":
                # Not run now, yet a case of the whole-suite verdict.
                self.items_failed.add(str(nodeid))
                self.reused_failed[str(nodeid)] = str(run.get("from"))
                self.resume.failed = True

    # -- the end ---------------------------------------------------------------------------

    def run_metadata(self, exitstatus: int) -> dict[str, Any]:

        state = self.config.stash[STATE_KEY]
        cov = self.coverage(exitstatus)
        return {
            "id": self.run_id,
            "started": self.started,
            "finished": _now(),
            "duration_s": round(time.monotonic() - self.t0, 3),
            "command": [sys.argv[0], *self.config.invocation_params.args],
            "cwd": str(self.config.invocation_params.dir),
            "rootdir": str(self.config.rootpath),
            "suites": [str(p) for p in state.explicit],
            "git_commit": (self._git or GitCommitLookup(self.config.rootpath)).result(),
            "versions": package_versions(),
            "workers": self._workers(),
            "exitstatus": int(exitstatus),
            "partial": cov.partial,
            "n_records": len(self.records),
            "n_cases": cov.cases_run,
            "n_cases_total": cov.cases_total,
            **({"resumed": self.resume.as_dict(len(self.records))}
               if self.resume is not None and self.resume.seen else {}),
        }

    def coverage(self, exitstatus: int) -> Coverage:
        """How many cases ran against how many the collected suites hold."""
        run: dict[str, int] = {}
        for rec in self.records.values():
            run[str(rec["suite"])] = run.get(str(rec["suite"]), 0) + 1
        interrupted = int(exitstatus) == int(pytest.ExitCode.INTERRUPTED)
        # Without collection counts (cases from hand-written tests) only an interruption
        # tells that cases are missing.
        return Coverage(run=run, total=self.collected,
                        interrupted=interrupted and not self.collected)

    def _workers(self) -> int | None:
        """xdist's worker count: ``-n``, else the gateways ``--tx`` starts (None: no xdist;
        ``--tx`` without a ``--dist`` mode starts none)."""
        numprocesses = getattr(self.config.option, "numprocesses", None)
        if numprocesses is not None:
            return int(numprocesses)
        if self.config.getoption("dist", "no") == "no":
            return None
        return gateway_count([str(t) for t in self.config.getoption("tx", None) or []]) or None

    def history_path(self) -> Path:
        """Where the run history is (``--ragbench-no-history`` only stops adding to it)."""
        opt = self.config.getoption("ragbench_history")
        if opt:
            return self.config.invocation_params.dir / opt
        return self.config.rootpath / DEFAULT_HISTORY

    # -- before the first item ----------------------------------------------------------

    def _check_baseline_reference(self) -> None:
        """A baseline that cannot exist is a usage error before anything runs."""
        assert self.baseline_spec is not None
        found = self.outputs.check_baseline_reference(
            self.baseline_spec, cwd=self.config.invocation_params.dir,
            history=self.history_path())
        if found is not None:
            self.baseline_doc, self.baseline_label = found

    def _check_history(self) -> None:
        """A history file the run could not append to is a usage error now, not a lost row
        at the end (nothing is created here)."""
        path = self.history_path()
        if path.exists():
            self.outputs.check_history(path)
        else:
            self._check_history_folder(path)

    @staticmethod
    def _check_history_folder(path: Path) -> None:
        """A history that does not exist yet: its path must be one the run can create."""
        def refuse(why: str) -> None:
            raise pytest.UsageError(f"ragbench: run history {path}: {why} (check "
                                    "--ragbench-history, or pass --ragbench-no-history)")

        if path.is_symlink():  # dangling or a loop: exists() is False for both
            try:
                path.resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                refuse(f"cannot be resolved: {exc}")
        folder = path.parent
        while not folder.exists():
            if folder.is_symlink() or folder == folder.parent:
                refuse("its folder cannot be created")
            folder = folder.parent
        if not folder.is_dir():
            refuse(f"{folder} is a file, not a folder")
        why = unwritable(folder)
        if why is not None:
            refuse(f"folder {folder} is not writable ({why})")

    @pytest.hookimpl(tryfirst=True)  # before the terminal reporter formats it
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        drop_lineless_frames(excinfo)
        if not _is_xdist_stop(excinfo):
            self._keyboard_interrupt = True

    def _record_never_ran(self, session: pytest.Session) -> None:
        """An item put back after a worker crashed (crash_blame.py) that never ran again is
        the crash it was: an error, so that the run does not pass on fewer cases without a
        word; not in a run interrupted by Ctrl-C or SIGTERM, which is partial and says so."""
        blame = self.config.pluginmanager.get_plugin("ragbench-crash-blame")
        if blame is None or self._keyboard_interrupt:
            return
        for nodeid in blame.never_ran():
            if nodeid in self.records or not self._is_case(nodeid):
                continue
            suite, retriever, case_id, run = self._case_of(nodeid)
            self._add(nodeid, error_record(
                suite=suite, retriever=retriever, case_id=case_id, run=run, stage=CRASH_STAGE,
                meta=self._meta_of(suite, case_id), **self._suite_of.get(suite, {}),
                message="a worker crashed while it retrieved ahead for other queries; put "
                        "back to run again, it never ran (the run stopped first)"))
            self.items_errored.add(nodeid)
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def catch_sigterm(self) -> None:
        """Let SIGTERM end the run as Ctrl-C does from now on (before collection: the
        controller's head start sends requests while the workers boot)."""
        self._sigterm.install()

    def _run_started(self, suite_ids: list[str], *, stops: bool = False) -> None:
        """Collection is done and these suites have cases to run: resolve the baseline
        against them, and let SIGTERM end the run as Ctrl-C does. ``stops``: collection
        errors end the run before its first item, which then writes no run folder."""
        if not suite_ids:
            return
        new_specs = self._collect_specs(suite_ids)
        # and those every case of which was deselected (-k of another suite's system): they
        # are listed, none of their cases ran, their gates not judged (an xdist worker sends
        # them, this controller collecting none)
        state = self.config.stash[STATE_KEY]
        new_specs |= self._collect_specs(sorted(
            sid for sid, n in state.collected.items()
            if n and sid in state.collected_suites and sid not in suite_ids))
        if self.baseline_spec and not self._baseline_matched:
            self._baseline_matched = True
            self._match_baseline(suite_ids)
        # After the baseline is matched: a run that stops at a usage error writes no folder,
        # nor does one that runs no case (`latest` stays on the last run).
        if new_specs and self.write_files and self._runs_cases() and not stops:
            self._write_run_json()
        self._sigterm.install()

    def _collect_specs(self, suite_ids: list[str]) -> bool:
        """The spec of each suite about to run, from the suite as collected (xdist's
        controller collects nothing: it validates the suite file itself, once, now), so that
        the end of the run reads no suite file. Returns whether a suite was new; the specs
        then go to ``run.json``, for ``ragbench report`` on a run that never finishes."""

        state = self.config.stash[STATE_KEY]
        new = [sid for sid in suite_ids if sid not in self.specs]
        for sid in new:
            suite = state.collected_suites.get(sid)
            try:
                if suite is None:
                    suite = state.suite_for_spec(self.config.rootpath / sid)
            except (RagbenchError, OSError):
                self.specs[sid] = None
                # its workers send its spec with their first case: its name now, for the
                # baseline matched before the first item
                from .suite.loader import suite_name

                with contextlib.suppress(RagbenchError, OSError):
                    self._names[sid] = suite_name(self.config.rootpath / sid)
                continue
            self.specs[sid] = suite_spec(suite)
            self._systems[sid] = [x.name for x in suite.systems]
            self._runs[sid] = int(suite.runs)
            self._suite_of[sid] = {"suite_name": suite.name, "suite_hash": suite.suite_hash}
        return bool(new)

    def _write_run_json(self) -> None:
        path = self.out_root / self.run_id / RUN_JSON
        totals = self._known_totals()
        try:
            write_json(self._run_dir() / RUN_JSON, run_start_doc(
                run_id=self.run_id, started=self.started, specs=self.specs,
                collected=totals, resumed_from=self.resumed_from,
                clock=self.config.stash[STATE_KEY].run_start))
        except OSError as exc:
            self._cannot_write("run", path, exc)
        self._run_json_totals = totals

    def _known_totals(self) -> dict[str, int]:
        """Cases per suite as collected, as far as this process knows them at the start
        (without xdist all of them; with it they arrive with the workers' reports)."""

        return {**self.config.stash[STATE_KEY].collected, **self.collected}

    def _match_baseline(self, suite_ids: list[str]) -> None:
        assert self.baseline_spec is not None
        names = {sid: (self.specs.get(sid) or {}).get("name") or self._names.get(sid, sid)
                 for sid in suite_ids}
        loaded = ((self.baseline_doc, self.baseline_label or self.baseline_spec)
                  if self.baseline_doc is not None else None)
        self.baseline_doc, self.baseline_label = self.outputs.load_baseline(
            self.baseline_spec, names, cwd=self.config.invocation_params.dir,
            history=self.history_path(), loaded=loaded,
            systems={sid: self._systems[sid] for sid in suite_ids if sid in self._systems})

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # pytest's own rule: a collection error interrupts the run before its first item
        # ('Interrupted: 1 error during collection'), unless told to go on
        stops = bool(session.testsfailed) and not self.config.getoption(
            "continue_on_collection_errors", False)
        self._run_started(self._case_suites(item.nodeid for item in session.items),
                          stops=stops)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # Every worker collects the same items: the first one's are the run's.
        self._run_started(self._case_suites(ids))

    @pytest.hookimpl(optionalhook=True, trylast=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        # The texts of the documents a worker's records show, looked up by the worker, which
        # holds the corpora: the controller then reads no corpus at the end.
        output = getattr(node, "workeroutput", {})
        # a worker that reported no case sends here what it would have sent with the first
        self._take_process_data(SimpleNamespace(**{
            k: output[k] for k in (COLLECTED_ATTR, QUERY_META_ATTR, QUERY_TEXTS_ATTR,
                                   RESUME_RUN_ATTR, SPECS_ATTR)
            if k in output}))
        sent = output.get(SHOWN_TEXTS_OUTPUT)
        if isinstance(sent, dict):
            for suite_id, texts in sent.items():
                self.worker_texts.setdefault(str(suite_id), {}).update(texts)
        # It has sent everything: it exits now, the last one too (worker_exits.py).
        self.config.stash[STATE_KEY].worker_exits.finished(node.gateway, error)

    def _case_suites(self, nodeids: Any) -> list[str]:
        return sorted({n.split("::")[0] for n in nodeids if self._is_case(n)})

    # -- the end ---------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # First among the session-finish hooks: the gates must be known before junitxml
        # writes its file (session fixtures are still up; the records are all in).
        self._sigterm.defer()
        try:
            self._finish(session, exitstatus)
        finally:
            self._sigterm.restore()

    def _runs_cases(self) -> bool:
        """False for ``--collect-only``, ``--setup-only`` and ``--setup-plan``, whose items
        run no case (CaseItem.setup): such a run has no results, verdict or history row."""
        option = self.config.option
        return not (getattr(option, "collectonly", False) or getattr(option, "setuponly", False))

    def _finish(self, session: pytest.Session, exitstatus: int) -> None:
        if (not self.records and not any(self.collected.values())) or not self._runs_cases():
            return
        if (int(session.exitstatus) == int(pytest.ExitCode.INTERRUPTED)
                and not self._keyboard_interrupt and _stopped_at_maxfail(self.config)):
            # -x / --maxfail under xdist: xdist stops the run as an interruption (exit 2,
            # "the run was interrupted"), where -n 0 stops it as failed (exit 1); before the
            # run's metadata is taken, which says whether it was interrupted
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self._record_never_ran(session)
        exitstatus = int(session.exitstatus)

        state = self.config.stash[STATE_KEY]
        # a request cases shared is charged to the first of them, whoever sent it (after
        # cases.jsonl took each record as it came: the outputs below show the settled ones)
        settle_shared_calls(self.records.values())
        doc_text = None
        # --ragbench-no-output drops the run folder, not a report the command line names
        html_only = None if self.write_files else self.config.getoption("ragbench_html")
        if self.write_files or html_only:
            doc_text = self.outputs.shown_document_texts(self.records.values(), state.corpus,
                                                         self.worker_texts)

        summary = summarize_run(self.records.values(), self.specs, self.collected)
        run = self.run_metadata(exitstatus)
        summary = jsonable({**summary, "run": {**run, **self._budget_figures(state)}})
        failed = [g for g in summary["gates"] if not g["passed"]]
        if failed:
            self.failures += [gate_failure_line(g)
                              for g in tell_suites_apart(failed, summary["suites"])]

        extra_gates = tuple(self.config.getoption("ragbench_gate") or ())
        save_path = self.config.getoption("ragbench_save_baseline")
        add_to_history = self.write_files and not self.config.getoption("ragbench_no_history")
        # Without a baseline, command-line gates or gates stored with the suites there is
        # nothing to compare, and without a baseline to save or a history to extend the
        # per-query document is not needed: such runs skip both (and the outputs module).
        needs_compare = bool(self.baseline_doc is not None or extra_gates
                             or any(s.get("gate_texts") for s in summary["suites"]))
        current = None
        other: list[str] = []
        if needs_compare or save_path or add_to_history:
            current = self.outputs.make_baseline(summary, self.records.values(), run)
            if needs_compare:
                other = self._compare(summary, current, extra_gates)
        self._decide(session, summary, other)
        if current is not None:
            current["run"].update(summary["run"])
        if save_path and current is not None:
            self._save_baseline(current, save_path)
        self.summary = summary
        if getattr(self.config.option, "xmlpath", None):  # --junitxml
            self.outputs.add_gate_testcases(self.config, summary, self.baseline_rows,
                                            self.reused_failed)
        if save_run := self.config.getoption("ragbench_save_run", None):
            run_dir = self.config.invocation_params.dir / save_run
            self.messages += self.outputs.save_runs(self.records.values(), run_dir)

        if self.write_files:
            try:
                self._write_outputs(summary, doc_text)
            except OSError as exc:
                self._cannot_write("outputs", Path(exc.filename or self.out_root), exc)
            if add_to_history and current is not None:
                problem = self.outputs.add_to_history(
                    self.history_path(), current, passed=bool(summary["passed"]),
                    baseline_doc=self.baseline_doc, saved_to=self._saved_baseline)
                if problem:
                    self.messages.append(problem)
            if self.keep_runs is not None:
                self.messages += self.outputs.prune(
                    self.out_root, self.history_path(), self.keep_runs, run_id=self.run_id,
                    ini=KEEP_RUNS_INI)
        else:
            # the CI job's step summary is not the run folder: a job that keeps no run
            # folders still shows the summary on its page
            try:
                self._append_step_summary(self._markdown(summary))
            except OSError as exc:
                self._cannot_write("outputs", Path(exc.filename or "GITHUB_STEP_SUMMARY"), exc)
            if html_only:
                report = self.config.invocation_params.dir / html_only
                try:
                    self.messages += self.outputs.html_reports(
                        [report], summary, list(self.records.values()),
                        history_db=self.history_path(), out_root=self.out_root,
                        run_id=self.run_id, doc_text=doc_text)
                except OSError as exc:
                    self._cannot_write("outputs", Path(exc.filename or report), exc)

    def _budget_figures(self, state: Any) -> dict[str, Any]:
        """The run budget's spend and pool figures (timing-dependent: run metadata)."""
        totals = state.budget_totals()
        if totals is None:
            return {}
        # from report.budget, not :attr:`outputs`: a run writing no file would import
        # every writer for two functions (about 25 ms between the last item and the summary)
        from .report.budget import budget_lines, budget_report

        report = budget_report(totals)
        self.messages += budget_lines(report)
        return {"budget": report}

    def _decide(self, session: pytest.Session, summary: dict[str, Any],
                other: list[str]) -> None:
        """Set the exit status from the gates and regressions, then the one verdict every
        output shows (it passes exactly when the exit status is 0)."""

        if int(session.exitstatus) == int(pytest.ExitCode.INTERRUPTED):
            # A case whose record came with its setup report and whose call (where its
            # failure is raised) was interrupted by a Ctrl-C, or the SIGTERM the controller
            # passes its workers as one: failed in the tables, so failed in the verdict
            self.items_failed |= {
                nodeid for nodeid, rec in self.records.items()
                if nodeid not in self._called and nodeid not in self.items_errored
                and case_outcome(rec) == "failed"}
        reused_failure = self.resume is not None and self.resume.failed
        if (self.failures or reused_failure) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        cov = self.coverage(int(session.exitstatus))
        interrupted = int(session.exitstatus) == int(pytest.ExitCode.INTERRUPTED)
        self.verdict = make_verdict(
            items_failed=len(self.items_failed),
            items_errored=len(self.items_errored - self.items_failed),
            collection_errors=len(self.collection_errors),
            gates=summary["gates"], rows=self.baseline_rows, other_failures=other,
            cases_run=cov.cases_run, cases_total=cov.cases_total, partial=cov.partial,
            interrupted=interrupted, exitstatus=int(session.exitstatus))
        summary["passed"] = self.verdict["passed"]
        summary["verdict"] = self.verdict
        summary["run"]["exitstatus"] = int(session.exitstatus)
        summary["run"]["verdict"] = self.verdict["headline"]

    def _save_baseline(self, current: dict[str, Any], save_path: str) -> None:
        dest = self.config.invocation_params.dir / save_path
        if current["run"].get("partial"):
            self.messages.append(
                f"ragbench: baseline not saved to {dest}: the run is partial "
                f"({current['run'].get('n_cases')} of {current['run'].get('n_cases_total')} "
                "cases); a partial run never becomes a baseline")
            return
        try:
            self.outputs.save_baseline(dest, current)
        except OSError as exc:
            self._cannot_write("baseline", dest, exc)
            return
        self._saved_baseline = dest
        self.messages.append(f"baseline saved to {dest}")

    def _compare(self, summary: dict[str, Any], current: dict[str, Any],
                 extra_gates: tuple[str, ...]) -> list[str]:
        """Compare with the baseline and check the gates (the results go into ``summary``
        and the failures); returns the failures that are neither gates nor regressions."""
        baseline = ((self.baseline_doc, self.baseline_label or str(self.baseline_spec))
                    if self.baseline_doc is not None else None)
        result = self.outputs.compare(
            summary, current, baseline=baseline, baseline_spec=self.baseline_spec,
            tolerance=self.config.getoption("ragbench_tolerance"), gates=extra_gates)
        if baseline is not None:
            self.baseline_rows = result.rows
        self.failures += result.failures
        return result.other

    def _markdown(self, summary: dict[str, Any]) -> str:
        # -q and -v change only what the terminal shows; the option, the file too.
        return summary_markdown(summary, self.baseline_rows,
                                level=self.config.getoption("ragbench_summary") or "default")

    @staticmethod
    def _append_step_summary(md: str) -> None:
        """Append ``summary.md`` to GitHub Actions' ``$GITHUB_STEP_SUMMARY`` when set."""
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            with open(step_summary, "a", encoding="utf-8") as fh:
                fh.write(md + "\n")

    def _write_outputs(self, summary: dict[str, Any],
                       doc_text: dict[str, str] | None = None) -> None:
        run_dir = self._run_dir()
        if self._appender is not None:
            self._appender.close()
        elif "cases" not in self._write_failed:
            # a run whose every case was skipped: its folder is a run folder all the same
            (run_dir / CASES_JSONL).touch()
        write_cases_csv(run_dir / CASES_CSV, self.records.values())
        write_json(run_dir / SUMMARY_JSON, summary)
        md = self._markdown(summary)
        (run_dir / SUMMARY_MD).write_text(md, encoding="utf-8")
        self._append_step_summary(md)
        # "results:" first: the lines after it carry run-specific paths, and tests compare
        # the summary up to it between runs.
        self.messages.append(f"results: {run_dir}")
        extra = self.config.getoption("ragbench_html")
        self.messages += self.outputs.html_reports(
            [run_dir / "report.html",
             *([self.config.invocation_params.dir / extra] if extra else [])],
            summary, list(self.records.values()), history_db=self.history_path(),
            out_root=self.out_root, run_id=self.run_id, doc_text=doc_text)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        if self.summary is None:
            return
        tr.write_sep("=", "ragbench summary")
        resumed = self.summary["run"].get("resumed")
        if resumed is not None:
            tr.write_line(resume_line(resumed))
            hint = self._maxfail_hint()
            if hint:
                tr.write_line(hint, yellow=True)
        level = summary_level(self.config.getoption("ragbench_summary"),
                              self.config.get_verbosity())
        for line in render_summary(self.summary, self.baseline_rows, level=level,
                                   verdict=self.verdict, messages=self.messages,
                                   failures=self.failures):
            tr.write_line(one_line(line.text), **line.markup)

    def _maxfail_hint(self) -> str | None:
        """Why a resumed run with ``-x``/``--maxfail`` stayed partial: a reused failed case
        is reported as a failure again, so it stops every such resume at the same place."""
        run = self.summary["run"] if self.summary is not None else {}
        maxfail = self.config.getoption("maxfail", 0) or 0
        if (self.resume is None or not maxfail or not run.get("partial")
                or any(r["kind"] == "interrupted" for r in (self.verdict or {}).get(
                    "reasons", ()))):
            return None
        reported = self.items_failed & self._called  # not the reused cases deselected now
        if len(reported) + len(self.items_errored) < maxfail:
            return None  # stopped by something else
        reused_failed = sorted(reported & self.resume.reused)
        if not reused_failed:
            return None
        missing = int(run.get("n_cases_total") or 0) - int(run.get("n_cases") or 0)
        return (f"ragbench: -x/--maxfail counts the failed cases this resume reuses "
                f"({reused_failed[0]}{' ...' if len(reused_failed) > 1 else ''}) and stopped "
                f"there; resume without it to run the {missing} case"
                f"{'' if missing == 1 else 's'} still missing")

    def pytest_unconfigure(self) -> None:
        self._sigterm.restore()
        if self._appender is not None:
            self._appender.close()
        if self._git is not None:
            self._git.cancel()


def _point_latest(root: Path, run_id: str) -> None:
    """Point ``root/latest`` at the newest run (a symlink, or a text file where links fail)."""
    link = root / "latest"
    tmp = root / f".latest-{run_id}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(run_id, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        (root / "LATEST").write_text(run_id + "\n", encoding="utf-8")


def check_out_dir(out_root: Path) -> None:
    """A ``--ragbench-out`` folder that cannot hold a run is a usage error before the first
    item; nothing is created here (a run without cases writes no folder)."""
    probe = out_root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise pytest.UsageError(f"ragbench: cannot write results to {out_root}: {probe} is "
                                "not a folder (check --ragbench-out)")
    why = unwritable(probe)
    if why is not None:
        raise pytest.UsageError(f"ragbench: cannot write results to {out_root}: {probe} is "
                                f"not writable ({why}; check --ragbench-out)")


def unwritable(folder: Path) -> str | None:
    """Why no file can be written in ``folder`` (None: one can), found by making and removing
    one: root passes ``os.access`` for folders no one can write in (/proc, a read-only mount),
    and the run then wrote nothing."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".ragbench-probe-"):
            return None
    except OSError as exc:
        return str(exc.strerror or exc)


class SigtermAsInterrupt:
    """SIGTERM (a CI cancel or timeout) ends the run as Ctrl-C does: KeyboardInterrupt in the
    main thread, so the finished cases get a partial summary, report and history row.

    Installed only while ragbench cases run, in the main thread of the controller, and the
    previous handler is put back at the end. While the results are being written a SIGTERM
    only is noted, so the outputs are complete.
    """

    def __init__(self) -> None:
        self._restore: Callable[[], None] | None = None
        self._deferred = False
        self.received = False

    def install(self) -> None:
        if self._restore is None:
            self._restore = replace_sigterm(self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True
        if not self._deferred:
            raise KeyboardInterrupt("SIGTERM")

    def defer(self) -> None:
        self._deferred = True

    def restore(self) -> None:
        restore, self._restore = self._restore, None
        if restore is not None:
            restore()
