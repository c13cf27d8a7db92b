"""The run budget wired into the plugin: one budget per run, whatever ``-n`` is.

Every run goes through pytest (in-process for ``-n 0``, xdist workers for ``-n 2``) against a
real OpenAI-compatible server on 127.0.0.1 that counts the requests in flight at once. A run
costs more than the checks on it, so the serial facts come from one ``-n 0`` run of several
suites, each on its own endpoint (made by the first test that needs it; see ``serial``), the
bad values from one run of three bad suites, and the xdist facts from one ``-n 2`` run plus the
one run an explicit ``--dist`` needs.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import QUERIES, latest_run, write_jsonl

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


# The helpers below read one run's folder (``latest_run(root)`` right after the run): a
# shared run's stays as it was when a later run in the same directory moves ``latest``.


def summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "summary.json").read_text())


def records(run: Path) -> list[dict[str, Any]]:
    text = (run / "cases.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def check_pool(run: Path, result: pytest.RunResult, base_url: str, requests: int) -> None:
    """The run's one pool, at concurrency 3, made ``requests`` requests and says so."""
    budget = summary(run)["run"]["budget"]
    (pool,) = [p for p in budget["pools"] if p["endpoint"] == base_url]
    assert pool["requests"] == requests
    # without a max_cost nothing is charged to the budget, and it claims no spend (not $0)
    assert (budget["spent"] is None) is (budget["costs"] == {})
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


def check_cost_cap(run: Path, calls: int, suite: str) -> None:
    """The run stopped paying at its cap: what was spent, refused and said."""
    cap = COST_CAP
    recs = [r for r in records(run) if r["suite_name"] == suite]
    paid = [r for r in recs if r["status"] != "error"]
    refused = [r for r in recs if r["status"] == "error"]
    spent = sum(r["cost"] or 0.0 for r in recs)
    # the calls in flight when the cap was reached may finish; nothing starts after it
    assert cap <= spent <= cap + COST_CONCURRENCY * COST_PER_CALL
    assert calls == len(paid) < N_QUERIES
    budget = summary(run)["run"]["budget"]
    (cost,) = budget["costs"].values()
    assert cost["spent"] == pytest.approx(spent) and budget["spent"] == pytest.approx(spent)
    assert cost["max_cost"] == cap and cost["exhausted"] is True
    html = (run / "report.html").read_text(encoding="utf-8")
    assert (f"<dd>run budget {next(iter(budget['costs']))}: spent ${spent:.4f} of "
            f"${cap:.4f} (all workers), cap reached</dd>") in html
    for rec in refused:
        message = rec["error"]["message"]
        assert "cost budget exhausted" in message and "all workers together" in message
        shown = float(re.search(r"this run spent \$([0-9.]+) of \$30\.0000", message)[1])
        assert cap <= shown <= spent


# -- concurrency: auto ------------------------------------------------------------------------


# the endpoint sheds load above 3 requests at once; auto starts at 2 and may grow to 8
AUTO_LLM = "  concurrency: {auto: true, max: 8, start: 2}"


def check_backoff(run: Path, result: pytest.RunResult, base_url: str, refused: int) -> None:
    """The pool of the endpoint at ``base_url``, which refused ``refused`` requests, backed off
    and reported its level."""
    pools = summary(run)["run"]["budget"]["pools"]
    (pool,) = [p for p in pools if p["endpoint"] == base_url]
    adaptive = pool["adaptive"]
    assert adaptive["bound"] == 8
    assert 1 <= adaptive["level"] <= adaptive["max_level"] <= 8
    assert pool["max_in_flight"] <= adaptive["max_level"]
    assert pool["throttled"] == refused
    if refused:
        assert adaptive["decreases"] >= 1
    result.stdout.fnmatch_lines([f"llm pool m at {base_url}: *; concurrency auto "
                                 "reached * (max * of bound 8, * back-off*)"])
    # the HTML report's run details say it as the terminal does; summary.md, the same
    # with and without -n, leaves these timing-dependent figures out
    plural = "" if adaptive["decreases"] == 1 else "s"
    assert (f"; concurrency auto reached {adaptive['level']} (max {adaptive['max_level']} "
            f"of bound 8, {adaptive['decreases']} back-off{plural})</dd>") in (
        run / "report.html").read_text(encoding="utf-8")
    assert "concurrency auto reached" not in (run / "summary.md").read_text(encoding="utf-8")


