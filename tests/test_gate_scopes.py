"""A suite gate's query scope (``type=``, ``difficulty=``, ``tag=``) that no selected query
matches is a suite error before the first case, in a whole run and in a run narrowed by
``-k``: a misspelled value there was skipped as a scope the narrowing left out."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import QUERIES, error_sections, latest_run, write_jsonl

SUITE = "--ragbench=suite.yaml"


@pytest.mark.parametrize("narrowed", [[], ["-k", "q1"]], ids=["whole", "k"])
def test_a_misspelled_scope_is_a_suite_error_before_any_case(pytester, mini_suite, narrowed):
    path = mini_suite()
    path.write_text(path.read_text() + 'gates:\n  - "difficulty=hrad: ndcg@10 >= 0.5"\n'
                    '  - "tag=espresso, type=numeric: recall@10 >= 0.1"\n')
    result = pytester.runpytest(SUITE, "-p", "no:randomly", *narrowed)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    (section,) = error_sections(result.stdout.str()).values()
    text = " ".join(section)
    # each at its own key and line, as the loader's own errors are
    assert ("suite.yaml:10: gates[0]: gate 'difficulty=hrad: ndcg@10 >= 0.5' selects none of "
            "the 5 selected queries (difficulty=hrad): no query has difficulty 'hrad' (did you "
            "mean 'hard'?); the difficulties: easy, hard, medium") in text
    # each value exists, no query has both
    assert ("suite.yaml:11: gates[1]: gate 'tag=espresso, type=numeric: recall@10 >= 0.1' "
            "selects none of the 5 selected queries (tag=espresso, type=numeric): no query has "
            "all of them") in text


def test_a_scope_a_narrowed_run_left_out_is_still_skipped(pytester, mini_suite):
    path = mini_suite()
    path.write_text(path.read_text() + 'gates:\n  - "difficulty=hard: ndcg@10 >= 0.99"\n')
    result = pytester.runpytest(SUITE, "-p", "no:randomly", "-k", "q1 or q3")  # both easy
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*no case of its scope ran in this partial run*"])


@dataclass
class CrashRun:
    """One run whose worker crashed (see :data:`CRASH_RUNS`): its folder (not ``latest``,
    which a later run in the same directory moves) and result."""

    run: Path
    result: pytest.RunResult

    def gates(self, suite: str) -> list[dict[str, Any]]:
        return [g for g in json.loads((self.run / "summary.json").read_text())["gates"]
                if g["suite_id"] == suite]

    def records(self, suite: str) -> list[dict[str, Any]]:
        return [r for r in map(json.loads, (self.run / "cases.jsonl").read_text().splitlines())
                if r["suite"] == suite]


#: Prints, at the end of a run, which of the reports pytest's terminal reporter keeps still
#: hold a worker's query texts or metadata.
KEPT_REPORTS = """
def pytest_terminal_summary(terminalreporter):
    kept = [r for reports in terminalreporter.stats.values() for r in reports]
    held = [a for r in kept for a in ("ragbench_query_texts", "ragbench_query_meta")
            if hasattr(r, a)]
    print(f"KEPT {len(kept)} HELD {held}")
