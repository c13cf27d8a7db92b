"""Answers and judges through the plugin: offline provider, a real OpenAI-compatible server on
127.0.0.1, faults, the response cache and xdist (no call made twice)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import QUERIES, write_jsonl

from pytest_ragbench.llm.testing import FakeOpenAIServer, Fault

# In-process runs stopped by a collection error skip pytest's unseen long traceback.

SECRET = "sk-test-0123456789abcdef"


def judge_reply(messages: Sequence[dict[str, str]]) -> str:
    """A valid judge reply for whatever the prompt asks; generation gets the same text."""
    prompt = next((str(m["content"]) for m in messages if m.get("role") == "user"), "")
    contexts = len(re.findall(r"^\[\d+\] ", prompt, flags=re.MULTILINE))
    wanted = re.search(r'"questions": (\d+) different questions', prompt)
    return json.dumps({
        "answer_claims": [
            {"claim": "A supported claim.", "supported": 1, "ctx": [1] if contexts else [],
             "in_reference": 1},
            {"claim": "An unsupported claim.", "supported": 0, "ctx": [], "in_reference": 0},
        ],
        "reference_claims": [{"claim": "Ref.", "attributed": 1, "ctx": [], "in_answer": 1}],
        "useful": [1] + [0] * max(contexts - 1, 0),
        "questions": [f"q{i}?" for i in range(int(wanted.group(1)) if wanted else 0)],
        "noncommittal": 0,
    })


def rag_suite(base_url: str, *, metrics: str = "faithfulness, context_precision",
              extra: str = "") -> str:
    return f"""
name: rag
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
retrievers: {{overlap: {{type: "overlap_retriever:Overlap"}}}}
metrics: [recall@10, {metrics}]
llm:
  type: openai
  base_url: {base_url}
  model: m
  api_key_env: RAGBENCH_TEST_KEY
  retries: 2
  backoff: 0.01
  timeout: 5
