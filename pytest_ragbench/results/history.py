"""Run history: every run appended to a SQLite database, usable as a baseline later.

Stored per run: metadata (id, times, git commit, command line, package versions, exit status;
never environment variables), per suite its hashes, gates and baseline settings, per
(suite, retriever, metric) the mean, and every per-query score, so any past run can be
rebuilt as a baseline document (:meth:`RunHistory.baseline_doc`). The database is in WAL mode
so a reader (``ragbench history``) does not block a run that appends. Nothing here imports
pytest.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import RagbenchError
from .baseline import BASELINE_KIND, BASELINE_SCHEMA_VERSION

HISTORY_SCHEMA_VERSION = 1
DEFAULT_HISTORY = Path(".ragbench") / "history.sqlite"
# Run metadata worth keeping; anything else in the run dict is left out on purpose.
_RUN_KEYS = ("id", "started", "finished", "duration_s", "command", "git_commit", "versions",
             "workers", "exitstatus", "partial", "n_records", "n_cases", "n_cases_total",
             "verdict", "suites")
_SPARK = "_.-=+*#@"
BUSY_TIMEOUT_S = 30.0
_RETRIES = 8

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    started TEXT, finished TEXT, git_commit TEXT,
    exitstatus INTEGER, partial INTEGER NOT NULL DEFAULT 0, passed INTEGER,
    meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS suites (
    run_id TEXT NOT NULL, suite_id TEXT NOT NULL, name TEXT, suite_hash TEXT,
    dataset_hash TEXT, seed INTEGER, gates TEXT, settings TEXT, cases TEXT,
    PRIMARY KEY (run_id, suite_id)
);
CREATE TABLE IF NOT EXISTS retrievers (
    run_id TEXT NOT NULL, suite_id TEXT NOT NULL, retriever TEXT NOT NULL,
    n_cases INTEGER, n_errors INTEGER, errors TEXT,
    PRIMARY KEY (run_id, suite_id, retriever)
);
CREATE TABLE IF NOT EXISTS means (
    run_id TEXT NOT NULL, suite_id TEXT NOT NULL, retriever TEXT NOT NULL,
    metric TEXT NOT NULL, direction TEXT, mean REAL,
    PRIMARY KEY (run_id, suite_id, retriever, metric)
);
CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL, suite_id TEXT NOT NULL, retriever TEXT NOT NULL,
    metric TEXT NOT NULL, case_id TEXT NOT NULL, value REAL,
    PRIMARY KEY (run_id, suite_id, retriever, metric, case_id)
);
CREATE INDEX IF NOT EXISTS means_metric ON means (metric, suite_id);
"""


class HistoryError(RagbenchError):
    """The history database is missing, unreadable, or has no such run."""