"""

#: The crashed runs several tests each read, each made once by the first test that needs it.
#: "one": q4 (a hard query) crashes the lone worker (-n 1) in each of two suites (the worker
#: is replaced after the first crash): suite.yaml of one system, whose crash record has no
#: other record of the query, and two.yaml, whose bm25 records the query the crashed
#: overlap did not; a conftest prints what the kept reports hold (which a crash changes
#: for no other suite: the query metadata and texts travel, and gates judge, per suite).
#: "every": every query crashes its worker, so both workers die in their first case (q2 and
#: q4, both hard). Every suite has a gate on the hard queries' error rate.
CRASH_RUNS = {"one": ("citric", ("--ragbench=two.yaml", "-n", "1")),
              "every": (" ", ("-n", "2", "-k", "q2 or q4"))}


@pytest.fixture(scope="module")
def shared_runs() -> dict[str, CrashRun | str]:
    """Runs made once for this module, each by the first test that needs it."""
    return {}


@pytest.fixture
def crash_run(pytester: pytest.Pytester, mini_suite: Any,
              shared_runs: dict[str, CrashRun | str]) -> Callable[[str], CrashRun]:
    def get(name: str) -> CrashRun:
        if name not in shared_runs:
            crash_on, args = CRASH_RUNS[name]
            try:
                path = mini_suite(crash_on=crash_on)
                path.write_text(path.read_text()
                                + 'gates:\n  - "difficulty=hard: error_rate <= 0"\n')
                if name == "one":
                    (pytester.path / "two.yaml").write_text(
                        path.read_text().replace("name: mini", "name: two")
                        .replace("metrics:", "  bm25: {}\nmetrics:"))
                    pytester.makeconftest(KEPT_REPORTS)
                result = pytester.runpytest(SUITE, "-p", "no:randomly", *args)
                shared_runs[name] = CrashRun(latest_run(pytester.path), result)
            except Exception as exc:
                # the first test shows the failure; the others say so instead of running it
                shared_runs[name] = f"{type(exc).__name__}: {exc}"
                raise
        run = shared_runs[name]
        if isinstance(run, str):
            pytest.fail(f"the shared run {name!r} failed (see the first test that made it): "
                        f"{run}")
        return run

    return get


def test_a_case_whose_worker_crashed_counts_in_its_scope(crash_run):
    # A crashed worker's case gets its error record from the controller, which holds no
    # dataset: no type, difficulty or tags, so a scoped error-rate gate passed on the hard
    # queries while one of them crashed. Another system's record of the query has them.
    shared = crash_run("one")  # two.yaml's overlap crashes on q4; its bm25 does not
    shared.result.assert_outcomes(passed=4 + 9, failed=1 + 1)
    shared.result.stdout.fnmatch_lines(["FAILED two.yaml::overlap::q4*"])
    assert [(g["retriever"], g["passed"], g["value"], g["n"])
            for g in shared.gates("two.yaml")] == [("overlap", False, 0.5, 2),
                                                   ("bm25", True, 0.0, 2)]


def test_a_crashed_case_of_a_suite_of_one_system_keeps_its_query_metadata(crash_run):
    # With one system there is no other record of the query: the workers send the type,
    # difficulty and tags of the queries they collected, and the controller's error record of
    # the crashed case carries them (in cases.jsonl too, as a case that errored on its worker)
    shared = crash_run("one")  # suite.yaml's q4, a hard query (two.yaml beside it)
    shared.result.assert_outcomes(passed=4 + 9, failed=1 + 1)
    shared.result.stdout.fnmatch_lines(["FAILED suite.yaml::overlap::q4*"])
    (gate,) = shared.gates("suite.yaml")
    assert (gate["passed"], gate["value"], gate["n"]) == (False, 0.5, 2)
    rec = next(r for r in shared.records("suite.yaml") if r["case_id"] == "q4")
    assert (rec["difficulty"], rec["type"], rec["tags"]) == ("hard", "how_to", ["cleaning"])
    assert rec["error"]["stage"] == "crash"


def test_cases_of_workers_that_each_died_in_their_first_case_keep_their_query_metadata(
        crash_run):
    # The workers send their queries' metadata with their first case report: when every
    # worker dies in its first case none arrives before the controller records the crashes,
    # and the hard queries' crashes fell out of 'difficulty=hard' ("no query matches")
    shared = crash_run("every")
    shared.result.assert_outcomes(failed=2)
    (gate,) = json.loads((shared.run / "summary.json").read_text())["gates"]
    assert (gate["passed"], gate["value"], gate["n"]) == (False, 1.0, 2)
    recs = sorted((json.loads(line) for line in (shared.run / "cases.jsonl")
                   .read_text().splitlines()), key=lambda r: r["case_id"])
    assert [(r["case_id"], r["difficulty"], r["type"], r["tags"], r["error"]["stage"])
            for r in recs] == [("q2", "hard", "numeric", ["cold_brew", "numeric"], "crash"),
                               ("q4", "hard", "how_to", ["cleaning"], "crash")]


def test_a_case_whose_setup_failed_counts_in_its_scope(pytester, mini_suite):
    # The error record of a case whose setup failed outside the case (a conftest hook) had
    # no type, difficulty or tags: a scoped error-rate gate passed on the hard queries while
    # one of them errored, and in a -k run called the scope one where no case ran.
    path = mini_suite()
    path.write_text(path.read_text() + 'gates:\n  - "difficulty=hard: error_rate <= 0"\n')
    pytester.makeconftest("""
        def pytest_runtest_setup(item):
            if item.name == "q4":
                raise RuntimeError("no fixture data")
    """)
    pytester.runpytest(SUITE, "-p", "no:randomly").assert_outcomes(passed=4, errors=1)
    (gate,) = json.loads((latest_run(pytester.path) / "summary.json").read_text())["gates"]
    assert (gate["passed"], gate["value"], gate["n"]) == (False, 0.5, 2)
    pytester.runpytest(SUITE, "-p", "no:randomly", "-k", "q3 or q4")
    (gate,) = json.loads((latest_run(pytester.path) / "summary.json").read_text())["gates"]
    assert (gate["passed"], gate["value"], gate.get("skipped")) == (False, 1.0, None)
    rec = next(json.loads(line) for line in (latest_run(pytester.path) / "cases.jsonl")
               .read_text().splitlines() if json.loads(line)["case_id"] == "q4")
    assert (rec["difficulty"], rec["type"], rec["tags"]) == ("hard", "how_to", ["cleaning"])
    assert rec["error"]["stage"] == "setup" and "RuntimeError" in rec["error"]["message"]


def test_a_command_line_gate_no_query_of_any_suite_matches_is_one_usage_error(pytester,
                                                                             mini_suite):
    """A ``--ragbench-gate`` applies to every suite: its scope is a typo when no selected
    query of any collected suite matches it. (Under xdist, in the head start test's "cli"
    run below.)"""
    mini_suite()
    gate = "type=factiod: recall@10 >= 0.5"
    result = pytester.runpytest(SUITE, "--ragbench-gate", gate, "-k", "q1")
    assert result.ret != 0
    out = result.stdout.str()
    assert _factiod_said(gate) in out and out.count("selects none") == 1
    assert "passed" not in out.splitlines()[-1]


def _factiod_said(gate: str) -> str:
    return (f"ragbench: --ragbench-gate {gate!r}: selects none of the 5 selected queries of "
            "the collected suites: no query has type 'factiod' (did you mean 'factoid'?); the "
            "types: factoid, how_to, numeric")


def _answered_suite(base_url: str, name: str = "hs") -> str:
    """A suite the xdist head start answers (bm25, an OpenAI-compatible LLM, token_f1)."""
    return (f"name: {name}\n"
            "dataset: {corpus: corpus.jsonl, queries: queries.jsonl, answer_field: type}\n"
            "retrievers: {bm25: {}}\nmetrics: [recall@10, token_f1]\n"
            f'llm: {{type: openai, base_url: "{base_url}", model: m, api_key_env: null}}\n')


#: The typos of the head start test's runs: in a suite file, or on the command line.
TYPO_GATES = {"cli-scopes": ["type=factiod: recall@10 >= 0.5", "tag=espreso: recall@10 >= 0.5"],
              "cli-metric": ["recal@10 >= 0.5"]}


@pytest.mark.parametrize("typos", ["suite-gate-and-threshold", "cli-scopes", "cli-metric"])
def test_the_head_start_sends_no_request_for_a_run_the_workers_stop(pytester, mini_suite,
                                                                    typos):
    """Under xdist the controller's head start answered 10 of the cases of a run whose
    workers then stopped at a gate typo (before any request of theirs).

    A run holds two typos only where each stops the head start alone: a suite gate's scope
    in suite.yaml and a threshold's in t.yaml (the head start plans, or skips, each suite by
    its own gates and thresholds: a suite whose typo it missed would be answered); or two
    ``--ragbench-gate`` scopes no suite has (checked together, the usage error test's xdist
    case: each is one problem of the workers' one usage error, shown once). A metric typo
    would stop the head start without its scopes being looked at: a run of its own."""
    from pytest_ragbench.llm.testing import CHAT_PATH, FakeOpenAIServer

    gates = TYPO_GATES.get(typos, [])
    with FakeOpenAIServer(latency=0.01) as server:
        args = [arg for gate in gates for arg in ("--ragbench-gate", gate)]
        if typos.startswith("suite"):
            mini_suite(_answered_suite(server.base_url)
                       + 'gates: ["recall@10 >= 0.0", "difficulty=hrad: recall@10 >= 0.5"]\n')
            mini_suite(_answered_suite(server.base_url, name="t")
                       + 'gates: ["recall@10 >= 0.0"]\n'
                       + 'thresholds: {"difficulty=hrad: recall@10": 0.5}\n', name="t.yaml")
            args = ["--ragbench=t.yaml"]
        else:
            mini_suite(_answered_suite(server.base_url) + 'gates: ["recall@10 >= 0.0"]\n')
        result = pytester.runpytest(SUITE, *args, "-n", "2", "-p", "no:randomly")
        chats = server.count(CHAT_PATH)
    assert result.ret != 0
    out = result.stdout.str()
    if typos.startswith("suite"):
        sections = error_sections(out)
        assert set(sections) == {"suite.yaml", "t.yaml"}, out
        assert "gates[1]: gate 'difficulty=hrad: recall@10 >= 0.5' selects none" in " ".join(
            sections["suite.yaml"])
        assert "thresholds.difficulty=hrad: recall@10: gate" in " ".join(sections["t.yaml"])
    else:
        for gate in gates:  # one line each (the short summary shows the first's start)
            said = [line for line in result.outlines
                    if line.startswith(f"ragbench: --ragbench-gate {gate!r}: ")]
            assert len(said) == 1, out
        assert "passed" not in out.splitlines()[-1]
    if typos == "cli-scopes":
        assert _factiod_said(gates[0]) in out and out.count("selects none") == 2
    assert chats == 0


def _two_suites(pytester, mini_suite) -> None:
    """a: the mini queries (types, tags); b: the same queries without any, its own system."""
    mini_suite()
    plain = [{k: v for k, v in q.items() if k not in ("tags", "type", "difficulty")}
             for q in QUERIES]
    write_jsonl(pytester.path / "plain.jsonl", plain)
    mini_suite("name: a\ndataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
               "retrievers: {overlap: {type: 'overlap_retriever:Overlap'}}\n"
               "metrics: [recall@10]\n", name="a.yaml")
    mini_suite("name: b\ndataset: {corpus: corpus.jsonl, queries: plain.jsonl}\n"
               "retrievers: {bm25: {}}\nmetrics: [recall@10]\n", name="b.yaml")


def test_a_command_line_gate_on_one_suites_metric_judges_that_suite(pytester, mini_suite):
    """A suite of a run without the metric of a ``--ragbench-gate`` (even one scoped to
    another suite's system) failed the run once every case had run, with a "baseline"
    reason, and took the other gates and the baseline comparison with it. The unscoped and
    the scoped gate share a run: either one judging b would add its gate to b's."""
    mini_suite()
    mini_suite("name: a\ndataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
               "retrievers: {overlap: {type: 'overlap_retriever:Overlap'}}\n"
               "metrics: [recall@10, mrr@10]\n", name="a.yaml")
    mini_suite("name: b\ndataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
               "retrievers: {bm25: {}}\nmetrics: [recall@10]\n", name="b.yaml")
    gates = ("mrr@10 >= 0.1", "retriever=overlap: mrr@10 >= 0.1")
    result = pytester.runpytest("--ragbench=a.yaml", "--ragbench=b.yaml", "-p", "no:randomly",
                                *(arg for gate in (*gates, "recall@10 > 1")
                                  for arg in ("--ragbench-gate", gate)))
    summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
    assert [r["kind"] for r in summary["verdict"]["reasons"]] == ["gates_failed"]
    assert {(g["suite_id"], g["text"], g["passed"]) for g in summary["gates"]} == {
        *(("a.yaml", gate, True) for gate in gates), ("a.yaml", "recall@10 > 1", False),
        ("b.yaml", "recall@10 > 1", False)}
    assert len(summary["gates"]) == 4
    result.stdout.fnmatch_lines(["ragbench: FAILED: 2 gates failed"])


def test_a_command_line_gate_scoped_to_a_system_checks_that_systems_queries(pytester,
                                                                            mini_suite):
    """``retriever=bm25, tag=numeric``: bm25 is b's, whose queries have no tags; the tag was
    looked for among every suite's queries, found in a's, and the whole run went on to fail
    the gate with "no query matches"."""
    _two_suites(pytester, mini_suite)
    result = pytester.runpytest("--ragbench=a.yaml", "--ragbench=b.yaml",
                                "--ragbench-gate", "retriever=bm25, tag=numeric: recall@10 >= 0.1")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*--ragbench-gate 'retriever=bm25, tag=numeric: recall@10 >= "
                                 "0.1': selects none of the 5 selected queries of the collected "
                                 "suites with system 'bm25': no query has tag 'numeric'; the "
                                 "tags: none*"])


