"""What only a pytest run shows of the team history: ``ragbench_keep_runs`` pruning at the end
of a run, ``--ragbench-baseline=<run number>``, and the ``.ragbench/.gitignore`` a first run
writes. The domain is tested in tests/unit/test_history_team.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import BASE_INI, latest_run

from pytest_ragbench.results.baseline import save_baseline
from pytest_ragbench.results.history import RunHistory
from pytest_ragbench.results.runfolder import GITIGNORE_TEXT, make_run_folder

SUITE = "--ragbench=suite.yaml"


def rid(i: int) -> str:
    return f"202501{i:02d}T000000Z-{i:06x}"


def doc(run_id: str, *, partial: bool = False) -> dict:
    """An older run of another suite, as the history stores it."""
    return {"schema_version": 1, "kind": "ragbench-baseline", "created": "t",
            "run": {"id": run_id, "partial": partial, "exitstatus": 0},
            "suites": {"s.yaml": {"name": "s", "retrievers": {"r": {"metrics": {
                "recall@10": {"mean": 0.5, "direction": "higher",
                              "scores": {"q1": 0.5}}}}}}}}


def folder(out: Path, run_id: str) -> None:
    run = make_run_folder(out, run_id)
    (run / "summary.json").write_text("{}")
    (run / "cases.jsonl").write_bytes(b"x" * 50_000)


def test_keep_runs_prunes_old_runs_at_the_end_of_a_run(pytester, mini_suite):
    mini_suite()
    rb = pytester.path / ".ragbench"
    out, db, base = rb / "runs", rb / "history.sqlite", pytester.path / "base.json"
    with RunHistory(db) as h:
        h.append(doc(rid(1), partial=True))
        h.append(doc(rid(2)), saved_to=base)
    save_baseline(base, doc(rid(2)))
    for i in (1, 2, 3):  # 3: a run made with --ragbench-no-history, a folder only
        folder(out, rid(i))

    pytester.makeini(BASE_INI + "ragbench_keep_runs = 1\n")
    result = pytester.runpytest(SUITE)

    assert result.ret == 0
    result.stdout.fnmatch_lines(["ragbench: pruned 2 runs, freed 100.* kB (keeping the newest 1 "
                                 "and 1 a baseline points at) (ragbench_keep_runs = 1)"])
    this_run = latest_run(pytester.path).name
    assert sorted(p.name for p in out.iterdir() if not p.is_symlink()) == sorted(
        [rid(2), this_run])
    with RunHistory(db, readonly=True) as h:
        assert [(r.seq, r.id) for r in h.runs()] == [(2, rid(2)), (3, this_run)]

    pytester.makeini(BASE_INI + "ragbench_keep_runs = many\n")
    bad = pytester.runpytest(SUITE)
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: ragbench: ragbench_keep_runs in *tox.ini: expected a "
                              "whole number of runs to keep (at least 1), got 'many'"])


def test_baseline_by_run_number(pytester, mini_suite):
    mini_suite()
    assert pytester.runpytest(SUITE).ret == 0
    rb = pytester.path / ".ragbench"
    assert (rb / ".gitignore").read_text() == GITIGNORE_TEXT
    first = latest_run(pytester.path).name

    result = pytester.runpytest(SUITE, "--ragbench-baseline=1")

    assert result.ret == 0
    second = latest_run(pytester.path)
    summary = json.loads((second / "summary.json").read_text())
    assert summary["baseline"]["spec"] == "1"
    assert summary["baseline"]["baseline_run"] == first
    result.stdout.fnmatch_lines([f"baseline history run #1 ({first}):"])
    with RunHistory(rb / "history.sqlite", readonly=True) as h:
        # What pruning keeps run 1 for, as long as run 2 is kept.
        assert h.baseline_refs() == [(second.name, first, None)]

    missing = pytester.runpytest(SUITE, "--ragbench-baseline=5")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["ERROR: ragbench: baseline '5': *history.sqlite: no run number "
                                  "5 in the run history (it holds 2 runs, numbered 1 to 2; "
                                  "'ragbench history' lists them)"])