# -- one serial run ---------------------------------------------------------------------------

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


# The timed-out step (a retrieval or a first LLM call) takes 3 s, twenty times the limit;
# every other step answers at once (no latency: 10-20 ms a case at a load of 5 on 2 cores),
# so a short limit still separates the two at load. The run waits it out four times.
TIMEOUT = 0.15


def slow_suite(name: str, asynchronous: bool) -> str:
    """A suite without an LLM whose retriever sleeps 3 s on query q3 (case_timeout
    ``TIMEOUT``)."""
    return f"""
name: {name}
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
retrievers:
  slow:
    type: "slow_retrievers:Slow"
    slow_on: "question 3"
    asynchronous: {str(asynchronous).lower()}
    case_timeout: {TIMEOUT}
metrics: [recall@10]
"""


DENSE_SUITE = """
name: dense
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
retrievers:
  dense:
    type: dense
    embedder: {{type: openai, base_url: "{url}", model: e, api_key_env: null, concurrency: 1,
               batch_size: 1}}
metrics: [recall@10]
"""


@dataclass
class SerialRun:
    """One ``-n 0`` run of the suites below, each on its own endpoint, and what the endpoints
    saw: ``url`` (as written in the suite), ``count`` (chat requests), ``max_in_flight``.
    ``run`` is the run's folder (not ``latest``, which a later run in the same directory
    moves)."""

    run: Path
    result: pytest.RunResult
    url: dict[str, str]
    count: dict[str, int]
    max_in_flight: dict[str, int]
    refused: int  # by the auto suite's endpoint

    def records(self, suite: str) -> list[dict[str, Any]]:
        return [r for r in records(self.run) if r["suite_name"] == suite]


def run_serial(pytester: pytest.Pytester, dataset: Any) -> SerialRun:
    """conc: concurrency 3; cost: the cost cap; keys: credentials in the URL; auto: an endpoint
    shedding load; grow: a willing one; case_timeout / gen_timeout: a first call of 3 s;
    dead: an endpoint answering every request with a 503 (concurrency 1, no retries);
    slow_sync / slow_async: a retrieval of 3 s."""
    pytester.makepyfile(slow_retrievers=SLOW_RETRIEVERS)
    # latencies only have to be far longer than sending a request (well under 1 ms here), so
    # that requests let through at once really overlap at the server
    with FakeOpenAIServer(latency=0.02, reply=reply) as conc, \
            FakeOpenAIServer(latency=0.02, reply=reply) as paid, \
            FakeOpenAIServer(reply=reply) as keys, \
            FakeOpenAIServer(latency=0.05, reply=reply, refuse_above=3,
                             refuse_retry_after="0") as shedding, \
            FakeOpenAIServer(latency=0.02, reply=reply) as willing, \
            FakeOpenAIServer(reply=reply) as slow_call, \
            FakeOpenAIServer(reply=reply) as slow_generation, \
            FakeOpenAIServer(latency=0.01, reply=reply) as dead:
        servers = {"conc": conc, "cost": paid, "keys": keys, "auto": shedding,
                   "grow": willing, "case_timeout": slow_call,
                   "gen_timeout": slow_generation, "dead": dead}
        url = {name: server.base_url for name, server in servers.items()}
        url["keys"] = keys.base_url.replace("http://", "http://user:hunter2secret@")
        slow_call.add_faults(Fault.ok(delay=3.0))  # the first request is slow; the rest not
        slow_generation.add_faults(Fault.ok(delay=3.0))
        dead.set_default(Fault.server_error(503))
        dataset(url["conc"], "  concurrency: 3", name="conc.yaml")
        dataset(url["cost"], COST_LLM, extra=COST_EXTRA, name="cost.yaml")
        dataset(url["keys"], name="keys.yaml")
        dataset(url["auto"], AUTO_LLM, retries=8, name="auto.yaml")
        # growth counts successes, not seconds: a short latency shows it as well as a long one
        dataset(url["grow"], "  concurrency: {auto: true, max: 6, start: 1}", name="grow.yaml")
        dataset(url["case_timeout"], f"  concurrency: 1\n  case_timeout: {TIMEOUT}",
                name="case_timeout.yaml")
        dataset(url["gen_timeout"], "  concurrency: 1",
                extra=f"generation: {{timeout: {TIMEOUT}}}", name="gen_timeout.yaml")
        dataset(url["dead"], "  concurrency: 1", retries=0, name="dead.yaml")
        for name, asynchronous in (("slow_sync", False), ("slow_async", True)):
            (pytester.path / f"{name}.yaml").write_text(slow_suite(name, asynchronous),
                                                        encoding="utf-8")
        names = [*servers, "slow_sync", "slow_async"]
        result = pytester.runpytest(*(f"--ragbench={name}.yaml" for name in names),
                                    "-p", "no:xdist")
        count = {name: server.count(CHAT_PATH) for name, server in servers.items()}
        # every case passes but the cost cap's refusals, one timeout in each of four suites
        # and every case of the dead endpoint
        result.assert_outcomes(passed=8 * N_QUERIES - 4 + count["cost"],
                               errors=N_QUERIES - count["cost"] + 4 + N_QUERIES)
        return SerialRun(latest_run(pytester.path), result, url, count,
                         {name: server.max_in_flight for name, server in servers.items()},
                         shedding.refused)


