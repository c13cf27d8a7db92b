"""History that serves a team: run numbers as run references, the suite and case columns, each
suite's first metric as the default trend, ``.ragbench/.gitignore``, and retention that keeps
the runs a baseline points at. Real SQLite files and real run folders in tmp_path."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pytest_ragbench.cli import main
from pytest_ragbench.results.baseline import baseline_run_ids, save_baseline
from pytest_ragbench.results.history import HistoryError, RunHistory, history_lines, run_number
from pytest_ragbench.results.retention import (
    RUNNING_GRACE_S,
    human_size,
    parse_keep_runs,
    prune_lines,
    prune_runs,
)
from pytest_ragbench.results.runfolder import (
    GITIGNORE_TEXT,
    SUMMARY_JSON,
    ignore_folder,
    make_run_folder,
)
from pytest_ragbench.results.runref import RunRefError, resolve_run_ref


def rid(i: int) -> str:
    """A run id as the session makes them: the UTC start time, then random hex."""
    return f"202501{i:02d}T000000Z-{i:06x}"


def doc(run_id: str, mean: float, *, suite: str = "s", metrics: tuple[str, ...] = (
        "recall@10", "mrr@10"), partial: bool = False, cases: int = 3) -> dict:
    scores = {f"q{i}": mean for i in range(cases)}
    return {
        "schema_version": 1, "kind": "ragbench-baseline", "created": "t",
        "run": {"id": run_id, "started": "2025-01-01T00:00:00+00:00", "partial": partial,
                "exitstatus": 0, "n_cases": cases, "n_cases_total": cases + partial},
        "suites": {f"{suite}.yaml": {
            "name": suite, "suite_hash": "h", "dataset_hash": "d", "seed": 0, "gates": [],
            "baseline_settings": {}, "cases": {},
            "retrievers": {"bm25": {"n_cases": cases, "n_errors": 0, "errors": [], "metrics": {
                m: {"mean": mean, "direction": "higher", "scores": scores}
                for m in metrics}}},
        }},
    }


def folder(out: Path, run_id: str, *, summary: bool = True, size: int = 1000) -> Path:
    path = make_run_folder(out, run_id)
    (path / "cases.jsonl").write_bytes(b"x" * size)
    if summary:
        (path / SUMMARY_JSON).write_text("{}", encoding="utf-8")
    return path


@pytest.fixture
def rb(tmp_path: Path) -> Path:
    """An empty ``.ragbench`` layout: runs/ and history.sqlite."""
    return tmp_path / ".ragbench"


# -- run numbers ---------------------------------------------------------------------------

def test_run_numbers_resolve_and_are_never_reused(rb):
    db = rb / "history.sqlite"
    with RunHistory(db) as h:
        for i in (1, 2, 3):
            h.append(doc(rid(i), 0.5))
        assert [r.seq for r in h.runs()] == [1, 2, 3]
        assert h.resolve("2") == h.resolve("#2") == rid(2)
        h.delete_runs([rid(3)])
        h.append(doc(rid(4), 0.5))
        # Appending a stored run again (a resumed run) keeps its number and its place.
        h.append(doc(rid(1), 0.7))
        assert [(r.seq, r.id) for r in h.runs()] == [(1, rid(1)), (2, rid(2)), (4, rid(4))]
        assert h.baseline_doc("1")["suites"]["s.yaml"]["retrievers"]["bm25"]["metrics"][
            "mrr@10"]["mean"] == 0.7
        # not "numbered 1 to 4", which read as if run 3 were there
        with pytest.raises(HistoryError, match=r"no run number 3 in the run history \(it "
                                               r"holds 3 runs, numbered 1, 2 and 4;"):
            h.resolve("3")
        with pytest.raises(HistoryError, match="no run number 99999999999999999999"):
            h.resolve("99999999999999999999")
    assert run_number("12") == run_number("#12") == 12
    assert run_number("20250101T") is None and run_number("last") is None
    assert run_number("-1") is None and run_number("") is None


def test_a_history_of_partial_runs_names_the_suites_first_metric_as_its_trend(rb):
    """With only partial runs (none drawn) the trend's title named the history's
    alphabetically first metric, not the suite's first."""
    with RunHistory(rb / "history.sqlite") as h:
        h.append(doc(rid(1), 0.5, metrics=("recall@10", "mrr@10"), partial=True))
        text = "\n".join(history_lines(h))
    assert "trend of recall@10 over the last 0 complete runs" in text, text


