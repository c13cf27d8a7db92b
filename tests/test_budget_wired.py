"""The run budget wired into the plugin: one budget per run, whatever ``-n`` is.

Every run goes through pytest (in-process for ``-n 0``, xdist workers for ``-n 2``) against a
real OpenAI-compatible server on 127.0.0.1 that counts the requests in flight at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import write_jsonl

from pytest_ragbench.llm.testing import CHAT_PATH, FakeOpenAIServer, Fault

N_QUERIES = 16
REPLY = "the answer is in the passage"  # 6 completion tokens (the fake counts words)


def reply(messages: Sequence[dict[str, Any]]) -> str:
    return REPLY


@pytest.fixture
def dataset(pytester: pytest.Pytester, mini_suite: Any) -> Any:
    """``N_QUERIES`` queries with reference answers over a small corpus; returns a writer of
    suite files with an LLM section for ``base_url``."""
    docs = [{"_id": f"d{i}", "title": f"doc {i}", "text": f"passage {i} about topic {i}"}
            for i in range(8)]
    queries = [{"_id": f"q{i}", "text": f"topic {i % 8} question {i}",
                "relevant": {f"d{i % 8}": 1}, "answer": "passage"} for i in range(N_QUERIES)]
    write_jsonl(pytester.path / "corpus.jsonl", docs)
    write_jsonl(pytester.path / "queries.jsonl", queries)

    def write(base_url: str, llm_extra: str = "", extra: str = "",
              name: str = "suite.yaml", retries: int = 0) -> Path:
        path = pytester.path / name
        path.write_text(f"""
name: {name.split('.')[0]}
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
retrievers: {{overlap: {{type: "overlap_retriever:Overlap"}}}}
metrics: [recall@10, answer_contains]
llm:
  type: openai
  base_url: {base_url}
  model: m
  retries: {retries}
  backoff: 0.01
  timeout: 10
{llm_extra}
cache: off
{extra}
""", encoding="utf-8")
        return path

    return write


def summary(root: Path) -> dict[str, Any]:
    return json.loads((root / ".ragbench" / "runs" / "latest" / "summary.json").read_text())


def records(root: Path) -> list[dict[str, Any]]:
    text = (root / ".ragbench" / "runs" / "latest" / "cases.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def nprocs(n: int) -> list[str]:
    return ["-n", str(n)] if n else ["-p", "no:xdist"]


def test_concurrency_holds_for_the_whole_run(pytester: pytest.Pytester, dataset: Any) -> None:
    with FakeOpenAIServer(latency=0.05, reply=reply) as server:
        base_url = server.base_url
        dataset(base_url, "  concurrency: 3")
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist")
        result.assert_outcomes(passed=N_QUERIES)
        assert server.count(CHAT_PATH) == N_QUERIES
        assert server.max_in_flight <= 3
    assert len(summary(pytester.path)["run"]["budget"]["pools"]) == 1
    check_pool(pytester, result, base_url, N_QUERIES)


def check_pool(pytester: pytest.Pytester, result: pytest.RunResult, base_url: str,
               requests: int) -> None:
    """The run's one pool, at concurrency 3, made ``requests`` requests and says so."""
    budget = summary(pytester.path)["run"]["budget"]
    (pool,) = [p for p in budget["pools"] if p["endpoint"] == base_url]
    assert pool["requests"] == requests
    assert pool["concurrency"] == 3
    assert 1 <= pool["max_in_flight"] <= 3
    assert pool["endpoint"] == base_url and pool["model"] == "m"
    result.stdout.fnmatch_lines([f"llm pool m at {base_url}: {requests} requests, "
                                 "max * in flight, 0 throttled (429), 0 timed out "
                                 "(concurrency 3)"])


COST_CAP, COST_PER_CALL, COST_CONCURRENCY = 30.0, 6.0, 2
# $1 per completion token: every call costs $6; the cap is reached after 5 calls
COST_LLM = f"  concurrency: {COST_CONCURRENCY}"
COST_EXTRA = f"max_cost: {COST_CAP}\nprices: {{m: {{prompt: 0, completion: 1000000}}}}"