def test_a_command_line_gate_scope_a_hand_written_tests_suite_holds_is_no_error(pytester,
                                                                                mini_suite):
    """The tagged queries come only from a suite hand-written tests use (not collected as a
    suite): the scope was called a typo and the run stopped."""
    _two_suites(pytester, mini_suite)
    pytester.makepyfile(test_hand="""
import pytest

@pytest.mark.ragbench_suite("a.yaml")
def test_it(ragbench_case, ragbench_retriever, ragbench_record):
    ragbench_record.evaluate(ragbench_retriever.retrieve(ragbench_case))
""")
    result = pytester.runpytest("test_hand.py", "--ragbench=b.yaml", "-p", "no:randomly",
                                "--ragbench-gate", "tag=numeric: recall@10 >= 0.1")
    assert "selects none" not in result.stdout.str()
    result.assert_outcomes(passed=10)


def test_a_scoped_per_query_threshold_applies_to_its_scope_only(pytester, mini_suite):
    """``thresholds`` took a scope and then applied to every case: a bound meant for the hard
    queries failed the others, and a misspelled scope failed them all."""
    path = mini_suite(drop="d4,d6")  # q4 (hard) and q5 (medium) find nothing relevant
    text = path.read_text()
    path.write_text(text + 'thresholds: {"difficulty=hard: recall@10": 0.99}\n')
    result = pytester.runpytest(SUITE, "-p", "no:randomly", "-rf")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*threshold failed: [[]difficulty=hard[]] recall@10 = 0*",
                                 "FAILED suite.yaml::overlap::q4*"])
    (rec,) = [r for r in (json.loads(x) for x in (latest_run(pytester.path) / "cases.jsonl")
                          .read_text().splitlines()) if r["case_id"] == "q4"]
    assert [t.get("scope") for t in rec["thresholds"]] == ["difficulty=hard"]
    assert "[difficulty=hard] recall@10" in (latest_run(pytester.path) / "report.html").read_text()
    path.write_text(text + 'thresholds: {"difficulty=hrad: recall@10": 0.99}\n')
    result = pytester.runpytest(SUITE, "-p", "no:randomly")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*suite.yaml:10: thresholds.difficulty=hrad: recall@10: gate "
                                 "'difficulty=hrad: recall@10 >= 0.99' selects none of the 5 "
                                 "selected queries*"])


