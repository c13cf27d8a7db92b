"""Run history: every run appended to a SQLite database, usable as a baseline later.

Stored per run: metadata (id, times, git commit, command line, package versions, exit status,
the case counts of its partial suites and their systems; never environment variables), per
suite its hashes, gates and baseline settings, per
(suite, retriever, metric) the mean, and every per-query score, so any past run can be
rebuilt as a baseline document (:meth:`RunHistory.baseline_doc`). The database is in WAL mode
so a reader (``ragbench history``) does not block a run that appends. Nothing here imports
pytest.

Each run has a number (the ``#`` of ``ragbench history``, the ``runs.seq`` column): an
AUTOINCREMENT key, so numbers grow with each run stored and a number freed by pruning is never
given to another run; storing a run id again (a resumed run) keeps its number. Anything that
takes a run reference accepts the number (:func:`run_number`, :meth:`RunHistory.resolve`).
The ``refs`` table records, per run, the runs it was compared against and the baseline file
it was saved to: what pruning must keep (:mod:`pytest_ragbench.results.retention`).
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import RagbenchError
from .baseline import BASELINE_KIND, BASELINE_SCHEMA_VERSION
from .runfolder import DEFAULT_HISTORY, ignore_folder  # noqa: F401  (DEFAULT_HISTORY re-exported)

HISTORY_SCHEMA_VERSION = 1
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
CREATE TABLE IF NOT EXISTS refs (
    run_id TEXT NOT NULL, target TEXT, path TEXT
);
CREATE INDEX IF NOT EXISTS means_metric ON means (metric, suite_id);
"""
# Tables holding rows of one run, keyed by its id (``runs`` itself is keyed by ``id``).
_RUN_TABLES = ("suites", "retrievers", "means", "scores", "refs")
_MAX_NUMBER = 2 ** 63 - 1


class HistoryError(RagbenchError):
    """The history database is missing, unreadable, or has no such run."""