@pytest.fixture(scope="module")
def shared_runs() -> dict[str, Any]:
    """Runs made once for this module, each by the first test that needs it."""
    return {}


@pytest.fixture
def serial(pytester: pytest.Pytester, dataset: Any, shared_runs: dict[str, Any]) -> SerialRun:
    if "serial" not in shared_runs:
        try:
            shared_runs["serial"] = run_serial(pytester, dataset)
        except Exception as exc:
            # the first test shows the failure; the others say so instead of running it again
            shared_runs["serial"] = f"{type(exc).__name__}: {exc}"
            raise
    run = shared_runs["serial"]
    if isinstance(run, str):
        pytest.fail(f"the shared serial run failed (see the first test that used it): {run}")
    assert isinstance(run, SerialRun)
    return run


def test_one_pool_per_endpoint(serial: SerialRun) -> None:
    endpoints = [p["endpoint"] for p in summary(serial.run)["run"]["budget"]["pools"]]
    assert len(endpoints) == len(set(endpoints)) == len(serial.url)
    assert {url for name, url in serial.url.items() if name != "keys"} <= set(endpoints)


def test_concurrency_holds_for_the_whole_run(serial: SerialRun) -> None:
    assert serial.count["conc"] == N_QUERIES
    assert serial.max_in_flight["conc"] <= 3
    assert all(r["status"] == "ok" for r in serial.records("conc"))
    check_pool(serial.run, serial.result, serial.url["conc"], N_QUERIES)


def test_max_cost_is_the_runs_cap(serial: SerialRun) -> None:
    check_cost_cap(serial.run, serial.count["cost"], suite="cost")


def test_pool_keys_hold_no_credentials(serial: SerialRun) -> None:
    keys = serial.records("keys")
    assert len(keys) == N_QUERIES and all(r["status"] == "ok" for r in keys)
    assert serial.count["keys"] == N_QUERIES
    assert "hunter2secret" not in (serial.run / "summary.json").read_text()
    assert "hunter2secret" not in serial.result.stdout.str()


def test_auto_concurrency_backs_off_and_reports_its_level(serial: SerialRun) -> None:
    auto = serial.records("auto")
    assert len(auto) == N_QUERIES and all(r["status"] == "ok" for r in auto)
    check_backoff(serial.run, serial.result, serial.url["auto"], serial.refused)


def test_auto_concurrency_grows_on_a_willing_endpoint(serial: SerialRun) -> None:
    grow = serial.records("grow")
    assert len(grow) == N_QUERIES and all(r["status"] == "ok" for r in grow)
    assert serial.max_in_flight["grow"] <= 6
    pools = summary(serial.run)["run"]["budget"]["pools"]
    (pool,) = [p for p in pools if p["endpoint"] == serial.url["grow"]]
    adaptive = pool["adaptive"]
    assert adaptive["max_level"] > 1 and adaptive["decreases"] == 0


class Gate:
    """A reply that holds every request until ``count`` have arrived, then answers them all;
    if they have not after ``patience`` seconds, it gives up waiting for good (the test then
    fails on the count in flight, not on a hang)."""

    def __init__(self, count: int, patience: float) -> None:
        self.count, self.patience = count, patience
        self.arrived = 0
        self.lock = threading.Lock()
        self.open = threading.Event()

    def __call__(self, messages: Sequence[dict[str, Any]]) -> str:
        with self.lock:
            self.arrived += 1
            if self.arrived >= self.count:
                self.open.set()
        if not self.open.wait(self.patience):
            self.open.set()
        return REPLY