def test_history_lists_suites_cases_and_numbers(rb):
    db = rb / "history.sqlite"
    with RunHistory(db) as h:
        h.append(doc(rid(1), 0.5, cases=4), passed=True)
        two = doc(rid(2), 0.6, suite="other", metrics=("ndcg@10",), cases=2)
        two["suites"].update(doc(rid(2), 0.6, cases=5)["suites"])
        two["run"]["n_cases"] = 7
        h.append(two, passed=True)
        h.append(doc(rid(3), 0.8, partial=True, cases=1), passed=True)
    with RunHistory(db, readonly=True) as h:
        lines = history_lines(h)
        assert lines[0].split() == ["#", "run", "id", "started", "commit", "suites", "cases",
                                    "verdict"]
        rows = {line.split()[0]: line.split() for line in lines[1:4]}
        assert rows["1"][1] == rid(1) and rows["1"][4:6] == ["s", "4"]
        assert rows["2"][4:6] == ["other,s", "7"]
        assert rows["3"][4:6] == ["s", "1"] and "partial" in lines[3]
        # With --suite, the count is that suite's.
        only = history_lines(h, suite="other")
        assert len(only) > 1 and only[1].split()[4:6] == ["other,s", "2"]


def test_default_trend_is_each_suites_first_metric(rb):
    db = rb / "history.sqlite"
    with RunHistory(db) as h:
        # recall@10 is listed first by the suite; alphabetically mrr@10 would come first.
        h.append(doc(rid(1), 0.5))
        h.append(doc(rid(2), 0.6))
    with RunHistory(db, readonly=True) as h:
        lines = history_lines(h)
        assert "trend of recall@10 over the last 2 complete runs (oldest first):" in lines
        assert "trend of mrr@10 over the last 2 complete runs (oldest first):" in history_lines(
            h, metric="mrr@10")
    with RunHistory(db) as h:
        h.append(doc(rid(3), 0.7, suite="t", metrics=("ndcg@10", "recall@10")))
    with RunHistory(db, readonly=True) as h:
        lines = history_lines(h)
    head = lines.index("trend of each suite's first metric (--metric to choose one) over the "
                       "last 3 complete runs (oldest first):")
    table = [line.split() for line in lines[head + 1:]]
    assert table[0][:2] == ["suite/retriever", "metric"]
    assert [row[:2] for row in table[1:]] == [["s/bm25", "recall@10"], ["t/bm25", "ndcg@10"]]


# -- .ragbench/.gitignore --------------------------------------------------------------------

def test_gitignore_written_once_and_never_over_a_users(tmp_path, rb):
    make_run_folder(rb / "runs", rid(1))
    assert (rb / ".gitignore").read_text() == GITIGNORE_TEXT
    assert "*" in GITIGNORE_TEXT.splitlines()
    (rb / ".gitignore").write_text("!main.json\n")
    make_run_folder(rb / "runs", rid(2))
    assert ignore_folder(rb / "runs") is None
    assert (rb / ".gitignore").read_text() == "!main.json\n"
    # The history and a saved baseline create the folder just as well; an --ragbench-out
    # outside any .ragbench folder is left alone.
    with RunHistory(tmp_path / "a" / ".ragbench" / "history.sqlite"):
        pass
    assert (tmp_path / "a" / ".ragbench" / ".gitignore").is_file()
    save_baseline(tmp_path / "b" / ".ragbench" / "main.json", doc(rid(1), 0.5))
    assert (tmp_path / "b" / ".ragbench" / ".gitignore").is_file()
    make_run_folder(tmp_path / "results", rid(1))
    assert not (tmp_path / "results" / ".gitignore").exists()


# -- run references --------------------------------------------------------------------------

