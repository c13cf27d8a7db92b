"""Issue 11: one verdict in every output, partial runs that say so, baselines that never
compare nothing, SIGTERM, unwritable outputs, and the exit codes docs/ci.md lists."""

from __future__ import annotations

import json
import re
import signal
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import QUERIES, latest_run, write_jsonl

SUITE = "--ragbench=suite.yaml"
THRESHOLD = "thresholds:\n  recall@10: 0.99\n"


def _outputs(pytester: pytest.Pytester) -> tuple[dict, str, str]:
    run = latest_run(pytester.path)
    summary = json.loads((run / "summary.json").read_text())
    return summary, (run / "summary.md").read_text(), (run / "report.html").read_text()


def _history_rows(pytester: pytest.Pytester) -> list[str]:
    from pytest_ragbench.results.history import RunHistory, history_lines

    with RunHistory(pytester.path / ".ragbench" / "history.sqlite", readonly=True) as h:
        lines = history_lines(h)
    # The run list: the header, then one line per run, up to the blank line before trends.
    return lines[1:lines.index("")] if "" in lines else lines[1:]


def test_failed_items_fail_every_output(pytester, mini_suite, monkeypatch):
    path = mini_suite(drop="d4,d6")
    path.write_text(path.read_text() + THRESHOLD)
    step = pytester.path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    result = pytester.runpytest(SUITE, "--junitxml=out.xml", "--ragbench-gate", "mrr@10 >= 0")
    assert result.ret == 1
    assert "ended with exit status" not in result.stdout.str()
    summary, md, html = _outputs(pytester)
    assert summary["passed"] is False
    verdict = summary["verdict"]
    assert verdict["status"] == "failed" and not verdict["partial"]
    assert [r["kind"] for r in verdict["reasons"]] == ["items_failed"]
    failed = verdict["reasons"][0]
    n_failed = result.parseoutcomes()["failed"]
    assert failed["count"] == n_failed >= 2
    assert md.startswith("## ragbench: FAILED")
    assert f"{n_failed} items failed" in md and step.read_text().startswith("## ragbench: FAILED")
    assert 'class="rb-verdict">FAILED</span>' in html
    assert f"{n_failed} items failed" in html
    result.stdout.fnmatch_lines([f"ragbench: FAILED: {n_failed} items failed"])
    assert "FAILED" in _history_rows(pytester)[-1]


def test_a_test_file_that_fails_to_collect_is_the_reason_the_run_failed(pytester, mini_suite):
    """A run whose suite passed beside a test module that cannot be imported (pytest-xdist, or
    --continue-on-collection-errors, runs the rest and exits 1) failed "because: pytest exit
    status 1" in every output, which names nothing; the reason is the collection error."""
    mini_suite()
    pytester.makepyfile(test_broken="import no_such_module_here\n")
    for args in (["--continue-on-collection-errors"], ["-n", "2"]):
        result = pytester.runpytest(SUITE, "test_broken.py", *args)
        assert result.ret == pytest.ExitCode.TESTS_FAILED, args
        result.stdout.fnmatch_lines(["ragbench: FAILED: 1 collection error"])
        summary, md, html = _outputs(pytester)
        assert [(r["kind"], r["count"], r["text"]) for r in summary["verdict"]["reasons"]] == [
            ("collection_errors", 1, "1 collection error")], args
        assert "Failed because: 1 collection error." in md
        assert "Failed because: 1 collection error." in html


def _junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    return {f"{c.get('classname')}::{c.get('name')}": c for c in root.iter("testcase")}


