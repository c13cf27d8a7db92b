"""Comparisons against a baseline: a planted regression fails, identical runs pass, the CLI
agrees with the plugin, and -n 2 gives the same result."""

from __future__ import annotations

import json
import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# Imported here, before any in-process pytester run: pytester restores sys.modules after each
# run, and numpy's extension modules cannot be loaded a second time in one process.
import scipy.stats  # noqa: F401
from conftest import BASE_INI, write_jsonl
from test_plugin_core import latest_run, summary_section

from pytest_ragbench.cli import main as ragbench_main
from pytest_ragbench.report.views import failure_lines
from pytest_ragbench.results.compare import Overrides, compare_docs

N_QUERIES = 100

PLANTED = '''
class Planted:
    """Ranks the relevant document first, except for the first ``degrade`` queries, where it
    comes second: a planted regression of about 0.0037 nDCG@10 per degraded query."""

    def __init__(self, degrade=0):
        self.degrade = int(degrade)

    def index(self, corpus):
        self.n = len(list(corpus))

    def retrieve(self, query, k):
        i = int(query.split()[1])
        first, other = f"d{i}", f"d{(i + 1) % self.n}"
        ranked = [other, first] if i < self.degrade else [first, other]
        return [(d, float(2 - r)) for r, d in enumerate(ranked)]
'''


def _suite(degrade: int, gates: str, data: str = "") -> str:
    return textwrap.dedent(f"""\
        name: planted
        dataset: {{corpus: {data}corpus.jsonl, queries: {data}queries.jsonl}}
        retrievers:
          planted: {{type: "planted:Planted", degrade: {degrade}}}
        metrics: [ndcg@10, mrr@10]
        """) + gates


GATES = ('gates:\n  - "ndcg@10: drop <= 0.02"\n  - "ndcg@10: no significant drop at 0.05"\n'
         '  - "mrr@10: drop <= 5%"\n')


@pytest.fixture
def planted(pytester: pytest.Pytester):
    pytester.makeini(BASE_INI)
    return write_planted(pytester)


def write_planted(pytester: pytest.Pytester, name: str = "suite.yaml", data: str = ""):
    """The planted dataset (files named ``data`` + corpus.jsonl, ...) and retriever module;
    returns a writer of the suite file ``name`` with a given number of degraded queries."""
    write_jsonl(pytester.path / f"{data}corpus.jsonl",
                [{"_id": f"d{i}", "text": f"doc {i}"} for i in range(N_QUERIES)])
    write_jsonl(pytester.path / f"{data}queries.jsonl", [
        {"_id": f"q{i:03d}", "text": f"query {i}", "relevant": {f"d{i}": 1},
         "difficulty": "hard" if i < 20 else "easy"}
        for i in range(N_QUERIES)])
    pytester.makepyfile(planted=PLANTED)

    def write(degrade: int, gates: str = GATES) -> Path:
        path = pytester.path / name
        path.write_text(_suite(degrade, gates, data), encoding="utf-8")
        return path

    return write


def _save_baseline(pytester, planted) -> None:
    planted(0)
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-save-baseline=base.json",
                                "-q")
    assert result.ret == 0


# The planted regression's check needs a serial and an -n 2 run against one baseline;
# tests/test_answer_metrics_e2e.py collects planted.yaml beside its own suites in its pair of
# runs (worker start-up is most of an xdist run's time): prepare_planted_regression, then
# check_planted_serial and check_planted_parallel.
PLANTED_ARGS = ("--ragbench=planted.yaml", "--ragbench-baseline=base.json")


def prepare_planted_regression(pytester: pytest.Pytester) -> None:
    """A baseline saved from the planted suite (planted.yaml, data in planted_*.jsonl), then
    the suite regressed: 8 of 100 queries lose 1 - 1/log2(3), a drop of 0.0295 in
    nDCG@10."""
    write = write_planted(pytester, name="planted.yaml", data="planted_")
    write(0)
    result = pytester.runpytest("--ragbench=planted.yaml", "--ragbench-save-baseline=base.json",
                                "-q")
    assert result.ret == 0
    write(8)


def _planted_records(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "cases.jsonl").read_text().splitlines())
            if r["suite_name"] == "planted"]


def _planted_reasons(summary: dict) -> list[dict]:
    return [r for r in summary["verdict"]["reasons"] if r["kind"] not in
            ("items_failed", "items_errored")]