@pytest.mark.parametrize("gates", [[], ["retriever=ov, tag=special: recall@10 >= 0.0",
                                         "retriever=ov, type=factoid: recall@10 >= 0.0"]],
                         ids=["none", "tag-and-type"])
def test_a_valid_command_line_gate_keeps_the_head_start(pytester, mini_suite, monkeypatch,
                                                        gates):
    """A gate on a system of a suite the head start does not answer (retrieval only): that
    suite's queries were not read there, and its scope was taken for a typo that stops the
    run (the head start sent nothing and the workers answered every case themselves).

    The tag and the type scope share a run: either one taken for a typo stops it. The run
    without a gate shows the head start plans the one suite here."""
    from pytest_ragbench import headstart
    from pytest_ragbench.llm.testing import FakeOpenAIServer

    planned: list[int] = []
    real = headstart.HeadStartPlugin._plan
    monkeypatch.setattr(headstart.HeadStartPlugin, "_plan", lambda self, budget, stopped: (
        planned.append(len(plans := real(self, budget, stopped))) or plans))
    with FakeOpenAIServer(latency=0.01) as server:
        mini_suite(_answered_suite(server.base_url))
        write_jsonl(pytester.path / "q2.jsonl",
                    [dict(q, tags=[*q["tags"], "special"]) for q in QUERIES])
        mini_suite("name: ret\ndataset: {corpus: corpus.jsonl, queries: q2.jsonl}\n"
                   "retrievers: {ov: {type: 'overlap_retriever:Overlap'}}\n"
                   "metrics: [recall@10]\n", name="ret.yaml")
        result = pytester.runpytest(SUITE, "--ragbench=ret.yaml", "-n", "2",
                                    *(arg for gate in gates for arg in ("--ragbench-gate", gate)))
    assert result.ret == 0
    assert planned == [1]