# Under xdist the gates' test cases come from the controller; one worker puts it in
# distribution mode (a worker that wrote gate cases too would show as extra test cases).
@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["serial", "xdist"])
def test_a_failed_gate_fails_a_passing_run_and_every_gate_is_a_junit_testcase(
        pytester, mini_suite, workers):
    path = mini_suite(drop="d5")
    path.write_text(path.read_text() + "gates:\n  ndcg@10: '>= 0.99'\n  mrr@10: 0.1\n")
    result = pytester.runpytest("--ragbench-summary=full", SUITE, "--junitxml=out.xml",
                                "--ragbench-gate", "recall@10 >= 0.2", *workers)
    # every item passes: the gate alone sets the exit status
    result.assert_outcomes(passed=5)
    assert result.ret == 1
    assert _outputs(pytester)[0]["passed"] is False
    result.stdout.fnmatch_lines([
        "gates:",
        "  FAIL mini/overlap: ndcg@10 * >= 0.99 (margin -*)",
        "  PASS mini/overlap: mrr@10 * >= 0.1 (margin +*)",
        "ragbench: gate failed: mini/overlap ndcg@10 = *, expected >= 0.99 (missed by *)",
    ])
    suite = ET.parse(pytester.path / "out.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "8"
    cases = _junit_cases(pytester.path / "out.xml")
    failed = cases["suite.yaml.ragbench-gates.overlap::ndcg@10 >= 0.99"]
    failure = failed.find("failure")
    assert failure is not None and "gate failed: ndcg@10 >= 0.99: value" in failure.get(
        "message", "")
    props = {p.get("name"): p.get("value") for p in failed.iter("property")}
    assert props["ragbench_gate.gate"] == "ndcg@10 >= 0.99"
    assert float(props["ragbench_gate.margin"]) < 0
    assert float(props["ragbench_gate.value"]) == pytest.approx(
        float(props["ragbench_gate.margin"]) + 0.99)
    for passed in ("mrr@10 >= 0.1", "recall@10 >= 0.2"):
        case = cases[f"suite.yaml.ragbench-gates.overlap::{passed}"]
        assert case.find("failure") is None and case.find("skipped") is None


def test_gates_of_two_suites_with_one_name_stay_with_their_files(pytester, mini_suite):
    # Two suite files may share a `name:` (their common baseline identity). Gates were told
    # apart by that name only: junit put the failed gate of b.yaml under a.yaml, and the
    # whole suite's command-line gate was labelled with the partial one's coverage.
    mini_suite(name="a.yaml")
    gated = mini_suite(name="b.yaml", drop="d4")
    gated.write_text(gated.read_text() + "gates:\n  ndcg@10: '>= 0.9'\n")
    result = pytester.runpytest("--ragbench=a.yaml", "--ragbench=b.yaml", "--junitxml=out.xml",
                                "--deselect", "b.yaml::overlap::q1",
                                "--ragbench-gate", "mrr@10 >= 0.1")
    assert result.ret == 1
    summary, _, _ = _outputs(pytester)
    gates = {(g["suite_id"], g["text"]): g for g in summary["gates"]}
    assert sorted(gates) == [("a.yaml", "mrr@10 >= 0.1"), ("b.yaml", "mrr@10 >= 0.1"),
                             ("b.yaml", "ndcg@10 >= 0.9")]
    assert "coverage" not in gates["a.yaml", "mrr@10 >= 0.1"]
    assert gates["b.yaml", "mrr@10 >= 0.1"]["coverage"] == "4 of 5 cases"
    assert "PASS mini [a.yaml]/overlap: mrr@10 1.0000 >= 0.1 (margin +0.9000)" in (
        result.stdout.str())
    cases = _junit_cases(pytester.path / "out.xml")
    gate_cases = sorted(k for k in cases if "ragbench-gates" in k)
    assert gate_cases == ["a.yaml.ragbench-gates.overlap::mrr@10 >= 0.1",
                          "b.yaml.ragbench-gates.overlap::mrr@10 >= 0.1",
                          "b.yaml.ragbench-gates.overlap::ndcg@10 >= 0.9"]
    assert cases["b.yaml.ragbench-gates.overlap::ndcg@10 >= 0.9"].find("failure") is not None


def test_a_partial_runs_gates_say_one_coverage_in_the_run_and_in_ragbench_compare(
        pytester, mini_suite, capsys):
    """A run of two cases of one of two systems: the suite's gates said "on 2 of 5 cases that ran"
    (the system's cases), a command-line gate and the gates against the baseline on the same
    system "on 2 of 10" (the suite's), and `ragbench compare` of that run folder said no
    coverage at all (gate lines, --json) where its verdict said partial. The gates of the
    system that ran no case (the suite's, the command line's, one scoped to it) vanished from
    every output; they are listed as not judged, "no case of a ran"."""
    from pytest_ragbench.cli import main

    two = ("name: mini\ndataset:\n  corpus: corpus.jsonl\n  queries: queries.jsonl\n"
           "retrievers:\n  a: {type: 'overlap_retriever:Overlap'}\n"
           "  b: {type: 'overlap_retriever:Overlap', drop: d1}\n"
           "metrics: [ndcg@10, recall@10, mrr@10]\n")
    mini_suite(two)
    assert pytester.runpytest(SUITE, "--ragbench-save-baseline=base.json").ret == 0
    mini_suite(two + "gates: {mrr@10: '>= 0.1', ndcg@10: 'drop <= 0.5'}\n")
    result = pytester.runpytest(SUITE, "suite.yaml::b::q1", "suite.yaml::b::q2", "-v",
                                "--ragbench-baseline", "base.json", "--junitxml=out.xml",
                                "--ragbench-gate", "recall@10 >= 0.1",
                                "--ragbench-gate", "retriever=a: ndcg@10 >= 0.2")
    assert result.ret == 0
    summary, md, html = _outputs(pytester)
    gates = {(g["retriever"], g["text"]): g.get("coverage") for g in summary["gates"]}
    # the gates of system a, which ran no case, are listed as not judged (they vanished:
    # "gates: 3 passed" of 7), and pass or fail nothing
    not_run = "no case of a ran in this partial run"
    unjudged = {("a", "mrr@10 >= 0.1"): None, ("a", "ndcg@10: drop <= 0.5"): None,
                ("a", "recall@10 >= 0.1"): None, ("a", "retriever=a: ndcg@10 >= 0.2"): None}
    assert gates == {("b", "mrr@10 >= 0.1"): "2 of 5 cases",
                     ("b", "ndcg@10: drop <= 0.5"): "2 of 5 cases",
                     ("b", "recall@10 >= 0.1"): "2 of 5 cases", **unjudged}
    assert all(g.get("skipped") and g["passed"] and g["note"] == not_run
               for g in summary["gates"] if g["retriever"] == "a")
    out = result.stdout.str()
    assert out.count("[on 2 of 5 cases that ran]") == 3
    assert "of 10 cases that ran" not in out
    for where, text in (("a", "mrr@10 >= 0.1"), ("a", "ndcg@10: drop <= 0.5"),
                        ("a", "recall@10 >= 0.1"), ("a [retriever=a]", "ndcg@10 >= 0.2")):
        assert f"  SKIP mini/{where}: {text} ({not_run})" in out, out
    assert "3 passed, 4 skipped" in md, md
    for text in ("mrr@10 >= 0.1", "ndcg@10: drop <= 0.5", "recall@10 >= 0.1",
                 "retriever=a: ndcg@10 >= 0.2"):
        cell = text.replace(">", "&gt;").replace("<", "&lt;")
        assert f"| skip | mini/a | {cell} | - | {not_run} |" in md, md
    assert html.count(not_run) == 4
    assert summary["verdict"]["passed"] and "partial" in summary["verdict"]["headline"]
    skipped = {k: c for k, c in _junit_cases(pytester.path / "out.xml").items()
               if ".ragbench-gates.a::" in k}
    assert len(skipped) == 4 and all(
        not_run in (c.find("skipped").get("message") or "") for c in skipped.values())

    capsys.readouterr()
    run = str(latest_run(pytester.path))
    cli_gates = ["--gate", "recall@10 >= 0.1", "--gate", "retriever=a: ndcg@10 >= 0.2"]
    assert main(["compare", "base.json", run, *cli_gates, "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert {(g["retriever"], g["text"]): g.get("coverage")
            for g in compared["gates"]} == gates
    assert main(["compare", "base.json", run, *cli_gates]) == 0
    shown = capsys.readouterr().out.splitlines()
    lines = [x for x in shown if x.startswith("  PASS ")]
    assert len(lines) == 3 and all(x.endswith(" [on 2 of 5 cases that ran]") for x in lines)
    assert len([x for x in shown if x.startswith("  SKIP mini/a")
                and x.endswith(f" ({not_run})")]) == 4
    # the run as the history holds it: labelled as its folder is (it said no coverage, the
    # history keeping no case counts of its suites and systems)
    for ref in (Path(run).name, "2"):
        assert main(["compare", "base.json", ref, *cli_gates, "--json"]) == 0
        compared = json.loads(capsys.readouterr().out)
        assert {(g["retriever"], g["text"]): g.get("coverage")
                for g in compared["gates"]} == gates
        assert [s.get("partial") for s in compared["suites"]] == ["2 of 10 cases"]
    # a run stored before its systems kept their coverage: labelled with the suite's
    stored = Path(run) / "summary.json"
    old = json.loads(stored.read_text())
    for system in old["suites"][0]["retrievers"]:
        del system["coverage"]
    stored.write_text(json.dumps(old))
    assert main(["compare", "base.json", run, "--json"]) == 0
    assert {(g["retriever"], g["text"]): g.get("coverage")
            for g in json.loads(capsys.readouterr().out)["gates"]} == {
        ("b", "mrr@10 >= 0.1"): "2 of 10 cases", ("b", "ndcg@10: drop <= 0.5"): "2 of 10 cases",
        ("a", "mrr@10 >= 0.1"): None, ("a", "ndcg@10: drop <= 0.5"): None}
    # and before it kept its systems: the gates of the systems that ran, as it was read then
    for suite in old["suites"]:
        del suite["systems"]
    stored.write_text(json.dumps(old))
    assert main(["compare", "base.json", run, "--json"]) == 0
    assert {(g["retriever"], g["text"]): g.get("coverage")
            for g in json.loads(capsys.readouterr().out)["gates"]} == {
        ("b", "mrr@10 >= 0.1"): "2 of 10 cases", ("b", "ndcg@10: drop <= 0.5"): "2 of 10 cases"}


def test_a_run_of_only_systems_the_baseline_lacks_says_it_compared_nothing(
        pytester, mini_suite, capsys):
    """A baseline of system a, and a `-k bnew` (a shard of a sharded run) of a suite of a and
    bnew: nothing was compared and the run passed (a shard may hold such cases), its outputs
    reading "compared on those", "0 of 0 metrics regressed" (summary.md and the HTML
    report had no word of the baseline); each says no system that ran is in it, and
    `ragbench compare` of the run passes too (it refused the run: "nothing would be
    compared"). A whole run's new system bnew is said not to be compared."""
    from pytest_ragbench.cli import main

    one = ("name: mini\ndataset:\n  corpus: corpus.jsonl\n  queries: queries.jsonl\n"
           "retrievers:\n  a: {type: 'overlap_retriever:Overlap'}\n"
           "metrics: [ndcg@10, recall@10]\n")
    mini_suite(one)
    assert pytester.runpytest(SUITE, "--ragbench-save-baseline=base.json").ret == 0
    mini_suite(one.replace("metrics:", "  bnew: {type: 'overlap_retriever:Overlap', drop: d1}\n"
                                       "metrics:"))
    result = pytester.runpytest(SUITE, "-k", "bnew", "--ragbench-baseline=base.json",
                                "--junitxml=out.xml")
    assert result.ret == 0, result.stdout.str()
    note = ("suite mini: no system that ran is in the baseline (ran: bnew; the baseline: a), so "
            "nothing was compared against it")
    nothing = "nothing was compared against the baseline"
    out = result.stdout.str()
    assert f"  {note}\n" in out and f"  {nothing}\n" in out, out
    assert "compared on" not in out and "metrics regressed" not in out
    summary, md, html = _outputs(pytester)
    (info,) = summary["baseline"]["suites"]
    assert info["not_in_baseline"] == ["bnew"] and info["nothing_compared"] is True
    assert f"- {note}" in md and f"{nothing[0].upper()}{nothing[1:]}." in md, md
    assert ("No system that ran is in the baseline (ran: bnew; the baseline: a), so nothing was "
            "compared against it.") in html and f"&middot; {nothing}</p>" in html
    root = ET.parse(pytester.path / "out.xml").getroot()
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props.get("ragbench_baseline") == f"{nothing}: {note}", props
    capsys.readouterr()
    assert main(["compare", "base.json", str(latest_run(pytester.path))]) == 0
    shown = capsys.readouterr()
    assert f"  {note}\n" in shown.out and f"  {nothing}\n" in shown.out, shown
    # a whole run: a compared, b said not to be
    result = pytester.runpytest(SUITE, "--ragbench-baseline=base.json")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "  suite mini: bnew is not in the baseline (it holds a), so it was not compared",
        "  0 of 2 metrics regressed"])