def check_planted_serial(result: pytest.RunResult, run: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """The serial run shows the regression, and the CLI comparing its run folder agrees."""
    # every item passed; the gates fail the run
    recs = _planted_records(run)
    assert len(recs) == N_QUERIES and all(r["status"] == "ok" for r in recs)
    result.stdout.fnmatch_lines([
        "ragbench: gate failed: planted/planted ndcg@10 dropped more than allowed "
        "(`ndcg@10: drop <= 0.02`, allowed 0.0200): delta -0.0295, 95% CI [[]-0.0*, -0.0*[]], "
        "p = 0.0040 (permutation, Holm), 1.0000 -> 0.9705, n = 100",
        "ragbench: gate failed: planted/planted ndcg@10 dropped significantly at 0.05 "
        "(`ndcg@10: no significant drop at 0.05`): delta -0.0295, *p = 0.0040*",
    ])
    # mrr@10 lost 0.04 (4%), inside its 5% allowance.
    assert "mrr@10 dropped" not in result.stdout.str()
    summary = json.loads((run / "summary.json").read_text())
    # the run fails by the gates (too), whatever else fails in it
    assert summary["passed"] is False
    assert [(r["kind"], r["count"], r["fails"]) for r in _planted_reasons(summary)] == [
        ("gates_failed", 2, True)]
    assert {g["suite"] for g in summary["gates"] if not g["passed"]} == {"planted"}
    row = next(r for r in summary["baseline"]["rows"] if r["metric"] == "ndcg@10")
    assert row["delta"] == pytest.approx(-8 * (1 - 1 / 1.5849625007211563) / 100)
    assert row["ci_high"] < 0 and row["test"] == "permutation"
    assert row["alternative"] == "less"
    md = (run / "summary.md").read_text()
    assert md.startswith("## ragbench: FAILED") and "### Against the baseline" in md

    # the CLI compare agrees with the plugin
    monkeypatch.chdir(result_root(run))
    capsys.readouterr()
    assert ragbench_main(["compare", "base.json", str(run), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == summary["baseline"]["rows"]
    plugin_fails = [line for line in result.outlines if line.startswith("ragbench: gate failed")]
    assert out["failures"] == plugin_fails and len(plugin_fails) == 2
    assert ragbench_main(["compare", "base.json", "base.json"]) == 0


def result_root(run: Path) -> Path:
    """The project folder of a run folder (ROOT/.ragbench/runs/RUN)."""
    return run.parents[2]


def _untimed(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.lstrip().startswith("llm pool ")]


def check_planted_parallel(serial: pytest.RunResult, serial_run: Path,
                           parallel: pytest.RunResult, parallel_run: Path) -> None:
    """Results identical with two workers."""
    summary = json.loads((serial_run / "summary.json").read_text())
    parallel_json = json.loads((parallel_run / "summary.json").read_text())
    assert serial.ret == parallel.ret == 1
    assert _planted_reasons(summary) == _planted_reasons(parallel_json)
    # The whole terminal summary, but the LLM pools of the run's other suites (requests in
    # flight at once depend on the scheduling; the planted suite uses no LLM).
    assert _untimed(summary_section(serial.outlines)) == _untimed(
        summary_section(parallel.outlines))
    assert summary["baseline"]["rows"] == parallel_json["baseline"]["rows"]
    assert summary["gates"] == parallel_json["gates"]
    assert len(_planted_records(parallel_run)) == N_QUERIES


def test_identical_small_drop_and_changed_dataset_against_one_baseline_and_an_ab_table(
        pytester, planted):
    _save_baseline(pytester, planted)
    # an identical run passes; beside it, a suite the baseline does not hold (ab.yaml, no
    # gates) compares its two retrievers (the A/B table is per suite): one run for both
    planted(0)
    (pytester.path / "ab.yaml").write_text(_suite(0, "").replace("name: planted", "name: ab")
                                           .replace("retrievers:\n", "retrievers:\n  worse: "
                                                    "{type: \"planted:Planted\", degrade: 30}\n"))
    result = pytester.runpytest("--ragbench-summary=full", "--ragbench=suite.yaml",
                                "--ragbench=ab.yaml", "--ragbench-baseline=base.json")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "  PASS planted/planted: ndcg@10: drop <= 0.02: delta +0.0000 *",
        "  ok        planted/planted: ndcg@10 1.0000 vs baseline 1.0000 (delta +0.0000*",
    ])
    assert "gate failed" not in result.stdout.str()
    result.stdout.fnmatch_lines([
        "A/B ab ndcg@10 (permutation, two-sided, Holm-corrected; * p < 0.05):",
        "  planted vs worse: +0.1107 [[]+0.*, +0.*[]] p = * [*]",
        "  best: planted (P(best) = 1.00)",
    ])
    summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
    (suite,) = [s for s in summary["suites"] if s["name"] == "ab"]
    ab = suite["ab"][0]
    assert ab["best"] == "planted" and ab["pairs"][0]["significant"] is True

    # a small drop within the gates passes, but a plain baseline catches it
    planted(1, gates="")  # one query degraded: -0.0037, not significant
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-baseline=base.json",
                                "--ragbench-gate", "ndcg@10: drop <= 0.02",
                                "--ragbench-gate", "ndcg@10: no significant drop",
                                "--ragbench-gate", "mrr@10: drop <= 0.02")
    assert result.ret == 0, result.stdout.str()
    # Without baseline gates a plain comparison keeps the old meaning: any drop regresses.
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-baseline=base.json")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["ragbench: regression: planted/planted ndcg@10 dropped from "
                                 "1.0000 to 0.9963 (delta -0.0037, 95% CI *tolerance 0)"])

    # require_same_dataset fails on a changed query set
    path = planted(0, gates="baseline: {require_same_dataset: true}\n")
    path.write_text(path.read_text().replace(
        "queries: queries.jsonl}", "queries: queries.jsonl, max_queries: 90}"))
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-baseline=base.json")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "  suite planted: suite file changed, dataset changed, 0 queries added, 10 removed; "
        "compared on the 90 common queries",
        "ragbench: dataset differs from the baseline in suite planted: *0 queries added, "
        "10 removed (require_same_dataset is set)",
    ])