def test_under_xdist_one_run_shares_pools_and_a_breaker_backs_off_and_caps_cost_also_resumed(
        pytester: pytest.Pytester, dataset: Any, serial: SerialRun) -> None:
    """One ``-n 2`` run (each worker start-up costs more than all the checks) shows, on six
    endpoints: each worker gets its whole share of cases so the run reaches its concurrency;
    the concurrency holds for the whole run across workers and two suites on one endpoint
    share one pool while other tests run beside the cases; an auto pool backs off under load;
    the run stops paying at its cost cap; and a dead endpoint gets one circuit breaker's
    worth of requests, as at ``-n 0`` (the shared serial run's suite ``dead``). Without the
    head start (a custom retriever) every worker had its own circuit breaker: a dead
    endpoint took twice the requests at -n 2 (four times at -n 4).

    The run is also the first run of :func:`resume_under_the_cap` at ``-n 2`` (its suite
    ``cost`` stopped at its cap; the resumes run that suite alone)."""
    pytester.makeconftest(SCHEDULER_PROBE)
    pytester.makepyfile(test_plain="""
        import pytest

        @pytest.mark.parametrize("i", range(6))
        def test_plain(i):
            assert i >= 0
    """)
    # wide: 16 cases, concurrency 16, two workers: only when each worker holds its 8 cases at
    # once can all 16 requests be in flight together (xdist's load scheduling sends 2 at
    # first); it comes first so both workers start on it together, as in a run of it alone.
    # Its replies wait until all 16 requests have arrived (so however far apart the workers
    # start, they overlap when the property holds), or for 3 s when they never all do.
    with FakeOpenAIServer(reply=Gate(N_QUERIES, 3.0)) as wide, \
            FakeOpenAIServer(latency=0.02, reply=reply) as shared, \
            FakeOpenAIServer(latency=0.05, reply=reply, refuse_above=3,
                             refuse_retry_after="0") as shedding, \
            FakeOpenAIServer(latency=0.02, reply=reply) as paid, \
            FakeOpenAIServer(latency=0.02) as embeddings, \
            FakeOpenAIServer(latency=0.01, reply=reply) as dead:
        dataset(wide.base_url, "  concurrency: 16", name="wide.yaml")
        # a retriever's own endpoint (dense's embedder, one text a request) holds its
        # concurrency for the whole run too; its requests queue one at a time (two indexings
        # and 16 queries), so the latency is most of the run's wait: 20 ms is still far
        # longer than sending one, and two workers each with its own slot overlap at once
        (pytester.path / "dense.yaml").write_text(DENSE_SUITE.format(url=embeddings.base_url),
                                                  encoding="utf-8")
        dataset(shared.base_url, "  concurrency: 3", name="a.ragbench.yaml")
        dataset(shared.base_url, "  concurrency: 3", name="b.ragbench.yaml")
        dataset(shedding.base_url, AUTO_LLM, retries=8, name="auto.yaml")
        dataset(paid.base_url, COST_LLM, extra=COST_EXTRA, name="cost.yaml")
        # the dead endpoint answers every request with a 503 (concurrency 1, no retries); its
        # cases, dealt by query as all cases are, go half to each worker as in a run of it alone
        dead.set_default(Fault.server_error(503))
        dataset(dead.base_url, "  concurrency: 1", retries=0, name="dead.yaml")
        result = pytester.runpytest("--ragbench=wide.yaml", "--ragbench=a.ragbench.yaml",
                                    "--ragbench=b.ragbench.yaml", "--ragbench=auto.yaml",
                                    "--ragbench=cost.yaml", "--ragbench=dense.yaml",
                                    "--ragbench=dead.yaml", "test_plain.py", "-n", "2")
        calls = paid.count(CHAT_PATH)
        # every case of wide, a, b, auto and dense passes, as do the other tests; cost pays
        # ``calls``; every case of dead errs
        result.assert_outcomes(passed=N_QUERIES + 2 * N_QUERIES + 6 + 2 * N_QUERIES + calls,
                               errors=N_QUERIES - calls + N_QUERIES)
        # the breaker opens after 5 consecutive failures; with one slot nothing else is in
        # flight
        counts = {"no:xdist": serial.count["dead"], "2": dead.count(CHAT_PATH)}
        assert counts["no:xdist"] == 5
        assert counts["2"] <= counts["no:xdist"] + 1, counts
        assert embeddings.count("/v1/embeddings") >= N_QUERIES
        assert embeddings.max_in_flight == 1
        assert shared.count(CHAT_PATH) == 2 * N_QUERIES
        assert shared.max_in_flight <= 3
        assert wide.count(CHAT_PATH) == N_QUERIES
        assert wide.max_in_flight == N_QUERIES
        shared_url, base_url, refused = shared.base_url, shedding.base_url, shedding.refused
        run = latest_run(pytester.path)
        resume_under_the_cap(pytester, paid, ["-n", "2"])
    assert len(summary(run)["run"]["budget"]["pools"]) == 6  # one per endpoint
    check_pool(run, result, shared_url, 2 * N_QUERIES)
    auto = [r for r in records(run) if r["suite_name"] == "auto"]
    assert len(auto) == N_QUERIES and all(r["status"] == "ok" for r in auto)
    check_backoff(run, result, base_url, refused)
    check_cost_cap(run, calls, suite="cost")
    # the plugin's scheduling, which an explicit --dist replaces (test_an_explicit_dist_is_kept)
    result.stdout.fnmatch_lines(["SCHEDULER pytest_ragbench.scheduling.RagbenchScheduling"])