def test_a_suite_of_a_partial_run_none_of_whose_cases_ran_is_listed_with_its_gates(
        pytester, mini_suite, capsys):
    """`-k sar` over two suites, sa (system sar) and sb (system sbr), each with a gate: sb
    and its gates vanished from every output ("partial run: 5 of 10 cases ran", suite sa
    alone, "gates: 1 passed") and from `ragbench compare` of the run. sb is listed, "0 of 5
    cases ran", its gates (the file's, the command line's, against the baseline) as not
    judged, "no case of sbr ran"; the verdict is what ran."""
    from pytest_ragbench.cli import main

    def suite(name: str, system: str, gates: str = "") -> None:
        mini_suite(f"name: {name}\ndataset:\n  corpus: corpus.jsonl\n  queries: queries.jsonl\n"
                   f"retrievers:\n  {system}: {{type: 'overlap_retriever:Overlap'}}\n"
                   f"metrics: [ndcg@10, recall@10, mrr@10]\n{gates}", name=f"{name}.yaml")

    both = ["--ragbench=sa.yaml", "--ragbench=sb.yaml"]
    suite("sa", "sar")
    suite("sb", "sbr")
    assert pytester.runpytest(*both, "--ragbench-save-baseline=base.json").ret == 0
    gates_yaml = "gates: ['ndcg@10 >= 0.1', 'ndcg@10: drop <= 0.5']\n"
    suite("sa", "sar", gates_yaml)
    suite("sb", "sbr", gates_yaml)
    not_run = "no case of sbr ran in this partial run"
    texts = ["ndcg@10 >= 0.1", "ndcg@10: drop <= 0.5", "recall@10 >= 0.1"]
    for workers in ([], ["-n", "2"]):
        result = pytester.runpytest(*both, "-k", "sar", "--junitxml=out.xml", *workers,
                                    "--ragbench-baseline", "base.json",
                                    "--ragbench-gate", "recall@10 >= 0.1")
        assert result.ret == 0, workers
        summary, md, html = _outputs(pytester)
        by_id = {s["id"]: s for s in summary["suites"]}
        assert sorted(by_id) == ["sa.yaml", "sb.yaml"], workers
        sb = by_id["sb.yaml"]
        assert (sb["n_cases_run"], sb["n_cases_total"], sb["partial"]) == (0, 5, True)
        assert sb["retrievers"] == [] and sb["systems"] == ["sbr"]
        gates = {(g["suite_id"], g["text"]): g for g in summary["gates"]}
        assert sorted(gates) == sorted([*(("sa.yaml", t) for t in texts),
                                        *(("sb.yaml", t) for t in texts)]), workers
        assert all(g["skipped"] and g["passed"] and g["note"] == not_run
                   and g["retriever"] == "sbr" for (sid, _), g in gates.items()
                   if sid == "sb.yaml")
        assert not any(g.get("skipped") for (sid, _), g in gates.items() if sid == "sa.yaml")
        assert summary["verdict"]["passed"] and summary["verdict"]["coverage"] == "5 of 10 cases"
        out = result.stdout.str()
        assert "suite sb [sb.yaml]: partial, 0 of 5 cases ran" in out, out
        assert "gates: 3 passed, 3 skipped" in out, out
        for text in texts:
            assert f"  SKIP sb/sbr: {text} ({not_run})" in out, out
        assert "### Suite sb" in md and "0 of 5 cases ran." in md and "3 passed, 3 skipped" in md
        assert md.count("| skip | sb/sbr |") == 3, md
        assert html.count(not_run) == 3 and "0 of 5 cases ran" in html
        junit = {k: c for k, c in _junit_cases(pytester.path / "out.xml").items()
                 if k.startswith("sb.yaml.ragbench-gates.sbr::")}
        assert len(junit) == 3 and all(
            not_run in (c.find("skipped").get("message") or "") for c in junit.values())

    capsys.readouterr()
    run = str(latest_run(pytester.path))
    # the run folder, and the run as the history holds it (the third one)
    for ref in (run, Path(run).name, "3"):
        assert main(["compare", "base.json", ref, "--gate", "recall@10 >= 0.1", "--json"]) == 0
        compared = json.loads(capsys.readouterr().out)
        assert {(g["suite_id"], g["text"]): bool(g.get("skipped")) for g in compared["gates"]
                if g["suite_id"] == "sb.yaml"} == {("sb.yaml", t): True for t in texts}, ref
        assert all(g["note"] == not_run for g in compared["gates"]
                   if g["suite_id"] == "sb.yaml"), ref
        (sb,) = [s for s in compared["suites"] if s["id"] == "sb.yaml"]
        # it compared nothing: no change claimed (it has no hashes, its records gone)
        assert (sb["partial"], sb["suite_changed"], sb["dataset_changed"], sb["removed"]) == (
            "0 of 5 cases", False, False, 0), ref
    assert main(["compare", "base.json", run]) == 0
    shown = capsys.readouterr().out
    assert shown.count("SKIP sb/sbr:") == 2 and not_run in shown, shown
    assert "suite sb: partial, 0 of 5 cases ran" in shown and "suite sb: suite" not in shown
    # a run stored before such a suite was kept lists the suites that ran, as it read then
    stored = Path(run) / "summary.json"
    old = json.loads(stored.read_text())
    old["suites"] = [s for s in old["suites"] if s["id"] != "sb.yaml"]
    old["gates"] = [g for g in old["gates"] if g["suite_id"] != "sb.yaml"]
    stored.write_text(json.dumps(old))
    assert main(["compare", "base.json", run, "--json"]) == 0
    assert {g["suite_id"] for g in json.loads(capsys.readouterr().out)["gates"]} == {"sa.yaml"}