def check_cost_cap(pytester: pytest.Pytester, calls: int, suite: str = "suite") -> None:
    """The run stopped paying at its cap: what was spent, refused and said."""
    cap = COST_CAP
    recs = [r for r in records(pytester.path) if r["suite_name"] == suite]
    paid = [r for r in recs if r["status"] != "error"]
    refused = [r for r in recs if r["status"] == "error"]
    spent = sum(r["cost"] or 0.0 for r in recs)
    # the calls in flight when the cap was reached may finish; nothing starts after it
    assert cap <= spent <= cap + COST_CONCURRENCY * COST_PER_CALL
    assert calls == len(paid) < N_QUERIES
    budget = summary(pytester.path)["run"]["budget"]
    (cost,) = budget["costs"].values()
    assert cost["spent"] == pytest.approx(spent) and budget["spent"] == pytest.approx(spent)
    assert cost["max_cost"] == cap and cost["exhausted"] is True
    for rec in refused:
        message = rec["error"]["message"]
        assert "cost budget exhausted" in message and "all workers together" in message
        shown = float(re.search(r"this run spent \$([0-9.]+) of \$30\.0000", message)[1])
        assert cap <= shown <= spent


def test_max_cost_is_the_runs_cap(pytester: pytest.Pytester, dataset: Any) -> None:
    with FakeOpenAIServer(latency=0.05, reply=reply) as server:
        dataset(server.base_url, COST_LLM, extra=COST_EXTRA)
        pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist")
        calls = server.count(CHAT_PATH)
    check_cost_cap(pytester, calls)


def test_pool_keys_hold_no_credentials(pytester: pytest.Pytester, dataset: Any) -> None:
    with FakeOpenAIServer(reply=reply) as server:
        url = server.base_url.replace("http://", "http://user:hunter2secret@")
        dataset(url)
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist")
        result.assert_outcomes(passed=N_QUERIES)
    assert "hunter2secret" not in (pytester.path / ".ragbench" / "runs" / "latest"
                                   / "summary.json").read_text()
    assert "hunter2secret" not in result.stdout.str()


# -- concurrency: auto ------------------------------------------------------------------------


# the endpoint sheds load above 3 requests at once; auto starts at 2 and may grow to 8
AUTO_LLM = "  concurrency: {auto: true, max: 8, start: 2}"


def check_backoff(pytester: pytest.Pytester, result: pytest.RunResult, base_url: str,
                  refused: int) -> None:
    """The pool of the endpoint at ``base_url``, which refused ``refused`` requests, backed off
    and reported its level."""
    pools = summary(pytester.path)["run"]["budget"]["pools"]
    (pool,) = [p for p in pools if p["endpoint"] == base_url]
    adaptive = pool["adaptive"]
    assert adaptive["bound"] == 8
    assert 1 <= adaptive["level"] <= adaptive["max_level"] <= 8
    assert pool["max_in_flight"] <= adaptive["max_level"]
    assert pool["throttled"] == refused
    if refused:
        assert adaptive["decreases"] >= 1
    result.stdout.fnmatch_lines([f"llm pool m at {base_url}: *; concurrency auto "
                                 "reached * (max * of bound 8, * back-offs)"])


def test_auto_concurrency_backs_off_and_reports_its_level(pytester: pytest.Pytester,
                                                          dataset: Any) -> None:
    with FakeOpenAIServer(latency=0.1, reply=reply, refuse_above=3,
                          refuse_retry_after="0") as server:
        dataset(server.base_url, AUTO_LLM, retries=8)
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist")
        result.assert_outcomes(passed=N_QUERIES)
        base_url, refused = server.base_url, server.refused
    check_backoff(pytester, result, base_url, refused)