def test_resolve_run_ref_to_folders(tmp_path, rb):
    out, db = rb / "runs", rb / "history.sqlite"
    with RunHistory(db) as h:
        for i in (1, 2, 3):
            h.append(doc(rid(i), 0.1 * i))
    for i in (1, 3, 4):  # 2 was pruned; 4 ran with --ragbench-no-history
        folder(out, rid(i))
    os.symlink(rid(4), out / "latest")
    assert resolve_run_ref("1", out, history=db) == out / rid(1)
    assert resolve_run_ref("#3", out, history=db) == out / rid(3)
    assert resolve_run_ref("last", out, history=db) == out / rid(3)
    assert resolve_run_ref("best", out, history=db) == out / rid(3)
    assert resolve_run_ref(rid(1)[:8] + "T", out, history=db) == out / rid(1)
    assert resolve_run_ref(rid(4), out, history=db) == out / rid(4)
    assert resolve_run_ref("latest", out, history=db).resolve() == (out / rid(4)).resolve()
    assert resolve_run_ref(str(out / rid(3)), out) == out / rid(3)
    assert resolve_run_ref(f".ragbench/runs/{rid(1)}", out, cwd=tmp_path) == out / rid(1)
    with pytest.raises(RunRefError, match=rf"run '2' \(#2, id {rid(2)}\) has no run folder in "
                                          rf".*runs \(pruned"):
        resolve_run_ref("2", out, history=db)
    with pytest.raises(RunRefError, match=r"run '7': .*no run number 7 in the run history "
                                          r"\(it holds 3 runs, numbered 1 to 3"):
        resolve_run_ref("7", out, history=db)
    with pytest.raises(RunRefError, match=r"a run number is looked up in the run history, "
                                          r"and there is none at"):
        resolve_run_ref("1", out, history=rb / "none.sqlite")
    with pytest.raises(RunRefError, match=r"run 'nope': no such folder .*, no such run in the "
                                          r"history .*, no run folder of that id in"):
        resolve_run_ref("nope", out, history=db)
    assert resolve_run_ref(rid(3)[:9], out) == out / rid(3)  # no history: folders, by prefix
    folder(out, rid(3)[:-1] + "f")
    with pytest.raises(RunRefError, match=r"run '20250103T': run id prefix is ambiguous in "):
        resolve_run_ref(rid(3)[:9], out)
    with pytest.raises(RunRefError, match="a run number is looked up in the run history, and "
                                          "none was given"):
        resolve_run_ref("2025", out)  # digits only are always a number


# -- retention -------------------------------------------------------------------------------

def test_parse_keep_runs():
    assert parse_keep_runs("") is None and parse_keep_runs(" 5 ") == 5
    for bad in ("0", "-2", "five", "2.5"):
        with pytest.raises(ValueError, match="expected a whole number of runs to keep"):
            parse_keep_runs(bad)
    assert human_size(999) == "999 B" and human_size(12_345_678) == "12.3 MB"


def test_prune_keeps_the_folder_of_a_run_still_going_however_long_ago_it_changed(tmp_path, rb):
    """A run still building its index after more than an hour has run.json alone, last
    changed at its start: a prune (another run's ragbench_keep_runs, 'ragbench history
    --prune') took it for a run killed long ago and deleted its folder under it."""
    import subprocess
    import sys

    from pytest_ragbench.results.runfolder import RUN_JSON, run_start_doc

    out, db = rb / "runs", rb / "history.sqlite"
    with RunHistory(db) as h:
        for i in (2, 3):
            h.append(doc(rid(i), 0.5))
    for i in (2, 3):
        folder(out, rid(i))
    going = make_run_folder(out, rid(1))
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                          stdin=subprocess.PIPE) as proc:
        try:
            start = run_start_doc(run_id=rid(1), started="t", specs={}, collected={})
            start["process"]["pid"] = proc.pid
            from pytest_ragbench.results.runfolder import _process_start

            start["process"]["start"] = _process_start(proc.pid)
            (going / RUN_JSON).write_text(json.dumps(start), encoding="utf-8")
            old = time.time() - RUNNING_GRACE_S - 60
            for p in (going, *going.iterdir()):
                os.utime(p, (old, old))
            result = prune_runs(out, db, 1)
            assert going.is_dir()
            assert result.running == [rid(1)]
            assert [r.run_id for r in result.deleted] == [rid(2)]
            assert f"  kept {rid(1)}: no summary.json, and its run is still going or " \
                "changed within the hour" in prune_lines(result)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
    # its process gone, it is a run killed long ago: pruned as any other
    result = prune_runs(out, db, 1)
    assert [r.run_id for r in result.deleted] == [rid(1)] and not going.exists()