@pytest.fixture
def bad_concurrency(pytester: pytest.Pytester, dataset: Any,
                    shared_runs: dict[str, Any]) -> pytest.RunResult:
    """One run of three suites, each with one bad ``concurrency`` (a collection error each)."""
    if "bad" not in shared_runs:
        for i, (value, _) in enumerate(BAD_CONCURRENCY):
            dataset("http://127.0.0.1:9/v1", f"  concurrency: {value}", name=f"bad{i}.yaml")
        shared_runs["bad"] = pytester.runpytest(
            *(f"--ragbench=bad{i}.yaml" for i in range(len(BAD_CONCURRENCY))), "-p", "no:xdist")
    result: pytest.RunResult = shared_runs["bad"]
    return result


BAD_CONCURRENCY = [
    ("0", "llm.concurrency: expected an integer >= 1, got 0"),
    ("fast", "llm.concurrency: expected a whole number >= 1, 'auto' or {auto: true, max: N}"),
    ("{auto: true, mx: 3}", "llm.concurrency.mx: unknown key 'mx' (did you mean 'max'?)"),
    # the level never leaves [1, max]: a start above it is a contradiction, not a start
    ("{auto: true, start: 100, max: 4}",
     "llm.concurrency.start: expected at most max (4), got 100"),
    ("{auto: true, start: 100}",
     "llm.concurrency.start: expected at most max (64, the default), got 100"),
]


@pytest.mark.parametrize(("value", "message"), BAD_CONCURRENCY)
def test_bad_concurrency_is_one_clear_message(bad_concurrency: pytest.RunResult, value: str,
                                              message: str) -> None:
    result = bad_concurrency
    assert result.ret != 0
    i = BAD_CONCURRENCY.index((value, message))
    result.stdout.fnmatch_lines([f"*bad{i}.yaml*{message}*"])
    assert sum(message in line for line in result.outlines) == 1
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


# -- time limits ------------------------------------------------------------------------------


def test_call_past_its_case_timeout_is_an_explicit_error(serial: SerialRun) -> None:
    (err,) = [r for r in serial.records("case_timeout") if r["status"] == "error"]
    assert err["error"]["stage"] == "generation"
    assert f"case_timeout {TIMEOUT:g} s" in err["error"]["message"]
    assert len(serial.records("case_timeout")) == N_QUERIES


def test_case_past_generation_timeout_is_an_explicit_error(serial: SerialRun) -> None:
    (err,) = [r for r in serial.records("gen_timeout") if r["status"] == "error"]
    assert err["error"]["stage"] == "generation"
    assert f"generation.timeout {TIMEOUT:g} s" in err["error"]["message"]
    assert len(serial.records("gen_timeout")) == N_QUERIES