def test_under_xdist_one_run_shares_pools_backs_off_and_caps_cost(
        pytester: pytest.Pytester, dataset: Any) -> None:
    """One ``-n 2`` run (each worker start-up costs more than all the checks) shows, on four
    endpoints: each worker gets its whole share of cases so the run reaches its concurrency;
    the concurrency holds for the whole run across workers and two suites on one endpoint
    share one pool while other tests run beside the cases; an auto pool backs off under load;
    and the run stops paying at its cost cap."""
    pytester.makepyfile(test_plain="""
        import pytest

        @pytest.mark.parametrize("i", range(6))
        def test_plain(i):
            assert i >= 0
    """)
    # wide: 16 cases, concurrency 16, two workers: only when each worker holds its 8 cases at
    # once can all 16 requests be in flight together (xdist's load scheduling sends 2 at
    # first); it comes first so both workers start on it together, as in a run of it alone
    with FakeOpenAIServer(latency=0.5, reply=reply) as wide, \
            FakeOpenAIServer(latency=0.05, reply=reply) as shared, \
            FakeOpenAIServer(latency=0.1, reply=reply, refuse_above=3,
                             refuse_retry_after="0") as shedding, \
            FakeOpenAIServer(latency=0.05, reply=reply) as paid:
        dataset(wide.base_url, "  concurrency: 16", name="wide.yaml")
        dataset(shared.base_url, "  concurrency: 3", name="a.ragbench.yaml")
        dataset(shared.base_url, "  concurrency: 3", name="b.ragbench.yaml")
        dataset(shedding.base_url, AUTO_LLM, retries=8, name="auto.yaml")
        dataset(paid.base_url, COST_LLM, extra=COST_EXTRA, name="cost.yaml")
        result = pytester.runpytest("--ragbench=wide.yaml", "--ragbench=a.ragbench.yaml",
                                    "--ragbench=b.ragbench.yaml", "--ragbench=auto.yaml",
                                    "--ragbench=cost.yaml", "test_plain.py", "-n", "2")
        calls = paid.count(CHAT_PATH)
        # every case of wide, a, b and auto passes, as do the other tests; cost pays ``calls``
        result.assert_outcomes(passed=N_QUERIES + 2 * N_QUERIES + 6 + N_QUERIES + calls,
                               errors=N_QUERIES - calls)
        assert shared.count(CHAT_PATH) == 2 * N_QUERIES
        assert shared.max_in_flight <= 3
        assert wide.count(CHAT_PATH) == N_QUERIES
        assert wide.max_in_flight == N_QUERIES
        shared_url, base_url, refused = shared.base_url, shedding.base_url, shedding.refused
    assert len(summary(pytester.path)["run"]["budget"]["pools"]) == 4  # one per endpoint
    check_pool(pytester, result, shared_url, 2 * N_QUERIES)
    auto = [r for r in records(pytester.path) if r["suite_name"] == "auto"]
    assert len(auto) == N_QUERIES and all(r["status"] == "ok" for r in auto)
    check_backoff(pytester, result, base_url, refused)
    check_cost_cap(pytester, calls, suite="cost")


def test_auto_concurrency_grows_on_a_willing_endpoint(pytester: pytest.Pytester,
                                                      dataset: Any) -> None:
    # growth counts successes, not seconds: a short latency shows it as well as a long one
    with FakeOpenAIServer(latency=0.05, reply=reply) as server:
        dataset(server.base_url, "  concurrency: {auto: true, max: 6, start: 1}")
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist")
        result.assert_outcomes(passed=N_QUERIES)
        assert server.max_in_flight <= 6
    adaptive = summary(pytester.path)["run"]["budget"]["pools"][0]["adaptive"]
    assert adaptive["max_level"] > 1 and adaptive["decreases"] == 0


@pytest.mark.parametrize(("value", "message"), [
    ("0", "llm.concurrency: expected an integer >= 1, got 0"),
    ("fast", "llm.concurrency: expected a whole number >= 1, 'auto' or {auto: true, max: N}"),
    ("{auto: true, mx: 3}", "llm.concurrency.mx: unknown key 'mx' (did you mean 'max'?)"),
])
def test_bad_concurrency_is_one_clear_message(pytester: pytest.Pytester, dataset: Any,
                                              value: str, message: str) -> None:
    dataset("http://127.0.0.1:9/v1", f"  concurrency: {value}")
    result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist")
    assert result.ret != 0
    result.stdout.fnmatch_lines([f"*suite.yaml*{message}*"])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


