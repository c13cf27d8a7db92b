"""The xdist controller's LLM head start (pytest_ragbench/headstart.py): the suite's LLM work
begins while the workers boot, every response reaches the worker whose case needs it, and the
run is the serial run, bit for bit.

One serial run and ONE ``-n 2`` run (a worker start-up costs more than all the checks) against
a real OpenAI-compatible server on 127.0.0.1; the exchange itself is unit-tested in
tests/unit/test_exchange.py.
"""

from __future__ import annotations

import gc
import json
import os
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import write_jsonl
from test_plugin_rag import judge_reply

from pytest_ragbench.headstart import HeadStartPlugin, blocker
from pytest_ragbench.llm.testing import CHAT_PATH, EMBEDDINGS_PATH, FakeOpenAIServer
from pytest_ragbench.options import RESUME_NEWEST_UNFINISHED

N_QUERIES = 24

# the controller writes how many cases the head start had submitted when it started the
# workers, and when the first worker's collection reached it (in-process run: the same clock
# as the server's arrival times)
CONFTEST = """
import gc
import os
import time
from pathlib import Path

import pytest

# each process imports this before its plugins are configured (the controller before it
# starts any worker): a worker's priority is already lowered by then
Path(f"nice_{os.getpid()}.txt").write_text(str(os.nice(0)))

@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    mark = Path("collected_at.txt")
    if not mark.exists():
        mark.write_text(repr(time.monotonic()))

WORKER = []

def pytest_configure(config):
    # (the environment's PYTEST_XDIST_WORKER may be an outer run's: this run's workers have
    # a workerinput)
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        WORKER.append(worker)
        import atexit

        Path(f"pid_{worker}.txt").write_text(str(os.getpid()))
        atexit.register(Path(f"exited_{worker}.txt").write_text, "")

def pytest_runtest_logfinish(nodeid):
    if WORKER:  # the cases each worker ran, in order
        with open(f"ran_{WORKER[0]}.txt", "a") as fh:
            fh.write(nodeid + "\\n")

@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    worker = getattr(session.config, "workerinput", {}).get("workerid")
    if worker:
        import sys

        heavy = ("yaml", "pydantic", "pytest_ragbench.suite.loader")
        Path(f"modules_{worker}.txt").write_text(" ".join(m for m in heavy if m in sys.modules))
    elif getattr(session.config.option, "numprocesses", None):
        import json

        from pytest_ragbench.state import STATE_KEY

        exchange = session.config.stash[STATE_KEY]._coordinator.totals()["exchange"]
        Path("exchange.json").write_text(json.dumps(exchange))
        # before xdist's teardown tells the workers to exit: have both exited, each once it
        # was done, the last one too?
        deadline = time.monotonic() + 5
        while len(list(Path().glob("exited_gw*.txt"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        Path("exited_before_teardown.txt").write_text(str(len(list(Path().glob("exited_gw*.txt")))))

def pytest_terminal_summary(config):
    if not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None):
        # which worker processes are still there (running, or ended and not yet reaped)
        # when the summary starts
        pids = [int(p.read_text()) for p in Path().glob("pid_gw*.txt")]
        Path("left_at_summary.txt").write_text(
            " ".join(str(pid) for pid in pids if Path(f"/proc/{pid}").exists()))

@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config, specs):
    head = config.pluginmanager.get_plugin("ragbench-head-start").head_start
    Path("submitted_before_workers.txt").write_text(str(head.submitted))
    Path("frozen_before_workers.txt").write_text(str(gc.get_freeze_count()))
"""


def suite_text(base_url: str, cache: str) -> str:
    return f"""
name: hs
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
retrievers: {{bm25: {{}}}}
metrics: [recall@10, token_f1, faithfulness, answer_relevancy]
llm: {{type: openai, base_url: {base_url}, model: m, retries: 0, concurrency: 4}}
judge: {{llm: same}}
embedder: {{type: openai, base_url: {base_url}, model: e, retries: 0}}
cache: {{path: {cache}}}
"""


def run_records(root: Path) -> dict[str, dict[str, Any]]:
    path = root / ".ragbench" / "runs" / "latest" / "cases.jsonl"
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        rec.pop("latency_ms")  # a timing
        out[f"{rec['retriever']}::{rec['case_id']}"] = rec
    return out