@pytest.mark.parametrize("asynchronous", [False, True])
def test_retrieval_past_its_case_timeout_is_an_explicit_error(serial: SerialRun,
                                                              asynchronous: bool) -> None:
    suite = "slow_async" if asynchronous else "slow_sync"
    recs = serial.records(suite)
    assert len(recs) == N_QUERIES
    (err,) = [r for r in recs if r["status"] == "error"]
    assert err["case_id"] == "q3" and err["error"]["stage"] == "retrieve"
    said = ("retriever 'slow' timed out: the retrieval took longer than its case_timeout "
            f"{TIMEOUT:g} s")
    assert said in " ".join(err["error"]["message"].split())
    serial.result.stdout.fnmatch_lines([f"*{said}*"])


# -- scheduling across workers ----------------------------------------------------------------

# Names the scheduler xdist got for the run (the controller's terminal shows it).
SCHEDULER_PROBE = """
import pytest

@pytest.hookimpl(wrapper=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    scheduler = yield
    kind = type(scheduler)
    config.pluginmanager.get_plugin("terminalreporter").write_line(
        f"SCHEDULER {kind.__module__}.{kind.__qualname__}")
    return scheduler
"""


def test_an_explicit_dist_is_kept(pytester: pytest.Pytester, dataset: Any) -> None:
    """With ``--dist load`` the run is scheduled by xdist's own ``load`` scheduler; without
    it, by the plugin's (checked on the ``-n 2`` run above)."""
    pytester.makeconftest(SCHEDULER_PROBE)
    with FakeOpenAIServer(latency=0.01, reply=reply) as server:
        dataset(server.base_url, "  concurrency: 16")
        # one worker: which scheduler xdist gets does not depend on how many there are
        result = pytester.runpytest("--ragbench=suite.yaml", "-n", "1", "--dist", "load")
        result.assert_outcomes(passed=N_QUERIES)
        assert server.count(CHAT_PATH) == N_QUERIES
    # an explicit --dist is the user's choice and is kept
    result.stdout.fnmatch_lines(["SCHEDULER xdist.scheduler.load.LoadScheduling"])
    result.stdout.no_fnmatch_line("SCHEDULER pytest_ragbench*")


def test_two_systems_sending_the_same_request_pay_once_as_at_n0(pytester: pytest.Pytester,
                                                                  mini_suite: Any) -> None:
    """Two retrievers that agree make their cases send the same prompt. At ``-n 0`` the case
    first in pytest order sends it and the other gets its response from the response cache
    (no request, no cost). Dealt to two workers (cases in turn: with an odd number of
    queries, ``a::q1`` and ``b::q1`` went to different ones), both cases asked while the
    other's request was out (each worker sends all of its cases' requests at once; the
    endpoint takes 0.6 s) and both sent it: the run paid twice, and the records of ``b``
    differed from ``-n 0``'s by timing. Without a head start (a retriever of the project's
    own) the workers share only the cache. Only the ``-n 2`` run needs the long latency (the
    workers' start-up may be that far apart); the ``-n 0`` run is the reference."""
    with FakeOpenAIServer(reply=reply) as server:
        mini_suite(f"""
            name: twins
            dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
            retrievers:
              a: {{type: "overlap_retriever:Overlap"}}
              b: {{type: "overlap_retriever:Overlap"}}
            metrics: [recall@10, abstention_accuracy]
            llm: {{type: openai, base_url: "{server.base_url}", model: m, concurrency: 10}}
            cache: {{path: llm-cache.sqlite}}
            prices: {{m: {{prompt: 1.0, completion: 2.0}}}}
            """)
        write_jsonl(pytester.path / "queries.jsonl", QUERIES[:3])
        usage: dict[str, dict[tuple[str, str], Any]] = {}
        for label, args, latency in (("n0", (), 0.1), ("n2", ("-n", "2"), 0.6)):
            for stale in pytester.path.glob("llm-cache.sqlite*"):
                stale.unlink()  # each run starts with a cold cache
            server.latency = latency
            before = server.count(CHAT_PATH)
            result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:randomly", *args)
            result.assert_outcomes(passed=6)
            # one request per distinct prompt: a's three
            assert server.count(CHAT_PATH) - before == 3, label
            usage[label] = {(r["retriever"], r["case_id"]): (r["usage"], r["cost"])
                            for r in records(latest_run(pytester.path))}
    assert usage["n2"] == usage["n0"]
    assert all(u["requests"] == 0 and cost == 0
               for (system, _), (u, cost) in usage["n0"].items() if system == "b")