# -- time limits ------------------------------------------------------------------------------


def test_call_past_its_case_timeout_is_an_explicit_error(pytester: pytest.Pytester,
                                                         dataset: Any) -> None:
    with FakeOpenAIServer(reply=reply) as server:
        server.add_faults(Fault.ok(delay=3.0))  # the first request is slow; the rest are not
        dataset(server.base_url, "  concurrency: 1\n  case_timeout: 0.5")
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist")
        result.assert_outcomes(passed=N_QUERIES - 1, errors=1)
    (err,) = [r for r in records(pytester.path) if r["status"] == "error"]
    assert err["error"]["stage"] == "generation"
    assert "case_timeout 0.5 s" in err["error"]["message"]


def test_case_past_generation_timeout_is_an_explicit_error(pytester: pytest.Pytester,
                                                          dataset: Any) -> None:
    with FakeOpenAIServer(reply=reply) as server:
        server.add_faults(Fault.ok(delay=3.0))
        dataset(server.base_url, "  concurrency: 1",
                extra="generation: {timeout: 0.5}")
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist")
        result.assert_outcomes(passed=N_QUERIES - 1, errors=1)
    (err,) = [r for r in records(pytester.path) if r["status"] == "error"]
    assert err["error"]["stage"] == "generation"
    assert "generation.timeout 0.5 s" in err["error"]["message"]


# -- scheduling across workers ----------------------------------------------------------------


def test_an_explicit_dist_is_kept(pytester: pytest.Pytester, dataset: Any) -> None:
    # the suite that reaches all 16 in flight under our scheduling (see the -n 2 run above)
    with FakeOpenAIServer(latency=0.5, reply=reply) as server:
        dataset(server.base_url, "  concurrency: 16")
        result = pytester.runpytest("--ragbench=suite.yaml", "-n", "2", "--dist", "load")
        result.assert_outcomes(passed=N_QUERIES)
        explicit = server.max_in_flight
    assert explicit < N_QUERIES  # an explicit --dist is the user's choice and is kept


SLOW_RETRIEVERS = '''
import asyncio
import time


class Slow:
    """Sleeps on queries containing ``slow_on``; otherwise returns the first document."""

    def __init__(self, slow_on: str = "", asynchronous: bool = False):
        self.slow_on, self.asynchronous = slow_on, asynchronous

    def index(self, corpus):
        self.first = corpus[0].id

    def _hits(self):
        return [(self.first, 1.0)]

    def retrieve(self, query, k):
        if self.asynchronous:
            return self._aretrieve(query)
        if self.slow_on in query:
            time.sleep(3)
        return self._hits()

    async def _aretrieve(self, query):
        if self.slow_on in query:
            await asyncio.sleep(3)
        return self._hits()
'''


@pytest.mark.parametrize("asynchronous", [False, True])
def test_retrieval_past_its_case_timeout_is_an_explicit_error(
        pytester: pytest.Pytester, dataset: Any, asynchronous: bool) -> None:
    dataset("http://127.0.0.1:9/v1")  # writes the data; the suite below has no LLM
    pytester.makepyfile(slow_retrievers=SLOW_RETRIEVERS)
    (pytester.path / "suite.yaml").write_text(f"""
name: slow
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
retrievers:
  slow:
    type: "slow_retrievers:Slow"
    slow_on: "question 3"
    asynchronous: {str(asynchronous).lower()}
    case_timeout: 0.5
metrics: [recall@10]
""", encoding="utf-8")
    result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist")
    result.assert_outcomes(passed=N_QUERIES - 1, errors=1)
    result.stdout.fnmatch_lines(["*retriever 'slow' timed out: the retrieval took longer "
                                 "than its case_timeout 0.5 s*"])
    (err,) = [r for r in records(pytester.path) if r["status"] == "error"]
    assert err["case_id"] == "q3" and err["error"]["stage"] == "retrieve"
