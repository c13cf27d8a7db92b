"""Checks before the first item (issue 11.4): what the environment, the command line, the
dataset or the component factories can tell is one collection error, found in about a second,
and no request reaches a (real, local) server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import QUERIES, write_jsonl

from pytest_ragbench.answers.config import parse_rag_config
from pytest_ragbench.execution.prechecks import (
    REFERENCE_METRICS,
    cli_gate_problems,
    missing_reference_problem,
    unset_env_problems,
)
from pytest_ragbench.llm.testing import FakeOpenAIServer

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


@pytest.fixture
def answered(pytester, mini_suite):
    """The mini suite writer; its queries carry reference answers."""
    write_jsonl(pytester.path / "queries.jsonl",
                [{**q, "answer": f"answer {q['_id']}"} for q in QUERIES])
    return mini_suite


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


def test_empty_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv(UNSET, "")
    assert unset_env_problems([("retrievers.r", {"api_key_env": UNSET})]) == [
        ("retrievers.r.api_key_env", f"environment variable {UNSET} is not set or empty")]


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


# -- through pytest ----------------------------------------------------------------------------


def test_bad_retriever_parameter_is_one_collection_error(pytester, mini_suite):
    # k1: -1 has the right type, so only the factory's own check can refuse it.
    mini_suite(suite_text(retrievers="{bm25: {type: bm25, k1: -1}}", metrics="ndcg@10"))
    t0 = time.monotonic()
    result = pytester.runpytest("--ragbench=suite.yaml")
    elapsed = time.monotonic() - t0
    out = result.stdout.str()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*suite.yaml:3: retrievers.bm25: cannot build retriever 'bm25': k1 must be a number "
        ">= 0, got -1",
        "*Interrupted: 1 error during collection*",
    ])
    assert error_blocks(out) == 1 and "Traceback" not in out
    assert "collected 0 items / 1 error" in out
    assert elapsed < 30  # generous for a shared machine; it is well under a second alone


def test_every_problem_of_a_suite_in_one_error(pytester, mini_suite, server):
    mini_suite(suite_text(
        retrievers=('{bm25: {type: bm25, k1: -1}, '
                    'prod: {type: http, url: "' + server.base_url + '/search", '
                    'headers: {Authorization: "Bearer ${' + UNSET + '}"}}}'),
        metrics="recall@10, faithfulness",
        llm=openai_llm(server.base_url, UNSET) + "judge: {llm: same}\n"))
    result = pytester.runpytest("--ragbench=suite.yaml")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*suite.yaml:3: retrievers.bm25: cannot build retriever 'bm25': k1 must be*",
        f"*suite.yaml:3: retrievers.prod.headers.Authorization: environment variable {UNSET} "
        "is not set or empty",
        f"*suite.yaml: llm.api_key_env: environment variable {UNSET} is not set or empty",
    ])
    assert error_blocks(out) == 1
    assert server.request_count == 0


def test_unset_api_key_makes_no_request(pytester, answered, server):
    answered(suite_text(llm=openai_llm(server.base_url, UNSET)))
    result = pytester.runpytest("--ragbench=suite.yaml")
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        f"*suite.yaml: llm.api_key_env: environment variable {UNSET} is not set or empty"])
    assert error_blocks(out) == 1, out
    assert "INTERNALERROR" not in out and "Traceback" not in out
    assert "passed" not in out.splitlines()[-1]
    assert result.ret != 0
    assert server.request_count == 0


def test_bad_parameter_beside_a_working_llm_makes_no_request(pytester, answered, server):
    """The LLM would answer; the suite is still stopped before anything is prefetched."""
    answered(suite_text(
        retrievers='{overlap: {type: "overlap_retriever:Overlap"}, bm25: {type: bm25, b: 7}}',
        llm=openai_llm(server.base_url, SET)))
    result = pytester.runpytest("--ragbench=suite.yaml")
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["*retrievers.bm25: cannot build retriever 'bm25': b must be*"])
    assert error_blocks(out) == 1, out
    assert "INTERNALERROR" not in out
    assert server.request_count == 0
    # The same suite with the parameter fixed runs and asks the server.
    answered(suite_text(
        retrievers='{overlap: {type: "overlap_retriever:Overlap"}, bm25: {type: bm25, b: 0.7}}',
        llm=openai_llm(server.base_url, SET)))
    pytester.runpytest("--ragbench=suite.yaml").assert_outcomes(passed=10)
    assert server.request_count == 10


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


def test_under_xdist_problems_stop_the_run_before_any_request_and_fixed_it_runs(
        pytester, answered, server):
    """Two ``-n 2`` runs instead of one per check (worker start-up is most of their time):

    1. an unset API key and a bad parameter beside it: one error block naming both, no
       traceback, no request;
    2. the same suite fixed, plus a retriever that logs its builds and a CLI gate spelled
       right: every case runs and asks the server once, the retriever is built once in each
       worker.
    """
    answered(suite_text(
        retrievers='{overlap: {type: "overlap_retriever:Overlap"}, bm25: {type: bm25, b: 7}}',
        llm=openai_llm(server.base_url, UNSET)))
    result = pytester.runpytest("--ragbench=suite.yaml", "-n", "2")
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*retrievers.bm25: cannot build retriever 'bm25': b must be*",
        f"*suite.yaml: llm.api_key_env: environment variable {UNSET} is not set or empty"])
    assert error_blocks(out) == 1, out
    assert "INTERNALERROR" not in out and "Traceback" not in out
    assert "passed" not in out.splitlines()[-1]
    assert result.ret != 0
    assert server.request_count == 0

    pytester.makepyfile(counted=COUNTED)
    log = pytester.path / "built.log"
    answered(suite_text(
        retrievers=('{overlap: {type: "overlap_retriever:Overlap"}, bm25: {type: bm25, b: 0.7}, '
                    f'c: {{type: "counted:Counted", log: "{log}"}}}}'),
        llm=openai_llm(server.base_url, SET)))
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-gate", "recall@10 >= 0.5",
                                "-n", "2")
    result.assert_outcomes(passed=15)
    assert server.request_count == 15
    pids = log.read_text().split()
    assert len(pids) == len(set(pids)) == 2  # once in each worker


def test_unset_header_variable_of_http_retriever_makes_no_request(pytester, mini_suite, env):
    with FakeOpenAIServer() as search:  # any real server that counts what reaches it
        mini_suite(suite_text(
            retrievers=('{prod: {type: http, url: "' + search.base_url + '/search", '
                        'headers: {X-Token: "${' + UNSET + '}"}}}'),
            metrics="recall@10"))
        result = pytester.runpytest("--ragbench=suite.yaml")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines([
            f"*suite.yaml:3: retrievers.prod.headers.X-Token: environment variable {UNSET} "
            "is not set or empty"])
        assert search.request_count == 0


def test_dense_embedder_parameters_and_key(pytester, mini_suite, env):
    mini_suite(suite_text(
        retrievers=("{dense: {type: dense, embedder: {type: openai, model: e, "
                    f"base_url: 'http://127.0.0.1:9/v1', api_key_env: {UNSET}}}}}}}"),
        metrics="recall@10"))
    result = pytester.runpytest("--ragbench=suite.yaml")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        f"*suite.yaml:3: retrievers.dense.embedder.api_key_env: environment variable {UNSET} "
        "is not set or empty"])


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


def test_reference_metrics_without_any_reference(pytester, mini_suite):
    mini_suite(suite_text(llm="llm: {type: extractive}\n"))
    result = pytester.runpytest("--ragbench=suite.yaml", "--collect-only")
    assert result.ret != 0
    result.stdout.fnmatch_lines([
        "*suite.yaml: metrics: metric(s) token_f1 compare against a reference answer, but none "
        "of the 5 selected queries has one*set dataset.answer_field*"])
    text = suite_text(llm="llm: {type: extractive}\n").replace(
        "queries: queries.jsonl}", "queries: queries.jsonl, answer_field: gold}")
    mini_suite(text)
    result = pytester.runpytest("--ragbench=suite.yaml", "--collect-only")
    result.stdout.fnmatch_lines(["*suite.yaml: dataset.answer_field: metric(s) token_f1 *"
                                 "nor under 'gold'*"])
    # a component metric that declares it needs references is checked the same way
    pytester.makepyfile(graded_metric=GRADED_METRIC)
    mini_suite(suite_text(metrics='recall@10, {name: graded, type: "graded_metric:Graded"}',
                          llm="llm: {type: extractive}\n"))
    result = pytester.runpytest("--ragbench=suite.yaml", "--collect-only")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*suite.yaml: metrics: metric(s) graded compare against a "
                                 "reference answer, but none of the 5 selected queries*"])
    # abstention needs no reference: unanswered queries are what it is about.
    mini_suite(suite_text(metrics="recall@10, abstention_accuracy",
                          llm="llm: {type: extractive}\n"))
    pytester.runpytest("--ragbench=suite.yaml").assert_outcomes(passed=5)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_cli_gate_typo_is_one_error_before_any_request(pytester, answered, server, workers):
    answered(suite_text(llm=openai_llm(server.base_url, SET)))
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-gate", "recal@10 >= 0.5",
                                "--ragbench-gate", "error_rate <= 0.5", *workers)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*ERROR collecting test session*",
        "ragbench: --ragbench-gate 'recal@10 >= 0.5': no collected suite computes 'recal@10' "
        "(did you mean 'recall@10'?)*",
    ])
    assert error_blocks(out) == 1, out
    assert "error_rate <= 0.5'" not in out
    assert "INTERNALERROR" not in out
    assert result.ret != 0
    assert server.request_count == 0
    if not workers:  # under xdist, the test above runs a gate spelled right
        # Spelled right, the gate is checked at the end as before.
        result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-gate",
                                    "recall@10 >= 0.5")
        result.assert_outcomes(passed=5)


def test_components_are_built_once_per_process(pytester, mini_suite):
    pytester.makepyfile(counted=COUNTED)
    log = pytester.path / "built.log"
    mini_suite(suite_text(retrievers=f'{{c: {{type: "counted:Counted", log: "{log}"}}}}',
                          metrics="recall@10"))
    pytester.runpytest("--ragbench=suite.yaml").assert_outcomes(passed=5)
    assert len(log.read_text().split()) == 1
    # once in each xdist worker: test_under_xdist_problems_stop_the_run_before_any_request...


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


def test_junit_carries_the_collection_error(pytester, mini_suite):
    mini_suite(suite_text(metrics="recall@10"))
    result = pytester.runpytest("--ragbench=suite.yaml", "--ragbench-gate", "ndcg@1O >= 1",
                                "--junitxml=out.xml")
    assert result.ret != 0
    xml = Path(pytester.path / "out.xml").read_text()
    assert "no collected suite computes" in xml


@pytest.mark.parametrize("extra, where", [
    ("prices: {other-model: {prompt: 1, completion: 2}}\n", "prices"),
    ("generation: {template: '{{ question | nosuchfilter }}'}\n", "generation.template"),
], ids=["model-without-price", "broken-template"])
def test_pipeline_problems_are_found_before_any_request(pytester, answered, server, extra,
                                                        where):
    answered(suite_text(llm=openai_llm(server.base_url, SET) + extra))
    result = pytester.runpytest("--ragbench=suite.yaml")
    out = result.stdout.str()
    result.stdout.fnmatch_lines([f"*suite.yaml*{where}*"])
    assert error_blocks(out) == 1 and "Traceback" not in out
    assert result.ret != 0
    assert server.request_count == 0


def test_cli_gate_metric_of_any_collected_suite_is_accepted(pytester, mini_suite):
    """Two suite files with the same name: each one's metrics count."""
    mini_suite(suite_text(metrics="recall@10"), name="a.yaml")
    mini_suite(suite_text(metrics="mrr@10"), name="b.yaml")
    result = pytester.runpytest("--ragbench=a.yaml", "--ragbench=b.yaml",
                                "--ragbench-gate", "mrr@10 >= 0", "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    result = pytester.runpytest("--ragbench=a.yaml", "--ragbench=b.yaml",
                                "--ragbench-gate", "mrr@1 >= 0", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*no collected suite computes 'mrr@1' (did you mean "
                                 "'mrr@10'?); the suites compute: pre [[]a.yaml[]] (recall@10), "
                                 "pre [[]b.yaml[]] (mrr@10)*"])


def test_wrongly_typed_parameter_is_refused_at_load(pytester, mini_suite):
    """A type the factory's signature rules out is found by the suite loader, before building."""
    mini_suite(suite_text(retrievers="{bm25: {type: bm25, k1: fast}}", metrics="ndcg@10"))
    result = pytester.runpytest("--ragbench=suite.yaml")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*suite.yaml:3: retrievers.bm25: retriever 'bm25' parameter k1: expected a number, "
        "got 'fast'"])
    assert error_blocks(result.stdout.str()) == 1
