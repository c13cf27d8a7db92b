"""Checks before the first item (issue 11.4): what the environment, the command line, the
dataset or the component factories can tell is one collection error, found in about a second,
and no request reaches a (real, local) server."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import QUERIES, error_sections, latest_run, write_jsonl

from pytest_ragbench.answers.config import parse_rag_config
from pytest_ragbench.execution.prechecks import (
    REFERENCE_METRICS,
    cli_gate_problems,
    missing_reference_problem,
    suites_gate_problems,
    unset_env_problems,
)
from pytest_ragbench.http_headers import env_value
from pytest_ragbench.llm.testing import FakeOpenAIServer
from pytest_ragbench.suite.loader import load_suite

# In-process runs stopped by a collection error skip pytest's unseen long traceback.

SECRET = "sk-precheck-0123456789"
UNSET = "RAGBENCH_PRECHECK_UNSET"
SET = "RAGBENCH_PRECHECK_SET"


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv(UNSET, raising=False)
    monkeypatch.setenv(SET, SECRET)


@pytest.fixture
def server(env):
    with FakeOpenAIServer(reply=lambda messages: "an answer") as srv:
        yield srv


def suite_text(*, retrievers: str = '{overlap: {type: "overlap_retriever:Overlap"}}',
               metrics: str = "recall@10, token_f1", llm: str = "") -> str:
    return (f"name: pre\n"
            f"dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}\n"
            f"retrievers: {retrievers}\n"
            f"metrics: [{metrics}]\n" + llm)


def openai_llm(base_url: str, key: str) -> str:
    return (f"llm: {{type: openai, base_url: '{base_url}', model: m, api_key_env: {key}, "
            f"retries: 0, timeout: 5}}\ncache: off\n")


def error_blocks(text: str) -> int:
    return text.count("ERROR collecting")


# -- the domain functions --------------------------------------------------------------------


def test_unset_env_problems_name_key_path_and_variable_never_a_value(env):
    rag = parse_rag_config({
        "llm": {"type": "openai", "base_url": "http://x/v1", "model": "m", "api_key_env": UNSET},
        "judge": {"llm": {"base_url": "http://x/v1", "model": "j", "api_key_env": SET,
                          "headers": {"X-Org": "${" + UNSET + "}"}}},
        "embedder": {"type": "openai", "base_url": "http://x/v1", "model": "e",
                     "api_key_env": SET},
    })
    retrievers = [
        ("retrievers.prod", {"type": "http", "url": "http://x/search",
                             "headers": {"Authorization": "Bearer ${" + UNSET + "}"}}),
        ("retrievers.dense", {"embedder": {"type": "openai", "api_key_env": SET}}),
    ]
    problems = unset_env_problems(retrievers, rag)
    assert problems == [
        ("retrievers.prod.headers.Authorization",
         f"environment variable {UNSET} is not set or empty"),
        ("llm.api_key_env", f"environment variable {UNSET} is not set or empty"),
        ("judge.llm.headers.X-Org", f"environment variable {UNSET} is not set or empty"),
    ]
    assert SECRET not in repr(problems)


def test_a_pipeline_suites_judge_key_is_named_once_at_its_own_key(env, tmp_path):
    """A suite of pipelines has no ``llm:``, the judge's LLM stands in for it: its unset key
    was reported twice, once at ``llm.api_key_env``, a key the file does not have, whose line
    was looked for forever (collection hung)."""
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "why"}\n')
    (tmp_path / "out.jsonl").write_text('{"query_id": "q1", "answer": "because"}\n')
    (tmp_path / "suite.yaml").write_text(
        "name: pipes\ndataset: {queries: queries.jsonl}\n"
        "pipelines: {rec: {type: recorded, path: out.jsonl}}\nmetrics: [faithfulness]\n"
        f"judge: {{llm: {{base_url: 'http://x/v1', model: j, api_key_env: {UNSET}}}}}\n")
    suite = load_suite(tmp_path / "suite.yaml", None)
    assert unset_env_problems([], suite.rag) == [
        ("judge.llm.api_key_env", f"environment variable {UNSET} is not set or empty")]


def test_empty_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv(UNSET, "")
    assert unset_env_problems([("retrievers.r", {"api_key_env": UNSET})]) == [
        ("retrievers.r.api_key_env", f"environment variable {UNSET} is not set or empty")]


def test_a_key_written_where_its_variable_name_belongs_is_never_shown(monkeypatch):
    # api_key_env: sk-... names no variable: the message showed the secret in the output
    keys = ["sk-proj-Ab3dEf6hIj9kLm2nOp5q", "hf_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3h",
            "0123456789abcdef0123456789abcdef"]
    retrievers = [(f"retrievers.r{i}", {"api_key_env": key}) for i, key in enumerate(keys)]
    rag = parse_rag_config({"llm": {"type": "openai", "base_url": "http://x/v1", "model": "m",
                                    "api_key_env": keys[0]}})
    problems = unset_env_problems(retrievers, rag)
    assert [key for key, _ in problems] == [
        "retrievers.r0.api_key_env", "retrievers.r1.api_key_env", "retrievers.r2.api_key_env",
        "llm.api_key_env"]
    for _, message in problems:
        assert message.startswith("the environment variable it names is not set or empty (the "
                                  "name is not shown"), message
    assert not any(key[3:11] in repr(problems) for key in keys)
    # where the client reads it (a component building its own client)
    with pytest.raises(ValueError) as info:
        env_value(keys[0], "api_key_env")
    assert "names is not set" in str(info.value) and keys[0][3:11] not in str(info.value)
    # a variable's name is shown, also a long one in capitals
    long_name = "MY_COMPANY_PRODUCTION_OPENAI_API_KEY"
    monkeypatch.delenv(long_name, raising=False)
    assert unset_env_problems([("retrievers.r", {"api_key_env": long_name})]) == [
        ("retrievers.r.api_key_env", f"environment variable {long_name} is not set or empty")]


def test_missing_reference_problem():
    assert {"token_f1", "exact_match", "context_recall", "answer_correctness",
            "context_precision"} <= REFERENCE_METRICS
    assert "abstention_accuracy" not in REFERENCE_METRICS
    assert "faithfulness" not in REFERENCE_METRICS
    # One query with a reference is enough; whitespace is no reference.
    assert missing_reference_problem(["token_f1"], [[], ["x"]], 2, None) is None
    assert missing_reference_problem(["faithfulness", "abstention_accuracy"], [[]], 1,
                                     None) is None
    message = missing_reference_problem(["faithfulness", "token_f1", "context_recall"],
                                        [[], [" "]], 2, None)
    assert message is not None
    assert "token_f1, context_recall" in message and "faithfulness" not in message
    assert "none of the 2 selected queries" in message
    assert "set dataset.answer_field" in message
    named = missing_reference_problem(["token_f1"], [[]], 1, "meta.gold")
    assert named is not None and "'meta.gold'" in named and "dataset.answer_field" in named
    # a component metric whose needs declare references counts too
    assert missing_reference_problem(["graded"], [[]], 1, None) is None
    third = missing_reference_problem(["graded", "faithfulness"], [[]], 1, None,
                                      also={"graded"})
    assert third is not None and "metric(s) graded compare" in third


def test_cli_gate_problems_say_did_you_mean():
    suites = {"a": ["ndcg@10", "recall@10"], "b": ["mrr@10"]}
    assert cli_gate_problems(["ndcg@10 >= 0.5", "mrr@10: drop <= 2%", "error_rate <= 0.1",
                              "difficulty=hard: recall@10 >= 0.2"], suites) == []
    problems = cli_gate_problems(["ndgc@10 >= 0.5"], suites)
    assert len(problems) == 1
    assert "--ragbench-gate 'ndgc@10 >= 0.5'" in problems[0]
    assert "no collected suite computes 'ndgc@10' (did you mean 'ndcg@10'?)" in problems[0]
    assert "a (ndcg@10, recall@10), b (mrr@10)" in problems[0]


def test_a_cli_gate_scope_is_matched_in_the_suites_computing_its_metric():
    # The gate judges only the suites that compute its metric (31d737f): another suite's hard
    # queries let 'difficulty=hard: ndcg@10' through, and the whole run ran to fail on "no
    # query matches difficulty=hard" in the suite computing ndcg@10
    from pytest_ragbench.datasets import Query

    suites = {"a": ["ndcg@10"], "b": ["recall@10"]}
    queries = {"a": [Query("q1", "x", difficulty="easy")],
               "b": [Query("q1", "x", difficulty="easy"), Query("q2", "y", difficulty="hard")]}
    assert cli_gate_problems(["difficulty=hard: ndcg@10 >= 0.1"], suites, None, queries) == [
        "--ragbench-gate 'difficulty=hard: ndcg@10 >= 0.1': selects none of the 1 selected "
        "queries of the collected suites computing 'ndcg@10': no query has difficulty 'hard'; "
        "the difficulties: easy"]
    # the suites that compute it, and every suite for the error rate, which all do
    assert cli_gate_problems(["difficulty=hard: recall@10 >= 0.1",
                              "difficulty=hard: error_rate <= 0.1"], suites, None, queries) == []


def test_a_cli_gate_on_a_system_no_suite_computing_its_metric_has_is_refused():
    # 'retriever=bm25: ndcg@10': bm25 is a's, ndcg@10 is b's; a leaves the gate alone (its
    # metric is another suite's), b too (no system bm25): it judged nothing, and the run
    # passed without a word of it
    suites = {"a": ["recall@10"], "b": ["ndcg@10", "mrr@10"]}
    systems = {"a": ["bm25"], "b": ["overlap", "dense"]}
    assert cli_gate_problems(["retriever=bm25: ndcg@10 >= 0.5"], suites, systems) == [
        "--ragbench-gate 'retriever=bm25: ndcg@10 >= 0.5': no collected suite with system "
        "'bm25' computes 'ndcg@10'; the suites with 'bm25' compute: a (recall@10)"]
    # a suite with both, or the error rate, which every suite has
    assert cli_gate_problems(["retriever=bm25: recall@10 >= 0.5",
                              "retriever=dense: mrr@10: drop <= 0.1",
                              "retriever=bm25: error_rate <= 0.1"], suites, systems) == []


def test_a_cli_gate_bound_outside_the_metrics_range_is_refused(tmp_path):
    # as in a suite file: 60 for 0.6 can never pass, error_rate <= 5 always passes
    suite = tmp_path / "s.yaml"
    (tmp_path / "c.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "x", "relevant": ["d1"]}\n')
    suite.write_text("dataset: {corpus: c.jsonl, queries: q.jsonl}\nretrievers: {bm25: {}}\n"
                     "metrics: [ndcg@10, latency_ms]\n")
    suites = {"s": load_suite(suite, None)}
    # and an absolute drop limit above 1 always passes ('drop <= 2' meant 2%)
    assert suites_gate_problems(["ndcg@10 >= 60", "error_rate <= 5", "ndcg@10 >= 0.6",
                                 "latency_ms <= 60", "ndcg@10: drop <= 2",
                                 "ndcg@10: drop <= 1", "ndcg@10: drop <= 2%",
                                 "latency_ms: drop <= 20"], suites) == [
        "--ragbench-gate 'ndcg@10 >= 60': ndcg@10 lies between 0 and 1, so 'ndcg@10 >= 60' "
        "can never pass (expected a bound between 0 and 1)",
        "--ragbench-gate 'error_rate <= 5': error_rate lies between 0 and 1, so "
        "'error_rate <= 5' always passes (expected a bound between 0 and 1)",
        "--ragbench-gate 'ndcg@10: drop <= 2': ndcg@10 lies between 0 and 1, so it never "
        "drops by more than 1 and 'ndcg@10: drop <= 2' always passes (for a relative limit "
        "write 'drop <= 2%', for an absolute one a value up to 1)"]


# -- through pytest ----------------------------------------------------------------------------
# Each inner run costs start-up time, so one run collects many broken suite files at once: each
# file gets its own collection error block, which says what one run of that file alone says.


def matches(lines: list[str], pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(line, pattern) for line in lines)


ANSWERED = "queries: answered.jsonl}"

def broken_suites(base_url: str) -> dict[str, tuple[str, list[str]]]:
    """Suite files with problems only the checks before the first item find, and what each
    one's error block says (``{file}`` is the file's path)."""
    llm_set, llm_unset = openai_llm(base_url, SET), openai_llm(base_url, UNSET)

    def answered(text: str) -> str:
        return text.replace("queries: queries.jsonl}", ANSWERED)

    refs = suite_text(llm="llm: {type: extractive}\n")
    return {
        # k1: -1 has the right type, so only the factory's own check can refuse it.
        "k1.yaml": (suite_text(retrievers="{bm25: {type: bm25, k1: -1}}", metrics="ndcg@10"),
                    ["{file}:3: retrievers.bm25: cannot build retriever 'bm25': k1 must be a "
                     "number >= 0, got -1"]),
        # every problem of a suite in one error
        "every.yaml": (suite_text(
            retrievers=('{bm25: {type: bm25, k1: -1}, '
                        'prod: {type: http, url: "' + base_url + '/search", '
                        'headers: {Authorization: "Bearer ${' + UNSET + '}"}}}'),
            metrics="recall@10, faithfulness", llm=llm_unset + "judge: {llm: same}\n"),
            ["{file}:3: retrievers.bm25: cannot build retriever 'bm25': k1 must be*",
             f"{{file}}:3: retrievers.prod.headers.Authorization: environment variable {UNSET} "
             "is not set or empty",
             f"{{file}}:5: llm.api_key_env: environment variable {UNSET} is not set or empty"]),
        "unset_key.yaml": (answered(suite_text(llm=llm_unset)),
                           [f"{{file}}:5: llm.api_key_env: environment variable {UNSET} is not set "
                            "or empty"]),
        # the LLM would answer; the suite is still stopped before anything is prefetched
        "beside.yaml": (answered(suite_text(
            retrievers='{overlap: {type: "overlap_retriever:Overlap"}, bm25: {type: bm25, b: 7}}',
            llm=llm_set)),
            ["*retrievers.bm25: cannot build retriever 'bm25': b must be*"]),
        "header.yaml": (suite_text(
            retrievers=('{prod: {type: http, url: "' + base_url + '/search", '
                        'headers: {X-Token: "${' + UNSET + '}"}}}'), metrics="recall@10"),
            [f"{{file}}:3: retrievers.prod.headers.X-Token: environment variable {UNSET} "
             "is not set or empty"]),
        # block style: the line of the header, not of the retriever (a long entry's first)
        "header_block.yaml": (suite_text(
            retrievers=('\n  prod:\n    type: http\n    url: "' + base_url + '/search"\n'
                        '    headers:\n      X-Token: "${' + UNSET + '}"'), metrics="recall@10"),
            [f"{{file}}:8: retrievers.prod.headers.X-Token: environment variable {UNSET} "
             "is not set or empty"]),
        "dense.yaml": (suite_text(
            retrievers=("{dense: {type: dense, embedder: {type: openai, model: e, "
                        f"base_url: 'http://127.0.0.1:9/v1', api_key_env: {UNSET}}}}}}}"),
            metrics="recall@10"),
            [f"{{file}}:3: retrievers.dense.embedder.api_key_env: environment variable {UNSET} "
             "is not set or empty"]),
        # reference metrics without any reference
        "noref.yaml": (refs, [
            "{file}:4: metrics: metric(s) token_f1 compare against a reference answer, but none "
            "of the 5 selected queries has one*set dataset.answer_field*"]),
        "noref_field.yaml": (
            refs.replace("queries: queries.jsonl}", "queries: queries.jsonl, answer_field: gold}"),
            ["{file}:2: dataset.answer_field: metric(s) token_f1 *nor under 'gold'*"]),
        # a component metric that declares it needs references is checked the same way
        "graded.yaml": (
            suite_text(metrics='recall@10, {name: graded, type: "graded_metric:Graded"}',
                       llm="llm: {type: extractive}\n"),
            ["{file}:4: metrics: metric(s) graded compare against a reference answer, but none "
             "of the 5 selected queries*"]),
        # pipeline problems are found before any request
        "price.yaml": (answered(suite_text(
            llm=llm_set + "prices: {other-model: {prompt: 1, completion: 2}}\n")),
            ["{file}*prices*"]),
        "template.yaml": (answered(suite_text(
            llm=llm_set + "generation: {template: '{{ question | nosuchfilter }}'}\n")),
            ["{file}*generation.template*"]),
        # a type the factory's signature rules out is found by the suite loader, before building
        "typed.yaml": (suite_text(retrievers="{bm25: {type: bm25, k1: fast}}",
                                  metrics="ndcg@10"),
                       ["{file}:3: retrievers.bm25.k1: expected a number, got 'fast'"]),
    }


@pytest.fixture
def two_query_files(pytester, mini_suite):
    """The mini suite writer; queries.jsonl has no reference answers, answered.jsonl has."""
    write_jsonl(pytester.path / "answered.jsonl",
                [{**q, "answer": f"answer {q['_id']}"} for q in QUERIES])
    pytester.makepyfile(graded_metric=GRADED_METRIC, counted=COUNTED)
    return mini_suite


def test_every_problem_found_before_the_first_item_is_one_collection_error_per_suite(
        pytester, two_query_files, server):
    """Bad factory parameters, unset variables, reference metrics without references, pipeline
    problems: each suite file gets ONE error block naming every problem of that file (file,
    line, key path), no traceback, and no request reaches the (real, local) server."""
    suites = broken_suites(server.base_url)
    for name, (text, _) in suites.items():
        two_query_files(text, name=name)
    t0 = time.monotonic()
    result = pytester.runpytest(*(f"--ragbench={name}" for name in suites))
    elapsed = time.monotonic() - t0
    out = result.stdout.str()
    n = len(suites)
    result.assert_outcomes(errors=n)
    assert f"collected 0 items / {n} errors" in out
    result.stdout.fnmatch_lines([f"*Interrupted: {n} errors during collection*"])
    assert error_blocks(out) == n, out
    sections = error_sections(out)
    assert set(sections) == set(suites), out
    for name, (_, patterns) in suites.items():
        path = str(pytester.path / name)
        for pattern in patterns:
            assert matches(sections[name], pattern.replace("{file}", path)), (name, out)
        # nothing but its own problems in the block: one line each
        assert len(sections[name]) == len(patterns), (name, sections[name])
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert "passed" not in out.splitlines()[-1]
    assert result.ret != 0
    assert server.request_count == 0
    assert elapsed < 30  # generous for a shared machine; it is well under a second alone


COUNTED = '''
import os

class Counted:
    def __init__(self, log):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\\n")

    def index(self, corpus):
        self.ids = [d.id for d in corpus]

    def retrieve(self, query, k):
        return [(i, 1.0 / (n + 1)) for n, i in enumerate(self.ids[:k])]
'''

GRADED_METRIC = """
class Graded:
    name = "graded"
    direction = "higher"
    needs = frozenset({"answer", "references"})

    def __init__(self, name="graded"):
        self.name = name

    def score(self, sample, resources):
        return float(sample.answer in sample.references)
