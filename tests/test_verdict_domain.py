"""Issue 11, domain side: the verdict mapping, history under concurrent first writers, per-suite
last/best, suite matching by name, and malformed baseline and history files."""

from __future__ import annotations

import json
import multiprocessing
import re
import sqlite3
from pathlib import Path

import pytest

from pytest_ragbench.cli import main as ragbench_main
from pytest_ragbench.report.terminal import baseline_lines
from pytest_ragbench.report.views import failure_lines
from pytest_ragbench.results.baseline import BaselineError, load_baseline, save_baseline
from pytest_ragbench.results.compare import (
    Overrides,
    check_reference,
    compare_docs,
    load_side,
    match_suites,
)
from pytest_ragbench.results.gates import parse_tolerance
from pytest_ragbench.results.history import HistoryError, RunHistory
from pytest_ragbench.results.verdict import Coverage, make_verdict, reason_line, verdict_of


def _doc(run_id: str, mean: float, *, name: str = "s", sid: str = "s.yaml",
         partial: bool = False, n: int = 3) -> dict:
    scores = {f"q{i}": mean for i in range(n)}
    return {
        "schema_version": 1, "kind": "ragbench-baseline", "created": "t",
        "run": {"id": run_id, "partial": partial},
        "suites": {sid: {
            "name": name, "suite_hash": "h", "dataset_hash": "d", "seed": 0, "gates": [],
            "baseline_settings": {}, "cases": {},
            "retrievers": {"bm25": {"n_cases": n, "n_errors": 0, "errors": [], "metrics": {
                "ndcg@10": {"mean": mean, "direction": "higher", "scores": scores}}}}}},
    }


# -- the verdict -------------------------------------------------------------------------------


def test_verdict_follows_the_exit_status_and_lists_reasons():
    gates = [{"passed": False}, {"passed": True}, {"passed": True, "skipped": True}]
    v = make_verdict(items_failed=23, gates=gates, rows=[{"regressed": True}],
                     cases_run=40, cases_total=40, exitstatus=1)
    assert v["passed"] is False and v["status"] == "failed"
    assert [r["kind"] for r in v["reasons"]] == ["items_failed", "gates_failed", "regression"]
    assert reason_line(v) == ("FAILED: 23 items failed; 1 gate failed; 1 metric regressed "
                              "against the baseline")
    # Nothing ragbench knows failed, but pytest says so: the verdict still agrees with it.
    v = make_verdict(cases_run=5, cases_total=5, exitstatus=3)
    assert v["passed"] is False and v["reasons"][0]["text"] == "pytest exit status 3"
    assert make_verdict(cases_run=5, cases_total=5, exitstatus=0)["passed"] is True


def test_partial_is_said_but_does_not_fail_by_itself():
    v = make_verdict(cases_run=1, cases_total=15, partial=True, exitstatus=0)
    assert v["passed"] is True and v["partial"] is True
    assert v["headline"] == "passed (partial: 1 of 15 cases)"
    assert v["reasons"] == [{"kind": "partial", "count": 14, "fails": False,
                             "text": "partial: 1 of 15 cases ran"}]


def test_coverage_counts_cases_against_collected_totals():
    cov = Coverage(run={"a.yaml": 3, "b.yaml": 5}, total={"a.yaml": 10, "b.yaml": 5,
                                                          "c.yaml": 2})
    assert (cov.cases_run, cov.cases_total, cov.partial) == (8, 17, True)
    assert not Coverage(run={"a.yaml": 3}, total={"a.yaml": 3}).partial
    assert Coverage(run={"a.yaml": 3}, interrupted=True).partial


def test_coverage_never_says_fewer_cases_held_than_ran():
    # a total counted short (cases a resumed run replays beside those collected) must not
    # print "5 of 3 cases"
    cov = Coverage(run={"a.yaml": 5, "b.yaml": 2}, total={"a.yaml": 3, "b.yaml": 4})
    assert cov.suite("a.yaml") == (5, 5)
    assert (cov.cases_run, cov.cases_total, cov.partial) == (7, 9, True)


def test_old_summaries_get_a_verdict_from_what_they_hold():
    v = verdict_of({"passed": False, "gates": [], "run": {"n_records": 4}})
    assert v["passed"] is False and v["headline"] == "FAILED"


# -- history under concurrency -----------------------------------------------------------------