def test_a_resumed_run_judges_reused_cases_by_its_own_thresholds(pytester, mini_suite):
    """A record reused by ``--ragbench-resume`` kept the verdict of the code that ran it: one
    from a version that applied a scoped threshold to every case stayed failed."""
    path = mini_suite(drop="d4,d6")  # q4 (hard) and q5 (medium) find nothing relevant
    path.write_text(path.read_text() + 'thresholds: {"difficulty=hard: recall@10": 0.99}\n')
    first = pytester.runpytest(SUITE, "-k", "not q4", "-p", "no:randomly")
    first.assert_outcomes(passed=4)
    cases = latest_run(pytester.path) / "cases.jsonl"
    recs = [json.loads(x) for x in cases.read_text().splitlines()]
    for rec in recs:  # q5 as the scope-blind version recorded it
        if rec["case_id"] == "q5":
            rec["status"] = "failed"
            rec["thresholds"] = [{"metric": "recall@10", "op": ">=", "threshold": 0.99,
                                  "value": 0.0, "passed": False, "margin": -0.99}]
    cases.write_text("".join(json.dumps(r) + "\n" for r in recs))
    resumed = pytester.runpytest(SUITE, "--ragbench-resume", "-p", "no:randomly", "-rf")
    resumed.stdout.fnmatch_lines(["resumed from *: 4 cases reused, 1 run"])
    resumed.assert_outcomes(passed=4, failed=1)
    resumed.stdout.fnmatch_lines(["FAILED suite.yaml::overlap::q4*"])


