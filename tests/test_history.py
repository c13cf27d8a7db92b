"""The SQLite run history: storing runs, resolving last/best/ids, rebuilding baselines."""

from __future__ import annotations

import re
import sqlite3

import pytest

from pytest_ragbench.results.history import HistoryError, RunHistory, history_lines, sparkline


def _doc(run_id: str, mean: float, *, partial: bool = False) -> dict:
    scores = {"q1": mean, "q2": mean, "q3": None}
    return {
        "schema_version": 1, "kind": "ragbench-baseline", "created": "t",
        "run": {"id": run_id, "started": f"2025-01-0{run_id[-1]}T00:00:00+00:00",
                "git_commit": "abcdef0123", "partial": partial, "exitstatus": 0,
                "env": {"OPENAI_API_KEY": "sk-secret"}},
        "suites": {"s.yaml": {
            "name": "s", "suite_hash": "h", "dataset_hash": "d", "seed": 3,
            "gates": ["ndcg@10: drop <= 0.02"], "baseline_settings": {"test": "wilcoxon"},
            "cases": {"q1": {"type": "factoid", "difficulty": None, "tags": ["a"]}},
            "retrievers": {"bm25": {
                "n_cases": 3, "n_errors": 1, "errors": ["q3"],
                "metrics": {"ndcg@10": {"mean": mean, "direction": "higher",
                                        "scores": scores},
                            "latency_ms": {"mean": 5.0, "direction": "lower",
                                           "scores": {"q1": 5.0}}}}},
        }},
    }


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "h" / "history.sqlite"
    with RunHistory(path) as h:
        h.append(_doc("run1", 0.5), passed=True)
        h.append(_doc("run2", 0.7), passed=False)
        h.append(_doc("run3", 0.6), passed=True)
        h.append(_doc("run4", 0.9, partial=True), passed=True)
    return path


def test_round_trip_rebuilds_the_baseline_document(db):
    with RunHistory(db, readonly=True) as h:
        doc = h.baseline_doc("run2")
    expected = _doc("run2", 0.7)
    assert doc["suites"] == expected["suites"]
    assert doc["run"]["git_commit"] == "abcdef0123"


def test_environment_is_never_stored(db):
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir())
    assert b"abcdef0123" in raw and b"sk-secret" not in raw
    with RunHistory(db, readonly=True) as h:
        assert "env" not in h.baseline_doc("run1")["run"]


def test_wal_mode(db):
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_last_best_and_prefixes(db):
    with RunHistory(db, readonly=True) as h:
        assert h.resolve("last") == "run3"  # run4 is partial
        assert h.resolve("best") == "run2"
        assert h.resolve("run1") == "run1"
        with pytest.raises(HistoryError, match="ambiguous"):
            h.resolve("run")
        with pytest.raises(HistoryError, match="no run 'nope'"):
            h.resolve("nope")


def test_missing_database_is_a_history_error(tmp_path):
    with pytest.raises(HistoryError, match="no run history at"):
        RunHistory(tmp_path / "none.sqlite", readonly=True)


def test_history_lines_list_runs_and_trend(db):
    with RunHistory(db, readonly=True) as h:
        lines = history_lines(h, metric="ndcg@10")
    text = "\n".join(lines)
    assert "run1" in text and "FAILED" in text and "partial" in text
    # run4 is partial: listed with its verdict, never drawn in the trend.
    assert any("run4" in line and "passed (partial)" in line for line in lines)
    trend = next(line for line in lines if line.strip().startswith("s/bm25"))
    assert "0.5000" in trend and "0.6000" in trend and "+0.1000" in trend
    assert "0.9000" not in trend
    assert trend.endswith(sparkline([0.5, 0.7, 0.6]))
    with RunHistory(db, readonly=True) as h:
        assert history_lines(h, metric="mrr@5")[-1].startswith(
            "metric 'mrr@5' is not in the history (known: ")
        # a metric of the history but not of the suite asked for is said to be not that suite's
        assert history_lines(h, metric="mrr@5", suite="s")[-1].startswith(
            "metric 'mrr@5' is not in the history of suite 's' (known: ")
        assert history_lines(h, suite="other") == [f"no runs in {db} for suite 'other'"]


def _two_files(run_id: str, means: dict[str, float], name: str = "s") -> dict:
    """A run of suite files that share a name (``means``: suite id -> ndcg@10)."""
    one = _doc(run_id, 0.0)
    (entry,) = one["suites"].values()
    one["suites"] = {
        sid: {**entry, "name": name, "retrievers": {"bm25": {
            "n_cases": 2, "n_errors": 0, "errors": [],
            "metrics": {"ndcg@10": {"mean": m, "direction": "higher",
                                    "scores": {"q1": m, "q2": m}}}}}}
        for sid, m in means.items()}
    return one


def test_two_suite_files_of_one_name_keep_their_own_trends(tmp_path):
    # Trends were kept by suite name: the two files' means of a run fell on one key, and
    # 'ragbench history' and the HTML report drew one trend of whichever came last. A file
    # that moved (one file of the name per run) keeps its trend under its name.
    from pytest_ragbench.report.rerender import history_from_db

    path = tmp_path / "history.sqlite"
    with RunHistory(path) as h:
        h.append(_two_files("run1", {"a.yaml": 0.1, "b.yaml": 0.5}), passed=True)
        h.append(_two_files("run2", {"a.yaml": 0.2, "b.yaml": 0.4}), passed=True)
        h.append(_two_files("run3", {"old/m.yaml": 0.3}, "m"), passed=True)
        h.append(_two_files("run4", {"new/m.yaml": 0.6}, "m"), passed=True)
        lines = history_lines(h, metric="ndcg@10")
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines
             if line.startswith("  ") and "/bm25" in line]
    trend = {row[0]: row[1:4] for row in cells}
    assert trend == {"m/bm25": ["0.3000", "0.6000", "+0.3000"],
                     "s [a.yaml]/bm25": ["0.1000", "0.2000", "+0.1000"],
                     "s [b.yaml]/bm25": ["0.5000", "0.4000", "-0.1000"]}
    means = {h["run_id"]: h["means"] for h in history_from_db(path)}
    assert means["run1"] == {"a.yaml/bm25/ndcg@10": 0.1, "b.yaml/bm25/ndcg@10": 0.5}
    assert means["run4"] == {"m/bm25/ndcg@10": 0.6}


def test_sparkline_is_ascii_and_scaled():
    line = sparkline([0.0, 0.5, 1.0, None])
    assert line == "_+@ " and line.isascii()
    assert sparkline([2.0, 2.0]) == "++"
    assert sparkline([None]) == " "


def test_the_suites_cell_counts_only_names_it_leaves_out():
    from pytest_ragbench.results.history import _suites_cell

    # one name longer than the column was shown as "a,b... +0"
    assert _suites_cell(["Sûite 名前 | a,b,c,d,e,f"], 20) == "Sûite 名前 | a,b,c,..."
    assert _suites_cell(["alpha", "beta", "gamma"], 12) == "alpha +2"
    assert _suites_cell(["a-very-long-suite-name", "b"], 12) == "a-very... +1"