def summary_suites(root: Path) -> Any:
    return json.loads((root / ".ragbench" / "runs" / "latest" / "summary.json").read_text()
                      )["suites"]


def test_head_start_sends_each_request_once_and_matches_serial(
        pytester: pytest.Pytester, unfrozen_heap: None, monkeypatch: pytest.MonkeyPatch) -> None:
    tails: list[int] = []  # what the head start told the workers' scheduler
    tail = HeadStartPlugin.tail
    monkeypatch.setattr(HeadStartPlugin, "tail",
                        lambda self, cases: tails.append(tail(self, cases)) or tails[-1])
    docs = [{"_id": f"d{i}", "title": f"doc {i}", "text": f"passage {i} about topic {i % 6}"}
            for i in range(30)]
    queries = [{"_id": f"q{i:02d}", "text": f"topic {i % 6} question {i}",
                "relevant": {f"d{i}": 1}, "answer": f"passage {i}"} for i in range(N_QUERIES)]
    write_jsonl(pytester.path / "corpus.jsonl", docs)
    write_jsonl(pytester.path / "queries.jsonl", queries)
    pytester.makeconftest(CONFTEST)
    # The serial run is the reference (counts, records without their timings, summaries):
    # a short latency does for it. The -n 2 run needs its 50 ms, or the head start has
    # answered every case before the workers collect and the tail deal below is never
    # taken (at 20 ms it was not in 4 runs; at 50 ms in 2 of 4).
    with FakeOpenAIServer(latency=0.01, reply=judge_reply) as server:
        pytester.path.joinpath("suite.yaml").write_text(suite_text(server.base_url, "c.sqlite"))
        serial = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist")
        serial.assert_outcomes(passed=N_QUERIES)
        serial_chat, serial_embed = server.count(CHAT_PATH), server.count(EMBEDDINGS_PATH)
        serial_records, serial_suites = run_records(pytester.path), summary_suites(pytester.path)
        server.reset_counts()
        server.latency = 0.05
        first_parallel = len(server.requests)
        for cache in pytester.path.glob("c.sqlite*"):  # both runs start from a cold cache
            cache.unlink()
        parallel = pytester.runpytest("--ragbench=suite.yaml", "-n", "2")
        parallel.assert_outcomes(passed=N_QUERIES)
        requests = server.requests[first_parallel:]
        arrivals = server.arrival_times()
        chat, embed = server.count(CHAT_PATH), server.count(EMBEDDINGS_PATH)
    # one generation and one judge request per item, as serially; none sent twice
    assert chat == serial_chat == 2 * N_QUERIES
    assert embed == serial_embed
    bodies = Counter(json.dumps(r.body, sort_keys=True) for r in requests
                     if r.path == CHAT_PATH)
    assert max(bodies.values()) == 1
    # the controller sent every one of them and handed each to its worker: a worker that
    # came up behind the head start waited for its claims (budget/exchange.py) rather than
    # sending its prefetched cases' requests from a process still booting
    exchange = json.loads(pytester.path.joinpath("exchange.json").read_text())
    assert exchange["published"] == exchange["delivered"] == chat
    # records (usage, cost, cached flags, answers, verdicts) and summaries bit for bit
    assert run_records(pytester.path) == serial_records
    assert summary_suites(pytester.path) == serial_suites
    # the LLM work began before any worker had collected the suite
    collected_at = float(pytester.path.joinpath("collected_at.txt").read_text())
    assert arrivals and arrivals[0] < collected_at
    # and the workers were started only once a first window of cases (2 x concurrency 4)
    # was submitted: their boot does not compete with the head start's preparation
    assert int(pytester.path.joinpath("submitted_before_workers.txt").read_text()) >= 8
    # the workers yield the CPU to the controller (ragbench_worker_nice, default 10) from
    # before their conftest is imported
    nice = {p.name: int(p.read_text()) for p in pytester.path.glob("nice_*.txt")}
    controller = nice.pop(f"nice_{os.getpid()}.txt")  # an in-process run
    assert sorted(nice.values()) == [min(controller + 10, 19)] * 2
    # the controller's heap (the head start's imports, suite and index) was frozen by then,
    # so that no full collection walks it mid-run; and handed back at the end
    assert int(pytester.path.joinpath("frozen_before_workers.txt").read_text()) > 0
    assert gc.get_freeze_count() == 0
    # the workers were handed the suite the controller had validated (suite/handoff.py):
    # neither read its YAML nor loaded the schema, and their records are the serial ones
    loaded = {p.name: p.read_text() for p in pytester.path.glob("modules_gw*.txt")}
    assert loaded == {"modules_gw0.txt": "", "modules_gw1.txt": ""}
    # the last two rounds of cases (2 x concurrency 4) went to one worker and the others in
    # turn (scheduling.deal's tail): the other worker was done two rounds before the end.
    # On a loaded machine the head start may have answered every case before the workers
    # had collected: they were then dealt in turn.
    ran = sorted((p.read_text().split() for p in pytester.path.glob("ran_gw*.txt")),
                 key=lambda cases: (len(cases), cases))
    case = "suite.yaml::bm25::q{:02d}".format
    assert tails in ([8], [0])
    if tails == [8]:
        assert ran == [[case(i) for i in range(1, 16, 2)],
                       [case(i) for i in (*range(0, 16, 2), *range(16, N_QUERIES))]]
    else:
        assert ran == [[case(i) for i in range(0, N_QUERIES, 2)],
                       [case(i) for i in range(1, N_QUERIES, 2)]]
    # each worker was let go as it finished, the last one too, not in xdist's teardown; and
    # both were waited for by the end of the run (neither is left to reap here)
    assert pytester.path.joinpath("exited_before_teardown.txt").read_text() == "2"
    # and both had ended and were reaped before the summary, as with xdist's own teardown:
    # no worker output comes after it
    assert pytester.path.joinpath("left_at_summary.txt").read_text() == ""
    pid_files = sorted(pytester.path.glob("pid_gw*.txt"))
    assert len(pid_files) == 2
    for pid_file in pid_files:
        with pytest.raises(ChildProcessError):
            os.waitpid(int(pid_file.read_text()), os.WNOHANG)