def test_prune_measures_the_history_as_it_was_before_pruning(tmp_path, rb):
    """'history: 217.7 kB -> 90.1 kB' of a 118.8 kB file: the size before compacting was
    taken after the deleted rows had grown the write-ahead log, and 'freed' counted that
    growth as space given back."""
    out, db = rb / "runs", rb / "history.sqlite"
    with RunHistory(db) as h:
        for i in range(1, 9):
            h.append(doc(rid(i), 0.1 * i, cases=200))
    wal = db.with_name(db.name + "-wal")
    on_disk = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    result = prune_runs(out, db, 2, vacuum=True)
    assert len(result.deleted) == 6
    assert result.history_bytes is not None
    before, after = result.history_bytes
    assert before == on_disk
    assert after == db.stat().st_size < before
    assert result.freed == before - after


def test_prune_keeps_the_newest_and_what_baselines_point_at(tmp_path, rb):
    out, db = rb / "runs", rb / "history.sqlite"
    base = tmp_path / "main.json"
    with RunHistory(db) as h:
        h.append(doc(rid(1), 0.2, suite="old"))              # 'last'/'best' of suite old
        h.append(doc(rid(2), 0.9))                           # 'best' of suite s
        h.append(doc(rid(3), 0.1), saved_to=base)            # saved as baseline main.json
        h.append(doc(rid(4), 0.3))                           # baseline of run 8
        h.append(doc(rid(5), 0.3, partial=True))             # plain old partial run
        h.append(doc(rid(6), 0.3), saved_to=tmp_path / "gone.json")  # file since deleted
        h.append(doc(rid(7), 0.4), compared_with=[rid(4)])   # compared with 4, pruned itself
        h.append(doc(rid(8), 0.4), compared_with=[rid(4)])
        h.append(doc(rid(9), 0.5, partial=True))
    save_baseline(base, doc(rid(3), 0.1))
    for i in range(1, 10):
        folder(out, rid(i), size=1000 * i)
    folder(out, rid(10), summary=False)                      # still running
    stale_id = "20241231T000000Z-0000aa"  # a run killed long ago (run ids are 6 hex digits)
    stale = folder(out, stale_id, summary=False, size=10)
    old = time.time() - RUNNING_GRACE_S - 60
    for p in (stale, *stale.iterdir()):
        os.utime(p, (old, old))

    result = prune_runs(out, db, 2, vacuum=True)

    deleted = {r.run_id: r for r in result.deleted}
    assert sorted(deleted) == sorted([rid(5), rid(6), rid(7), stale_id])
    assert deleted[rid(6)].size == 6002 and deleted[rid(6)].number == 6
    assert deleted[stale_id].number is None
    assert result.pinned == {
        rid(1): "'last' for suite old", rid(2): "'best' for suite s",
        rid(3): f"saved as baseline {base.resolve()}", rid(4): f"baseline of run #8 {rid(8)}"}
    assert result.running == [rid(10)]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [rid(i) for i in (1, 2, 3, 4, 8, 9, 10)])
    with RunHistory(db, readonly=True) as h:
        assert [r.seq for r in h.runs()] == [1, 2, 3, 4, 8, 9]
        assert h.resolve("best") == rid(2)
    assert result.freed >= 5000 + 6000 + 7000
    assert result.history_bytes is not None
    before, after = result.history_bytes
    assert after <= before  # compacted, the log emptied into the file
    assert not db.with_name(db.name + "-wal").exists() or \
        db.with_name(db.name + "-wal").stat().st_size == 0
    text = prune_lines(result)
    assert text[0].startswith("pruned 4 runs, freed ") and text[0].endswith(
        "(keeping the newest 2 and 4 a baseline points at)")
    assert f"  deleted #6 {rid(6)}: folder 6.0 kB, history row" in text

    # main.json saved over by run 8 (stored again, as a resumed run is): run 3 is no longer
    # pinned; 4 still is (8 is kept).
    save_baseline(base, doc(rid(8), 0.4))
    with RunHistory(db) as h:
        h.append(doc(rid(8), 0.4), compared_with=[rid(4)], saved_to=base)
    again = prune_runs(out, db, 2, protect=[rid(1)])
    assert [r.run_id for r in again.deleted] == [rid(3)]
    assert again.pinned == {rid(1): "this run", rid(2): "'best' for suite s",
                            rid(4): f"baseline of run #8 {rid(8)}"}
    with RunHistory(db) as h:
        h.append(doc(rid(11), 0.5))
        assert h.number_of(rid(11)) == 10  # 3, 5, 6 and 7 are never handed out again