ROW_GATES = ('gates:\n  - "ndcg@10: drop <= 0.01"\n'
             '  - "difficulty=hard: mrr@10: no significant drop"\n')


def test_a_row_whose_gate_failed_reads_regressed_in_every_output(pytester, planted,
                                                                  monkeypatch, capsys):
    """A row judged by a drop or significance gate, or a scoped row, has no tolerance: it
    read "ok" in the terminal, summary.md, the HTML report, summary.json and 'ragbench
    compare' right beside the gate judged on it FAILING. It takes the gate's outcome; the
    verdict counts the failure once, as the failed gate."""
    _save_baseline(pytester, planted)
    planted(8, gates=ROW_GATES)
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-baseline=base.json",
                                "--ragbench-summary=full", "--junitxml=out.xml")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "  REGRESSED planted/planted: ndcg@10 0.9705 vs baseline 1.0000 *",
        # no check judges the whole set's mrr@10 (the scoped gate stands for it)
        "  unchecked planted/planted: mrr@10 0.9600 vs baseline 1.0000 *",
        "  REGRESSED planted/planted [[]difficulty=hard[]]: mrr@10 0.8000 vs baseline 1.0000 *",
    ])
    # one line per failure: the gates', no regression line for the same rows
    assert [line.split(" (")[0] for line in result.outlines
            if line.startswith(("ragbench: gate failed", "ragbench: regression"))] == [
        "ragbench: gate failed: planted/planted ndcg@10 dropped more than allowed",
        "ragbench: gate failed: planted/planted [difficulty=hard] mrr@10 dropped significantly "
        "at 0.05"]
    run = latest_run(pytester.path)
    summary = json.loads((run / "summary.json").read_text())
    marks = {(r["metric"], r["scope"]): (r["regressed"], r["beyond_tolerance"],
                                         r["failed_gates"], r["checked"])
             for r in summary["baseline"]["rows"]}
    assert marks == {("ndcg@10", ""): (True, False, ["ndcg@10: drop <= 0.01"], True),
                     ("mrr@10", ""): (False, False, [], False),
                     ("mrr@10", "difficulty=hard"): (
                         True, False, ["difficulty=hard: mrr@10: no significant drop"], True)}
    assert [(r["kind"], r["count"]) for r in _planted_reasons(summary)] == [
        ("gates_failed", 2)]
    md = (run / "summary.md").read_text()
    assert "| **REGRESSED** | planted/planted | ndcg@10 |" in md
    assert "| unchecked | planted/planted | mrr@10 |" in md
    assert "| **REGRESSED** | planted/planted [difficulty=hard] | mrr@10 |" in md
    html = (run / "report.html").read_text()
    marked = re.findall(r'<span class="badge \w+">(\w+)</span></td><td>planted</td>'
                        r"<td>([^<]*)</td>", html)
    assert marked == [("REGRESSED", "ndcg@10"), ("unchecked", "mrr@10"),
                      ("REGRESSED", "mrr@10 [difficulty=hard]")]
    assert "regressed against the baseline" in html
    # junit: the two gates fail, and no row is a testcase of a check never made
    root = ET.parse(pytester.path / "out.xml").getroot()
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert failed == ["ndcg@10: drop <= 0.01", "difficulty=hard: mrr@10: no significant drop"]

    monkeypatch.chdir(pytester.path)
    capsys.readouterr()
    assert ragbench_main(["compare", "base.json", str(run)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line[:12] for line in out if " vs baseline " in line] == [
        "  REGRESSED ", "  unchecked ", "  REGRESSED "]
    assert out[-1] == "ragbench compare: FAILED: 2 gates failed"


def test_a_missing_baseline_is_a_clear_failure_and_history_last_is_a_baseline(pytester, planted):
    """What --ragbench-baseline names: a file or run folder that is not there is a usage
    error, before and after a run history exists; ``last`` is the history's last run. The
    run that starts the history serves both."""
    planted(0)
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-baseline=nope.json",
                                "--ragbench-no-history")
    # A usage error before any item runs (issue 11.3), no longer a failure at the end.
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ragbench: baseline 'nope.json': no such file or run folder: "
                                 "*nope.json"])
    assert "passed" not in result.stdout.str() and not (pytester.path / ".ragbench").exists()
    assert pytester.runpytest("--ragbench=suite.yaml", "-q").ret == 0
    assert (pytester.path / ".ragbench" / "history.sqlite").is_file()
    # with a run history there, a file name is still looked for as a file, not as a run id
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-baseline=nope.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ragbench: baseline 'nope.json': no such file or run folder: "
                                 "*nope.json"])
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-baseline=runs/gone")
    result.stderr.fnmatch_lines(["*ragbench: baseline 'runs/gone': no such file or run folder: "
                                 "*gone"])
    # the history's last run (the one above) is a baseline
    planted(8)
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-baseline=last")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["baseline history run *:", "*ndcg@10 dropped significantly*"])


# -- synthetic documents, no pytest run --------------------------------------------------------