def test_the_reports_pytest_keeps_do_not_hold_the_workers_query_texts(crash_run):
    # A worker sends its suites' query texts and metadata with its first case report, which
    # pytest's terminal reporter keeps to the end of the run: megabytes per worker for a big
    # suite, once the controller has read them (here two workers' first reports: the lone
    # worker's and its replacement's after the crash)
    shared = crash_run("one")
    shared.result.stdout.fnmatch_lines(["KEPT * HELD []"])
    recs = [json.loads(line) for line in (shared.run / "cases.jsonl").read_text().splitlines()]
    assert len(recs) == 5 + 10 and all(r["query"] for r in recs)


def test_a_crashed_case_shows_its_query_text_like_any_case(crash_run):
    # The controller's record of a case whose worker died had the query's metadata but not
    # its text: cases.jsonl said "query": null and the HTML report's row and details an empty
    # query, whether the metadata came with a worker's report or the controller read it (every
    # worker dead in its first case)
    for name in ("one", "every"):  # q4 crashes; every query crashes
        shared = crash_run(name)
        assert shared.result.ret == pytest.ExitCode.TESTS_FAILED
        run = shared.run
        recs = {r["case_id"]: r for r in shared.records("suite.yaml")}
        assert recs["q4"]["error"]["stage"] == "crash"
        assert recs["q4"]["query"] == "remove scale with citric acid", name
        assert "remove scale with citric acid" in (run / "report.html").read_text(), name
        if name == "every":
            assert recs["q2"]["query"] == "how long to steep cold brew"