EXCHANGE_CONFTEST = """
import json
from pathlib import Path

def pytest_sessionfinish(session):
    if getattr(session.config.option, "numprocesses", None) and not hasattr(
            session.config, "workerinput"):
        from pytest_ragbench.state import STATE_KEY

        totals = session.config.stash[STATE_KEY]._coordinator.totals()
        Path("exchange.json").write_text(json.dumps(totals["exchange"]))
"""


def test_a_case_the_cost_cap_refuses_is_one_refusal_with_the_head_start(
        pytester: pytest.Pytester) -> None:
    """The head start is refused at the cap and gives the case back; the worker is refused
    again: the run counted two refusals of one case (64 for 32 cases)."""
    n = 16
    write_jsonl(pytester.path / "corpus.jsonl",
                [{"_id": f"d{i}", "text": f"passage {i} about topic {i}"} for i in range(n)])
    write_jsonl(pytester.path / "queries.jsonl",
                [{"_id": f"q{i:02d}", "text": f"topic {i} question", "relevant": {f"d{i}": 1},
                  "answer": "passage"} for i in range(n)])
    pytester.makeconftest(EXCHANGE_CONFTEST)
    # every reply costs $6 (6 completion tokens at $1 each): the cap is reached after 5
    with FakeOpenAIServer(latency=0.02, reply=lambda m: "the answer is in the passage") as srv:
        pytester.path.joinpath("suite.yaml").write_text(f"""
name: cap
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
retrievers: {{bm25: {{}}}}
metrics: [recall@10, answer_contains]
llm: {{type: openai, base_url: {srv.base_url}, model: m, retries: 0, concurrency: 2}}
cache: {{mode: "off"}}
max_cost: 30
prices: {{m: {{prompt: 0, completion: 1000000}}}}
""")
        result = pytester.runpytest("--ragbench=suite.yaml", "-n", "2")
    records = [json.loads(x) for x in (pytester.path / ".ragbench" / "runs" / "latest"
                                       / "cases.jsonl").read_text().splitlines()]
    refused = sum(r["status"] == "error" for r in records)
    assert 0 < refused < n and result.ret == 1
    costs = json.loads((pytester.path / ".ragbench" / "runs" / "latest" / "summary.json")
                       .read_text())["run"]["budget"]["costs"]
    assert costs["suite.yaml"]["refused"] == refused
    # the head start was at work: it sent the paid requests and handed them over
    assert json.loads(pytester.path.joinpath("exchange.json").read_text())["published"] > 0