def test_prune_without_a_history_prunes_folders(rb):
    out = rb / "runs"
    for i in (1, 2, 3):
        folder(out, rid(i))
    result = prune_runs(out, rb / "history.sqlite", 1)
    assert [r.run_id for r in result.deleted] == [rid(1), rid(2)]
    assert not (rb / "history.sqlite").exists()
    with pytest.raises(ValueError):
        prune_runs(out, None, 0)


def test_prune_leaves_folders_that_are_not_runs_of_their_own(rb):
    """A copy of a run kept under another name (good-main-copy, 2025-release) was taken for
    a run: deleted, or sorted after every run id, it used up the runs kept."""
    out = rb / "runs"
    for i in (1, 2, 3):
        folder(out, rid(i))
    for name in ("good-main-copy", "2025-release"):
        folder(out, name)
    result = prune_runs(out, rb / "history.sqlite", 1)
    assert [r.run_id for r in result.deleted] == [rid(1), rid(2)]
    assert (out / "good-main-copy").is_dir() and (out / "2025-release").is_dir()


def test_prune_keeps_the_runs_an_unfinished_resume_still_reuses(rb):
    """A resumed run stopped before it replayed every record it reuses (-x, Ctrl-C) reuses
    the rest from the run it resumed (its run.json's resumed_from) when resumed in turn: that
    partial run, neither last nor best, was pruned at the stopped run's end, and the next
    resume ran its finished cases again."""
    out = rb / "runs"
    older, first = folder(out, rid(1)), folder(out, rid(2), summary=False)
    partial = folder(out, rid(3), summary=False)
    whole = folder(out, rid(4))
    for run, partial_run in ((partial, "true"), (whole, "false")):
        (run / "summary.json").write_text(f'{{"run": {{"partial": {partial_run}}}}}',
                                          encoding="utf-8")
    for run, earlier in ((partial, first), (whole, older)):
        (run / "run.json").write_text(json.dumps({"resumed_from": str(earlier)}),
                                      encoding="utf-8")
    result = prune_runs(out, rb / "history.sqlite", 1, protect=[rid(3)], now=time.time() + 7200)
    assert result.pinned == {rid(3): "this run",
                             rid(2): f"resumed by the unfinished run {rid(3)}"}
    assert [r.run_id for r in result.deleted] == [rid(1)]  # its resume holds all its records
    assert first.is_dir() and not older.exists()


def test_baseline_run_ids_of_documents():
    assert baseline_run_ids(doc(rid(1), 0.5)) == [rid(1)]
    per_suite = {"run": {"id": None, "runs": {"s": rid(2), "t": rid(3)}},
                 "suites": {"s.yaml": {"run_id": rid(2)}, "t.yaml": {"run_id": rid(3)}}}
    assert baseline_run_ids(per_suite) == [rid(2), rid(3)]
    assert baseline_run_ids({}) == []


# -- the command -----------------------------------------------------------------------------