def test_a_scoped_gate_says_its_scope_once_in_every_output(pytester, mini_suite):
    """'PASS mini/overlap [difficulty=hard, retriever=overlap]: difficulty=hard,
    retriever=overlap: ndcg@10: drop <= 0.03: ...' in the terminal, and the scope in both
    columns of the HTML report's gate table."""
    import re

    path = mini_suite()
    path.write_text(path.read_text() + "gates:\n"
                    '  - "difficulty=hard, retriever=overlap: ndcg@10: drop <= 0.03"\n'
                    '  - "difficulty=hard, retriever=overlap: ndcg@10 <= 0.5"\n'
                    '  - "difficulty=hard, retriever=overlap: ndcg@10: no significant drop"\n')
    pytester.runpytest(SUITE, "-p", "no:randomly")
    base = latest_run(pytester.path)
    result = pytester.runpytest(SUITE, "-p", "no:randomly", f"--ragbench-baseline={base}",
                                "--ragbench-summary=full", "--junitxml=junit.xml")
    run = latest_run(pytester.path)
    assert run != base
    scope = "difficulty=hard, retriever=overlap"
    terminal = [line for line in result.outlines
                if re.match(r"  (PASS|FAIL|SKIP) ", line)]
    assert len(terminal) == 3, result.outlines
    assert all(line.count(scope) == 1 for line in terminal), terminal
    md = [line for line in (run / "summary.md").read_text().splitlines()
          if re.match(r"\| (PASS|\*\*FAIL\*\*|skip) \|", line)]
    assert len(md) == 3 and all(line.count(scope) == 1 for line in md), (
        run / "summary.md").read_text()
    html = (run / "report.html").read_text()
    table = html[html.index('<table class="rb-gates">'):]
    rows = re.findall(r"<tr class=\"(?:pass|fail|skip)\">.*?</tr>",
                      table[:table.index("</table>")], flags=re.S)
    assert len(rows) == 3 and all(row.count(scope) == 1 for row in rows), rows
    junit = (pytester.path / "junit.xml").read_text()
    names = re.findall(r'<testcase [^>]*name="([^"]*ndcg@10[^"]*)"', junit)
    assert len(names) == 3 and all(n.count(scope) == 1 for n in names), names
    messages = re.findall(r'message="([^"]*)"', junit)
    assert messages and all(m.count(scope) <= 1 for m in messages), messages


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["n0", "n2"])
def test_a_command_line_gate_the_suite_already_has_is_one_gate_in_every_output(
        pytester, mini_suite, workers, capsys):
    """``--ragbench-gate 'ndcg@10: 0.3'`` beside a suite's 'ndcg@10 >= 0.3' (and a scoped
    drop gate with its scope's items in another order, and a gate given twice) is the same
    check stated twice: one gate, as the suite file words it, in every output; a gate the
    suite has not is added."""
    import re

    path = mini_suite()
    path.write_text(path.read_text() + "gates:\n"
                    '  - "ndcg@10 >= 0.3"\n'
                    '  - "difficulty=hard, tag=numeric: ndcg@10: drop <= 0.05"\n')
    pytester.runpytest(SUITE, "-p", "no:randomly")
    base = latest_run(pytester.path)
    cli = ["ndcg@10: 0.3", "tag=numeric, difficulty=hard: ndcg@10: drop <= 0.05",
           "recall@10 >= 0.2", "recall@10 >= 0.2"]
    result = pytester.runpytest(SUITE, "-p", "no:randomly", f"--ragbench-baseline={base}",
                                *(arg for gate in cli for arg in ("--ragbench-gate", gate)),
                                "--junitxml=junit.xml", *workers)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    run = latest_run(pytester.path)
    texts = ["ndcg@10 >= 0.3", "recall@10 >= 0.2",
             "difficulty=hard, tag=numeric: ndcg@10: drop <= 0.05"]
    summary = json.loads((run / "summary.json").read_text())
    assert sorted(g["text"] for g in summary["gates"]) == sorted(texts)
    result.stdout.fnmatch_lines(["gates: 3 passed"])
    md = [line for line in (run / "summary.md").read_text().splitlines()
          if re.match(r"\| (PASS|\*\*FAIL\*\*|skip) \|", line)]
    assert len(md) == 3, md
    html = (run / "report.html").read_text()
    table = html[html.index('<table class="rb-gates">'):]
    rows = re.findall(r"<tr class=\"(?:pass|fail|skip)\">", table[:table.index("</table>")])
    assert len(rows) == 3, table[:table.index("</table>")]
    junit = (pytester.path / "junit.xml").read_text()
    names = re.findall(r'<testcase classname="[^"]*ragbench-gates[^"]*" name="([^"]*)"', junit)
    gates = [n for n in names if "regression within tolerance" not in n]
    assert len(gates) == 3, names
    # 'ragbench compare' of the two runs, given the same gates, lists them once too
    from pytest_ragbench.cli import main as ragbench_main

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(pytester.path)
        code = ragbench_main(["compare", str(base), str(run), "--json",
                              *(arg for gate in cli for arg in ("--gate", gate))])
    assert code == 0
    compared = json.loads(capsys.readouterr().out)["gates"]
    assert sorted(g["text"] for g in compared) == sorted(texts)