def _doc(scores: dict[str, float], *, gates: list[str] | None = None,
         dataset: str = "d1", settings: dict | None = None) -> dict:
    return {
        "schema_version": 1, "kind": "ragbench-baseline", "run": {"id": "r"},
        "suites": {"s.yaml": {
            "name": "s", "suite_hash": "h", "dataset_hash": dataset, "seed": 0,
            "gates": gates or [], "baseline_settings": settings or {},
            "cases": {q: {"type": None, "difficulty": "hard" if q < "q10" else "easy",
                          "tags": []} for q in scores},
            "retrievers": {"r": {"n_cases": len(scores), "n_errors": 0, "errors": [],
                                 "metrics": {"ndcg@10": {
                                     "mean": sum(scores.values()) / len(scores),
                                     "direction": "higher", "scores": scores}}}},
        }},
    }


def test_synthetic_comparison_reports_query_set_changes_and_holm():
    base = _doc({f"q{i:02d}": 0.5 for i in range(40)})
    cur = _doc({f"q{i:02d}": 0.5 - (0.1 if i < 12 else 0.0) for i in range(2, 42)},
               gates=["ndcg@10: no significant drop using wilcoxon",
                      "difficulty=hard: ndcg@10: drop <= 0.01"], dataset="d2")
    out = compare_docs(base, cur)
    suite = out["suites"][0]
    assert (suite["added"], suite["removed"], suite["n_common"]) == (2, 2, 38)
    assert suite["dataset_changed"] is True
    rows = {r["scope"]: r for r in out["rows"]}
    assert rows[""]["test"] == "wilcoxon" and rows[""]["n"] == 38
    assert rows[""]["p_holm"] < 0.05
    assert rows["difficulty=hard"]["n"] == 8  # q02..q09 are hard and common
    assert rows["difficulty=hard"]["delta"] == pytest.approx(-0.1)
    assert not out["passed"] and len(failure_lines(out)) == 2
    same = compare_docs(cur, cur)
    assert same["passed"] and all(r["delta"] == 0 for r in same["rows"])
    strict = compare_docs(base, base, Overrides(require_same_dataset=True))
    assert strict["passed"]
    changed = compare_docs(base, _doc({"q00": 0.5}), Overrides(require_same_dataset=True))
    assert any("require_same_dataset" in line for line in failure_lines(changed))


def test_a_partial_side_of_the_same_dataset_is_no_dataset_change():
    # `-k` against a whole baseline of the same dataset failed require_same_dataset: "dataset
    # 6ead4aa01fee -> 6ead4aa01fee, 0 queries added, 3 removed" (the cases -k left out)
    whole = _doc({f"q{i:02d}": 0.5 for i in range(5)})
    part = _doc({"q00": 0.5, "q01": 0.5})
    part["suites"]["s.yaml"].update(n_cases_run=2, n_cases_total=5)
    strict = Overrides(require_same_dataset=True)
    from pytest_ragbench.report.views import baseline_suite_notes

    for base, cur in ((whole, part), (part, whole)):
        out = compare_docs(base, cur, strict)
        assert out["passed"] and out["other_failures"] == [], out["other_failures"]
    # and it was not said to be one: "partial, 2 of 5 cases ran; compared on those" then
    # "dataset unchanged, 0 queries added, 3 removed" in every output
    assert baseline_suite_notes(compare_docs(whole, part)["suites"]) == [
        "suite s: partial, 2 of 5 cases ran; compared on those"]
    # another dataset, or a whole run with another query set, still fails
    other = _doc({"q00": 0.5, "q01": 0.5}, dataset="d2")
    other["suites"]["s.yaml"].update(n_cases_run=2, n_cases_total=5)
    assert not compare_docs(whole, other, strict)["passed"]
    assert not compare_docs(whole, _doc({"q00": 0.5, "q01": 0.5}), strict)["passed"]


def test_a_baseline_gate_whose_scope_no_case_ran_is_skipped_in_a_partial_run():
    # as a threshold gate's is: a -k that left out every hard query failed the run with
    # "no query in common with the baseline ... nothing was compared"
    base = _doc({f"q{i:02d}": 0.5 for i in range(20)})
    cur = _doc({f"q{i:02d}": 0.5 for i in range(10, 20)})  # the easy ones
    cur["suites"]["s.yaml"].update(n_cases_run=10, n_cases_total=20)
    gates = ("difficulty=hard: ndcg@10: drop <= 0.01",
             "difficulty=hard: ndcg@10: no significant drop")
    out = compare_docs(base, cur, Overrides(gates=gates))
    assert out["passed"], failure_lines(out)
    assert [(g["text"], g.get("skipped"), g.get("note")) for g in out["gates"]] == [
        (text, True, "no case of its scope ran in this partial run") for text in gates]
    # in a whole run nothing compared is still a failure
    whole = compare_docs(base, _doc({f"q{i:02d}": 0.5 for i in range(10, 20)}),
                         Overrides(gates=gates))
    assert not whole["passed"] and not any(g.get("skipped") for g in whole["gates"])