def test_cli_numbers_in_compare_report_and_prune(tmp_path, rb, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out, db = rb / "runs", rb / "history.sqlite"
    with RunHistory(db) as h:
        for i in (1, 2, 3):
            h.append(doc(rid(i), 0.9 if i == 2 else 0.5), passed=True)
    assert main(["compare", "1", "#3"]) == 0
    assert f"history run #3 ({rid(3)}) against baseline history run #1 ({rid(1)})" in (
        capsys.readouterr().out)
    assert main(["compare", "1", "9"]) == 2
    assert "no run number 9 in the run history" in capsys.readouterr().err
    assert main(["report", "9"]) == 2
    assert "no run number 9" in capsys.readouterr().err
    assert main(["report", "2"]) == 2  # in the history, but it wrote no folder here
    assert f"(#2, id {rid(2)}) has no run folder in" in capsys.readouterr().err

    for i in (1, 2, 3):
        folder(out, rid(i), size=2_000_000)
    assert main(["history", "--prune", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ragbench history: pruned 1 run, freed ")
    assert f"  deleted #1 {rid(1)}: folder 2.0 MB, history row" in lines
    assert f"  kept #2 {rid(2)}: 'best' for suite s" in lines
    assert any(line.startswith("  history: ") for line in lines)
    assert sorted(p.name for p in out.iterdir()) == [rid(2), rid(3)]
    assert main(["history"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing[1:3]] == ["2", "3"]
    assert main(["history", "--prune", "0"]) == 2
    assert main(["history", "--prune", "1", "--db", "none.sqlite", "--out", "nowhere"]) == 2
    assert "nothing to prune" in capsys.readouterr().err


def test_cli_prune_refuses_an_out_folder_that_does_not_exist(tmp_path, rb, monkeypatch,
                                                              capsys):
    """'ragbench history --prune 1 --out .ragbench/run' (a typo of runs) found no run folder
    there and deleted the history rows of every run but the newest, exit 0, their folders
    left in .ragbench/runs without them."""
    monkeypatch.chdir(tmp_path)
    out, db = rb / "runs", rb / "history.sqlite"
    with RunHistory(db) as h:
        for i in (1, 2, 3):
            h.append(doc(rid(i), 0.5), passed=True)
    for i in (1, 2, 3):
        folder(out, rid(i))
    typo = rb / "run"
    assert main(["history", "--prune", "1", "--out", str(typo)]) == 2
    assert f"ragbench history: --out {typo}: no such folder" in capsys.readouterr().err
    with RunHistory(db, readonly=True) as h:
        assert [r.id for r in h.runs()] == [rid(1), rid(2), rid(3)]
    assert main(["history", "--prune", "1", "--out", str(out)]) == 0


def test_cli_prune_refuses_a_history_file_that_does_not_exist(tmp_path, rb, monkeypatch,
                                                              capsys):
    """'ragbench history --prune 1 --history .ragbench/histroy.sqlite' (a typo) pruned the
    run folders without the history that pins runs: the folder of 'best' went with the
    others, exit 0."""
    monkeypatch.chdir(tmp_path)
    out, db = rb / "runs", rb / "history.sqlite"
    with RunHistory(db) as h:
        for i in (1, 2, 3):
            h.append(doc(rid(i), 0.9 if i == 1 else 0.5), passed=True)
    for i in (1, 2, 3):
        folder(out, rid(i))
    typo = rb / "histroy.sqlite"
    assert main(["history", "--prune", "1", "--history", str(typo)]) == 2
    assert f"ragbench history: no run history at {typo}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [rid(1), rid(2), rid(3)]
    assert main(["history", "--prune", "1", "--history", str(db)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [rid(1), rid(3)]  # 1 is 'best'


def test_cli_report_by_number(tmp_path, rb, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out, db = rb / "runs", rb / "history.sqlite"
    with RunHistory(db) as h:
        h.append(doc(rid(1), 0.5), passed=True)
    run = make_run_folder(out, rid(1))
    (run / "cases.jsonl").write_text(json.dumps({
        "suite": "s.yaml", "suite_name": "s", "retriever": "bm25", "case_id": "q1",
        "query": "q", "metrics": {"recall@10": 1.0}, "status": "ok"}) + "\n")
    status = main(["report", "1"])
    err = capsys.readouterr()
    assert status == 0, err.err
    assert str(run / "report.html") in err.out


def test_resume_reads_run_references_as_everything_else_does(tmp_path, rb):
    from pytest_ragbench.results.resume import ResumeError, resolve_run_folder

    out, db = rb / "runs", rb / "history.sqlite"
    with RunHistory(db) as h:
        for i in (1, 2):
            h.append(doc(rid(i), 0.1 * i))
    for i in (1, 2):
        (folder(out, rid(i)) / "cases.jsonl").write_text("{}\n", encoding="utf-8")
    assert resolve_run_folder("1", out, tmp_path, history=db) == (out / rid(1)).resolve()
    assert resolve_run_folder("last", out, tmp_path, history=db) == (out / rid(2)).resolve()
    with pytest.raises(ResumeError, match=r"cannot resume from '9': .*no run number 9"):
        resolve_run_folder("9", out, tmp_path, history=db)