def _append(args: tuple[str, str, multiprocessing.synchronize.Event]) -> str:
    path, run_id, start = args
    start.wait()
    with RunHistory(Path(path)) as h:
        h.append(_doc(run_id, 0.5), passed=True)
    return run_id


def test_simultaneous_first_writers_lose_no_row(tmp_path):
    # One manager and one pool for the three attempts, each on a new file with its own start
    # event: forking seven processes per attempt from the test session's large heap was most
    # of this test's time in a full run. The module keeps no per-process state that a worker
    # could carry from one attempt's file to the next.
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager, ctx.Pool(6) as pool:
        for attempt in range(3):
            path = tmp_path / f"h{attempt}" / "history.sqlite"
            start = manager.Event()
            ids = [f"run{attempt}-{i:02d}" for i in range(12)]
            pending = pool.map_async(_append, [(str(path), rid, start) for rid in ids])
            start.set()
            assert sorted(pending.get(timeout=120)) == ids
            with RunHistory(path, readonly=True) as h:
                assert sorted(r.id for r in h.runs()) == ids
            conn = sqlite3.connect(path)
            try:
                assert conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 12 * 3
            finally:
                conn.close()


# -- last / best per suite, matching by name ---------------------------------------------------


def test_last_and_best_resolve_per_suite_and_skip_partial_runs(tmp_path):
    path = tmp_path / "history.sqlite"
    with RunHistory(path) as h:
        h.append(_doc("r1", 0.9, name="a", sid="a.yaml"), passed=True)
        h.append(_doc("r2", 0.4, name="b", sid="b.yaml"), passed=True)
        h.append(_doc("r3", 0.5, name="a", sid="moved/a.yaml"), passed=True)
        h.append(_doc("r4", 1.0, name="a", sid="a.yaml", partial=True), passed=True)
    with RunHistory(path, readonly=True) as h:
        last = h.per_suite_doc("last", ["a", "b"])
        assert last["run"]["runs"] == {"a": "r3", "b": "r2"}
        best = h.per_suite_doc("best", ["a"])
        assert best["run"]["runs"] == {"a": "r1"}
        assert h.per_suite_doc("last", ["zzz"])["suites"] == {}
    doc, label = load_side("last", cwd=tmp_path, history=path, suites=["a"])
    assert label == "history run #3 (r3)" and list(doc["suites"]) == ["moved/a.yaml"]
    with pytest.raises(BaselineError, match="no complete run holding suite 'zzz'"):
        load_side("last", cwd=tmp_path, history=path, suites=["zzz"])


def test_last_holds_every_suite_of_a_shared_name_so_each_pairs_with_its_own(tmp_path):
    """Two suite files named alike in one run: `last` held one of them, with which both
    were compared (a false regression against an unchanged rerun)."""
    def run(run_id: str) -> dict:
        doc = _doc(run_id, 0.9, name="dup", sid="b.yaml")
        doc["suites"]["z.yaml"] = _doc(run_id, 0.1, name="dup", sid="z.yaml")["suites"]["z.yaml"]
        return doc

    path = tmp_path / "history.sqlite"
    with RunHistory(path) as h:
        h.append(run("r1"), passed=True)
        # a later run of one of the two files alone: the other keeps its own last run
        h.append(_doc("r2", 0.9, name="dup", sid="b.yaml"), passed=True)
    base, _ = load_side("last", cwd=tmp_path, history=path, suites=["dup"])
    assert sorted(base["suites"]) == ["b.yaml", "z.yaml"]
    assert {sid: s["run_id"] for sid, s in base["suites"].items()} == {"b.yaml": "r2",
                                                                       "z.yaml": "r1"}
    result = compare_docs(base, run("r3"))
    assert result["passed"] is True, failure_lines(result)
    assert [(s["id"], s["baseline_id"]) for s in result["suites"]] == [
        ("b.yaml", "b.yaml"), ("z.yaml", "z.yaml")]
    with RunHistory(path, readonly=True) as h:
        assert h.resolve_suites("best", "dup") == [("r2", "b.yaml"), ("r1", "z.yaml")]