def test_a_baseline_gate_is_skipped_for_a_system_that_ran_none_of_its_scope():
    # The scope was looked for in the cases of every system: a -k that ran hard queries of
    # one system and only easy ones of the other failed the other on "nothing was compared"
    # while the same scope's threshold gate, which looks at that system's cases, was skipped
    import copy

    base = _doc({f"q{i:02d}": 0.5 for i in range(20)})
    base["suites"]["s.yaml"]["retrievers"]["r2"] = copy.deepcopy(
        base["suites"]["s.yaml"]["retrievers"]["r"])
    cur = _doc({f"q{i:02d}": 0.5 for i in range(20)})
    cur["suites"]["s.yaml"]["retrievers"]["r2"] = {
        "n_cases": 2, "n_errors": 0, "errors": [], "metrics": {"ndcg@10": {
            "mean": 0.5, "direction": "higher", "scores": {"q10": 0.5, "q11": 0.5}}}}
    cur["suites"]["s.yaml"].update(n_cases_run=22, n_cases_total=40)
    gates = ("difficulty=hard: ndcg@10: drop <= 0.01", "difficulty=hard: ndcg@10 >= 0.1")
    out = compare_docs(base, cur, Overrides(gates=gates))
    assert out["passed"], failure_lines(out)
    assert {(g["retriever"], g["text"]): g.get("note") for g in out["gates"]} == {
        ("r", gates[0]): None, ("r", gates[1]): None,
        ("r2", gates[0]): "no case of its scope ran in this partial run",
        ("r2", gates[1]): "no case of its scope ran in this partial run"}


def test_a_scoped_row_whose_gates_a_partial_run_skipped_is_no_row():
    """A -k that left out a system's hard queries skipped the hard queries' gate on it, yet
    its row read "ok ... nan vs baseline nan ... n 0" beside that SKIP and counted among
    the metrics compared ("0 of 2 metrics regressed")."""
    import copy

    from pytest_ragbench.report.views import compared_text

    base = _doc({f"q{i:02d}": 0.5 for i in range(20)})
    base["suites"]["s.yaml"]["retrievers"]["r2"] = copy.deepcopy(
        base["suites"]["s.yaml"]["retrievers"]["r"])
    cur = _doc({f"q{i:02d}": 0.5 for i in range(20)},
               gates=["difficulty=hard: ndcg@10: drop <= 0.01"])
    cur["suites"]["s.yaml"]["retrievers"]["r2"] = {
        "n_cases": 2, "n_errors": 0, "errors": [], "metrics": {"ndcg@10": {
            "mean": 0.5, "direction": "higher", "scores": {"q10": 0.5, "q11": 0.5}}}}
    cur["suites"]["s.yaml"].update(n_cases_run=22, n_cases_total=40)
    out = compare_docs(base, cur)
    assert [(g["retriever"], g.get("skipped", False)) for g in out["gates"]] == [
        ("r", False), ("r2", True)]
    assert [(r["retriever"], r["scope"], r["n"]) for r in out["rows"]] == [
        ("r", "", 20), ("r", "difficulty=hard", 10), ("r2", "", 2)]
    assert compared_text(out["rows"]) == "0 of 3 metrics regressed"


def test_a_scoped_row_claims_no_tolerance_check():
    # the row a scoped baseline gate asks for is judged by that gate alone (no tolerance is
    # applied to it), yet it carried the suite's tolerance: junit showed a passing
    # "ndcg@10 (difficulty=hard): regression within tolerance 0.02" for a check never made
    from pytest_ragbench.report.junit import gate_cases

    base = _doc({f"q{i:02d}": 0.5 for i in range(20)}, settings={"tolerance": {"*": "0.02"}})
    cur = _doc({f"q{i:02d}": 0.1 for i in range(20)},
               gates=["difficulty=hard: ndcg@10: drop <= 0.5"],
               settings={"tolerance": {"*": "0.02"}})
    out = compare_docs(base, cur)
    rows = {r["scope"]: r for r in out["rows"]}
    assert rows[""]["tolerance"] == "0.02" and rows[""]["regressed"]
    assert rows["difficulty=hard"]["tolerance"] is None
    assert not rows["difficulty=hard"]["regressed"]
    summary = {"suites": [{"id": "s.yaml", "name": "s"}], "gates": out["gates"]}
    names = [c["nodeid"].rsplit("::", 1)[-1] for c in gate_cases(summary, out["rows"])]
    assert names == ["difficulty=hard: ndcg@10: drop <= 0.5",
                     "ndcg@10: regression within tolerance 0.02"]


def test_one_query_scope_written_in_two_orders_is_compared_once():
    """'difficulty=hard, tag=x: ... drop' and 'tag=x, difficulty=hard: ... no significant
    drop' scope the same queries: they were compared twice, as two rows ("0 of 3 metrics
    regressed" of 2), the significance gate's test and Holm family on a row of its own."""
    base = _doc({f"q{i:02d}": 0.5 for i in range(20)})
    gates = ["difficulty=hard, tag=x: ndcg@10: drop <= 0.5",
             "tag=x, difficulty=hard: ndcg@10: no significant drop using wilcoxon"]
    cur = _doc({f"q{i:02d}": 0.5 - (0.1 if i < 5 else 0.0) for i in range(20)}, gates=gates)
    for doc in (base, cur):
        for q in ("q00", "q01", "q02", "q03", "q04"):
            doc["suites"]["s.yaml"]["cases"][q]["tags"] = ["x"]
    out = compare_docs(base, cur)
    scoped = [r for r in out["rows"] if r["scope"]]
    assert [(r["scope"], r["n"], r["test"], r["gated"]) for r in scoped] == [
        ("difficulty=hard, tag=x", 5, "wilcoxon", True)]
    assert [g["row"]["test"] for g in out["gates"]] == ["wilcoxon", "wilcoxon"]