def resume_under_the_cap(pytester: pytest.Pytester, server: FakeOpenAIServer,
                         workers: list[str]) -> None:
    """A run stopped by max_cost and resumed with the same cap spent the cap again (the
    resumed run counted from $0), and its summary showed the new spend beside the reused
    cases' costs. The cap holds for the run as one: old and new cases together.

    Called right after a run that holds suite ``cost`` (cost.yaml against ``server``, which
    stopped at its cap); resumes it twice with ``workers``, with that suite alone."""

    def spent() -> float:
        return sum(r["cost"] or 0.0 for r in records(latest_run(pytester.path))
                   if r["suite_name"] == "cost")

    first, calls = spent(), server.count(CHAT_PATH)
    assert COST_CAP <= first <= COST_CAP + COST_CONCURRENCY * COST_PER_CALL
    # the same cap: spent already, so nothing new is paid for
    pytester.runpytest("--ragbench=cost.yaml", "--ragbench-resume=latest", *workers)
    assert server.count(CHAT_PATH) == calls
    budget = summary(latest_run(pytester.path))["run"]["budget"]
    assert budget["spent"] == pytest.approx(spent()) == pytest.approx(first)
    refused = [r for r in records(latest_run(pytester.path)) if r["status"] == "error"]
    assert refused and all(f"this run spent ${first:.4f} of ${COST_CAP:.4f}"
                           in r["error"]["message"] for r in refused)
    # a higher cap (not part of the case keys): the run goes on up to it, all told
    cap = 2 * COST_CAP
    suite = pytester.path / "cost.yaml"
    suite.write_text(suite.read_text().replace(f"max_cost: {COST_CAP}", f"max_cost: {cap}"))
    pytester.runpytest("--ragbench=cost.yaml", "--ragbench-resume=latest", *workers)
    assert server.count(CHAT_PATH) > calls
    total = spent()
    assert cap <= total <= cap + COST_CONCURRENCY * COST_PER_CALL
    assert summary(latest_run(pytester.path))["run"]["budget"]["spent"] == pytest.approx(total)


def test_a_resumed_run_is_one_run_under_its_cost_cap(pytester: pytest.Pytester,
                                                     dataset: Any) -> None:
    """:func:`resume_under_the_cap` at ``-n 0``; at ``-n 2``, after the xdist test's run."""
    with FakeOpenAIServer(latency=0.02, reply=reply) as server:
        dataset(server.base_url, COST_LLM, extra=COST_EXTRA, name="cost.yaml")
        pytester.runpytest("--ragbench=cost.yaml", "-p", "no:xdist")
        resume_under_the_cap(pytester, server, ["-p", "no:xdist"])


def test_two_suites_sending_the_same_prompts_each_pay_under_their_own_cap(
        pytester: pytest.Pytester, mini_suite: Any) -> None:
    """Two suites whose cases send the same prompts, without a response cache: at ``-n 0``
    each suite sends its own and pays under its own cap. At ``-n 2`` the controller's head
    start named a request by its prompt alone, so one suite's responses went to the other
    suite's cases: the first suite's records showed $8.48 while its cap said $3.28 (the
    rest was paid under the second suite's cap, whose cases then all found it used up)."""
    queries = [{"_id": f"q{i}", "text": f"topic {i % 6} question {i}",
                "relevant": {f"d{i % 6 + 1}": 1}, "answer": "passage"} for i in range(16)]
    write_jsonl(pytester.path / "queries.jsonl", queries)
    with FakeOpenAIServer(latency=0.05, reply=reply) as server:
        for name, cap in (("one", 20), ("two", 40)):
            mini_suite(f"""
                name: {name}
                dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
                retrievers: {{bm25: {{}}}}
                metrics: [recall@10, answer_contains]
                llm: {{type: openai, base_url: "{server.base_url}", model: m, concurrency: 2}}
                cache: off
                max_cost: {cap}
                prices: {{m: {{prompt: 0, completion: 1000000}}}}
                """, name=f"{name}.yaml")
        result = pytester.runpytest("--ragbench=one.yaml", "--ragbench=two.yaml", "-n", "2")
    run = latest_run(pytester.path)
    assert result.ret == 1  # the caps refused cases
    costs = summary(run)["run"]["budget"]["costs"]
    for name in ("one", "two"):
        recs = [r for r in records(run) if r["suite_name"] == name]
        paid = sum(r["cost"] or 0.0 for r in recs)
        assert paid == pytest.approx(costs[f"{name}.yaml"]["spent"]), name
        assert paid >= costs[f"{name}.yaml"]["max_cost"], name