class _Channel:
    """What LOWER_PRIORITY sees of its execnet channel."""

    def __init__(self, *received: Any) -> None:
        self.received = list(received)
        self.sent: list[Any] = []
        self.timeouts: list[float | None] = []

    def receive(self, timeout: float | None = None) -> Any:
        self.timeouts.append(timeout)
        return self.received.pop(0)

    def send(self, item: Any) -> None:
        self.sent.append(item)


def test_a_new_worker_lowers_its_priority_by_the_step_it_is_sent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_ragbench.headstart import LOWER_PRIORITY

    steps: list[int] = []
    monkeypatch.setattr(os, "nice", lambda n: steps.append(n) or 7)  # not this process's
    channel = _Channel(10)
    exec(LOWER_PRIORITY, {"channel": channel})
    assert steps == [10]
    assert channel.sent == [7]


def test_a_refused_nice_leaves_the_worker_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_ragbench.headstart import LOWER_PRIORITY

    def refuse(n: int) -> int:
        raise PermissionError("not here")

    monkeypatch.setattr(os, "nice", refuse)
    channel = _Channel(10)
    exec(LOWER_PRIORITY, {"channel": channel})
    assert channel.sent == [None]


class _Gateway:
    """What the controller uses of a new execnet gateway: its spec and remote_exec."""

    def __init__(self, spec: str, fail: bool = False) -> None:
        import execnet

        self.spec = execnet.XSpec(spec)
        self.fail = fail
        self.executed: list[tuple[str, list[Any]]] = []
        self.channels: list[_Channel] = []

    def remote_exec(self, source: str) -> Any:
        if self.fail:
            raise OSError("the worker went away")
        channel = _Channel(None)  # its answer
        self.executed.append((source, channel.sent))
        self.channels.append(channel)
        return channel


def _plugin(nice: str, running: bool) -> Any:
    from pytest_ragbench.headstart import HeadStartPlugin

    config = SimpleNamespace(getini=lambda name: {"ragbench_worker_nice": nice}[name])
    plugin = HeadStartPlugin(config, SimpleNamespace(), {})  # type: ignore[arg-type]
    plugin.head_start = SimpleNamespace(running=running)  # type: ignore[assignment]
    return plugin


# the specs as xdist hands them to pytest_xdist_newgateway
LOCAL = "execmodel=main_thread_only//popen"
REMOTE = "execmodel=main_thread_only//ssh=gpu-box//python=python3"


@pytest.mark.parametrize(("spec", "running", "nice", "step"), [
    (LOCAL, True, "", 10),
    (LOCAL, True, " 3 ", 3),
    (LOCAL, True, "0", None),  # turned off
    (LOCAL, False, "", None),  # it led nothing and ended
    (REMOTE, True, "", None),  # no core of ours
])
def test_only_local_workers_of_a_running_head_start_start_at_a_lower_priority(
        spec: str, running: bool, nice: str, step: int | None) -> None:
    from pytest_ragbench.headstart import LOWER_PRIORITY, LOWER_PRIORITY_TIMEOUT

    gateway = _Gateway(spec)
    _plugin(nice, running).pytest_xdist_newgateway(gateway)
    assert gateway.executed == ([] if step is None else [(LOWER_PRIORITY, [step])])
    # the controller waits for the worker's answer, bounded
    assert [c.timeouts for c in gateway.channels] == (
        [] if step is None else [[LOWER_PRIORITY_TIMEOUT]])


def test_a_worker_that_cannot_be_reached_starts_as_it_would() -> None:
    gateway = _Gateway(LOCAL, fail=True)
    _plugin("", True).pytest_xdist_newgateway(gateway)  # no error
    assert gateway.executed == []


def test_a_bad_worker_nice_is_a_usage_error(pytester: pytest.Pytester) -> None:
    from pytest_ragbench.headstart import worker_nice

    config = SimpleNamespace(getini=lambda name: "high")
    with pytest.raises(pytest.UsageError, match=r"ragbench_worker_nice.*'high'"):
        worker_nice(config)  # type: ignore[arg-type]
    # the controller checks it before the head start or any worker starts
    with pytest.raises(pytest.UsageError, match=r"ragbench_worker_nice.*'high'"):
        pytester.parseconfigure("-o", "ragbench_worker_nice=high", "-p", "no:xdist")