judge: {{llm: same}}
cache: {{path: cache.sqlite}}
{extra}
"""


ANSWERS = {"q1": "a fine grind", "q2": "for hours", "q3": "about 60 degrees",
           "q4": "citric acid", "q5": "airtight away from light"}


@pytest.fixture
def rag_suite_files(pytester, mini_suite):
    """The mini suite writer, its queries carrying reference answers (reference-based answer
    metrics with none to compare against are a collection error)."""
    write_jsonl(pytester.path / "queries.jsonl",
                [{**q, "answer": ANSWERS[q["_id"]]} for q in QUERIES])
    return mini_suite


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("RAGBENCH_TEST_KEY", SECRET)
    with FakeOpenAIServer(reply=judge_reply) as srv:
        yield srv


def run_dir(root: Path) -> Path:
    return (root / ".ragbench" / "runs" / "latest").resolve()


def records(root: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir(root) / "cases.jsonl").read_text().splitlines()]


def test_offline_extractive_answers_and_judged_metrics_from_a_real_server_and_cache(
        pytester, rag_suite_files, server):
    """Two suites, one run (and a rerun), each with its own LLM and lines: extractive
    answers offline (offline.yaml), and judged metrics from a real server, then from the
    cache (suite.yaml)."""
    rag_suite_files("""
        name: offline
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers: {overlap: {type: "overlap_retriever:Overlap"}}
        metrics: [recall@10, token_f1, abstention_accuracy]
        llm: {type: extractive}
    """, name="offline.yaml")
    rag_suite_files(rag_suite(server.base_url))
    args = ("--ragbench-summary=full", "--ragbench=offline.yaml", "--ragbench=suite.yaml")
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=5 + 5)
    # offline: every item answered from its contexts
    result.stdout.fnmatch_lines(["    token_f1 * 5 * 0", "    abstention_accuracy * 5 * 0"])
    offline = [r for r in records(pytester.path) if r["suite_name"] == "offline"]
    assert len(offline) == 5
    assert all(isinstance(r["answer"], str) and r["contexts"] for r in offline)
    # judged by the server
    result.stdout.fnmatch_lines(["    faithfulness * 0.5000 *[[]0.5000, 0.5000[]] * 5 * 0"])
    first = server.count("/v1/chat/completions")
    assert first == 10  # one generation + one batched judge call per item
    result.stdout.fnmatch_lines(["    llm: 10 requests, * cost $0.0000 (per item: 2.00 requests*"])
    recs = [r for r in records(pytester.path) if r["suite_name"] == "rag"]
    assert len(recs) == 5 and all(r["usage"]["requests"] == 2 and r["judge"] for r in recs)
    # A rerun of the unchanged suite is served by the cache: no network call.
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=5 + 5)
    assert server.count("/v1/chat/completions") == first
    recs = [r for r in records(pytester.path) if r["suite_name"] == "rag"]
    assert len(recs) == 5 and all(r["usage"]["requests"] == 0 for r in recs)
    # The key is nowhere on disk.
    for path in pytester.path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


# Serial and xdist runs agree and make no call twice: the -n 2 run of
# tests/test_pipelines_e2e.py::test_answers_and_judges_do_not_depend_on_the_scheduling collects
# rag_suite() beside a pipeline suite (one xdist run for both).


def test_dead_endpoint_makes_explicit_errors_and_the_run_goes_on(pytester, rag_suite_files, server):
    server.set_default(Fault.server_error(503))
    rag_suite_files(rag_suite(server.base_url, extra="gates: {error_rate: '<= 0.5'}"))
    result = pytester.runpytest("--ragbench-summary=full", "--ragbench=suite.yaml",
                                "--ragbench-cache=off")
    result.assert_outcomes(errors=5)
    result.stdout.fnmatch_lines([
        "*error [[]generation[]]: generation: *",
        "  overlap: 5 cases, 5 errors, 0 below per-query thresholds",
        "*FAIL rag/overlap: error_rate 1.0000 <= 0.5*",
    ])
    assert len(records(pytester.path)) == 5
    assert SECRET not in result.stdout.str()


def test_transient_faults_are_retried_to_a_score_and_a_priced_run_without_a_cap_claims_no_spend(
        pytester, rag_suite_files, server):
    # nothing is charged to the run budget without max_cost: its "spent" read $0.0 while the
    # records (and the system rows) held the run's cost (retried requests or not)
    server.add_faults(Fault.rate_limited("0.05"), Fault.server_error(500), Fault.malformed())
    rag_suite_files(rag_suite(server.base_url, extra="prices: {m: {prompt: 1000.0, "
                                                     "completion: 2000.0}}"))
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-cache=off", "-p",
                                "no:randomly")
    result.assert_outcomes(passed=5)
    assert result.ret == 0
    assert server.faults_served == 3
    assert all(r["metrics"]["faithfulness"] == 0.5 for r in records(pytester.path))
    summary = json.loads((run_dir(pytester.path) / "summary.json").read_text())
    assert sum(r["cost"] for r in records(pytester.path)) > 0
    assert summary["run"]["budget"]["costs"] == {}
    assert summary["run"]["budget"]["spent"] is None


def test_deselected_items_cost_no_calls_and_a_failing_item_shows_answer_and_judge_verdicts(
        pytester, rag_suite_files, server):
    rag_suite_files(rag_suite(server.base_url, extra="thresholds: {faithfulness: 0.9}"))
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-cache=off",
                                "-k", "q1 or q4")
    result.assert_outcomes(failed=2)
    assert server.count("/v1/chat/completions") == 4  # 2 items x (generation + judge)
    result.stdout.fnmatch_lines([
        "*overlap::q1*",
        "threshold failed: faithfulness = 0.5000, expected >= 0.9 (missed by 0.4000)",
        "answer: *",
        "judge faithfulness: not supported: 'An unsupported claim.'",
    ])


def test_runs_repeat_cases(pytester, rag_suite_files, server):
    rag_suite_files(rag_suite(server.base_url, extra="runs: 2"))
    result = pytester.runpytest("--ragbench=suite.yaml", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["suite.yaml::overlap::q1[[]run0[]]",
                                 "suite.yaml::overlap::q1[[]run1[]]"])
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-cache=off")
    result.assert_outcomes(passed=10)
    assert sorted({r["run"] for r in records(pytester.path)}) == [0, 1]


def test_answer_metric_without_llm_is_a_clear_error(pytester, mini_suite):
    mini_suite("""
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers: {overlap: {type: "overlap_retriever:Overlap"}}
        metrics: [faithfulness]
    """)
    result = pytester.runpytest("--ragbench=suite.yaml")
    result.stdout.fnmatch_lines(["*suite.yaml:4: metrics: metric(s) faithfulness need an "
                                 "'llm' section*"])
    assert "Traceback" not in result.stdout.str()


def test_flaky_cases_are_flagged_across_runs():
    from pytest_ragbench.results.aggregate import flaky_cases

    def rec(case, run, value):
        return {"case_id": case, "run": run, "status": "ok", "metrics": {"f": value}}

    recs = [rec("a", 0, 0.2), rec("a", 1, 0.9), rec("b", 0, 0.6), rec("b", 1, 0.7),
            rec("c", 0, 1.0), rec("c", 1, 1.0)]
    flaky = flaky_cases(recs, ["f"])
    assert [(f["case_id"], f["flips"]) for f in flaky] == [("a", True), ("b", False)]
    assert flaky[0]["spread"] == pytest.approx(0.7)


def _html_case_rows(html: str) -> list[list[Any]]:
    """The per-case rows of report.html's data block ([retriever, id, run, query, status,
    values, latency, cost, detail], see report/html.py CaseRow.compact)."""
    found = re.search(r'<script type="application/json" id="rb-data">(.*?)</script>', html,
                      re.S)
    assert found is not None
    rows: list[list[Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "rows" and isinstance(value, list) and value and \
                        isinstance(value[0], list) and len(value[0]) == 9:
                    rows.extend(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(found.group(1)))
    return rows


def test_a_judge_request_two_repetitions_share_is_charged_to_the_first(pytester,
                                                                        rag_suite_files,
                                                                        server):
    """``runs: 2`` of one query: the repetitions answer alike, so their judge requests are
    the same and one of them sends it while the other reads it from the cache. Which one
    depended on whose answer came back first, at ``-n 0`` too. Holding the first or the
    second generation request to arrive for 50 ms lets one repetition's judge request or the
    other's go out first (the unheld one's generation and judge request take milliseconds;
    a 20 ms hold sufficed in trials); the run's outputs charge the request to run 0, the
    first case in order, either way."""
    write_jsonl(pytester.path / "queries.jsonl", [{**QUERIES[0], "answer": ANSWERS["q1"]}])
    rag_suite_files(rag_suite(server.base_url, extra="runs: 2\n"
                              "prices: {m: {prompt: 1000.0, completion: 2000.0}}"))
    charged: dict[int, Any] = {}  # by the repetition that sent the judge request
    # which generation request to arrive is held; under load the two may arrive in either
    # order, so which repetition sends the judge request is then a coin toss per run: ten
    # runs at most (most end after two), where six left a 3% chance of seeing one sender only
    for held in (0, 1) * 5:
        for stale in pytester.path.glob("cache.sqlite*"):
            stale.unlink()
        server.add_faults(*[Fault.ok(delay=0.05 if i == held else 0.0) for i in range(2)])
        before = server.count("/v1/chat/completions")
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:randomly")
        result.assert_outcomes(passed=2)
        # two generations (their seeds differ) and one judge request
        assert server.count("/v1/chat/completions") - before == 3
        # cases.jsonl keeps who sent what (the judge request: 2 requests)
        sender = next(r["run"] for r in records(pytester.path) if r["usage"]["requests"] == 2)
        rows = _html_case_rows((run_dir(pytester.path) / "report.html").read_text())
        shown = {row[2]: (row[8]["usage"][2], row[7]) for row in rows}
        assert charged.setdefault(sender, shown) == shown
        if len(charged) == 2:
            break
    # each repetition sent it once (if not in ten runs, this test shows nothing)
    assert sorted(charged) == [0, 1]
    assert charged[0] == charged[1]
    assert charged[0][0][0] == 2 and charged[0][1][0] == 1
    assert charged[0][0][1] > charged[0][1][1] > 0


def test_only_requests_cases_really_share_are_charged_to_one_of_them(pytester, mini_suite,
                                                                      server):
    """A call is settled with others (results/settle.py) only by the response-cache key: two
    suites whose LLMs differ only in a parameter send different requests (the key once left
    the provider's parameters out, and one suite was charged both suites' spend), and
    without a cache every case sends its own (once charged all to the first twin)."""
    def suite(name: str, retrievers: str, temperature: int, cache: str) -> None:
        mini_suite(f"""
            name: {name}
            dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
            retrievers: {{{retrievers}}}
            metrics: [recall@10, abstention_accuracy]
            llm: {{type: openai, base_url: "{server.base_url}", model: m,
                  params: {{temperature: {temperature}}}}}
            cache: {cache}
            prices: {{m: {{prompt: 1.0, completion: 2.0}}}}
            """, name=f"{name}.yaml")

    one = 'a: {type: "overlap_retriever:Overlap"}'
    suite("warm", one, 0, "{path: llm-cache.sqlite}")
    suite("hot", one, 1, "{path: llm-cache.sqlite}")
    suite("twins", f'{one}, b: {{type: "overlap_retriever:Overlap"}}', 0, "off")
    result = pytester.runpytest("--ragbench=warm.yaml", "--ragbench=hot.yaml",
                                "--ragbench=twins.yaml", "-p", "no:randomly")
    result.assert_outcomes(passed=20)
    assert server.count("/v1/chat/completions") == 20
    summary = json.loads((run_dir(pytester.path) / "summary.json").read_text())
    charged = {(s["name"], r["name"]): r["usage"]["requests"]
               for s in summary["suites"] for r in s["retrievers"]}
    assert charged == {("warm", "a"): 5, ("hot", "a"): 5, ("twins", "a"): 5, ("twins", "b"): 5}
