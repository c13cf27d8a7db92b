"""Progress of LLM runs: requests done and in flight, tokens, cost and an ETA while the cases
run; plain lines when the output is not a terminal, none with -q there, in place on one."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import BASE_INI, write_jsonl

from pytest_ragbench.llm.testing import FakeOpenAIServer
from pytest_ragbench.report.progress import Progress, ProgressReporter, progress_of

N_QUERIES = 8
LINE = re.compile(r"^ragbench progress: (\d+)/(\d+) items, (\d+) LLM requests done, (\d+) in "
                  r"flight(?:, \d+ waiting)?, ([\d.]+k?) tokens, \$(\d+\.\d{4}), \S+ elapsed, "
                  r"ETA (\S+)$")


def test_progress_line_and_eta() -> None:
    p = Progress(items_done=30, items_total=120, requests=64, in_flight=8, waiting=2,
                 tokens=12_345, cost=0.0123, elapsed=60.0)
    assert p.eta == 180.0
    assert p.line() == ("ragbench progress: 30/120 items, 64 LLM requests done, 8 in flight, "
                        "2 waiting, 12.3k tokens, $0.0123, 1m00s elapsed, ETA 3m00s")
    assert Progress(0, 10, 1, 1, 0, 5, None, 3.0).line().endswith(
        "5 tokens, cost unknown (no prices), 3s elapsed, ETA ?")


def test_progress_from_the_budget_totals() -> None:
    pools = {"a": {"requests": 10, "in_flight": 3, "waiting": 1, "tokens": 700},
             "b": {"requests": 5, "in_flight": 0, "waiting": 0, "tokens": 300}}
    p = progress_of({"pools": pools, "costs": {}, "spent": 0.0}, items_done=4, items_total=8,
                    elapsed=2.0, case_cost=0.5)
    assert p is not None
    assert (p.requests, p.in_flight, p.waiting, p.tokens, p.cost) == (12, 3, 1, 1000, 0.5)
    # a cost cap counts every request as it is released: its spend wins over the cases'
    capped = progress_of({"pools": pools, "costs": {"k": {}}, "spent": 0.75}, items_done=4,
                         items_total=8, elapsed=2.0, case_cost=0.5)
    assert capped is not None and capped.cost == 0.75
    # no request yet (retrieval only): no progress at all
    assert progress_of({"pools": {}}, items_done=4, items_total=8, elapsed=1,
                       case_cost=None) is None
    assert progress_of(None, items_done=0, items_total=None, elapsed=0, case_cost=None) is None


class _Writer:
    def __init__(self) -> None:
        self.width_of_current_line = 0


class _Terminal:
    """What ProgressReporter uses of pytest's TerminalReporter, recording the calls."""

    def __init__(self, tty: bool) -> None:
        self.isatty = tty
        self._tw = _Writer()
        self.currentfspath: Any = "suite.yaml"
        self.calls: list[tuple[str, str]] = []

    def write(self, text: str) -> None:
        self.calls.append(("write", text))
        self._tw.width_of_current_line = len(text.rsplit("\n", 1)[-1]) + (
            0 if "\n" in text else self._tw.width_of_current_line)

    def write_line(self, text: str) -> None:
        self.calls.append(("write_line", text))
        self._tw.width_of_current_line = 0

    def rewrite(self, text: str, erase: bool = False) -> None:
        self.calls.append(("rewrite", text))
        self._tw.width_of_current_line = 79


class _Config:
    def __init__(self, tr: _Terminal, verbosity: int = 0, interval: str = "10") -> None:
        self._tr, self._verbosity, self._interval = tr, verbosity, interval
        self.pluginmanager = self

    def get_plugin(self, name: str) -> Any:
        return self._tr

    def getini(self, name: str) -> str:
        return self._interval

    def get_verbosity(self) -> int:
        return self._verbosity


def _reporter(tr: _Terminal, verbosity: int = 0) -> tuple[ProgressReporter, list[float]]:
    now = [100.0]
    totals = {"pools": {"p": {"requests": 3, "in_flight": 1, "tokens": 30}}}
    reporter = ProgressReporter(_Config(tr, verbosity), lambda: totals,  # type: ignore[arg-type]
                                clock=lambda: now[0])
    return reporter, now