def test_head_start_only_for_plain_whole_suite_runs(pytester: pytest.Pytester) -> None:
    """Any selection the controller cannot reproduce exactly keeps today's behaviour."""
    from pytest_ragbench.state import STATE_KEY

    pytester.makefile(".yaml", suite="name: s")
    config = pytester.parseconfigure("--ragbench=suite.yaml", "-n", "2")
    state = config.stash[STATE_KEY]
    assert blocker(config, state) is None
    # each option as pytest parsed it (the same attribute the command line sets)
    chosen = {"keyword": ("q1", "-k"), "markexpr": ("slow", "-m"), "lf": (True, "--lf"),
              "deselect": (["suite.yaml::bm25::q1"], "--deselect"),
              "maxfail": (1, "-x/--maxfail"), "stepwise": (True, "--sw"),
              "ragbench_resume": (RESUME_NEWEST_UNFINISHED, "--ragbench-resume"),
              "showfixtures": (True, "an informational option"),
              "dist": ("worksteal", "--dist worksteal/each")}
    for dest, (value, reason) in chosen.items():
        saved = getattr(config.option, dest)
        setattr(config.option, dest, value)
        why = blocker(config, state)
        setattr(config.option, dest, saved)
        assert why is not None and why.startswith(reason), (dest, why)
    config._ensure_unconfigure()
    config = pytester.parseconfigure("--ragbench=suite.yaml", "-p", "no:xdist")
    assert blocker(config, config.stash[STATE_KEY]) == "no xdist workers"
    config._ensure_unconfigure()


def test_head_start_off_where_the_workers_may_collect_other_cases(
        pytester: pytest.Pytester) -> None:
    """A conftest only the workers load (a suite folder's: its hooks may deselect cases or
    replace components) skips that suite; a collection hook of an unknown plugin (a conftest
    deselecting cases, pytest-split, pytest-shard) skips the whole run."""
    from pytest_ragbench.state import STATE_KEY

    pytester.makefile(".yaml", suite="name: s")
    sub = pytester.mkdir("sub")
    sub.joinpath("suite.yaml").write_text("name: s2")
    sub.joinpath("conftest.py").write_text("")
    args = ("--ragbench=suite.yaml", "--ragbench=sub/suite.yaml", "-n", "2")
    config = pytester.parseconfigure(*args)
    assert config.stash[STATE_KEY].head_start == ["suite.yaml"]
    config._ensure_unconfigure()
    pytester.makeconftest("""
def pytest_collection_modifyitems(config, items):
    items[:] = items[:1]
""")
    config = pytester.parseconfigure(*args)
    state = config.stash[STATE_KEY]
    why = blocker(config, state)
    assert why is not None and "pytest_collection_modifyitems" in why and "conftest.py" in why
    assert state.head_start == []
    config._ensure_unconfigure()
    # a conftest that skips cases before they run, or marks them to be skipped: the head
    # start paid for them (and with max_cost the cases that ran were refused)
    for hook in ("pytest_runtest_setup(item)", "pytest_itemcollected(item)",
                 "pytest_runtest_protocol(item, nextitem)"):
        pytester.makeconftest(f"""
import pytest

def {hook}:
    if item.nodeid.endswith("q1"):
        pytest.skip("not this one")
""")
        config = pytester.parseconfigure(*args)
        state = config.stash[STATE_KEY]
        why = blocker(config, state)
        assert why is not None and hook.split("(")[0] in why and "conftest.py" in why, why
        assert state.head_start == []
        config._ensure_unconfigure()
    # a wrapper that times each case (as pytest-timeout's) skips nothing
    pytester.makeconftest("""
import pytest

@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    return (yield)

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield
""")
    config = pytester.parseconfigure(*args)
    assert blocker(config, config.stash[STATE_KEY]) is None
    config._ensure_unconfigure()