def test_best_of_each_file_of_a_shared_name_goes_by_its_own_first_metric(tmp_path):
    # 'best' judged every file of a name by one file's first metric: a file that does not
    # compute it scored nothing in any run and had no baseline at all
    def run(run_id: str, a: float, z: float) -> dict:
        doc = _doc(run_id, a, name="dup", sid="a.yaml")
        other = _doc(run_id, z, name="dup", sid="z.yaml")["suites"]["z.yaml"]
        metrics = other["retrievers"]["bm25"]["metrics"]
        metrics["recall@10"] = metrics.pop("ndcg@10")
        doc["suites"]["z.yaml"] = other
        return doc

    path = tmp_path / "history.sqlite"
    with RunHistory(path) as h:
        h.append(run("r1", 0.9, 0.2), passed=True)
        h.append(run("r2", 0.1, 0.8), passed=True)
        h.append(run("r3", 0.5, 0.5), passed=True)
    with RunHistory(path, readonly=True) as h:
        assert h.resolve_suites("best", "dup") == [("r1", "a.yaml"), ("r2", "z.yaml")]


def test_suites_match_by_name_preferring_the_same_path():
    base = {"suites": {"old/x.yaml": {"name": "x"}, "x.yaml": {"name": "x"},
                       "y.yaml": {"name": "y"}}}
    assert match_suites(base, {"x.yaml": "x", "new/y.yaml": "y", "z.yaml": "z"}) == {
        "x.yaml": "x.yaml", "new/y.yaml": "y.yaml"}


def test_compare_matches_a_moved_suite_and_reports_a_changed_dataset():
    base = _doc("a", 0.8, sid="old.yaml")
    cur = _doc("b", 0.8, sid="new/place.yaml")
    cur["suites"]["new/place.yaml"]["dataset_hash"] = "other"
    result = compare_docs(base, cur)
    (info,) = result["suites"]
    assert info["in_baseline"] and info["baseline_id"] == "old.yaml"
    assert info["dataset_changed"] is True and result["passed"] is True
    assert len(result["rows"]) == 1 and result["verdict"]["passed"] is True


def test_compare_repeats_a_stored_failed_or_partial_verdict():
    cur = _doc("b", 0.8)
    cur["run"].update(partial=True, n_cases=3, n_cases_total=9)
    cur["verdict"] = make_verdict(items_failed=2, cases_run=3, cases_total=9, partial=True,
                                  exitstatus=1)
    result = compare_docs(_doc("a", 0.8), cur)
    assert result["passed"] is False
    assert result["verdict"]["headline"] == "FAILED (partial: 3 of 9 cases)"


def _with_latency(doc: dict, latency: list[float], tolerance: dict | None = None) -> dict:
    (suite,) = doc["suites"].values()
    scores = {f"q{i}": value for i, value in enumerate(latency)}
    suite["retrievers"]["bm25"]["metrics"]["latency_ms"] = {
        "mean": sum(latency) / len(latency), "direction": "lower", "scores": scores}
    if tolerance is not None:
        suite["baseline_settings"] = {"tolerance": tolerance}
    return doc


@pytest.mark.parametrize("tolerance", [None, {"*": "0.02"}, {"*": "5%"}])
def test_a_slower_run_is_no_regression_unless_a_tolerance_names_its_latency(tolerance):
    """The same system's wall time differs from run to run: a plain baseline, or a suite-wide
    tolerance in the scores' units, failed a run whose only change was the machine's load."""
    base = _with_latency(_doc("a", 0.8), [0.04, 0.05, 0.04], tolerance)
    cur = _with_latency(_doc("b", 0.8), [0.24, 0.25, 0.21], tolerance)
    result = compare_docs(base, cur, Overrides(tolerance=parse_tolerance("0.02")))
    rows = {r["metric"]: r for r in result["rows"]}
    assert rows["latency_ms"]["delta"] > 0.15  # compared and shown all the same
    assert rows["latency_ms"]["regressed"] is False and rows["latency_ms"]["tolerance"] is None
    assert result["passed"] is True, failure_lines(result)
    # no check judged it: it read "ok" beside a time six times the baseline's
    assert rows["latency_ms"]["checked"] is False and rows["ndcg@10"]["checked"] is True
    assert [line.split()[0] for line in baseline_lines(result["rows"])] == ["ok", "unchecked"]