def test_a_scoped_gate_of_a_partial_run_says_the_cases_of_its_scope_it_judged(
        pytester, mini_suite, capsys):
    """A gate on the hard queries of a run of three of five cases judged the one hard case
    that ran (n=1), yet every output labelled it "on 3 of 5 cases that ran": the system's
    cases, most of which the gate never looked at."""
    from pytest_ragbench.cli import main

    path = mini_suite()
    assert pytester.runpytest(SUITE, "--ragbench-save-baseline=base.json").ret == 0
    path = mini_suite(drop="d2")  # q2, the hard query that runs, finds nothing
    path.write_text(path.read_text() + "gates: {'difficulty=hard: recall@10': '>= 0.5', "
                    "'difficulty=hard: ndcg@10': 'drop <= 0.5', mrr@10: '>= 0.1'}\n")
    result = pytester.runpytest(SUITE, "-k", "q1 or q2 or q3", "--junitxml=out.xml",
                                "--ragbench-baseline=base.json")
    summary, md, html = _outputs(pytester)
    gates = {g["text"]: (g.get("coverage"), g.get("n", g.get("row", {}).get("n")))
             for g in summary["gates"]}
    assert gates == {"difficulty=hard: recall@10 >= 0.5": ("1 case of its scope", 1),
                     "difficulty=hard: ndcg@10: drop <= 0.5": ("1 case of its scope", 1),
                     "mrr@10 >= 0.1": ("3 of 5 cases", 3)}
    out = result.stdout.str()
    assert out.count("[on 1 case of its scope that ran]") == 2, out
    assert out.count("[on 3 of 5 cases that ran]") == 1, out
    assert md.count("(on 1 case of its scope that ran)") == 2, md
    assert html.count("(n=1); on 1 case of its scope that ran") == 1
    failures = [f.get("message") for c in _junit_cases(pytester.path / "out.xml").values()
                for f in c.iter("failure") if "difficulty=hard" in (f.get("message") or "")]
    assert len(failures) == 2 and all(
        m.endswith("(on 1 case of its scope that ran)") for m in failures), failures

    capsys.readouterr()
    run = str(latest_run(pytester.path))
    assert main(["compare", "base.json", run, "--json"]) == 1
    compared = json.loads(capsys.readouterr().out)
    assert {g["text"]: g.get("coverage") for g in compared["gates"]} == {
        text: coverage for text, (coverage, _) in gates.items()}