def test_a_gate_on_one_system_leaves_the_others_their_any_drop_check():
    """Without a tolerance a metric's any-drop check gave way to any drop gate on it: one
    scoped to system r let r2's ndcg@10 fall from 0.5 to 0.1, and the run passed."""
    import copy

    def with_r2(doc: dict, scores: dict[str, float]) -> dict:
        doc["suites"]["s.yaml"]["retrievers"]["r2"] = copy.deepcopy(
            _doc(scores)["suites"]["s.yaml"]["retrievers"]["r"])
        return doc

    same = {f"q{i:02d}": 0.5 for i in range(20)}
    base = with_r2(_doc(same), same)
    cur = with_r2(_doc(same, gates=["retriever=r: ndcg@10: drop <= 0.5"]),
                  {f"q{i:02d}": 0.1 for i in range(20)})
    out = compare_docs(base, cur)
    assert {(r["retriever"], r["tolerance"], r["regressed"]) for r in out["rows"]} == {
        ("r", None, False), ("r2", "0", True)}
    assert not out["passed"]
    # a gate on every system still stands for the default check of each
    out = compare_docs(base, with_r2(_doc(same, gates=["ndcg@10: drop <= 0.5"]), same))
    assert [r["tolerance"] for r in out["rows"]] == [None, None]


def test_a_scoped_gate_on_one_system_asks_a_scoped_row_of_that_system_alone():
    """'retriever=r, difficulty=hard: ndcg@10: drop <= 0.5' compared r2's hard queries too:
    a row no check judges, read "ok" beside r2's fall of 0.2, and counted among the metrics
    compared ("1 of 4 metrics regressed")."""
    import copy

    from pytest_ragbench.report.views import compared_text

    same = {f"q{i:02d}": 0.5 for i in range(20)}
    base, cur = _doc(same), _doc({q: 0.1 if q < "q05" else 0.5 for q in same},
                                 gates=["retriever=r, difficulty=hard: ndcg@10: drop <= 0.5"])
    for doc in (base, cur):
        doc["suites"]["s.yaml"]["retrievers"]["r2"] = copy.deepcopy(
            doc["suites"]["s.yaml"]["retrievers"]["r"])
    out = compare_docs(base, cur)
    assert [(r["retriever"], r["scope"]) for r in out["rows"]] == [
        ("r", ""), ("r", "difficulty=hard"), ("r2", "")]
    assert compared_text(out["rows"]) == "1 of 3 metrics regressed"


def test_a_significance_gate_on_one_system_sets_the_test_of_its_rows_alone():
    """'retriever=r: ndcg@10: no significant drop using wilcoxon' compared r2's ndcg@10 by
    the Wilcoxon test too, and counted its row among those gated for significance (its Holm
    family), though no gate judges it."""
    import copy

    same = {f"q{i:02d}": 0.5 for i in range(20)}
    base, cur = _doc(same), _doc(same, gates=["retriever=r: ndcg@10: no significant drop "
                                              "using wilcoxon"])
    for doc in (base, cur):
        doc["suites"]["s.yaml"]["retrievers"]["r2"] = copy.deepcopy(
            doc["suites"]["s.yaml"]["retrievers"]["r"])
    out = compare_docs(base, cur)
    assert {r["retriever"]: (r["test"], r["gated"]) for r in out["rows"]} == {
        "r": ("wilcoxon", True), "r2": ("permutation", False)}


def test_a_metric_the_baseline_lacks_is_said_not_to_be_compared():
    """A suite whose ndcg@10 became ndcg@5 (its k changed) against a baseline of ndcg@10
    compared nothing and passed, "0 of 0 metrics regressed", without a word of why."""
    from pytest_ragbench.report.views import baseline_suite_notes

    same = {f"q{i:02d}": 0.5 for i in range(20)}
    cur = _doc(same)
    system = cur["suites"]["s.yaml"]["retrievers"]["r"]
    system["metrics"]["ndcg@5"] = system["metrics"].pop("ndcg@10")
    out = compare_docs(_doc(same), cur)
    assert out["passed"] and out["rows"] == []
    note = "suite s: ndcg@5 is not in the baseline (it has ndcg@10), so it was not compared"
    assert baseline_suite_notes(out["suites"]) == [note]
    # junit, which has no row testcase to say it
    from pytest_ragbench.report.junit import nothing_compared

    summary = {"baseline": {"path": "b.json", "rows": [], "suites": out["suites"]}}
    assert nothing_compared(summary, []) == f"nothing was compared against the baseline: {note}"


