"""Controller-side session plugin: collects records from reports, writes results as they arrive,
aggregates once at the end, applies gates and baselines, and sets the exit status.

Registered only on the controller (``not hasattr(config, "workerinput")``), so there is one
aggregation path with or without pytest-xdist.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .errors import RagbenchError
from .records import error_record, jsonable
from .report.files import (
    CASES_CSV,
    CASES_JSONL,
    SUMMARY_JSON,
    SUMMARY_MD,
    JsonlAppender,
    summary_markdown,
    write_cases_csv,
    write_json,
)
from .suite_files import is_suite_file

if TYPE_CHECKING:
    from .suite import Suite

# Aggregation, statistics (numpy), baselines, history (sqlite3) and the terminal formatters are
# imported when a run has records: this module is loaded by every pytest run in an environment
# with the plugin installed, and most of those runs collect no suite.

# Distribution -> import name. A module already imported reports the version of the code that
# actually ran (and costs nothing); the others are looked up in the installed metadata.
_PACKAGES = {"pytest-ragbench": "pytest_ragbench", "pytest": "pytest", "pytest-xdist": "xdist",
             "numpy": "numpy", "scipy": "scipy", "rank-bm25": "rank_bm25", "httpx": "httpx"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """Sortable and unique: UTC time plus random hex."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class GitCommitLookup:
    """``git rev-parse HEAD`` started now and read later, so it runs beside the cases."""

    def __init__(self, cwd: Path) -> None:
        self._value: str | None = None
        self._proc: subprocess.Popen[str] | None = None
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
        out = config.getoption("ragbench_out")
        self.out_root = (
            (config.invocation_params.dir / out) if out else config.rootpath / ".ragbench" / "runs"
        )
        self.write_files = not config.getoption("ragbench_no_output")
        self._git: GitCommitLookup | None = None

    # -- arriving results ------------------------------------------------------------------

    def _run_dir(self) -> Path:
        if self.run_dir is None:
            self.run_dir = self.out_root / self.run_id
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _point_latest(self.out_root, self.run_id)
        return self.run_dir

    def _add(self, nodeid: str, rec: dict[str, Any]) -> None:
        if nodeid in self.records:
            return
        self.records[nodeid] = rec
        if self._git is None:
            # Asked at the first result, not at start-up: runs without cases never spawn git.
            self._git = GitCommitLookup(self.config.rootpath)
        if self.write_files:
            if self._appender is None:
                self._appender = JsonlAppender(self._run_dir() / CASES_JSONL)
            self._appender.append(rec)

    def _is_case(self, nodeid: str) -> bool:
        parts = nodeid.split("::")
        return len(parts) == 3 and (
            is_suite_file(Path(parts[0]))
            or (self.config.rootpath / parts[0]).resolve() in self._explicit()
        )

    def _explicit(self) -> list[Path]:
        from .plugin import STATE_KEY

        return self.config.stash[STATE_KEY].explicit

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from .plugin import REPORT_ATTR

        rec = getattr(report, REPORT_ATTR, None)
        if isinstance(rec, dict):
            self._add(report.nodeid, rec)
        elif report.failed and report.nodeid not in self.records and self._is_case(report.nodeid):
            # The case died before producing a record (a crashed worker, a bug): keep it as an
            # error so it is counted, not lost.
            suite, retriever, case_id = report.nodeid.split("::")
            message = str(report.longrepr).strip().splitlines()
            self._add(report.nodeid, error_record(
                suite=suite, retriever=retriever, case_id=case_id,
                message=message[-1] if message else "the case failed without a record",
                stage="crash" if report.when not in ("setup", "call", "teardown")
                else report.when,
            ))

    # -- the end ---------------------------------------------------------------------------

    def _suites(self) -> dict[str, Suite | None]:
        from .plugin import STATE_KEY

        state = self.config.stash[STATE_KEY]
        out: dict[str, Suite | None] = {}
        for rec in self.records.values():
            sid = rec["suite"]
            if sid not in out:
                try:
                    out[sid] = state.load_suite(self.config.rootpath / sid)
                except (RagbenchError, OSError):
                    out[sid] = None
        return out

    def run_metadata(self, exitstatus: int) -> dict[str, Any]:
        from .plugin import STATE_KEY

        state = self.config.stash[STATE_KEY]
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
            "workers": getattr(self.config.option, "numprocesses", None),
            "exitstatus": int(exitstatus),
            "partial": int(exitstatus) == int(pytest.ExitCode.INTERRUPTED),
            "n_records": len(self.records),
        }

    def history_path(self) -> Path:
        """Where the run history is (``--ragbench-no-history`` only stops adding to it)."""
        from .history import DEFAULT_HISTORY

        opt = self.config.getoption("ragbench_history")
        if opt:
            return self.config.invocation_params.dir / opt
        return self.config.rootpath / DEFAULT_HISTORY

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.records:
            return
        from .plugin import STATE_KEY

        # Every item and fixture is done (this hook runs last): the report's document texts
        # are taken, then the indexes and datasets go before aggregating and rendering, which
        # lowers the peak memory (and, with ragbench_gc_freeze off, what collections walk).
        state = self.config.stash[STATE_KEY]
        doc_text = None
        if self.write_files:
            from .report.documents import shown_document_texts

            doc_text = shown_document_texts(self.records.values(), state.corpus)
        state.close_runtimes()
        from .aggregate import summarize_run

        suites = self._suites()
        summary = summarize_run(self.records.values(), suites)
        run = self.run_metadata(exitstatus)
        summary = jsonable({**summary, "run": run})
        failed = [g for g in summary["gates"] if not g["passed"]]
        if failed:
            from .compare import gate_failure_line

            self.failures += [gate_failure_line(g) for g in failed]

        spec = self.config.getoption("ragbench_baseline")
        extra_gates = tuple(self.config.getoption("ragbench_gate") or ())
        save_path = self.config.getoption("ragbench_save_baseline")
        add_to_history = self.write_files and not self.config.getoption("ragbench_no_history")
        # Without a baseline, command-line gates or gates stored with the suites there is
        # nothing to compare, and without a baseline to save or a history to extend the
        # per-query document is not needed: such runs skip both (and their imports).
        needs_compare = bool(spec or extra_gates
                             or any(s.get("gate_texts") for s in summary["suites"]))
        current = None
        if needs_compare or save_path or add_to_history:
            from .baseline import make_baseline

            current = make_baseline(summary, self.records.values(), run)
            if needs_compare:
                self._compare(summary, current, spec, extra_gates)
            if save_path:
                from .baseline import save_baseline

                dest = self.config.invocation_params.dir / save_path
                save_baseline(dest, current)
                self.messages.append(f"baseline saved to {dest}")
        summary["passed"] = not self.failures
        self.summary = summary

        if self.write_files:
            self._write_outputs(summary, doc_text)
            if add_to_history and current is not None:
                from .history import HistoryError, RunHistory

                try:
                    with RunHistory(self.history_path()) as h:
                        h.append(current, passed=not self.failures)
                except HistoryError as exc:
                    self.messages.append(f"ragbench: run not added to the history: {exc}")
        if self.failures and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _compare(self, summary: dict[str, Any], current: dict[str, Any], spec: Any,
                 extra_gates: tuple[str, ...]) -> None:
        """Compare this run's per-query document with the baseline (if any) and check the
        gates against it; the results go into ``summary`` and the failures."""
        from .baseline import BaselineError
        from .compare import Overrides, compare_docs
        from .history import HistoryError

        base_doc = None
        if spec:
            from .compare import load_side

            try:
                base_doc, label = load_side(str(spec), cwd=self.config.invocation_params.dir,
                                            history=self.history_path())
            except (BaselineError, HistoryError) as exc:
                self.failures.append(f"ragbench: {exc}")
            else:
                summary["baseline"] = {"path": label, "spec": str(spec),
                                       "baseline_run": base_doc.get("run", {}).get("id")}
        overrides = Overrides(tolerance=self.config.getoption("ragbench_tolerance"),
                              gates=extra_gates)
        try:
            result = jsonable(compare_docs(base_doc, current, overrides, suite_thresholds=False))
        except BaselineError as exc:
            self.failures.append(f"ragbench: {exc}")
            return
        summary["gates"] += result["gates"]
        summary["gates_passed"] = all(g["passed"] for g in summary["gates"])
        if base_doc is not None:
            self.baseline_rows = result["rows"]
            summary["baseline"].update(rows=result["rows"], suites=result["suites"])
        self.failures += result["failures"]

    def _write_outputs(self, summary: dict[str, Any],
                       doc_text: dict[str, str] | None = None) -> None:
        run_dir = self._run_dir()
        if self._appender is not None:
            self._appender.close()
        write_cases_csv(run_dir / CASES_CSV, self.records.values())
        write_json(run_dir / SUMMARY_JSON, summary)
        md = summary_markdown(summary, self.baseline_rows)
        (run_dir / SUMMARY_MD).write_text(md, encoding="utf-8")
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            with open(step_summary, "a", encoding="utf-8") as fh:
                fh.write(md + "\n")
        # "results:" first: the lines after it carry run-specific paths, and tests compare
        # the summary up to it between runs.
        self.messages.append(f"results: {run_dir}")
        self._write_html(run_dir, summary, doc_text)

    def _write_html(self, run_dir: Path, summary: dict[str, Any],
                    doc_text: dict[str, str] | None = None) -> None:
        from .history import HistoryError
        from .plugin import STATE_KEY
        from .report.html import write_html
        from .report.rerender import history_from_db, history_from_runs

        history: list[dict[str, Any]] = []
        db = self.history_path()
        try:
            history = (history_from_db(db, before=self.run_id) if db.is_file()
                       else history_from_runs(self.out_root, before=self.run_id))
        except (HistoryError, OSError, ValueError) as exc:
            self.messages.append(f"ragbench: report trends left out: {exc}")
        records = list(self.records.values())
        cache = self.config.stash[STATE_KEY].cache_dir()
        template_cache = cache / "templates" if cache is not None else None
        path = write_html(run_dir / "report.html", summary, records, history=history,
                          doc_text=doc_text, template_cache=template_cache)
        self.messages.append(f"report: {path}")
        extra = self.config.getoption("ragbench_html")
        if extra:
            dest = write_html(self.config.invocation_params.dir / extra, summary, records,
                              history=history, doc_text=doc_text,
                              template_cache=template_cache)
            self.messages.append(f"report: {dest}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        if self.summary is None:
            return
        from .report.terminal import (
            ab_lines,
            baseline_lines,
            dataset_lines,
            gate_lines,
            summary_lines,
        )

        tr.write_sep("=", "ragbench summary")
        for line in summary_lines(self.summary):
            tr.write_line(line)
        for line in ab_lines(self.summary):
            tr.write_line(line)
        if self.summary["gates"]:
            tr.write_line("gates:")
            for line in gate_lines(self.summary["gates"]):
                tr.write_line(line)
        if "baseline" in self.summary and "rows" in self.summary["baseline"]:
            tr.write_line(f"baseline {self.summary['baseline']['path']}:")
            for line in dataset_lines(self.summary["baseline"].get("suites", [])):
                tr.write_line(line)
            for line in baseline_lines(self.baseline_rows):
                tr.write_line(line)
        for line in self.messages:
            tr.write_line(line)
        for line in self.failures:
            tr.write_line(line, red=True, bold=True)

    def pytest_unconfigure(self) -> None:
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