def test_gates_and_regressions_of_two_suites_with_one_name_say_which_file(pytester,
                                                                         mini_suite):
    # The tables name a suite with its file ("suite mini [a.yaml]"); the gate and regression
    # lines named it "mini" alone, so a failed gate of one file read as the other's in the
    # terminal, summary.md, the HTML report and the reasons the run failed.
    for name in ("a.yaml", "b.yaml"):
        mini_suite(name=name)
    assert pytester.runpytest("--ragbench=a.yaml", "--ragbench=b.yaml",
                              "--ragbench-save-baseline=base.json").ret == 0
    broken = mini_suite(name="b.yaml", drop="d1,d3,d4")
    broken.write_text(broken.read_text() + "gates:\n  ndcg@10: '>= 0.9'\n")
    result = pytester.runpytest("--ragbench=a.yaml", "--ragbench=b.yaml",
                                "--ragbench-baseline=base.json", "--ragbench-gate",
                                "ndcg@10 >= 0.8")
    assert result.ret == 1
    out = result.stdout.str()
    assert "PASS mini [a.yaml]/overlap: ndcg@10 1.0000 >= 0.8" in out
    assert "FAIL mini [b.yaml]/overlap: ndcg@10" in out
    assert "ragbench: gate failed: mini [b.yaml]/overlap ndcg@10" in out
    assert "ragbench: gate failed: mini [a.yaml]" not in out
    assert "suite mini [b.yaml]: suite file changed; compared on the 5 common queries" in out
    assert "REGRESSED mini [b.yaml]/overlap: ndcg@10" in out
    assert "ragbench: regression: mini [b.yaml]/overlap ndcg@10" in out
    _, md, html = _outputs(pytester)
    assert "| **FAIL** | mini \\[b.yaml\\]/overlap | ndcg@10 &gt;= 0.9" in md
    assert "| PASS | mini \\[a.yaml\\]/overlap | ndcg@10 &gt;= 0.8" in md
    assert "### Suite mini \\[a.yaml\\]" in md and "### Suite mini \\[b.yaml\\]" in md
    assert "<td>mini [b.yaml] / overlap</td>" in html
    assert "<td>mini [a.yaml] / overlap</td>" in html


NARROWED = THRESHOLD + "gates:\n  mrr@10: 0.1\n"  # the narrowed runs' suite: mini, drop=d3


def _check_partial_everywhere(pytester: pytest.Pytester, result: pytest.RunResult) -> None:
    """What a narrowed run of the NARROWED suite (n of its 5 cases) says in every output."""
    summary, md, html = _outputs(pytester)
    n = summary["run"]["n_cases"]
    assert summary["run"]["n_cases_total"] == 5 and n < 5
    assert summary["run"]["partial"] is True and summary["verdict"]["partial"] is True
    assert summary["verdict"]["coverage"] == f"{n} of 5 cases"
    assert summary["suites"][0]["n_cases_run"] == n and summary["suites"][0]["partial"]
    gate = summary["gates"][0]
    assert gate["coverage"] == f"{n} of 5 cases"
    assert f"(partial: {n} of 5 cases)" in md.splitlines()[0]
    assert f"partial: {n} of 5 cases" in html
    result.stdout.fnmatch_lines([f"partial run: {n} of 5 cases ran",
                                 f"*mrr@10 * [[]on {n} of 5 cases that ran[]]"])
    assert f"(partial: {n} of 5 cases)" in _history_rows(pytester)[-1]
    assert (result.ret == 0) is summary["passed"]


# -x: test_x_stops_a_run_as_failed_at_any_n[serial]
@pytest.mark.parametrize("args", [["-k", "q1"], ["--deselect", "suite.yaml::overlap::q2"],
                                  ["-k", "q1 or q2", "-n", "2"],
                                  ["-m", "type_numeric"], ["suite.yaml::overlap::q1"],
                                  ["suite.yaml::overlap::q1", "-n", "2"]],
                         ids=["k", "deselect", "k-xdist", "m", "nodeid", "nodeid-xdist"])
def test_narrowed_runs_are_partial_everywhere_and_never_saved_as_a_baseline(pytester,
                                                                            mini_suite, args):
    path = mini_suite(drop="d3")
    path.write_text(path.read_text() + NARROWED)
    result = pytester.runpytest(SUITE, "--ragbench-save-baseline=base.json", *args)
    _check_partial_everywhere(pytester, result)
    assert not (pytester.path / "base.json").exists()
    result.stdout.fnmatch_lines(["ragbench: baseline not saved to *: the run is partial*"])