"""


def test_suites_without_those_problems_run(pytester, two_query_files, server):
    """What the broken suites above lack, fixed, runs in one run: the parameter fixed beside a
    working LLM asks the server once per case; abstention needs no reference (unanswered
    queries are what it is about); a component is built once in the process; a CLI gate
    spelled right is checked at the end as before."""
    log = pytester.path / "built.log"
    two_query_files(suite_text(
        retrievers='{overlap: {type: "overlap_retriever:Overlap"}, bm25: {type: bm25, b: 0.7}}',
        llm=openai_llm(server.base_url, SET)).replace("queries: queries.jsonl}", ANSWERED),
        name="fixed.yaml")
    two_query_files(suite_text(metrics="recall@10, abstention_accuracy",
                               llm="llm: {type: extractive}\n"), name="abstain.yaml")
    two_query_files(suite_text(retrievers=f'{{c: {{type: "counted:Counted", log: "{log}"}}}}',
                               metrics="recall@10"), name="counted.yaml")
    result = pytester.runpytest("--ragbench=fixed.yaml", "--ragbench=abstain.yaml",
                                "--ragbench=counted.yaml", "--ragbench-gate", "recall@10 >= 0.5")
    result.assert_outcomes(passed=20)
    assert server.request_count == 10
    assert len(log.read_text().split()) == 1
    # once in each xdist worker: fixed_suite_under_xdist
    # the gate is checked at the end, for each system of each suite computing recall@10
    result.stdout.fnmatch_lines(["gates: 4 passed"])


def test_under_xdist_problems_stop_the_run_before_any_request(
        pytester, two_query_files, server):
    """A suite with an unset API key and a bad parameter beside it, and a good suite with a
    CLI gate typo, in one ``-n 2`` run: one error block for the broken file naming both of its
    problems, one for the gate, each shown once (not once per worker), no traceback, no
    request. The same suite fixed runs under xdist: see fixed_suite_under_xdist."""
    llm_set = openai_llm(server.base_url, SET)
    two_query_files(suite_text(
        retrievers='{overlap: {type: "overlap_retriever:Overlap"}, bm25: {type: bm25, b: 7}}',
        llm=openai_llm(server.base_url, UNSET)).replace("queries: queries.jsonl}", ANSWERED),
        name="broken.yaml")
    two_query_files(suite_text(llm=llm_set).replace("queries: queries.jsonl}", ANSWERED),
                    name="good.yaml")
    result = pytester.runpytest("--ragbench=broken.yaml", "--ragbench=good.yaml",
                                "--ragbench-gate", "recal@10 >= 0.5",
                                "--ragbench-gate", "error_rate <= 0.5", "-n", "2",
                                # not needed here; each worker would import it (0.1 s CPU)
                                "-p", "no:hypothesispytest")
    out = result.stdout.str()
    sections = error_sections(out)
    assert set(sections) == {"broken.yaml", "test session"}, out
    broken = sections["broken.yaml"]
    assert matches(broken, "*retrievers.bm25: cannot build retriever 'bm25': b must be*")
    assert matches(broken, f"*broken.yaml:5: llm.api_key_env: environment variable {UNSET} is "
                           "not set or empty")
    assert matches(sections["test session"],
                   "ragbench: --ragbench-gate 'recal@10 >= 0.5': no collected suite computes "
                   "'recal@10' (did you mean 'recall@10'?)*")
    assert error_blocks(out) == 2, out
    assert "error_rate <= 0.5'" not in out
    assert "INTERNALERROR" not in out and "Traceback" not in out
    assert "passed" not in out.splitlines()[-1]
    assert result.ret != 0
    assert server.request_count == 0


@contextlib.contextmanager
def fixed_suite_under_xdist(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
                            ) -> Iterator[tuple[list[str], Callable[[], None]]]:
    """The broken suite of the test above fixed, plus a retriever that logs its builds, and a
    CLI gate spelled right: under xdist every case runs and asks the server once, and the
    retriever is built once in each worker.

    Yields the arguments that add it to a ``-n 2`` run and the check to make after that run.
    The -n 2 run of tests/test_batch_identity.py::test_batching_retrievers_serial_equals_xdist
    collects it (worker start-up is most of an xdist run's time); its suite is named "pre".
    """
    monkeypatch.setenv(SET, SECRET)
    write_jsonl(pytester.path / "answered.jsonl",
                [{**q, "answer": f"answer {q['_id']}"} for q in QUERIES])
    pytester.makepyfile(counted=COUNTED)
    log = pytester.path / "built.log"
    with FakeOpenAIServer(reply=lambda messages: "an answer") as server:
        (pytester.path / "fixed.yaml").write_text(suite_text(
            retrievers=('{overlap: {type: "overlap_retriever:Overlap"}, '
                        'bm25: {type: bm25, b: 0.7}, '
                        f'c: {{type: "counted:Counted", log: "{log}"}}}}'),
            llm=openai_llm(server.base_url, SET)).replace("queries: queries.jsonl}", ANSWERED),
            encoding="utf-8")

        def check() -> None:
            recs = [json.loads(line) for line in
                    (latest_run(pytester.path) / "cases.jsonl").read_text().splitlines()]
            mine = [r for r in recs if r["suite_name"] == "pre"]
            assert len(mine) == 15 and all(r["status"] == "ok" for r in mine)  # all passed
            assert server.request_count == 15  # every case (3 retrievers x 5) asked once
            pids = log.read_text().split()
            assert len(pids) == len(set(pids)) == 2  # once in each worker

        yield ["--ragbench=fixed.yaml", "--ragbench-gate", "recall@10 >= 0.5"], check


def test_cli_gate_typo_is_one_error_before_any_request(pytester, two_query_files, server):
    """Two suite files with the same name: each one's metrics count, and the message lists
    both by file. The JUnit XML carries the collection error."""
    two_query_files(suite_text(llm=openai_llm(server.base_url, SET)).replace(
        "queries: queries.jsonl}", ANSWERED), name="a.yaml")
    two_query_files(suite_text(metrics="mrr@10"), name="b.yaml")
    result = pytester.runpytest("--ragbench=a.yaml", "--ragbench=b.yaml",
                                "--ragbench-gate", "recal@10 >= 0.5",
                                "--ragbench-gate", "error_rate <= 0.5",
                                "--ragbench-gate", "mrr@1 >= 0", "--junitxml=out.xml")
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*ERROR collecting test session*",
        "ragbench: --ragbench-gate 'recal@10 >= 0.5': no collected suite computes 'recal@10' "
        "(did you mean 'recall@10'?)*",
        "*no collected suite computes 'mrr@1' (did you mean 'mrr@10'?); the suites compute: "
        "pre [[]a.yaml[]] (recall@10, token_f1), pre [[]b.yaml[]] (mrr@10)*",
    ])
    assert error_blocks(out) == 1, out
    assert "error_rate <= 0.5'" not in out
    assert "INTERNALERROR" not in out
    assert result.ret != 0
    assert server.request_count == 0
    xml = Path(pytester.path / "out.xml").read_text()
    assert "no collected suite computes" in xml


def test_cli_gate_metric_of_any_collected_suite_is_accepted(pytester, mini_suite):
    """Two suite files with the same name: each one's metrics count."""
    mini_suite(suite_text(metrics="recall@10"), name="a.yaml")
    mini_suite(suite_text(metrics="mrr@10"), name="b.yaml")
    result = pytester.runpytest("--ragbench=a.yaml", "--ragbench=b.yaml",
                                "--ragbench-gate", "mrr@10 >= 0", "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()


def test_hand_written_suite_tests_get_the_error_once(pytester, mini_suite):
    mini_suite(suite_text(retrievers="{bm25: {type: bm25, k1: -1}}", metrics="ndcg@10"),
               name="bench.yaml")
    pytester.makepyfile(test_hand='''
        import pytest

        @pytest.mark.ragbench_suite("bench.yaml")
        def test_top(ragbench_case, ragbench_retriever):
            assert ragbench_retriever.retrieve(ragbench_case)
    ''')
    result = pytester.runpytest("test_hand.py")
    result.stdout.fnmatch_lines([
        "*ragbench_suite: *bench.yaml:3: retrievers.bm25: cannot build retriever 'bm25': k1 "
        "must be*"])
    out = result.stdout.str()
    assert out.count("k1 must be") <= 2  # the error block and its summary line, not per case
    assert "During handling" not in out
    assert "passed" not in out.splitlines()[-1]