def test_on_a_terminal_the_line_is_rewritten_in_place_until_pytest_writes() -> None:
    tr = _Terminal(tty=True)
    tr._tw.width_of_current_line = 14  # "suite.yaml ..."
    reporter, now = _reporter(tr)
    assert reporter.update() is not None
    # pytest's dots were on the line: the progress starts a line of its own
    assert [c[0] for c in tr.calls] == ["write", "write"] and tr.calls[0][1] == "\n"
    assert tr.currentfspath is None  # pytest's next dot starts a fresh line
    now[0] += 1.0
    assert reporter.update() is not None
    assert tr.calls[-1][0] == "rewrite"  # still our line: in place
    now[0] += 1.0
    reporter.update()
    assert tr.calls[-1][0] == "rewrite"
    tr._tw.width_of_current_line = 3  # pytest wrote since
    now[0] += 1.0
    assert reporter.update() is None  # a new line only every interval
    now[0] += 10.0
    assert reporter.update() is not None and tr.calls[-1][0] == "write"
    # -q on a terminal still shows it
    quiet_tr = _Terminal(tty=True)
    quiet, _ = _reporter(quiet_tr, verbosity=-1)
    assert quiet.update() is not None


def test_off_a_terminal_plain_lines_and_none_with_q() -> None:
    tr = _Terminal(tty=False)
    reporter, now = _reporter(tr)
    tr.currentfspath = "suite.yaml"
    reporter.update()
    assert tr.currentfspath == "suite.yaml"  # the next dots go on the line after it
    now[0] += 5.0
    reporter.update()  # not due yet
    now[0] += 5.0
    reporter.update()
    assert [c[0] for c in tr.calls] == ["write_line", "write_line"]
    quiet_tr = _Terminal(tty=False)
    quiet, _ = _reporter(quiet_tr, verbosity=-1)
    assert quiet.update() is None and quiet_tr.calls == []


def test_a_bad_interval_is_a_usage_error() -> None:
    with pytest.raises(pytest.UsageError, match="ragbench_progress_interval: expected seconds"):
        ProgressReporter(_Config(_Terminal(False), interval="soon"),  # type: ignore[arg-type]
                         lambda: None)


SUITE = """\
name: prog
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
retrievers: {{overlap: {{type: "overlap_retriever:Overlap"}}}}
metrics: [recall@10, answer_contains]
llm: {{type: openai, base_url: {base_url}, model: m, retries: 0, timeout: 10,
      concurrency: 2}}
prices: {{m: {{prompt: 1000, completion: 2000}}}}
cache: off
"""


def test_an_llm_run_reports_progress_in_plain_lines_and_none_with_q(
        pytester: pytest.Pytester, mini_suite: Any) -> None:
    mini_suite()
    docs = [{"_id": f"d{i}", "title": f"doc {i}", "text": f"passage {i} about topic {i}"}
            for i in range(4)]
    queries = [{"_id": f"q{i}", "text": f"topic {i % 4} question {i}",
                "relevant": {f"d{i % 4}": 1}, "answer": "passage"} for i in range(N_QUERIES)]
    write_jsonl(pytester.path / "corpus.jsonl", docs)
    write_jsonl(pytester.path / "queries.jsonl", queries)
    pytester.makeini(BASE_INI + "ragbench_progress_interval = 0.05\n")
    with FakeOpenAIServer(latency=0.05, reply=lambda messages: "the passage") as server:
        (pytester.path / "suite.yaml").write_text(SUITE.format(base_url=server.base_url),
                                                  encoding="utf-8")
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist",
                                    "--ragbench-no-output")
        quiet = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist",
                                   "--ragbench-no-output", "-q")
    result.assert_outcomes(passed=N_QUERIES)
    lines = [line for line in result.outlines if line.startswith("ragbench progress:")]
    assert lines, result.stdout.str()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    last = parsed[-1]
    assert last is not None
    done, total, requests = int(last[1]), int(last[2]), int(last[3])
    assert total == N_QUERIES and 1 <= done <= N_QUERIES
    assert 1 <= requests <= N_QUERIES
    assert float(last[5].rstrip("k")) > 0 and float(last[6]) > 0
    # the progress lines come between pytest's own: no blank lines, every dot still there
    at = result.outlines.index(next(line for line in result.outlines
                                    if line.startswith("suite.yaml ")))
    end = next(i for i, line in enumerate(result.outlines) if "[100%]" in line)
    block = result.outlines[at:end + 1]
    assert all(block), block
    assert sum(line.removeprefix("suite.yaml ").split("[")[0].count(".") for line in block
               if not line.startswith("ragbench progress")) == N_QUERIES
    quiet.assert_outcomes(passed=N_QUERIES)
    assert not any("ragbench progress" in line for line in quiet.outlines)