def test_last_failed_and_stepwise_narrow_plain_and_repeated_cases(pytester, mini_suite):
    # `runs: 2` names its cases `query[runN]`: pytest reads the ids it cached back with the
    # bracket as parameters, and the cases must carry the same structured id, or `--lf`
    # and `--sw` select nothing and rerun the whole suite as if it were narrowed. A suite of
    # plain cases (plain.yaml, runs: 1, after it so that --sw stops in the repeated ones)
    # shares the runs: its --lf rerun is partial too.
    path = mini_suite(drop="d3")
    path.write_text(path.read_text() + "llm: {type: extractive}\nruns: 2\n" + THRESHOLD)
    plain = mini_suite(name="plain.yaml", drop="d3")
    plain.write_text(plain.read_text().replace("name: mini", "name: plain") + THRESHOLD)
    args = [SUITE, "--ragbench=plain.yaml", "-p", "cacheprovider"]
    first = pytester.runpytest(*args)
    failed = first.parseoutcomes()["failed"]
    assert first.ret == 1 and 0 < failed < 15
    failed_in = {sid: len(re.findall(rf"^FAILED {re.escape(sid)}::", first.stdout.str(),
                                     re.MULTILINE))
                 for sid in ("suite.yaml", "plain.yaml")}
    assert sum(failed_in.values()) == failed and 0 < failed_in["plain.yaml"] < 5

    def check_partial() -> None:
        summary, _, _ = _outputs(pytester)
        assert summary["run"]["partial"] is True and summary["run"]["n_cases"] == failed
        assert {s["id"]: (s["n_cases_run"], s["partial"]) for s in summary["suites"]} == {
            sid: (n, True) for sid, n in failed_in.items()}

    rerun = pytester.runpytest(*args, "--lf")
    assert rerun.parseoutcomes() == {"failed": failed, "deselected": 15 - failed}
    check_partial()
    # the workers select the same cases (xdist reports no deselected count)
    rerun = pytester.runpytest(*args, "--lf", "-n", "2")
    assert rerun.parseoutcomes() == {"failed": failed}
    check_partial()

    # failed first: the failures run before the others
    ordered = pytester.runpytest(*args, "--ff", "-v")
    outcomes = re.findall(r"::\S+ (FAILED|PASSED)", ordered.stdout.str())
    assert outcomes == ["FAILED"] * failed + ["PASSED"] * (15 - failed)

    # stepwise: the second run starts at the case the first one stopped at, a repeated one
    stopped = pytester.runpytest(*args, "--sw", "-v")
    first_failure = re.search(r"^(\S+::\S+) FAILED", stopped.stdout.str(), re.MULTILINE)[1]
    assert first_failure.startswith("suite.yaml::") and "[run" in first_failure
    again = pytester.runpytest(*args, "--sw", "-v")
    assert again.parseoutcomes().get("deselected", 0) > 0
    assert re.search(r"^(\S+::\S+) (FAILED|PASSED)", again.stdout.str(),
                     re.MULTILINE)[1] == first_failure


def test_partial_runs_are_never_last_or_best(pytester, mini_suite):
    mini_suite(drop="d1")
    assert pytester.runpytest(SUITE).ret == 0
    complete = json.loads((latest_run(pytester.path) / "summary.json").read_text())["run"]["id"]
    mini_suite()
    # A one-query run that scores better than the complete run.
    pytester.runpytest(SUITE, "-k", "q2")
    for spec in ("last", "best"):
        result = pytester.runpytest(SUITE, f"--ragbench-baseline={spec}", "-k", "q3")
        summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
        assert summary["baseline"]["baseline_run"] == complete, spec
        assert result.ret == 0


def test_a_baseline_matching_no_suite_or_system_is_a_usage_error_and_regressions_are_junit_cases(
        pytester, mini_suite):
    """Three checks against one saved baseline of the mini suite (saving it is a run of its
    own), each with the suite changed another way."""
    path = mini_suite()
    assert pytester.runpytest(SUITE, "--ragbench-save-baseline=base.json").ret == 0

    # a suite the baseline does not name: a usage error before any item, serial and under
    # xdist
    mini_suite(path.read_text().replace("name: mini", "name: other"), name="suite.yaml")
    result = pytester.runpytest(SUITE, "--ragbench-baseline=base.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ragbench: baseline 'base.json' matches no suite of "
                                 "this run (suites are matched by name; this run: other; the "
                                 "baseline: mini)"])
    assert "PASSED" not in result.stdout.str() and "passed" not in result.stdout.str()
    runs = [p for p in (pytester.path / ".ragbench" / "runs").iterdir() if not p.is_symlink()]
    assert len(runs) == 1  # only the baseline run wrote a folder
    # one worker puts the controller in distribution mode, where the check must hold too
    result = pytester.runpytest(SUITE, "--ragbench-baseline=base.json", "-n", "1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "matches no suite of this run" in result.stderr.str() + result.stdout.str()
    assert "passed" not in result.stdout.str()

    # a renamed (or misspelled) system: every comparison and baseline gate skipped, and the
    # run passed with "0 of 0 metrics regressed"
    path = mini_suite()
    path.write_text(path.read_text().replace("  overlap:", "  overlapp:")
                    + "gates: ['ndcg@10: drop <= 0.01']\n")
    for extra in ([], ["-n", "2"]):
        result = pytester.runpytest(SUITE, "--ragbench-baseline=base.json", *extra)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, extra
        assert ("ERROR: ragbench: baseline 'base.json' holds none of the systems of suite mini "
                "(this run: overlapp; the baseline: overlap); nothing would be compared (save a "
                "baseline of these systems, or run once without --ragbench-baseline)"
                ) in result.stderr.str() + result.stdout.str()
    # against the history's last run it is no error: this run becomes the next baseline,
    # where an error would refuse every later run
    assert pytester.runpytest(SUITE, "--ragbench-baseline=last").ret == 0
    # one system in common is enough
    path.write_text(path.read_text().replace("retrievers:\n", "retrievers:\n  overlap: "
                                             "{type: 'overlap_retriever:Overlap'}\n"))
    assert pytester.runpytest(SUITE, "--ragbench-baseline=base.json").ret == 0

    # a regression against the baseline is a junit testcase, and the run's failure reason
    mini_suite(drop="d1")
    result = pytester.runpytest(SUITE, "--ragbench-baseline=base.json", "--junitxml=out.xml")
    assert result.ret == 1
    cases = _junit_cases(pytester.path / "out.xml")
    reg = cases["suite.yaml.ragbench-gates.overlap::ndcg@10: regression within tolerance 0"]
    assert reg.find("failure") is not None
    summary, _, _ = _outputs(pytester)
    assert [r["kind"] for r in summary["verdict"]["reasons"]] == ["regression"]


@pytest.mark.parametrize("spec", ["last", "best", "nope-run"])
def test_history_reference_without_a_run_is_a_usage_error(pytester, mini_suite, spec):
    mini_suite()
    result = pytester.runpytest(SUITE, f"--ragbench-baseline={spec}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert len(result.stderr.lines) <= 2
    result.stderr.fnmatch_lines([f"ERROR: ragbench: baseline '{spec}' is not a file, a run "
                                 "folder nor a run in *history.sqlite (no run history there)"])


def test_last_resolves_per_suite_and_follows_a_moved_suite_by_name(pytester, mini_suite):
    """`--ragbench-baseline=last` takes each suite's last run, and a suite moved since then
    is matched by its name. The moved suite's check needs a run of it alone first: the
    second run here."""
    mini_suite()
    text = (pytester.path / "suite.yaml").read_text()
    (pytester.path / "other.yaml").write_text(text.replace("name: mini", "name: other"))
    assert pytester.runpytest(SUITE, "--ragbench=other.yaml").ret == 0
    both = json.loads((latest_run(pytester.path) / "summary.json").read_text())["run"]["id"]
    assert pytester.runpytest(SUITE).ret == 0
    only_mini = json.loads((latest_run(pytester.path) / "summary.json").read_text())["run"]["id"]
    pytester.runpytest(SUITE, "--ragbench=other.yaml", "--ragbench-baseline=last")
    summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
    assert summary["baseline"]["baseline_runs"] == {"mini": only_mini, "other": both}
    assert all(s["in_baseline"] for s in summary["baseline"]["suites"])

    # suite.yaml moved and renamed: its last run is found by its name
    moved = pytester.path / "bench"
    moved.mkdir()
    (moved / "renamed.yaml").write_text(text.replace("corpus.jsonl", "../corpus.jsonl")
                                        .replace("queries.jsonl", "../queries.jsonl"))
    (pytester.path / "suite.yaml").unlink()
    result = pytester.runpytest("--ragbench=bench/renamed.yaml", "--ragbench-baseline=last")
    assert result.ret == 0
    summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
    info = summary["baseline"]["suites"][0]
    assert info["in_baseline"] and info["baseline_id"] == "suite.yaml"
    assert info["id"] == "bench/renamed.yaml" and len(summary["baseline"]["rows"]) == 3
    result.stdout.fnmatch_lines(["  suite mini: matched by name to suite.yaml in the baseline*"])


def test_unwritable_out_folder_is_a_usage_error_before_any_item(pytester, mini_suite):
    mini_suite()
    (pytester.path / "afile").write_text("x")
    result = pytester.runpytest(SUITE, "--ragbench-out=afile/runs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ragbench: cannot write results to *afile/runs: "
                                 "*afile is not a folder (check --ragbench-out)"])
    assert "passed" not in result.stdout.str()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_out_folder_nobody_can_write_is_a_usage_error_for_root_too(pytester, mini_suite):
    # /proc takes no new file, whoever asks: a permission check (which root passes) let the
    # run go on and write nothing
    mini_suite()
    result = pytester.runpytest(SUITE, "--ragbench-out=/proc/ragbench-runs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ragbench: cannot write results to /proc/ragbench-runs: "
                                 "/proc is not writable (*; check --ragbench-out)"])
    result = pytester.runpytest(SUITE, "--ragbench-history=/proc/ragbench.sqlite")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "folder /proc is not writable" in result.stderr.str()