def test_a_tolerance_naming_latency_judges_it_and_says_it_rose():
    base = _with_latency(_doc("a", 0.8), [40.0, 50.0, 40.0], {"latency_ms": "20%"})
    cur = _with_latency(_doc("b", 0.8), [41.0, 52.0, 45.0], {"latency_ms": "20%"})
    assert compare_docs(base, cur)["passed"] is True  # +7%
    cur = _with_latency(_doc("b", 0.8), [60.0, 70.0, 50.0], {"latency_ms": "20%"})
    result = compare_docs(base, cur)
    assert result["passed"] is False
    (line,) = failure_lines(result)
    assert line.startswith("ragbench: regression: s/bm25 latency_ms rose from 43.33")
    # its p is Holm-corrected, as the gate line says of the same row's p
    assert line.endswith(", Holm), tolerance 20%)"), line
    # a gate on it says the same
    for gate, said in (("latency_ms: drop <= 20%", "rose more than allowed"),
                       ("latency_ms: no significant drop", "rose significantly")):
        # eight queries, each slower: significant for the paired test
        base = _with_latency(_doc("a", 0.8, n=8), [40.0 + i for i in range(8)])
        cur = _with_latency(_doc("b", 0.8, n=8), [60.0 + 2 * i for i in range(8)])
        lines = failure_lines(compare_docs(base, cur, Overrides(gates=(gate,))))
        assert any(f"s/bm25 latency_ms {said}" in line for line in lines), lines


def test_a_run_failed_by_a_gate_no_longer_given_fails_the_comparison_however_it_is_named():
    """Run b failed only on a --ragbench-gate: compared as a run folder (which keeps its
    verdict) it passed, compared from the history (which keeps its exit status) it failed."""
    folder = _doc("b", 0.8)
    folder["run"].update(exitstatus=1)
    folder["verdict"] = make_verdict(gates=[{"passed": False}], exitstatus=1)
    history = _doc("b", 0.8)
    history["run"].update(exitstatus=1, verdict="FAILED")
    for cur in (folder, history):
        result = compare_docs(_doc("a", 0.8), cur)
        assert result["passed"] is False, failure_lines(result)
    assert failure_lines(compare_docs(_doc("a", 0.8), folder)) == [
        "ragbench: run b failed when it ran: 1 gate failed"]
    # a gate the comparison checks again is said once
    folder["suites"]["s.yaml"]["gates"] = ["ndcg@10 >= 0.9"]
    lines = failure_lines(compare_docs(_doc("a", 0.8), folder))
    assert len(lines) == 1 and lines[0].startswith("ragbench: gate failed: s/bm25 ndcg@10"), lines
    folder["suites"]["s.yaml"]["gates"] = []
    # its failed items are carried by the verdict itself, not said twice
    folder["verdict"] = make_verdict(items_failed=2, exitstatus=1)
    result = compare_docs(_doc("a", 0.8), folder)
    assert result["passed"] is False and failure_lines(result) == []


def test_a_metric_no_query_of_which_is_in_the_baseline_says_so():
    """Renamed query ids: the row said "ndcg@10 dropped from nan to nan"."""
    base = _doc("a", 0.8)
    cur = _doc("b", 0.8)
    (suite,) = cur["suites"].values()
    metric = suite["retrievers"]["bm25"]["metrics"]["ndcg@10"]
    metric["scores"] = {f"new{k}": v for k, v in metric["scores"].items()}
    result = compare_docs(base, cur)
    assert result["passed"] is False
    assert failure_lines(result) == [
        "ragbench: regression: s/bm25 ndcg@10: no query scored on both sides (n = 0: none in "
        "common with the baseline, or NaN on one side): nothing was compared (tolerance 0)"]


# -- malformed files ---------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ('{"kind": "ragbench-baseline", "schema_version": 1, "suites": {"s": ', "not valid JSON"),
    ('{"kind": "other"}', "not a ragbench baseline"),
    ('{"kind": "ragbench-baseline", "schema_version": 7, "suites": {}}',
     "schema version 7 is not supported"),
    ('{"kind": "ragbench-baseline", "schema_version": 1, "suites": []}', "no 'suites' mapping"),
    ('{"kind": "ragbench-baseline", "schema_version": 1, "suites": {"s": {"retrievers": '
     '{"r": {"metrics": {"m": {"mean": "high", "scores": {}}}}}}}}', "must be numbers"),
    ('{"kind": "ragbench-baseline", "schema_version": 1, "suites": {"s": {"retrievers": '
     '{"r": {"metrics": {"m": {"scores": [1]}}}}}}}', "a 'scores' mapping"),
])
def test_malformed_baseline_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "base.json"
    path.write_text(content)
    with pytest.raises(BaselineError, match=message) as err:
        load_baseline(path)
    assert str(path) in str(err.value)