def test_a_usage_error_stops_the_run_before_the_head_start_sends_anything(
        pytester: pytest.Pytester) -> None:
    """The session's checks (a baseline that cannot exist, here) come first: nothing is
    paid for a run that never starts."""
    write_jsonl(pytester.path / "corpus.jsonl", [{"_id": "d0", "text": "passage zero"}])
    write_jsonl(pytester.path / "queries.jsonl",
                [{"_id": f"q{i}", "text": f"question {i}", "relevant": {"d0": 1},
                  "answer": "passage zero"}
                 for i in range(4)])
    # whether the head start was started at all (its requests, cancelled when the run
    # stops, may or may not have reached the server by then)
    pytester.makeconftest("""
from pathlib import Path

def pytest_unconfigure(config):
    started = config.pluginmanager.get_plugin("ragbench-head-start") is not None
    Path("head_start.txt").write_text(str(started))
""")
    with FakeOpenAIServer(latency=0.01) as server:
        pytester.path.joinpath("suite.yaml").write_text(f"""
name: hs
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
retrievers: {{bm25: {{}}}}
metrics: [recall@10, token_f1]
llm: {{type: openai, base_url: {server.base_url}, model: m, retries: 0}}
""")
        result = pytester.runpytest("--ragbench=suite.yaml", "-n", "2",
                                    "--ragbench-baseline=missing.json")
        chats = server.count(CHAT_PATH)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*missing.json*"])
    assert chats == 0
    assert pytester.path.joinpath("head_start.txt").read_text() == "False"


def test_a_suite_whose_llm_cannot_be_set_up_leaves_the_others_to_the_head_start(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """One suite's LLM setup fails (its key's variable is unset: the workers' collection
    reports it), and the head start still answers the other suite's cases."""
    monkeypatch.delenv("RAGBENCH_NO_SUCH_KEY", raising=False)
    write_jsonl(pytester.path / "corpus.jsonl", [{"_id": "d0", "text": "passage zero"}])
    write_jsonl(pytester.path / "queries.jsonl",
                [{"_id": f"q{i}", "text": f"question {i}", "relevant": {"d0": 1},
                  "answer": "passage zero"} for i in range(4)])
    pytester.makeconftest("""
import json
from pathlib import Path

import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        from pytest_ragbench.state import STATE_KEY

        totals = session.config.stash[STATE_KEY]._coordinator.totals()
        Path("exchange.json").write_text(json.dumps(totals["exchange"]))
""")
    with FakeOpenAIServer(latency=0.3) as server:
        for name, key in (("a", ""), ("b", ", api_key_env: RAGBENCH_NO_SUCH_KEY")):
            pytester.path.joinpath(f"{name}.yaml").write_text(f"""
name: {name}
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
retrievers: {{bm25: {{}}}}
metrics: [recall@10, token_f1]
llm: {{type: openai, base_url: {server.base_url}, model: m, retries: 0{key}}}
cache: {{mode: "off"}}
""")
        result = pytester.runpytest("--ragbench=b.yaml", "--ragbench=a.yaml", "-n", "2")
        chats = server.count(CHAT_PATH)
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*b.yaml*RAGBENCH_NO_SUCH_KEY*"])
    assert chats == 4
    # the head start sent a's requests and handed each to its worker (before, b's failure
    # ended it before it had answered anything)
    exchange = json.loads(pytester.path.joinpath("exchange.json").read_text())
    assert exchange["published"] == exchange["delivered"] == 4


def test_a_sigterm_while_the_head_start_runs_ends_the_run_as_interrupted(
        pytester: pytest.Pytester) -> None:
    """The head start's requests go out while the workers boot, before the run caught
    SIGTERM: a CI cancel then killed the controller (exit 143, no summary, workers left)."""
    import signal
    import subprocess
    import sys
    import time

    write_jsonl(pytester.path / "corpus.jsonl",
                [{"_id": f"d{i}", "text": f"passage {i} about topic {i}"} for i in range(20)])
    write_jsonl(pytester.path / "queries.jsonl",
                [{"_id": f"q{i}", "text": f"topic {i % 20}", "relevant": {f"d{i % 20}": 1},
                  "answer": "passage"} for i in range(40)])
    with FakeOpenAIServer(latency=0.5) as server:
        pytester.path.joinpath("suite.yaml").write_text(
            "name: s\ndataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
            "retrievers: {bm25: {}}\nmetrics: [ndcg@10, token_f1]\n"
            f"llm: {{type: openai, base_url: '{server.base_url}', model: m, concurrency: 4}}\n"
            "cache: off\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "--ragbench=suite.yaml", "-n", "2", "-q",
             "-p", "no:cacheprovider"], cwd=pytester.path, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        while server.request_count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the head start's first request: the workers still boot
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