def test_a_write_failure_mid_run_is_one_line_and_the_run_goes_on(pytester, mini_suite):
    mini_suite()
    pytester.makeconftest('''
import os, shutil
import pytest

@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    # After the first case is written, the output root turns into a file.
    root = os.path.join(os.getcwd(), "out")
    if report.when == "teardown" and os.path.isdir(root):
        shutil.rmtree(root)
        open(root, "w").close()
''')
    result = pytester.runpytest("--ragbench-summary=full", SUITE, "--ragbench-out=out")
    assert result.ret == 0
    result.assert_outcomes(passed=5)
    lines = [x for x in result.stdout.lines if x.startswith("ragbench: cannot write")]
    assert len(lines) == 1
    assert "INTERNALERROR" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*ragbench summary*", "  overlap: 5 cases, 0 errors*"])


TERMINATED = '''
import os
import signal
import time


class Slow:
    def index(self, corpus):
        self.ids = [d.id for d in corpus]

    def retrieve(self, query, k):
        if "espresso" not in query:
            # SIGTERM (a CI cancel) while the second case runs. Sent only to the run's own
            # handler: any other would end the process running the tests.
            handler = signal.getsignal(signal.SIGTERM)
            if type(getattr(handler, "__self__", None)).__name__ != "SigtermAsInterrupt":
                raise RuntimeError(f"the run installed no SIGTERM handler: {handler!r}")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(4)
        return [(i, 1.0) for i in self.ids[:k]]
'''