def test_malformed_baseline_on_the_command_line_is_a_usage_error(tmp_path):
    (tmp_path / "base.json").write_text("{truncated")
    with pytest.raises(BaselineError, match=r"base\.json: not valid JSON"):
        check_reference("base.json", cwd=tmp_path, history=None)


@pytest.mark.parametrize("kind", ["text", "directory", "other-sqlite", "version"])
def test_malformed_history_files_name_the_file(tmp_path, kind):
    path = tmp_path / "history.sqlite"
    if kind == "text":
        path.write_text("this is not a database " * 50)
    elif kind == "directory":
        path.mkdir()
    else:
        conn = sqlite3.connect(path)
        if kind == "version":
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute("INSERT INTO meta VALUES ('schema_version', '99')")
        else:
            conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
    for readonly in (True, False):
        with pytest.raises(HistoryError) as err:
            RunHistory(path, readonly=readonly)
        assert str(path) in str(err.value)
    with pytest.raises(BaselineError, match=re.escape(str(path))):
        check_reference("last", cwd=tmp_path, history=path)


def test_cli_reports_a_broken_history_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "h.sqlite").write_bytes(b"\x00garbage" * 100)
    assert ragbench_main(["history", "--db", "h.sqlite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "h.sqlite" in err[0] and "Traceback" not in err[0]
    save_baseline(tmp_path / "a.json", _doc("a", 0.5))
    (tmp_path / "b.json").write_text(json.dumps(_doc("b", 0.5))[:-40])
    assert ragbench_main(["compare", "a.json", "b.json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.json: not valid JSON" in err[0]


def test_an_empty_history_file_is_a_history_without_runs(tmp_path, monkeypatch, capsys):
    """A history file of no bytes (one a run has just created and not yet filled, a touched
    file) is no broken history, as the writer takes it: every reader said 'cannot read the
    run history (no such table: runs)'."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / ".ragbench" / "history.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"")
    assert ragbench_main(["history"]) == 0
    assert capsys.readouterr().out.strip() == f"no runs in {db}"
    assert ragbench_main(["report", "last"]) == 2
    assert "the run history has no complete run yet" in capsys.readouterr().err
    assert ragbench_main(["compare", "last", "last"]) == 2
    assert f"baseline 'last': {db} has no complete run" in capsys.readouterr().err
    with pytest.raises(BaselineError, match="has no complete run"):
        load_side("last", cwd=tmp_path, history=db)
    assert db.read_bytes() == b""  # read, not written


def test_cli_compare_agrees_with_a_failed_history_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    failed = _doc("r2", 0.5)
    failed["run"].update(exitstatus=1, verdict="FAILED")
    with RunHistory(tmp_path / ".ragbench" / "history.sqlite") as h:
        h.append(_doc("r1", 0.5), passed=True)
        h.append(failed, passed=False)
    assert ragbench_main(["compare", "r1", "r1"]) == 0
    assert ragbench_main(["compare", "r1", "r2"]) == 1
    out = capsys.readouterr().out
    assert "ragbench compare: FAILED" in out
    assert "ragbench: run r2 ended with exit status 1 when it ran (FAILED)" in out
    assert ragbench_main(["history"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert any("r2" in row and row.endswith("FAILED") for row in rows)


def test_cli_compare_says_when_the_run_is_partial(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    part = _doc("r2", 0.5)
    part["run"].update(partial=True, n_cases=1, n_cases_total=3)
    with RunHistory(tmp_path / ".ragbench" / "history.sqlite") as h:
        h.append(_doc("r1", 0.5), passed=True)
        h.append(part, passed=True)
    assert ragbench_main(["compare", "r1", "r2"]) == 0
    out = capsys.readouterr().out
    assert "suite s: partial, run 1 of 3 cases ran" in out
    assert ragbench_main(["compare", "r1", "r2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verdict"]["headline"] == "passed (partial: 1 of 3 cases)"


def test_a_failed_run_named_last_fails_a_comparison_as_named_by_its_number(tmp_path):
    """`ragbench compare A last` passed a run that had failed (66 items), which `compare A 2`
    failed: the per-suite document of `last`/`best` left out how the run ended."""
    from pytest_ragbench.results.compare import compare_docs

    path = tmp_path / "history.sqlite"
    with RunHistory(path) as h:
        h.append(_doc("r1", 0.9), passed=True)
        failed = _doc("r2", 0.9)
        failed["run"].update(exitstatus=1, verdict="FAILED")
        h.append(failed, passed=False)
    base, _ = load_side("r1", cwd=tmp_path, history=path)
    verdicts = []
    for spec in ("last", "r2"):
        doc, _ = load_side(spec, cwd=tmp_path, history=path, suites=["s"])
        result = compare_docs(base, doc)
        verdicts.append((result["passed"], result["other_failures"]))
    assert verdicts[0] == verdicts[1]
    assert verdicts[0] == (False, ["ragbench: run r2 ended with exit status 1 when it ran "
                                   "(FAILED)"])


def test_last_per_suite_names_every_picked_run_that_failed(tmp_path):
    """`ragbench compare last last` of a history whose suites' last runs both failed named
    one of them ('run r1 ended with exit status 1 when it ran'), the other left unsaid."""
    from pytest_ragbench.results.compare import compare_docs

    path = tmp_path / "history.sqlite"
    with RunHistory(path) as h:
        for run_id, name, status, verdict in (("r1", "a", 1, "FAILED"), ("r2", "b", 2, "FAILED"),
                                              ("r3", "c", 0, "passed")):
            doc = _doc(run_id, 0.9, name=name, sid=f"{name}.yaml")
            doc["run"].update(exitstatus=status, verdict=verdict)
            h.append(doc, passed=not status)
    last, _ = load_side("last", cwd=tmp_path, history=path)
    assert compare_docs(last, last)["other_failures"] == [
        "ragbench: run r1 ended with exit status 1 when it ran (FAILED); run r2 ended with "
        "exit status 2 when it ran (FAILED)"]


def test_best_compares_every_run_on_one_metric_whatever_order_a_suite_lists_them(tmp_path):
    """`best` scored each run by its own first metric: after a suite put recall@100 first,
    a run worse on every metric was picked because its recall beat the other's ndcg."""
    def run(run_id: str, means: dict[str, float]) -> dict:
        doc = _doc(run_id, 0.0)
        doc["suites"]["s.yaml"]["retrievers"]["bm25"]["metrics"] = {
            m: {"mean": v, "direction": "higher", "scores": {"q0": v}} for m, v in means.items()}
        return doc

    path = tmp_path / "history.sqlite"
    with RunHistory(path) as h:
        h.append(run("r1", {"ndcg@10": 0.74, "recall@100": 0.946}), passed=True)
        h.append(run("r2", {"recall@100": 0.932, "ndcg@10": 0.696}), passed=True)
    with RunHistory(path, readonly=True) as h:
        assert h.per_suite_doc("best", ["s"])["run"]["runs"] == {"s": "r1"}
        assert h.resolve("best") == "r1"


def test_cli_compare_with_a_run_folder_that_failed_says_why(tmp_path, capsys):
    """Against a run folder whose cases failed, `ragbench compare` printed only PASS lines
    and "FAILED": the reason was in its JSON verdict alone."""
    from pytest_ragbench.results.verdict import make_verdict

    run = tmp_path / "run"
    run.mkdir()
    doc = _doc("r2", 0.5)
    summary = {"suites": [{"id": "s.yaml", "name": "s", "suite_hash": "h", "dataset_hash": "d",
                           "metrics": ["ndcg@10"], "n_cases_run": 3, "n_cases_total": 3,
                           "retrievers": [{"name": "bm25", "n_cases": 3, "n_errors": 0,
                                           "metrics": {"ndcg@10": {"mean": 0.5,
                                                                   "direction": "higher"}}}]}],
               "gates": [], "run": {"id": "r2", "n_cases": 3, "n_cases_total": 3},
               "verdict": make_verdict(items_failed=2, cases_run=3, cases_total=3)}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "cases.jsonl").write_text("".join(
        json.dumps({"suite": "s.yaml", "suite_name": "s", "retriever": "bm25",
                    "case_id": f"q{i}", "run": 0, "status": "failed",
                    "metrics": {"ndcg@10": 0.5}}) + "\n" for i in range(3)))
    save_baseline(tmp_path / "a.json", doc)
    assert ragbench_main(["compare", str(tmp_path / "a.json"), str(run)]) == 1
    assert "ragbench compare: FAILED: 2 items failed" in capsys.readouterr().out