def test_a_suite_none_of_whose_cases_ran_compared_nothing_and_says_so():
    """`--ragbench=a.yaml --ragbench=b.yaml -k <a's>` against a baseline of both: b read
    "partial, 0 of 5 cases ran; compared on those"."""
    from pytest_ragbench.report.views import baseline_suite_notes

    same = {f"q{i:02d}": 0.5 for i in range(5)}
    cur = _doc(same)
    cur["suites"]["s.yaml"].update(n_cases_run=0, n_cases_total=5, systems=["r"],
                                   retrievers={}, cases={}, directions={"ndcg@10": "higher"})
    out = compare_docs(_doc(same), cur)
    assert out["rows"] == [] and out["suites"][0]["nothing_compared"] is True
    assert baseline_suite_notes(out["suites"]) == ["suite s: partial, 0 of 5 cases ran"]


def test_a_gate_on_queries_scored_nan_on_one_side_does_not_say_none_is_in_common():
    """The hard queries scored NaN in this run (no relevant document, a judge that failed):
    their gate read "no query in common with the baseline", sending the user to look for
    renamed query ids; the regression line of such a row says NaN on one side."""
    base = _doc({f"q{i:02d}": 0.5 for i in range(20)})
    cur = _doc({f"q{i:02d}": 0.5 for i in range(20)},
               gates=["difficulty=hard: ndcg@10: drop <= 0.1"])
    scores = cur["suites"]["s.yaml"]["retrievers"]["r"]["metrics"]["ndcg@10"]["scores"]
    scores.update({q: None for q in scores if q < "q10"})
    (line,) = failure_lines(compare_docs(base, cur))
    assert line == ("ragbench: gate failed: s/r [difficulty=hard] ndcg@10: no query scored on "
                    "both sides, the 10 queries in common with the baseline NaN on one side "
                    "(`difficulty=hard: ndcg@10: drop <= 0.1`, n = 0): nothing was compared")


def test_a_gate_that_compared_nothing_says_so_in_every_output():
    """A baseline gate on a scope no query matches failed with "no query in common with the
    baseline ... nothing was compared" on its failure line, but as "delta nan [nan, nan],
    p = nan" in the gate lists of the terminal, summary.md and the HTML report and in its
    junit failure."""
    from pytest_ragbench.report.html import _gate_view
    from pytest_ragbench.report.junit import gate_cases
    from pytest_ragbench.report.markdown import _gate_table
    from pytest_ragbench.report.terminal import gate_lines

    same = _doc({f"q{i:02d}": 0.5 for i in range(20)})
    out = compare_docs(same, same, Overrides(gates=("tag=zzz: ndcg@10: drop <= 0.1",)))
    (gate,) = out["gates"]
    said = "no query in common with the baseline, n = 0: nothing was compared"
    assert gate_lines([gate]) == [f"  FAIL s/r [tag=zzz]: ndcg@10: drop <= 0.1 ({said})"]
    (case,) = gate_cases({"suites": [{"id": "s.yaml", "name": "s"}], "gates": [gate]}, [])
    assert case["outcome"] == "failed" and case["text"] == f"tag=zzz: ndcg@10: drop <= 0.1: {said}"
    assert f"| - | {said} |" in "\n".join(_gate_table([gate]))
    assert _gate_view(gate).detail == said and _gate_view(gate).status == "fail"
    assert "nan" not in " ".join(failure_lines(out))


def test_no_significant_drop_fails_when_no_query_was_compared():
    # renamed query ids (or a scope that matches none): "compared on the 0 common queries",
    # where no drop could be measured; the gate is not evidence of no drop, as a drop gate
    # and a threshold fail on NaN too
    base = _doc({f"q{i:02d}": 0.5 for i in range(20)})
    gates = ["ndcg@10: no significant drop", "tag=numerc: ndcg@10: no significant drop",
             "difficulty=hard: ndcg@10: no significant drop"]
    renamed = _doc({f"z{i:02d}": 0.5 for i in range(20)}, gates=gates)
    out = compare_docs(base, renamed)
    assert out["suites"][0]["n_common"] == 0
    results = {g["scope"]: g["passed"] for g in out["gates"]}
    assert results == {"": False, "tag=numerc": False, "difficulty=hard": False}
    assert not out["passed"]
    # with queries in common and no change, the same gates pass
    same = compare_docs(base, _doc({f"q{i:02d}": 0.5 for i in range(20)},
                                   gates=gates[:1]))
    assert same["passed"] and [g["passed"] for g in same["gates"]] == [True]


@pytest.mark.parametrize("test", ["permutation", "paired-t", "wilcoxon", "bootstrap"])
def test_a_roundoff_difference_is_no_significant_drop(test):
    """Per-query scores one ulp apart (three identical repetitions averaged by another
    formula: 0.7000000000000001 against 0.7) are a drop of 1e-17 that a paired test calls
    significant (p about 0.002); the run failed its gate with nothing changed."""
    base = _doc({f"q{i:02d}": (0.7000000000000001 if i % 3 == 0 else 0.5) for i in range(30)})
    cur = _doc({f"q{i:02d}": (0.7 if i % 3 == 0 else 0.5) for i in range(30)},
               gates=[f"ndcg@10: no significant drop using {test}"])
    out = compare_docs(base, cur)
    (gate,) = out["gates"]
    assert gate["passed"] and out["passed"], gate
    assert gate.get("note") == "the drop is within roundoff" or gate["p_holm"] >= 0.05
    # a real drop of the same queries still fails
    worse = _doc({f"q{i:02d}": (0.6 if i % 3 == 0 else 0.5) for i in range(30)},
                 gates=[f"ndcg@10: no significant drop using {test}"])
    assert not compare_docs(base, worse)["passed"]