def _why(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"not a SQLite database: {text}"
    return text


#: The run metadata key of the case counts of its partial suites and their systems.
_COVERAGE_KEY = "suite_coverage"


def _suite_coverage(suites: Mapping[str, Any]) -> dict[str, Any]:
    """``{suite id: {"n_cases_run", "n_cases_total", "systems": {name: coverage},
    "all_systems": [name], "directions": {metric: direction}}}`` of a baseline document's
    partial suites: what a comparison of the run labels its gates with ("on 2 of 5 cases
    that ran"), as it does the run folder's, the systems whose gates it lists as not judged
    and, of a suite none of whose cases ran, its metrics."""
    out: dict[str, Any] = {}
    for sid, s in suites.items():
        if not isinstance(s, Mapping) or not isinstance(s.get("n_cases_total"), int):
            continue
        systems = {str(name): r["coverage"] for name, r in (s.get("retrievers") or {}).items()
                   if isinstance(r, Mapping) and "coverage" in r}
        out[str(sid)] = {"n_cases_run": s.get("n_cases_run"),
                         "n_cases_total": s["n_cases_total"], "systems": systems}
        if isinstance(s.get("systems"), list):
            # every system of the suite, those that ran no case too (their gates are
            # listed as not judged)
            out[str(sid)]["all_systems"] = [str(name) for name in s["systems"]]
        if isinstance(s.get("directions"), Mapping):
            # none of its cases ran: its metrics, which no system carries (its gates are
            # read with them)
            out[str(sid)]["directions"] = {str(m): str(d) for m, d in s["directions"].items()}
    return out


def _held_text(numbers: Sequence[int]) -> str:
    """Which run numbers a history holds, for an error naming one it does not: a range only
    when none is missing in it (retention removes old runs; '2 runs, numbered 1 to 5' read
    as if 2 to 4 were there)."""
    if not numbers:
        return "it holds no run yet"
    if len(numbers) == 1:
        return f"it holds run {numbers[0]}"
    lo, hi = numbers[0], numbers[-1]
    if hi - lo + 1 == len(numbers):
        return f"it holds {len(numbers)} runs, numbered {lo} to {hi}"
    if len(numbers) <= 10:
        listed = ", ".join(map(str, numbers[:-1]))
        return f"it holds {len(numbers)} runs, numbered {listed} and {hi}"
    return f"it holds {len(numbers)} runs, numbered from {lo} to {hi} with gaps"


def _meta_int(meta: str | None, key: str) -> int | None:
    try:
        value = json.loads(meta or "{}").get(key)
    except (json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class RunInfo:
    """One row of the run list. ``seq`` is the run's number, the ``#`` of ``ragbench
    history``: given in order of arrival, kept by the run for good, never reused."""

    seq: int
    id: str
    started: str | None
    git_commit: str | None
    passed: bool | None
    partial: bool
    suites: tuple[str, ...] = ()
    n_cases: int | None = None


def run_number(spec: str) -> int | None:
    """The run number a reference such as ``3`` (or ``#3``) gives, else None.

    A reference of digits only is always a number, never the prefix of a run id (run ids
    start with their date, e.g. ``20250312T``, so a prefix that goes past the ``T`` is
    still one)."""
    text = spec.strip()
    text = text[1:] if text.startswith("#") else text
    return int(text) if text.isascii() and text.isdigit() else None


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
                if not self._tables():
                    # a file another run has just created and not yet filled (or a touched
                    # one): a history of no runs, as its writer takes it, where every read
                    # said 'cannot read the run history (no such table: runs)'
                    self.conn.close()
                    self.conn = sqlite3.connect(":memory:")
                    self.conn.executescript(_SCHEMA)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                ignore_folder(self.path.parent)
                try:
                    new = self.path.stat().st_size == 0
                except OSError:  # not there yet
                    new = True
                # Autocommit mode: every transaction below is opened explicitly, IMMEDIATE,
                # so that two runs creating the file at the same moment queue on the write
                # lock (busy_timeout) instead of one failing half-way through the schema.
                self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S,
                                            isolation_level=None)
                self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                # In WAL mode NORMAL still keeps the file consistent after a crash; only a
                # power loss can drop the last run appended. FULL waits for the disk at every
                # commit (milliseconds each, several per pytest run), as the response cache
                # (llm/cache.py) decided too.
                # A new file holds no run until the first append: a power loss while it is
                # made (the switch to WAL, the schema) can lose nothing, so that does not
                # wait for the disk either (three more fsyncs, most of what a first run pays).
                self.conn.execute(f"PRAGMA synchronous = {'OFF' if new else 'NORMAL'}")
                self._retry(self._create)
                if new:
                    self.conn.execute("PRAGMA synchronous = NORMAL")
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

    def _tables(self) -> set[str]:
        return {str(n) for (n,) in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _check_schema(self) -> None:
        try:
            tables = self._tables()
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

    def append(self, doc: Mapping[str, Any], *, passed: bool | None = None,
               compared_with: Iterable[str] = (), saved_to: Path | None = None) -> str:
        """Store a run given as a baseline document; returns its run id.

        ``compared_with``: the ids of the runs this run was compared against (its baseline);
        ``saved_to``: the baseline file this run was saved to. Both keep those runs from
        being pruned (:mod:`pytest_ragbench.results.retention`). Appending a run id that is
        already stored replaces that run's rows but keeps its number.
        """
        run = doc.get("run", {})
        run_id = str(run.get("id"))
        meta = {k: run[k] for k in _RUN_KEYS if k in run}
        coverage = _suite_coverage(doc.get("suites") or {})
        if coverage:
            # in the run's metadata, not columns of its suites: a history an older version
            # also writes to keeps its tables
            meta[_COVERAGE_KEY] = coverage
        refs = [(run_id, str(t), None) for t in dict.fromkeys(compared_with) if t != run_id]
        if saved_to is not None:
            refs.append((run_id, None, str(Path(saved_to).resolve())))
        try:
            self._retry(lambda: self._insert(doc, run_id, run, meta, passed, refs))
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: cannot write the run history ({_why(exc)})"
                               ) from None
        return run_id

    def _insert(self, doc: Mapping[str, Any], run_id: str, run: Mapping[str, Any],
                meta: Mapping[str, Any], passed: bool | None,
                refs: Sequence[tuple[str, str | None, str | None]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            # Update, else insert (not INSERT OR REPLACE, nor an upsert, which both use up a
            # number): a stored run keeps its number, what users pass as a run reference.
            values = (run.get("started"), run.get("finished"), run.get("git_commit"),
                      run.get("exitstatus"), int(bool(run.get("partial"))),
                      None if passed is None else int(passed), json.dumps(meta, sort_keys=True))
            if not self.conn.execute(
                    "UPDATE runs SET started = ?, finished = ?, git_commit = ?, exitstatus = ?, "
                    "partial = ?, passed = ?, meta = ? WHERE id = ?", (*values, run_id)
            ).rowcount:
                self.conn.execute(
                    "INSERT INTO runs (id, started, finished, git_commit, exitstatus, partial, "
                    "passed, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (run_id, *values))
            for table in _RUN_TABLES:
                self.conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            self.conn.executemany("INSERT INTO refs VALUES (?, ?, ?)", refs)
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

    def delete_runs(self, run_ids: Iterable[str]) -> int:
        """Delete these runs and every row they hold, in one transaction; returns how many
        runs there were. Their numbers are never given to another run (AUTOINCREMENT)."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return 0

        def delete() -> int:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                n = 0
                for rid in ids:
                    n += self.conn.execute("DELETE FROM runs WHERE id = ?", (rid,)).rowcount
                    for table in _RUN_TABLES:
                        self.conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (rid,))
                self.conn.execute("COMMIT")
                return n
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                raise

        try:
            return int(self._retry(delete))
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: cannot delete runs from the run history "
                               f"({_why(exc)})") from None

    def vacuum(self) -> None:
        """Give the space of deleted rows back to the file system (SQLite otherwise keeps the
        free pages and reuses them for later runs, so the file does not grow, nor shrink)."""
        try:
            self._retry(lambda: self.conn.execute("VACUUM"))
            # In WAL mode VACUUM writes the compacted database into the write-ahead log:
            # move it into the file and empty the log, or the history looks bigger after.
            self._retry(lambda: self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: cannot compact the run history ({_why(exc)})"
                               ) from None

    # -- reading -----------------------------------------------------------------------------

    def runs(self, suite: str | None = None, limit: int | None = None) -> list[RunInfo]:
        """Runs, oldest first; with ``suite`` (id or name), only runs that ran it, and their
        case counts are that suite's."""
        sql = "SELECT seq, id, started, git_commit, passed, partial, meta FROM runs"
        args: list[Any] = []
        if suite:
            sql += (" WHERE id IN (SELECT run_id FROM suites WHERE suite_id = ? OR name = ?)")
            args += [suite, suite]
        sql += " ORDER BY seq DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        rows = list(reversed(self._query(sql, args)))
        names: dict[str, list[str]] = {}
        cases: dict[str, int] = {}
        ids = [str(row[1]) for row in rows]
        for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
            marks = ", ".join("?" * len(chunk))
            for rid, name in self._query(
                    f"SELECT run_id, name FROM suites WHERE run_id IN ({marks}) "
                    "ORDER BY name, suite_id", chunk):
                names.setdefault(str(rid), []).append(str(name))
            if suite:
                for rid, n in self._query(
                        "SELECT r.run_id, SUM(r.n_cases) FROM retrievers r JOIN suites s "
                        "ON s.run_id = r.run_id AND s.suite_id = r.suite_id "
                        f"WHERE r.run_id IN ({marks}) AND (s.suite_id = ? OR s.name = ?) "
                        "GROUP BY r.run_id", [*chunk, suite, suite]):
                    if n is not None:
                        cases[str(rid)] = int(n)
        out = []
        for seq, rid, started, commit, passed, partial, meta in rows:
            n_cases = cases.get(rid) if suite else _meta_int(meta, "n_cases")
            out.append(RunInfo(seq, rid, started, commit,
                               None if passed is None else bool(passed), bool(partial),
                               tuple(dict.fromkeys(names.get(rid, []))), n_cases))
        return out

    def run_by_number(self, number: int) -> str:
        """The id of the run with this number; HistoryError naming the numbers there are."""
        rows = (self._query("SELECT id FROM runs WHERE seq = ?", (number,))
                if 0 < number <= _MAX_NUMBER else [])
        if rows:
            return str(rows[0][0])
        numbers = [int(n) for n, in self._query("SELECT seq FROM runs ORDER BY seq")]
        raise HistoryError(f"{self.path}: no run number {number} in the run history "
                           f"({_held_text(numbers)}; 'ragbench history' lists them)")

    def number_of(self, run_id: str) -> int | None:
        """The number of the run with this id (None when the history does not hold it)."""
        rows = self._query("SELECT seq FROM runs WHERE id = ?", (run_id,))
        return int(rows[0][0]) if rows else None

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
        """``{(suite, retriever): {run id: mean}}`` for one metric; the suite is its name, or
        ``name [suite id]`` for each of several suite files sharing a name."""
        return {(name if sid is None else f"{name} [{sid}]", retriever): per_run
                for (name, sid, retriever), per_run in self.file_means(metric, suite).items()}

    def file_means(self, metric: str, suite: str | None = None,
                   ) -> dict[tuple[str, str | None, str], dict[str, float | None]]:
        """``{(suite name, suite id, retriever): {run id: mean}}`` for one metric. A suite is
        followed by its name, so a file that moved keeps its trend (the id is None); the id
        tells apart the files of a name that some run held two or more of, which are
        different suites (a name shared for a common baseline identity)."""
        sql = ("SELECT s.name, s.suite_id, m.retriever, m.run_id, m.mean FROM means m JOIN "
               "suites s ON s.run_id = m.run_id AND s.suite_id = m.suite_id WHERE m.metric = ?")
        args: list[Any] = [metric]
        if suite:
            sql += " AND (s.suite_id = ? OR s.name = ?)"
            args += [suite, suite]
        shared = self.shared_names()
        out: dict[tuple[str, str | None, str], dict[str, float | None]] = {}
        for name, sid, retriever, run_id, mean in self._query(sql, args):
            key = (str(name), str(sid) if name in shared else None, str(retriever))
            out.setdefault(key, {})[run_id] = mean
        return dict(sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2])))

    def shared_names(self) -> set[str]:
        """The suite names that some run held two or more suite files of."""
        return {str(n) for (n,) in self._query(
            "SELECT DISTINCT name FROM suites GROUP BY run_id, name HAVING COUNT(*) > 1")}

    def resolve(self, spec: str) -> str:
        """``last`` (newest complete run), ``best``, a run number (``3``, as ``ragbench
        history`` shows it) or a run id (a unique prefix is enough); returns the run id.

        ``best`` is the complete run with the best mean of the first metric of its first
        suite, averaged over retrievers (in that metric's better direction).
        """
        number = run_number(spec)
        if number is not None:
            return self.run_by_number(number)
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
                               "(expected 'last', 'best', a run number or a run id; see "
                               "'ragbench history')")
        raise HistoryError(f"{self.path}: run id prefix {spec!r} is ambiguous "
                           f"({len(matches)} runs)")

    def _best(self, complete: Sequence[RunInfo]) -> str:
        def means(info: RunInfo) -> list[tuple[Any, Any, Any]]:
            return self._query(
                "SELECT m.metric, m.direction, m.mean FROM means m WHERE m.run_id = ? "
                "AND m.suite_id = (SELECT MIN(suite_id) FROM suites WHERE run_id = ?) "
                "ORDER BY m.rowid", (info.id, info.id))

        # one metric for every run (the newest run's first), as per suite
        newest = next((rows for info in sorted(complete, key=lambda i: -i.seq)
                       if (rows := means(info))), None)
        metric = newest[0][0] if newest else None
        best: tuple[float, int, str] | None = None
        for info in complete:
            rows = [r for r in means(info) if r[0] == metric]
            if not rows:
                continue
            direction = rows[0][1]
            vals = [v for _, _, v in rows if v is not None]
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
        run.pop(_COVERAGE_KEY, None)  # the suites' own (_suite_entries)
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
            self._add_coverage(run_id, suites)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise HistoryError(f"{self.path}: run {run_id!r} is stored inconsistently "
                               f"({type(exc).__name__}: {exc})") from None
        return suites

    def _add_coverage(self, run_id: str, suites: dict[str, Any]) -> None:
        """Put back the case counts of a run's partial suites and their systems, as its
        baseline document held them (:func:`_suite_coverage`)."""
        rows = self._query("SELECT meta FROM runs WHERE id = ?", (run_id,))
        try:
            meta = json.loads(rows[0][0]) if rows else {}
        except json.JSONDecodeError:
            return
        coverage = meta.get(_COVERAGE_KEY) if isinstance(meta, dict) else None
        if not isinstance(coverage, dict):
            return
        for sid, counts in coverage.items():
            suite = suites.get(sid)
            if suite is None or not isinstance(counts, dict) \
                    or not isinstance(counts.get("n_cases_total"), int):
                continue
            suite.update(n_cases_run=counts.get("n_cases_run"),
                         n_cases_total=counts["n_cases_total"])
            for name, cov in (counts.get("systems") or {}).items():
                if name in suite["retrievers"]:
                    suite["retrievers"][name]["coverage"] = cov
            if isinstance(counts.get("all_systems"), list):
                suite["systems"] = [str(name) for name in counts["all_systems"]]
            if isinstance(counts.get("directions"), dict):
                suite["directions"] = {str(m): str(d) for m, d in counts["directions"].items()}

    def suite_names(self) -> list[str]:
        """Names of every suite a complete run holds."""
        return sorted({str(n) for (n,) in self._query(
            "SELECT DISTINCT s.name FROM suites s JOIN runs r ON r.id = s.run_id "
            "WHERE r.partial = 0")})

    def suite_ids(self, name: str) -> list[str]:
        """The suite files (ids) complete runs hold under the name ``name``."""
        return [str(sid) for (sid,) in self._query(
            "SELECT DISTINCT s.suite_id FROM suites s JOIN runs r ON r.id = s.run_id "
            "WHERE r.partial = 0 AND s.name = ? ORDER BY s.suite_id", (name,))]

    def _suite_runs(self, name: str) -> list[tuple[int, str, str]]:
        """(seq, run id, suite id) of the complete runs holding a suite named ``name``,
        oldest first."""
        rows = self._query(
            "SELECT r.seq, r.id, s.suite_id FROM runs r JOIN suites s ON s.run_id = r.id "
            "WHERE r.partial = 0 AND s.name = ? ORDER BY r.seq, s.suite_id", (name,))
        return [(int(seq), str(rid), str(sid)) for seq, rid, sid in rows]

    def _suite_score(self, run_id: str, suite_id: str, metric: str) -> float | None:
        """``metric`` of the suite averaged over its retrievers, better = larger (None: the
        run did not measure it)."""
        rows = self._query(
            "SELECT direction, mean FROM means WHERE run_id = ? AND suite_id = ? "
            "AND metric = ? ORDER BY rowid", (run_id, suite_id, metric))
        vals = [float(v) for _, v in rows if v is not None]
        if not vals:
            return None
        return sum(vals) / len(vals) * (-1.0 if rows[0][0] == "lower" else 1.0)

    def resolve_suites(self, spec: str, name: str) -> list[tuple[str, str]]:
        """(run id, suite id) pairs ``last`` or ``best`` means for the suite named ``name``:
        :meth:`resolve_suite`'s, then for each other suite file of that name that some run
        held beside it (two files sharing a name, not a file moved), its own; a run may hold
        only one of them, and each file is compared with its own baseline."""
        found = self.resolve_suite(spec, name)
        if found is None:
            return []
        candidates = self._suite_runs(name)
        held: dict[str, set[str]] = {}
        for _, rid, sid in candidates:
            held.setdefault(rid, set()).add(sid)
        siblings = sorted({s for sids in held.values() if found[1] in sids for s in sids}
                          - {found[1]})
        out = [found]
        for sib in siblings:
            own = self.resolve_suite(spec, name, only=sib)
            if own is not None:
                out.append(own)
        return out

    def resolve_suite(self, spec: str, name: str,
                      only: str | None = None) -> tuple[str, str] | None:
        """(run id, suite id) that ``last`` or ``best`` means for the suite named ``name``
        (``only``: that suite file of the name): the newest complete run holding it, or the
        complete run where the suite's first metric (as its newest run lists them; averaged
        over retrievers) is best; None when no complete run holds it."""
        candidates = [c for c in self._suite_runs(name) if only is None or c[2] == only]
        if not candidates:
            return None
        if spec == "last":
            _, rid, sid = candidates[-1]
            return rid, sid
        # one metric for every run (the newest run's first): each run's own first metric
        # compared one run's ndcg with another's recall once a suite reordered its metrics;
        # that file's own, of a name two files share (the other's may not be among its)
        metric = self.first_metric(name, only)
        best: tuple[float, int, str, str] | None = None
        for seq, rid, sid in candidates:
            score = None if metric is None else self._suite_score(rid, sid, metric)
            if score is not None and (best is None or (score, seq) > best[:2]):
                best = (score, seq, rid, sid)
        return None if best is None else (best[2], best[3])

    def per_suite_doc(self, spec: str, names: Sequence[str] | None = None) -> dict[str, Any]:
        """``last`` or ``best`` resolved per suite: a baseline document holding, for each
        suite name (``names``, else every name in the history), that suite from the run
        ``spec`` picks for it. Partial runs are never picked. Each suite records its
        ``run_id``; ``run.runs`` maps suite names to run ids. Two suite files sharing a name
        are both there, each from its own run (:meth:`resolve_suites`): the comparison pairs
        each with the one at its path (with one of them only, both were compared with it)."""
        wanted = list(dict.fromkeys(names)) if names is not None else self.suite_names()
        suites: dict[str, Any] = {}
        runs: dict[str, str] = {}
        for name in wanted:
            for rid, sid in self.resolve_suites(spec, name):
                entry = self._suite_entries(rid, {sid}).get(sid)
                if entry is None:
                    continue
                key = sid if sid not in suites else f"{sid}@{rid}"
                suites[key] = {**entry, "run_id": rid}
                runs.setdefault(name, rid)
        ids = sorted(set(runs.values()))
        run: dict[str, Any] = {"id": ids[0] if len(ids) == 1 else None, "spec": spec,
                               "runs": runs}
        # what the picked runs ended with (a run is picked whether it passed or not): named
        # `last` a failed run read "passed", named by its number "FAILED"
        # each of them: one suite's picked run that failed named, another's was left unsaid
        failed: list[dict[str, Any]] = []
        for rid in ids:
            meta = self._run_meta(rid)
            status = meta.get("exitstatus")
            if isinstance(status, int) and status:
                failed.append({"id": rid, "exitstatus": status,
                               **({"verdict": meta["verdict"]}
                                  if isinstance(meta.get("verdict"), str) else {})})
        if failed:
            first = failed[0]
            run.update(exitstatus=first["exitstatus"], failed_run=first["id"],
                       failed_runs=failed,
                       **({"verdict": first["verdict"]} if "verdict" in first else {}))
        return {"schema_version": BASELINE_SCHEMA_VERSION, "kind": BASELINE_KIND,
                "created": None, "run": run, "suites": suites}

    def has_complete_run(self) -> bool:
        return bool(self._query("SELECT 1 FROM runs WHERE partial = 0 LIMIT 1"))

    def first_metric(self, name: str, suite_id: str | None = None) -> str | None:
        """The first metric of the suite named ``name`` (the first its suite file lists), as
        its newest run stored it, complete runs first (``suite_id``: of that file of the
        name)."""
        rows = self._query(
            "SELECT m.metric FROM means m JOIN suites s ON s.run_id = m.run_id AND "
            "s.suite_id = m.suite_id JOIN runs r ON r.id = m.run_id WHERE s.name = ? "
            "AND (? IS NULL OR s.suite_id = ?) "
            "ORDER BY r.partial, r.seq DESC, s.suite_id, m.rowid LIMIT 1",
            (name, suite_id, suite_id))
        return str(rows[0][0]) if rows else None

    def baseline_refs(self) -> list[tuple[str, str | None, str | None]]:
        """What each run recorded pointing at other runs: (run id, the id of a run it was
        compared against, or the baseline file it was saved to)."""
        if not self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                           "name = 'refs'"):
            return []  # a history written before runs recorded their references
        return [(str(rid), None if t is None else str(t), None if p is None else str(p))
                for rid, t, p in self._query("SELECT run_id, target, path FROM refs "
                                             "ORDER BY rowid")]


