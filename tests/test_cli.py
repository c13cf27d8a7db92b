"""The ``ragbench`` command line: dispatch, exit codes, compare and history."""

from __future__ import annotations

import json

import pytest

from pytest_ragbench.cli import main
from pytest_ragbench.results.baseline import save_baseline
from pytest_ragbench.results.history import RunHistory


def _doc(run_id: str, drop: int, *, gates: list[str] | None = None) -> dict:
    scores = {f"q{i:02d}": (0.6 if i < drop else 1.0) for i in range(30)}
    return {
        "schema_version": 1, "kind": "ragbench-baseline", "run": {"id": run_id},
        "suites": {"s.yaml": {
            "name": "s", "suite_hash": "h", "dataset_hash": "d", "seed": 0,
            "gates": gates if gates is not None else ["ndcg@10: no significant drop"],
            "baseline_settings": {}, "cases": {},
            "retrievers": {"r": {"n_cases": 30, "n_errors": 0, "errors": [], "metrics": {
                "ndcg@10": {"mean": sum(scores.values()) / 30, "direction": "higher",
                            "scores": scores}}}},
        }},
    }


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_baseline(tmp_path / "base.json", _doc("base", 0))
    save_baseline(tmp_path / "same.json", _doc("same", 0))
    save_baseline(tmp_path / "worse.json", _doc("worse", 10))
    return tmp_path


def test_compare_exit_codes(files, capsys):
    assert main(["compare", "base.json", "same.json"]) == 0
    assert "ragbench compare: passed" in capsys.readouterr().out
    assert main(["compare", "base.json", "worse.json"]) == 1
    out = capsys.readouterr().out
    assert "ragbench: gate failed: s/r ndcg@10 dropped significantly" in out
    assert "delta -0.1333" in out and "ragbench compare: FAILED" in out
    assert main(["compare", "base.json", "missing.json"]) == 2
    assert "run to check 'missing.json': no such file or run folder: " in capsys.readouterr().err


def test_compare_names_which_side_it_could_not_find(files, capsys):
    # B is the run to check, not a baseline: an error calling it one sends the user to fix A
    assert main(["compare", "base.json", "nowhere/run"]) == 2
    err = capsys.readouterr().err
    assert "run to check 'nowhere/run': no such file or run folder: " in err
    assert "baseline" not in err
    assert main(["compare", "nowhere/base", "same.json"]) == 2
    assert "baseline 'nowhere/base': no such file or run folder: " in capsys.readouterr().err
    assert main(["compare", "base.json", "last"]) == 2
    err = capsys.readouterr().err
    assert "run to check 'last'" in err and "baseline" not in err