def test_a_significance_gate_is_corrected_only_over_the_metrics_gated_for_significance():
    """Holm runs over the gated metrics alone: the suite's other metrics (here mrr@10) would
    weaken the gate's test the more metrics a suite lists."""
    def doc(scores: dict[str, float], **kw) -> dict:
        d = _doc(scores, **kw)
        r = d["suites"]["s.yaml"]["retrievers"]["r"]
        r["metrics"]["mrr@10"] = {"mean": 0.5, "direction": "higher",
                                  "scores": dict.fromkeys(scores, 0.5)}
        return d

    base = doc({f"q{i:02d}": 0.5 for i in range(30)})
    cur = doc({f"q{i:02d}": 0.5 - (0.05 if i < 6 else 0.0) for i in range(30)},
              gates=["ndcg@10: no significant drop"])
    out = compare_docs(base, cur)
    rows = {r["metric"]: r for r in out["rows"]}
    assert rows["ndcg@10"]["p_value"] < 0.05
    assert rows["ndcg@10"]["p_holm"] == rows["ndcg@10"]["p_value"]  # a family of one
    (gate,) = out["gates"]
    assert gate["p_holm"] == rows["ndcg@10"]["p_value"] and not gate["passed"]


def test_a_suite_that_ran_whole_in_a_partial_run_is_judged_as_whole():
    # a -k that left out another suite's cases: this suite's gates carry no coverage and a
    # scope of it that matches no query still fails (a misspelled value passes nothing)
    base = _doc({f"q{i:02d}": 0.5 for i in range(20)})
    cur = _doc({f"q{i:02d}": 0.5 for i in range(20)})
    cur["suites"]["s.yaml"].update(n_cases_run=20, n_cases_total=20)
    cur["run"].update(partial=True, n_cases=25, n_cases_total=40)
    out = compare_docs(base, cur, Overrides(gates=("difficulty=hrad: ndcg@10 >= 0.1",
                                                   "ndcg@10: drop <= 0.01")))
    assert "partial" not in out["suites"][0]
    scoped, drop = out["gates"]
    assert not scoped["passed"] and not scoped.get("skipped")
    assert drop["passed"] and "coverage" not in drop and "coverage" not in scoped


def test_a_scoped_row_no_query_matched_reads_regressed_beside_its_failed_gate():
    """'ragbench compare A A --gate "tag=zzz: ndcg@10: drop <= 0.1"': the scope matches no
    query (n 0) and its gate fails, nothing compared, while its row read "ok"; it is marked
    as its gate, and the failure is said and counted once."""
    from pytest_ragbench.report.terminal import baseline_lines, baseline_section
    from pytest_ragbench.report.views import compared_text

    same = _doc({f"q{i:02d}": 0.5 for i in range(20)})
    out = compare_docs(same, same, Overrides(gates=("tag=zzz: ndcg@10: drop <= 0.1",)))
    rows = {r["scope"]: r for r in out["rows"]}
    assert rows["tag=zzz"]["n"] == 0 and rows["tag=zzz"]["regressed"]
    assert not rows["tag=zzz"]["beyond_tolerance"] and not rows[""]["regressed"]
    # the whole set's row: the scoped gate stands for its check
    assert [line[:12] for line in baseline_lines(out["rows"])] == ["  unchecked ",
                                                                   "  REGRESSED "]
    assert compared_text(out["rows"]) == "1 of 2 metrics regressed"
    # the default summary lists the row it counts
    section = baseline_section({"path": "b.json"}, out["rows"], "default")
    assert section[1] == "  1 of 2 metrics regressed"
    assert [line[:12] for line in section[2:]] == ["  REGRESSED "]
    assert [(r["kind"], r["count"]) for r in out["verdict"]["reasons"]] == [
        ("gates_failed", 1)]
    (line,) = failure_lines(out)
    assert line.startswith("ragbench: gate failed: s/r [tag=zzz] ndcg@10: no query in common")


def test_a_row_beyond_its_tolerance_and_failing_its_gate_fails_both_checks():
    # two checks the suite states, each failed once: the tolerance's regression and the gate
    base = _doc({f"q{i:02d}": 0.5 for i in range(20)}, settings={"tolerance": {"*": "0.02"}})
    cur = _doc({f"q{i:02d}": 0.1 for i in range(20)}, gates=["ndcg@10: drop <= 0.05"],
               settings={"tolerance": {"*": "0.02"}})
    out = compare_docs(base, cur)
    (row,) = out["rows"]
    assert (row["regressed"], row["beyond_tolerance"], row["failed_gates"]) == (
        True, True, ["ndcg@10: drop <= 0.05"])
    assert [(r["kind"], r["count"]) for r in out["verdict"]["reasons"]] == [
        ("gates_failed", 1), ("regression", 1)]
    assert len(failure_lines(out)) == 2