def test_sigterm_ends_the_run_like_ctrl_c(pytester, mini_suite):
    mini_suite()
    pytester.makepyfile(slow=TERMINATED)
    text = (pytester.path / "suite.yaml").read_text().replace("overlap_retriever:Overlap",
                                                                "slow:Slow")
    (pytester.path / "suite.yaml").write_text(text)
    # In process: the signal is sent by the retriever to this process, where the run's handler
    # turns it into a KeyboardInterrupt, which pytester is told not to raise again here.
    before = signal.getsignal(signal.SIGTERM)
    result = pytester.runpytest(SUITE, "-v", no_reraise_ctrlc=True)
    text_out = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, text_out
    assert "::q1 PASSED" in text_out
    run = latest_run(pytester.path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run"]["partial"] is True
    assert summary["verdict"]["coverage"] == "1 of 5 cases"
    assert (run / "report.html").is_file() and (run / "summary.md").is_file()
    assert "partial run: 1 of 5 cases ran" in text_out
    assert "(partial: 1 of 5 cases)" in _history_rows(pytester)[-1]
    assert signal.getsignal(signal.SIGTERM) == before  # put back after the run


def test_sigterm_handler_is_restored(pytester, mini_suite):
    mini_suite()
    pytester.makeconftest('''
import signal

def pytest_runtest_setup(item):
    print("handler during:", signal.getsignal(signal.SIGTERM) != signal.SIG_DFL)

def pytest_unconfigure(config):
    print("handler after:", signal.getsignal(signal.SIGTERM))
''')
    # In-process: this process's handler is the default one too, and must be it again after.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    result = pytester.runpytest(SUITE, "-s")
    assert result.ret == 0
    assert re.search(r"handler after: (Handlers\.)?SIG_DFL|handler after: 0",
                     result.stdout.str())
    assert "handler during: True" in result.stdout.str()  # the run did install its own
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.parametrize(("setup", "args", "code"), [
    ("fail", [], 1),
    ("gate", [], 1),
    ("", ["--ragbench-baseline=nope.json"], 4),
    ("", ["--ragbench-gate", "ndcg@10 >>= 1"], 4),
    # A suite error is a collection error: pytest stops before running any item (2).
    ("badkey", [], 2),
    # So is a gate on a metric that no collected suite computes (a typo).
    ("", ["--ragbench-gate", "ndcg@100 >= 0.1"], 2),
    # A run to resume whose records cannot be read is one named on the command line, as a
    # baseline is (4 under xdist too: tests/test_resume.py); the run it resumes is the
    # passing one (0)
    ("ok-then-damaged-run", ["--ragbench-resume=latest"], 4),
], ids=["item-failed", "gate-failed", "missing-baseline", "bad-gate", "bad-suite-key",
        "gate-metric-typo", "ok-then-damaged-run-to-resume"])
def test_exit_codes_listed_in_docs_ci(pytester, mini_suite, setup, args, code):
    path = mini_suite(drop="d4")
    if setup == "ok-then-damaged-run":
        result = pytester.runpytest(SUITE)
        assert int(result.ret) == 0, result.stdout.str() + result.stderr.str()
        summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
        assert summary["passed"] is True
        records = latest_run(pytester.path) / "cases.jsonl"
        # a damaged line amid the records (a cut last line is a crash's, read as unfinished)
        first, *rest = records.read_text().splitlines(keepends=True)
        records.write_text("".join([first, '{"suite": \n', *rest]))
    if setup == "fail":
        path.write_text(path.read_text() + THRESHOLD)
    elif setup == "gate":
        path.write_text(path.read_text() + "gates:\n  ndcg@10: '>= 0.999'\n")
    elif setup == "badkey":
        path.write_text(path.read_text() + "unknown_key: 1\n")
    result = pytester.runpytest(SUITE, *args)
    assert int(result.ret) == code, result.stdout.str() + result.stderr.str()
    if code == 0 or code == 1:
        summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
        assert summary["passed"] is (code == 0)


@pytest.mark.parametrize("kind", ["truncated-baseline", "history-dir", "history-text"])
def test_malformed_files_on_the_command_line_are_one_clear_usage_error(pytester, mini_suite,
                                                                       kind):
    mini_suite()
    args = [SUITE]
    if kind == "truncated-baseline":
        assert pytester.runpytest(SUITE, "--ragbench-save-baseline=base.json").ret == 0
        base = pytester.path / "base.json"
        base.write_text(base.read_text()[:200])
        args.append("--ragbench-baseline=base.json")
        named = "base.json"
    elif kind == "history-dir":
        (pytester.path / "hist").mkdir()
        args.append("--ragbench-history=hist")
        named = "hist"
    else:
        (pytester.path / "hist.sqlite").write_text("not sqlite at all\n" * 100)
        args.append("--ragbench-history=hist.sqlite")
        named = "hist.sqlite"
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [x for x in result.stderr.lines if x.strip()]
    assert len(errors) == 1 and named in errors[0] and errors[0].startswith("ERROR: ragbench:")
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_gate_whose_scope_no_query_matches_says_so_in_every_output(pytester, mini_suite):
    """A command-line gate applies to every suite: one whose scope only another suite's
    queries match failed this suite's run with 'nan' and 'margin nan' everywhere but the
    failure line. (A scope no suite's queries match is a usage error: test_gate_scopes.py.)"""
    mini_suite()
    write_jsonl(pytester.path / "expert.jsonl", [{**QUERIES[0], "difficulty": "expert"}])
    mini_suite("name: other\ndataset: {corpus: corpus.jsonl, queries: expert.jsonl}\n"
               "retrievers: {overlap: {type: 'overlap_retriever:Overlap'}}\n"
               "metrics: [ndcg@10]\n", name="other.yaml")
    gate = "difficulty=expert: ndcg@10 >= 0.5"
    result = pytester.runpytest(SUITE, "--ragbench=other.yaml", "--junitxml=out.xml",
                                "--ragbench-gate", gate, "--ragbench-summary=full")
    assert result.ret == 1
    said = "no query matches difficulty=expert"
    # the scope said once, beside the system
    result.stdout.fnmatch_lines([f"  FAIL mini/overlap [[]difficulty=expert]: ndcg@10 >= 0.5 "
                                 f"({said})",
                                 f"ragbench: gate failed: * {said} *"])
    summary, md, html = _outputs(pytester)
    (gate_result,) = [g for g in summary["gates"] if g["scope"] and g["suite"] == "mini"]
    assert gate_result["note"] == said and gate_result["passed"] is False
    assert said in md and said in html and said in (pytester.path / "out.xml").read_text()
    assert "margin nan" not in md + html + result.stdout.str()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_x_stops_a_run_as_failed_at_any_n(pytester, mini_suite, workers):
    """Under xdist -x stopped the run as an interruption (exit 2, "the run was
    interrupted"); at -n 0 as failed (exit 1). The suite is the narrowed runs' one: at -n 0
    the run stops at q3, and is partial everywhere as they are."""
    path = mini_suite(drop="d3")
    path.write_text(path.read_text() + NARROWED)
    result = pytester.runpytest(SUITE, "-x", "-p", "no:randomly", *workers)
    assert result.ret == 1
    summary, _, _ = _outputs(pytester)
    kinds = [r["kind"] for r in summary["verdict"]["reasons"] if r["fails"]]
    assert kinds == ["items_failed"]
    assert summary["run"]["partial"] == summary["verdict"]["partial"]
    if not workers:
        _check_partial_everywhere(pytester, result)
        assert summary["run"]["n_cases"] == 3