def _cell(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _suites_cell(names: Sequence[str], width: int) -> str:
    """Suite names in a fixed width: as many as fit, then ``+N``."""
    if not names:
        return "-"
    text = ",".join(names)
    if len(text) <= width:
        return text
    for shown in range(len(names) - 1, 0, -1):
        more = f" +{len(names) - shown}"
        head = ",".join(names[:shown])
        if len(head) + len(more) <= width:
            return head + more
    if len(names) == 1:
        return _cell(names[0], width)  # one long name: cut, with nothing more to count
    return _cell(names[0], width - len(f" +{len(names) - 1}")) + f" +{len(names) - 1}"


SUITES_WIDTH = 20


def _newest_first_metric(history: RunHistory, runs: Sequence[RunInfo]) -> str | None:
    """The first metric of the newest listed run's first suite: what a trend with nothing
    to draw yet (only partial runs) is of, rather than the history's alphabetically first."""
    return next((m for r in reversed(runs) for name in r.suites
                 if (m := history.first_metric(name)) is not None), None)


def history_lines(history: RunHistory, *, metric: str | None = None, suite: str | None = None,
                  limit: int = 20) -> list[str]:
    """The ``ragbench history`` text: recent runs with their number (``#``, usable wherever a
    run is named), suites and cases, then a trend per (suite, retriever) of ``metric``, by
    default each suite's first metric."""
    runs = history.runs(suite=suite, limit=limit)
    if not runs:
        return [f"no runs in {history.path}" + (f" for suite {suite!r}" if suite else "")]
    metrics = history.metrics(suite)
    lines = [f"{'#':>4}  {'run id':<24}  {'started':<25}  {'commit':<8}  "
             f"{'suites':<{SUITES_WIDTH}}  {'cases':>6}  verdict"]
    for r in runs:
        cases = "-" if r.n_cases is None else str(r.n_cases)
        lines.append(f"{r.seq:>4}  {r.id:<24}  {r.started or '-':<25}  "
                     f"{(r.git_commit or '-')[:8]:<8}  "
                     f"{_suites_cell(r.suites, SUITES_WIDTH):<{SUITES_WIDTH}}  {cases:>6}  "
                     f"{history.verdict_text(r)}")
    if not metrics:
        return lines
    if metric is not None and metric not in metrics:
        # of the suite asked for: "not in the history" of a metric other suites have
        where = f" of suite {suite!r}" if suite else ""
        return [*lines, f"metric {metric!r} is not in the history{where} (known: "
                        f"{', '.join(metrics)})"]
    # A partial run's means cover only the cases it ran: listed above, never in a trend.
    listed, runs = runs, [r for r in runs if not r.partial]
    firsts: dict[tuple[str, str | None], str | None] = {}
    if metric is None:
        shared = history.shared_names()
        for name in history.suite_names():
            for sid in (history.suite_ids(name) if name in shared else [None]):
                firsts[(name, sid)] = history.first_metric(name, sid)
        plan = sorted({m for m in firsts.values() if m is not None})
    else:
        plan = [metric]
    rows: list[tuple[str, str, str, list[float | None]]] = []
    for m in plan:
        for (name, sid, retriever), by_run in history.file_means(m, suite).items():
            if metric is None and firsts.get((name, sid)) != m:
                continue
            values = [by_run.get(r.id) for r in runs]
            if any(v is not None for v in values):
                # two files of one name read as their files, as in the run's own outputs
                rows.append((name if sid is None else f"{name} [{sid}]", retriever, m,
                             values))
    rows.sort(key=lambda row: (row[0], row[1]))
    shown = sorted({m for _, _, m, _ in rows})
    if len(shown) <= 1:
        of = shown[0] if shown else metric or _newest_first_metric(history, listed)
        title = f"trend of {of or metrics[0]}"
    else:
        title = "trend of each suite's first metric (--metric to choose one)"
    lines += ["", f"{title} over the last {len(runs)} complete runs (oldest first):"]
    width = max([len("suite/retriever"), *(len(f"{s}/{r}") for s, r, _, _ in rows)])
    mwidth = max([len("metric"), *(len(m) for m in shown)])
    metric_head = f"{'metric':<{mwidth}}  " if len(shown) > 1 else ""
    lines.append(f"  {'suite/retriever':<{width}}  {metric_head}{'first':>8}  {'last':>8}  "
                 f"{'delta':>8}  trend")
    for sname, retriever, m, values in rows:
        present = [v for v in values if v is not None]
        first, last = present[0], present[-1]
        metric_cell = f"{m:<{mwidth}}  " if len(shown) > 1 else ""
        lines.append(f"  {f'{sname}/{retriever}':<{width}}  {metric_cell}{first:>8.4f}  "
                     f"{last:>8.4f}  {last - first:>+8.4f}  {sparkline(values)}")
    return lines
