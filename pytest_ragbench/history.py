"""Run history: every run appended to a SQLite database, usable as a baseline later.

Stored per run: metadata (id, times, git commit, command line, package versions, exit status;
never environment variables), per suite its hashes, gates and baseline settings, per
(suite, retriever, metric) the mean, and every per-query score, so any past run can be
rebuilt as a baseline document (:meth:`RunHistory.baseline_doc`). The database is in WAL mode
so a reader (``ragbench history``) does not block a run that appends. Nothing here imports
pytest.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .baseline import BASELINE_KIND, BASELINE_SCHEMA_VERSION
from .errors import RagbenchError

HISTORY_SCHEMA_VERSION = 1
DEFAULT_HISTORY = Path(".ragbench") / "history.sqlite"
# Run metadata worth keeping; anything else in the run dict is left out on purpose.
_RUN_KEYS = ("id", "started", "finished", "duration_s", "command", "git_commit", "versions",
             "workers", "exitstatus", "partial", "n_records", "suites")
_SPARK = "_.-=+*#@"

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
        try:
            if readonly:
                if not self.path.is_file():
                    raise HistoryError(f"no run history at {self.path}")
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.path, timeout=30)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.executescript(_SCHEMA)
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                  (str(HISTORY_SCHEMA_VERSION),))
                self.conn.commit()
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: cannot open the run history ({exc})") from None

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
        with self.conn:
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
        return run_id

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
        """Rebuild a stored run as a baseline document (see :mod:`pytest_ragbench.baseline`)."""
        run_id = self.resolve(spec)
        (meta,) = self._query("SELECT meta FROM runs WHERE id = ?", (run_id,))[0]
        run = json.loads(meta)
        suites: dict[str, Any] = {}
        for sid, name, sh, dh, seed, gates, settings, cases in self._query(
            "SELECT suite_id, name, suite_hash, dataset_hash, seed, gates, settings, cases "
            "FROM suites WHERE run_id = ? ORDER BY suite_id", (run_id,)
        ):
            suites[sid] = {"name": name, "suite_hash": sh, "dataset_hash": dh, "seed": seed,
                           "gates": json.loads(gates), "baseline_settings": json.loads(settings),
                           "cases": json.loads(cases), "retrievers": {}}
        for sid, rname, n_cases, n_errors, errors in self._query(
            "SELECT suite_id, retriever, n_cases, n_errors, errors FROM retrievers "
            "WHERE run_id = ? ORDER BY rowid", (run_id,)
        ):
            suites[sid]["retrievers"][rname] = {"n_cases": n_cases, "n_errors": n_errors,
                                                "errors": json.loads(errors), "metrics": {}}
        for sid, rname, metric, direction, mean in self._query(
            "SELECT suite_id, retriever, metric, direction, mean FROM means WHERE run_id = ? "
            "ORDER BY rowid", (run_id,)
        ):
            suites[sid]["retrievers"][rname]["metrics"][metric] = {
                "mean": mean, "direction": direction, "scores": {}}
        for sid, rname, metric, cid, value in self._query(
            "SELECT suite_id, retriever, metric, case_id, value FROM scores WHERE run_id = ? "
            "ORDER BY suite_id, retriever, metric, case_id", (run_id,)
        ):
            suites[sid]["retrievers"][rname]["metrics"][metric]["scores"][cid] = value
        return {"schema_version": BASELINE_SCHEMA_VERSION, "kind": BASELINE_KIND,
                "created": run.get("finished") or run.get("started"), "run": run,
                "suites": suites}


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
        verdict = "partial" if r.partial else {True: "passed", False: "FAILED", None: "-"}[
            r.passed]
        lines.append(f"{r.seq:>4}  {r.id:<24}  {r.started or '-':<25}  "
                     f"{(r.git_commit or '-')[:8]:<8}  {verdict}")
    if metric is None:
        return lines
    if metric not in metrics:
        return [*lines, f"metric {metric!r} is not in the history (known: {', '.join(metrics)})"]
    lines += ["", f"trend of {metric} over the last {len(runs)} runs (oldest first):"]
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