def test_compare_options_override_the_suite(files, capsys):
    # A generous absolute drop gate from the command line passes; the stored significance
    # gate still fails.
    assert main(["compare", "base.json", "worse.json", "--gate", "ndcg@10: drop <= 0.2",
                 "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    kinds = {g["kind"]: g["passed"] for g in out["gates"]}
    assert kinds == {"drop": True, "significance": False}
    assert main(["compare", "base.json", "worse.json", "--alpha", "1e-12"]) == 0
    capsys.readouterr()
    assert main(["compare", "base.json", "worse.json", "--gate", "mrr@10 >= 1"]) == 2
    assert "not among the suite's metrics" in capsys.readouterr().err


def test_compare_lists_a_gate_the_suite_has_or_given_twice_once(files, capsys):
    """'--gate "ndcg@10: no significant drop"' is the stored gate, and 'ndcg@10: 0.5'
    the 'ndcg@10 >= 0.5' before it: each check is judged and listed once, as the live
    run lists it."""
    assert main(["compare", "base.json", "same.json", "--json",
                 "--gate", "ndcg@10: no significant drop", "--gate", "ndcg@10 >= 0.5",
                 "--gate", "ndcg@10: 0.5", "--gate", "ndcg@10 >= 0.5"]) == 0
    gates = json.loads(capsys.readouterr().out)["gates"]
    assert [g["text"] for g in gates] == ["ndcg@10 >= 0.5", "ndcg@10: no significant drop"]


def test_compare_against_a_baseline_of_no_suite_of_the_run_exits_2(files, capsys):
    # as the plugin refuses it (exit 4): nothing would be compared, and it passed
    other = _doc("other", 10)
    other["suites"]["o.yaml"] = {**other["suites"].pop("s.yaml"), "name": "o"}
    save_baseline(files / "other.json", other)
    assert main(["compare", "base.json", "other.json"]) == 2
    err = capsys.readouterr().err
    assert "matches no suite of this run" in err and "this run: o; the baseline: s" in err


def test_compare_refuses_what_would_compare_nothing(files, capsys):
    # as the plugin does: a run none of whose systems the baseline holds, and a --gate
    # scoped to a system the run does not have (both passed, comparing nothing)
    renamed = _doc("renamed", 10)
    renamed["suites"]["s.yaml"]["retrievers"] = {
        "rr": renamed["suites"]["s.yaml"]["retrievers"]["r"]}
    save_baseline(files / "renamed.json", renamed)
    assert main(["compare", "base.json", "renamed.json"]) == 2
    err = capsys.readouterr().err
    assert "holds none of the systems of suite s (this run: rr; the baseline: r)" in err
    assert main(["compare", "base.json", "same.json", "--gate",
                 "retriever=x: ndcg@10 >= 0.5"]) == 2
    assert "the run has no system 'x'" in capsys.readouterr().err
    assert main(["compare", "base.json", "same.json", "--gate",
                 "retriever=r: ndcg@10 >= 0.5"]) == 0


def test_compare_refuses_a_gate_on_a_system_no_suite_computing_its_metric_has(files, capsys):
    """As the plugin refuses it: 'retriever=bm25: ndcg@10' where bm25 is a suite's that
    computes recall@10 alone and ndcg@10 another suite's, which has no bm25: each suite
    left the gate alone, it judged nothing and the comparison passed without a word of it."""
    two = _doc("two", 0)
    sb = two["suites"].pop("s.yaml")
    scores = {"q1": 1.0, "q2": 0.5}
    sa = {**sb, "name": "sa", "gates": [], "retrievers": {"bm25": {
        "n_cases": 2, "n_errors": 0, "errors": [], "metrics": {"recall@10": {
            "mean": 0.75, "direction": "higher", "scores": scores}}}}}
    overlap = {"overlap": sb["retrievers"]["r"]}
    two["suites"].update({"sa.yaml": sa,
                          "sb.yaml": {**sb, "name": "sb", "gates": [], "retrievers": overlap}})
    save_baseline(files / "two.json", two)
    gate = "retriever=bm25: ndcg@10 >= 0.5"
    assert main(["compare", "two.json", "two.json", "--gate", gate]) == 2
    err = capsys.readouterr().err
    assert (f"--gate {gate!r}: no suite of the run with system 'bm25' computes 'ndcg@10'; "
            "the suites with 'bm25' compute: sa [sa.yaml] (recall@10)") in err, err
    # a suite with both, or the error rate, which every suite has
    for fine in ("retriever=bm25: recall@10 >= 0.5", "retriever=overlap: ndcg@10 >= 0.5",
                 "retriever=bm25: error_rate <= 0.1"):
        assert main(["compare", "two.json", "two.json", "--gate", fine, "--json"]) == 0, fine
        judged = json.loads(capsys.readouterr().out)["gates"]
        assert [g["text"] for g in judged] == [fine]


def test_a_gate_on_no_common_query_says_so(files, capsys):
    # renamed query ids: the significance gate fails, and its line says why (not "dropped
    # significantly ... delta nan")
    other = _doc("other", 0)
    metric = other["suites"]["s.yaml"]["retrievers"]["r"]["metrics"]["ndcg@10"]
    metric["scores"] = {f"z{k}": v for k, v in metric["scores"].items()}
    save_baseline(files / "other.json", other)
    assert main(["compare", "base.json", "other.json"]) == 1
    out = capsys.readouterr().out
    assert ("ragbench: gate failed: s/r ndcg@10: no query in common with the baseline "
            "(`ndcg@10: no significant drop`, n = 0): nothing was compared") in out


def test_compare_says_there_is_no_run_history(files, capsys):
    """'ragbench compare last 5' where no history is said 'is not a file, a run folder nor a
    run in .../history.sqlite', as if the file were there; the plugin's
    --ragbench-baseline=last says there is no run history there."""
    for args, role in ((["last", "same.json"], "baseline"), (["base.json", "5"], "run to check")):
        assert main(["compare", *args]) == 2
        err = capsys.readouterr().err
        spec = args[0] if role == "baseline" else args[1]
        assert (f"{role} {spec!r} is not a file, a run folder nor a run in "
                f"{files / '.ragbench' / 'history.sqlite'} (no run history there)") in err, err


def test_compare_of_a_run_folders_file_names_the_folder(files, capsys):
    """'ragbench compare A .ragbench/runs/X/summary.json' said 'not a ragbench baseline ...
    save one with --ragbench-save-baseline', sending the user to run again; the folder
    itself is what names the run."""
    run = files / "runs" / "20250101T000000Z-abcdef"
    run.mkdir(parents=True)
    (files / "runs" / "latest").symlink_to(run.name)
    for folder in (run, files / "runs" / "latest"):
        for name in ("summary.json", "cases.jsonl", "run.json"):
            (run / name).write_text("{}\n")
            assert main(["compare", "base.json", str(folder / name)]) == 2
            err = capsys.readouterr().err
            assert (f"run to check '{folder / name}' is a file of the run folder {folder}: "
                    "name the folder itself") in err, err
            assert "--ragbench-save-baseline" not in err
    # a baseline saved under that name is one
    save_baseline(run / "summary.json", _doc("same", 0))
    assert main(["compare", "base.json", str(run / "summary.json")]) == 0


def test_compare_says_a_run_that_did_not_finish_has_no_summary(files, capsys):
    """A run killed before its end leaves its cases and run.json, not its summary: it was
    called "not a run folder", which ``ragbench report`` contradicts."""
    killed = files / "killed"
    killed.mkdir()
    (killed / "run.json").write_text("{}")
    (killed / "cases.jsonl").write_text("")
    assert main(["compare", "base.json", str(killed)]) == 2
    err = capsys.readouterr().err
    assert f"{killed}: the run did not finish (it has cases.jsonl but no summary.json)" in err
    assert f"--ragbench-resume={killed} makes a whole run of its cases" in err
    assert "not a run folder" not in err


def test_compare_usage_errors_exit_2(files, capsys):
    assert main(["compare", "base.json"]) == 2
    assert main(["compare", "a", "b", "--gate", "ndcg@10 at least 1"]) == 2
    assert "cannot parse" in capsys.readouterr().err
    assert main(["compare", "a", "b", "--test", "magic"]) == 2
    assert main(["nope"]) == 2
    assert main([]) == 2


def test_compare_history_runs(files, capsys):
    with RunHistory(files / ".ragbench" / "history.sqlite") as h:
        h.append(_doc("20250101-a", 0))
        h.append(_doc("20250102-b", 10))
    assert main(["compare", "20250101-a", "last"]) == 1
    out = capsys.readouterr().out
    assert "history run #2 (20250102-b) against baseline history run #1 (20250101-a)" in out
    assert main(["history"]) == 0
    out = capsys.readouterr().out
    assert "20250101-a" in out and "trend of ndcg@10" in out
    assert main(["history", "--db", "nowhere.sqlite"]) == 2
    # a metric or a suite the history does not know is a typo: a usage error, said
    assert main(["history", "--metric", "ndgc@10"]) == 2
    assert "metric 'ndgc@10' is not in the history" in capsys.readouterr().out
    assert main(["history", "--suite", "nope"]) == 2
    assert main(["history", "--metric", "ndcg@10"]) == 0


def test_report_subcommand_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a ragbench run folder" in capsys.readouterr().err


@pytest.mark.parametrize("gate", ["ndcg@10 <= 60", "ndcg@10 >= 60", "error_rate <= 5"])
def test_compare_refuses_a_gate_bound_outside_the_metrics_range(files, capsys, gate):
    """As the plugin refuses it in --ragbench-gate: 'error_rate <= 5' (for 5%) passed
    whatever the run's errors, 'ndcg@10 >= 60' (for 0.6) failed whatever its scores."""
    assert main(["compare", "base.json", "same.json", "--gate", gate]) == 2
    err = capsys.readouterr().err
    assert f"--gate {gate!r}: " in err and "lies between 0 and 1" in err
    assert main(["compare", "base.json", "same.json", "--gate", "ndcg@10 >= 0.6"]) == 0