def _why(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"not a SQLite database: {text}"
    return text


@dataclass(frozen=True)
class RunInfo:
    """One row of the run list."""

    seq: int
    id: str
    started: str | None
    git_commit: str | None
    passed: bool | None
    partial: bool


def sparkline(values: Sequence[float | None]) -> str:
    """An ASCII sparkline (``_`` lowest ... ``@`` highest; a space for a missing value)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return " " * len(values)
    lo, hi = min(finite), max(finite)
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif hi == lo:
            out.append(_SPARK[len(_SPARK) // 2])
        else:
            out.append(_SPARK[round((v - lo) / (hi - lo) * (len(_SPARK) - 1))])
    return "".join(out)


class RunHistory:
    """The run history database; use as a context manager."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise HistoryError(f"{self.path}: is a folder, expected a run history file "
                               "(SQLite)")
        try:
            if readonly:
                if not self.path.is_file():
                    raise HistoryError(f"no run history at {self.path}")
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                            timeout=BUSY_TIMEOUT_S)
                self._check_schema()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Autocommit mode: every transaction below is opened explicitly, IMMEDIATE,
                # so that two runs creating the file at the same moment queue on the write
                # lock (busy_timeout) instead of one failing half-way through the schema.
                self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S,
                                            isolation_level=None)
                self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                self._retry(self._create)
        except sqlite3.Error as exc:
            self._close_quietly()
            raise HistoryError(f"{self.path}: cannot open the run history ({_why(exc)})"
                               ) from None
        except OSError as exc:
            raise HistoryError(f"{self.path}: cannot open the run history ({exc})") from None
        except HistoryError:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()

    def _retry(self, action: Callable[[], Any]) -> Any:
        """Run a write transaction, again when another process held the lock past the busy
        timeout (WAL mode switches and schema creation can report "locked" at once)."""
        for attempt in range(_RETRIES):
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                if attempt == _RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return None

    def _create(self) -> None:
        tables = {str(n) for (n,) in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            raise HistoryError(f"{self.path}: not a ragbench run history (a SQLite database "
                               "with other tables); pass another --ragbench-history")
        # journal_mode cannot change inside a transaction; once WAL, it stays WAL.
        if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                              (str(HISTORY_SCHEMA_VERSION),))
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        self._check_schema()

    def _check_schema(self) -> None:
        try:
            tables = {str(n) for (n,) in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                # A file another run has just created and not yet filled: empty, not broken.
                return
            rows = self.conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"{self.path}: not a ragbench run history ({_why(exc)})"
                               ) from None
        version = rows[0][0] if rows else None
        if version != str(HISTORY_SCHEMA_VERSION):
            raise HistoryError(f"{self.path}: run history schema version {version!r} is not "
                               f"supported (this version reads {HISTORY_SCHEMA_VERSION})")

    def __enter__(self) -> RunHistory:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: cannot read the run history ({exc})") from None

    # -- writing -----------------------------------------------------------------------------

    def append(self, doc: Mapping[str, Any], *, passed: bool | None = None) -> str:
        """Store a run given as a baseline document; returns its run id."""
        run = doc.get("run", {})
        run_id = str(run.get("id"))
        meta = {k: run[k] for k in _RUN_KEYS if k in run}
        try:
            self._retry(lambda: self._insert(doc, run_id, run, meta, passed))
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: cannot write the run history ({_why(exc)})"
                               ) from None
        return run_id

    def _insert(self, doc: Mapping[str, Any], run_id: str, run: Mapping[str, Any],
                meta: Mapping[str, Any], passed: bool | None) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(
                "INSERT OR REPLACE INTO runs (id, started, finished, git_commit, exitstatus, "
                "partial, passed, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, run.get("started"), run.get("finished"), run.get("git_commit"),
                 run.get("exitstatus"), int(bool(run.get("partial"))),
                 None if passed is None else int(passed), json.dumps(meta, sort_keys=True)))
            for sid, s in doc["suites"].items():
                self.conn.execute(
                    "INSERT OR REPLACE INTO suites VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, sid, s.get("name"), s.get("suite_hash"), s.get("dataset_hash"),
                     s.get("seed", 0), json.dumps(s.get("gates", [])),
                     json.dumps(s.get("baseline_settings", {})), json.dumps(s.get("cases", {}))))
                for rname, r in s["retrievers"].items():
                    self.conn.execute(
                        "INSERT OR REPLACE INTO retrievers VALUES (?, ?, ?, ?, ?, ?)",
                        (run_id, sid, rname, r.get("n_cases"), r.get("n_errors"),
                         json.dumps(r.get("errors", []))))
                    for metric, st in r["metrics"].items():
                        self.conn.execute(
                            "INSERT OR REPLACE INTO means VALUES (?, ?, ?, ?, ?, ?)",
                            (run_id, sid, rname, metric, st.get("direction"), st.get("mean")))
                        self.conn.executemany(
                            "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?)",
                            [(run_id, sid, rname, metric, cid, v)
                             for cid, v in st.get("scores", {}).items()])
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise

    # -- reading -----------------------------------------------------------------------------

    def runs(self, suite: str | None = None, limit: int | None = None) -> list[RunInfo]:
        """Runs, oldest first; with ``suite`` (id or name), only runs that ran it."""
        sql = "SELECT seq, id, started, git_commit, passed, partial FROM runs"
        args: list[Any] = []
        if suite:
            sql += (" WHERE id IN (SELECT run_id FROM suites WHERE suite_id = ? OR name = ?)")
            args += [suite, suite]
        sql += " ORDER BY seq DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        rows = self._query(sql, args)
        return [RunInfo(seq, rid, started, commit, None if passed is None else bool(passed),
                        bool(partial))
                for seq, rid, started, commit, passed, partial in reversed(rows)]

    def verdict_text(self, info: RunInfo) -> str:
        """The run's verdict as the run itself printed it: ``passed``, ``FAILED``, with
        ``(partial: N of M cases)`` for a partial run."""
        from .verdict import headline

        if info.passed is None:
            word = "-"
            return f"{word} (partial)" if info.partial else word
        n, total = self._coverage(info.id)
        if info.partial and n is not None and total is not None:
            return headline(info.passed, True, n, total)
        return ("passed" if info.passed else "FAILED") + (" (partial)" if info.partial else "")

    def _coverage(self, run_id: str) -> tuple[int | None, int | None]:
        rows = self._query("SELECT meta FROM runs WHERE id = ?", (run_id,))
        try:
            meta = json.loads(rows[0][0]) if rows else {}
        except json.JSONDecodeError:
            return None, None
        n, total = meta.get("n_cases"), meta.get("n_cases_total")
        return (int(n), int(total)) if isinstance(n, int) and isinstance(total, int) else (
            None, None)

    def metrics(self, suite: str | None = None) -> list[str]:
        sql = "SELECT DISTINCT metric FROM means"
        args: list[Any] = []
        if suite:
            sql += (" WHERE suite_id IN (SELECT suite_id FROM suites WHERE suite_id = ? "
                    "OR name = ?)")
            args += [suite, suite]
        return [m for (m,) in self._query(sql + " ORDER BY metric", args)]

    def means(self, metric: str, suite: str | None = None,
              ) -> dict[tuple[str, str], dict[str, float | None]]:
        """``{(suite name, retriever): {run id: mean}}`` for one metric."""
        sql = ("SELECT s.name, m.retriever, m.run_id, m.mean FROM means m JOIN suites s "
               "ON s.run_id = m.run_id AND s.suite_id = m.suite_id WHERE m.metric = ?")
        args: list[Any] = [metric]
        if suite:
            sql += " AND (s.suite_id = ? OR s.name = ?)"
            args += [suite, suite]
        out: dict[tuple[str, str], dict[str, float | None]] = {}
        for name, retriever, run_id, mean in self._query(sql, args):
            out.setdefault((name, retriever), {})[run_id] = mean
        return dict(sorted(out.items()))

    def resolve(self, spec: str) -> str:
        """``last`` (newest complete run), ``best`` or a run id (a unique prefix is enough).

        ``best`` is the complete run with the best mean of the first metric of its first
        suite, averaged over retrievers (in that metric's better direction).
        """
        complete = [r for r in self.runs() if not r.partial]
        if spec == "last":
            if not complete:
                raise HistoryError(f"{self.path}: the run history has no complete run yet")
            return complete[-1].id
        if spec == "best":
            return self._best(complete)
        matches = [rid for (rid,) in self._query("SELECT id FROM runs WHERE id LIKE ? "
                                                 "ORDER BY seq", (spec.replace("%", "") + "%",))]
        if spec in matches:
            return spec
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise HistoryError(f"{self.path}: no run {spec!r} in the run history "
                               "(expected 'last', 'best' or a run id; see 'ragbench history')")
        raise HistoryError(f"{self.path}: run id prefix {spec!r} is ambiguous "
                           f"({len(matches)} runs)")

    def _best(self, complete: Sequence[RunInfo]) -> str:
        best: tuple[float, int, str] | None = None
        for info in complete:
            rows = self._query(
                "SELECT m.metric, m.direction, m.mean FROM means m WHERE m.run_id = ? "
                "AND m.suite_id = (SELECT MIN(suite_id) FROM suites WHERE run_id = ?) "
                "ORDER BY m.rowid", (info.id, info.id))
            if not rows:
                continue
            metric, direction = rows[0][0], rows[0][1]
            vals = [v for m, _, v in rows if m == metric and v is not None]
            if not vals:
                continue
            score = sum(vals) / len(vals) * (-1.0 if direction == "lower" else 1.0)
            key = (score, info.seq, info.id)
            if best is None or key > best:
                best = key
        if best is None:
            raise HistoryError(f"{self.path}: the run history has no complete run with means")
        return best[2]

    def baseline_doc(self, spec: str) -> dict[str, Any]:
        """Rebuild a stored run as a baseline document (:mod:`pytest_ragbench.results.baseline`)."""
        run_id = self.resolve(spec)
        run = self._run_meta(run_id)
        return {"schema_version": BASELINE_SCHEMA_VERSION, "kind": BASELINE_KIND,
                "created": run.get("finished") or run.get("started"), "run": run,
                "suites": self._suite_entries(run_id)}

    def _run_meta(self, run_id: str) -> dict[str, Any]:
        rows = self._query("SELECT meta, passed, partial FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise HistoryError(f"{self.path}: no run {run_id!r} in the run history")
        meta, passed, partial = rows[0]
        try:
            run = json.loads(meta)
        except json.JSONDecodeError:
            raise HistoryError(f"{self.path}: run {run_id!r} has unreadable metadata") from None
        run["passed"] = None if passed is None else bool(passed)
        run["partial"] = bool(partial)
        return dict(run)

    def _suite_entries(self, run_id: str, only: set[str] | None = None) -> dict[str, Any]:
        """The baseline-document ``suites`` of one stored run (``only``: these suite ids)."""
        suites: dict[str, Any] = {}
        try:
            for sid, name, sh, dh, seed, gates, settings, cases in self._query(
                "SELECT suite_id, name, suite_hash, dataset_hash, seed, gates, settings, "
                "cases FROM suites WHERE run_id = ? ORDER BY suite_id", (run_id,)
            ):
                if only is None or sid in only:
                    suites[sid] = {
                        "name": name, "suite_hash": sh, "dataset_hash": dh, "seed": seed,
                        "gates": json.loads(gates), "baseline_settings": json.loads(settings),
                        "cases": json.loads(cases), "retrievers": {}}
            for sid, rname, n_cases, n_errors, errors in self._query(
                "SELECT suite_id, retriever, n_cases, n_errors, errors FROM retrievers "
                "WHERE run_id = ? ORDER BY rowid", (run_id,)
            ):
                if sid in suites:
                    suites[sid]["retrievers"][rname] = {
                        "n_cases": n_cases, "n_errors": n_errors,
                        "errors": json.loads(errors), "metrics": {}}
            for sid, rname, metric, direction, mean in self._query(
                "SELECT suite_id, retriever, metric, direction, mean FROM means "
                "WHERE run_id = ? ORDER BY rowid", (run_id,)
            ):
                if sid in suites:
                    suites[sid]["retrievers"][rname]["metrics"][metric] = {
                        "mean": mean, "direction": direction, "scores": {}}
            for sid, rname, metric, cid, value in self._query(
                "SELECT suite_id, retriever, metric, case_id, value FROM scores "
                "WHERE run_id = ? ORDER BY suite_id, retriever, metric, case_id", (run_id,)
            ):
                if sid in suites:
                    suites[sid]["retrievers"][rname]["metrics"][metric]["scores"][cid] = value
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise HistoryError(f"{self.path}: run {run_id!r} is stored inconsistently "
                               f"({type(exc).__name__}: {exc})") from None
        return suites

    def suite_names(self) -> list[str]:
        """Names of every suite a complete run holds."""
        return sorted({str(n) for (n,) in self._query(
            "SELECT DISTINCT s.name FROM suites s JOIN runs r ON r.id = s.run_id "
            "WHERE r.partial = 0")})

    def _suite_runs(self, name: str) -> list[tuple[int, str, str]]:
        """(seq, run id, suite id) of the complete runs holding a suite named ``name``,
        oldest first."""
        rows = self._query(
            "SELECT r.seq, r.id, s.suite_id FROM runs r JOIN suites s ON s.run_id = r.id "
            "WHERE r.partial = 0 AND s.name = ? ORDER BY r.seq, s.suite_id", (name,))
        return [(int(seq), str(rid), str(sid)) for seq, rid, sid in rows]

    def _suite_score(self, run_id: str, suite_id: str) -> float | None:
        """The suite's first metric averaged over its retrievers, better = larger."""
        rows = self._query(
            "SELECT metric, direction, mean FROM means WHERE run_id = ? AND suite_id = ? "
            "ORDER BY rowid", (run_id, suite_id))
        if not rows:
            return None
        metric, direction = rows[0][0], rows[0][1]
        vals = [float(v) for m, _, v in rows if m == metric and v is not None]
        if not vals:
            return None
        return sum(vals) / len(vals) * (-1.0 if direction == "lower" else 1.0)

    def resolve_suite(self, spec: str, name: str) -> tuple[str, str] | None:
        """(run id, suite id) that ``last`` or ``best`` means for the suite named ``name``:
        the newest complete run holding it, or the complete run where its first metric
        (averaged over retrievers) is best; None when no complete run holds it."""
        candidates = self._suite_runs(name)
        if not candidates:
            return None
        if spec == "last":
            _, rid, sid = candidates[-1]
            return rid, sid
        best: tuple[float, int, str, str] | None = None
        for seq, rid, sid in candidates:
            score = self._suite_score(rid, sid)
            if score is not None and (best is None or (score, seq) > best[:2]):
                best = (score, seq, rid, sid)
        return None if best is None else (best[2], best[3])

    def per_suite_doc(self, spec: str, names: Sequence[str] | None = None) -> dict[str, Any]:
        """``last`` or ``best`` resolved per suite: a baseline document holding, for each
        suite name (``names``, else every name in the history), that suite from the run
        ``spec`` picks for it. Partial runs are never picked. Each suite records its
        ``run_id``; ``run.runs`` maps suite names to run ids."""
        wanted = list(dict.fromkeys(names)) if names is not None else self.suite_names()
        suites: dict[str, Any] = {}
        runs: dict[str, str] = {}
        for name in wanted:
            found = self.resolve_suite(spec, name)
            if found is None:
                continue
            rid, sid = found
            entry = self._suite_entries(rid, {sid}).get(sid)
            if entry is None:
                continue
            key = sid if sid not in suites else f"{sid}@{rid}"
            suites[key] = {**entry, "run_id": rid}
            runs[name] = rid
        ids = sorted(set(runs.values()))
        run: dict[str, Any] = {"id": ids[0] if len(ids) == 1 else None, "spec": spec,
                               "runs": runs}
        return {"schema_version": BASELINE_SCHEMA_VERSION, "kind": BASELINE_KIND,
                "created": None, "run": run, "suites": suites}

    def has_complete_run(self) -> bool:
        return bool(self._query("SELECT 1 FROM runs WHERE partial = 0 LIMIT 1"))


def history_lines(history: RunHistory, *, metric: str | None = None, suite: str | None = None,
                  limit: int = 20) -> list[str]:
    """The ``ragbench history`` text: recent runs, then a trend per (suite, retriever)."""
    runs = history.runs(suite=suite, limit=limit)
    if not runs:
        return [f"no runs in {history.path}" + (f" for suite {suite!r}" if suite else "")]
    metrics = history.metrics(suite)
    metric = metric or (metrics[0] if metrics else None)
    lines = [f"{'#':>4}  {'run id':<24}  {'started':<25}  {'commit':<8}  verdict"]
    for r in runs:
        lines.append(f"{r.seq:>4}  {r.id:<24}  {r.started or '-':<25}  "
                     f"{(r.git_commit or '-')[:8]:<8}  {history.verdict_text(r)}")
    if metric is None:
        return lines
    if metric not in metrics:
        return [*lines, f"metric {metric!r} is not in the history (known: {', '.join(metrics)})"]
    # A partial run's means cover only the cases it ran: listed above, never in a trend.
    runs = [r for r in runs if not r.partial]
    lines += ["", f"trend of {metric} over the last {len(runs)} complete runs (oldest first):"]
    series = history.means(metric, suite)
    width = max([len("suite/retriever"), *(len(f"{s}/{r}") for s, r in series)])
    lines.append(f"  {'suite/retriever':<{width}}  {'first':>8}  {'last':>8}  {'delta':>8}  "
                 "trend")
    for (sname, retriever), by_run in series.items():
        values = [by_run.get(r.id) for r in runs]
        present = [v for v in values if v is not None]
        if not present:
            continue
        first, last = present[0], present[-1]
        lines.append(f"  {f'{sname}/{retriever}':<{width}}  {first:>8.4f}  {last:>8.4f}  "
                     f"{last - first:>+8.4f}  {sparkline(values)}")
    return lines
