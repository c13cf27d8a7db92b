"""Progress of LLM runs: requests done and in flight, tokens, cost and an ETA while the cases
run; plain lines when the output is not a terminal, none with -q there, in place on one."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from typing import Any

import pytest
from _pytest._io import TerminalWriter
from conftest import BASE_INI, write_jsonl
from vt import render

from pytest_ragbench.llm.testing import FakeOpenAIServer
from pytest_ragbench.report.progress import Progress, ProgressReporter, StatusLine, progress_of

N_QUERIES = 8
LINE = re.compile(r"^ragbench progress: (\d+)/(\d+) items, (\d+) LLM requests? done, (\d+) in "
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
    assert "0/10 items, 1 LLM request done, 1 in flight" in Progress(
        0, 10, 1, 1, 0, 5, None, 3.0).line()
    # a narrow terminal gets the compact form, the ETA kept
    assert p.fit(130) == p.line()
    assert p.fit(79) == p.compact() == (
        "ragbench 30/120, 64 req (8 in flight, 2 waiting), 12.3k tok, $0.0123, ETA 3m00s")
    assert p.fit(20) == p.compact()[:20]


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


class _Terminal:
    """What ProgressReporter uses of pytest's TerminalReporter, on pytest's own writer."""

    def __init__(self, tty: bool, width: int = 140) -> None:
        self.isatty = tty
        self.out = io.StringIO()
        self._tw = TerminalWriter(self.out)
        self._tw.fullwidth = width
        self.width = width
        self.currentfspath: Any = "suite.yaml"
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self._tw.write(text)

    def write_line(self, text: str) -> None:
        # as pytest's: a new line first only when a file name started the current one
        self.lines.append(text)
        if self.currentfspath:
            self._tw.line()
            self.currentfspath = None
        self._tw.line(text)

    def screen(self) -> list[str]:
        return render(self.out.getvalue(), self.width)


class _Option:
    capture = "fd"
    usepdb = False


class _Config:
    def __init__(self, tr: _Terminal, verbosity: int = 0, interval: str = "10") -> None:
        self._tr, self._verbosity, self._interval = tr, verbosity, interval
        self.pluginmanager = self
        self.option = _Option()

    def get_plugin(self, name: str) -> Any:
        return self._tr

    def getini(self, name: str) -> str:
        return self._interval

    def get_verbosity(self) -> int:
        return self._verbosity


def _reporter(tr: _Terminal, verbosity: int = 0) -> tuple[ProgressReporter, list[float],
                                                          dict[str, Any]]:
    now = [100.0]
    pool = {"requests": 3, "in_flight": 1, "tokens": 30}
    totals = {"pools": {"p": pool}}
    reporter = ProgressReporter(_Config(tr, verbosity), lambda: totals,  # type: ignore[arg-type]
                                clock=lambda: now[0])
    return reporter, now, pool


def test_status_line_steps_aside_for_every_write_and_comes_back() -> None:
    out = io.StringIO()
    tw = TerminalWriter(out)
    tw.fullwidth = 40
    tw.write("suite.yaml ..")
    status = StatusLine(tw)
    status.show("ragbench progress: 2/8 items, and more text than fits on the row")
    assert render(out.getvalue(), 40) == ["suite.yaml ..",
                                          "ragbench progress: 2/8 items, and more"]
    # pytest still knows its own line: the room left for "[ 37%]" is not eaten by ours
    assert tw.width_of_current_line == len("suite.yaml ..")
    tw.write(".", green=True)  # pytest's next dot, through the wrapped writer
    assert render(out.getvalue(), 40) == ["suite.yaml ..."]
    status.show("ragbench progress: 3/8 items")
    status.show("ragbench progress: 4/8 items")  # redrawn in place, not below
    assert render(out.getvalue(), 40) == ["suite.yaml ...", "ragbench progress: 4/8 items"]
    tw.line(" [ 50%]")
    status.show("ragbench progress: 4/8 items")  # at column 0 of an empty line
    tw.write("x.py .")
    assert render(out.getvalue(), 40) == ["suite.yaml ... [ 50%]", "x.py ."]
    status.show("ragbench progress: 5/8 items")
    status.close()
    assert render(out.getvalue(), 40) == ["suite.yaml ... [ 50%]", "x.py ."]
    assert "write_raw" not in tw.__dict__  # the writer has its own method back
    tw.write("..")
    assert render(out.getvalue(), 40) == ["suite.yaml ... [ 50%]", "x.py ..."]
    # a line pytest filled to the edge is left alone: its column could not be found again
    full = TerminalWriter(io.StringIO())
    full.fullwidth = 30
    full.write("." * 29)
    edge = StatusLine(full)
    edge.show("ragbench progress")
    assert not edge.shown


def test_on_a_terminal_the_status_line_is_rewritten_in_place() -> None:
    tr = _Terminal(tty=True)
    tr.write("suite.yaml ..")
    reporter, now, pool = _reporter(tr)
    assert reporter.update() is not None
    screen = tr.screen()
    assert screen == ["suite.yaml ..", "ragbench progress: 0 items, 2 LLM requests done, 1 in "
                      "flight, 30 tokens, cost unknown (no prices), 0s elapsed, ETA ?"]
    tr.write(".")  # pytest's dot: the status steps aside ...
    assert tr.screen() == ["suite.yaml ..."]
    reporter.pytest_runtest_logfinish()  # ... and comes back after pytest's hook
    assert tr.screen()[1] == screen[1]
    pool["requests"] = 5
    now[0] += 0.5
    assert reporter.update() is None  # figures at most every second, but still shown
    assert len(tr.screen()) == 2
    now[0] += 0.5
    assert reporter.update() is not None
    assert tr.screen()[1].startswith("ragbench progress: 0 items, 4 LLM requests done")
    assert len(tr.screen()) == 2  # new figures, same row
    assert tr.lines == []  # never a line of its own on a terminal
    reporter.pytest_sessionfinish()
    assert tr.screen() == ["suite.yaml ..."]  # gone before pytest's summary
    # -q on a terminal still shows it; a dumb terminal and -s get plain lines
    quiet_tr = _Terminal(tty=True)
    quiet, _, _ = _reporter(quiet_tr, verbosity=-1)
    assert quiet.update() is not None
    assert quiet_tr.screen()[-1].startswith("ragbench progress") and not quiet_tr.lines
    no_capture = _Terminal(tty=True)
    plain, _, _ = _reporter(no_capture)
    plain.config.option.capture = "no"  # type: ignore[attr-defined]
    assert plain.update() is not None and len(no_capture.lines) == 1
    debugging = _Terminal(tty=True)
    pdb, _, _ = _reporter(debugging)
    pdb.config.option.usepdb = True  # type: ignore[attr-defined]
    assert pdb.update() is not None and len(debugging.lines) == 1


def test_off_a_terminal_plain_lines_and_none_with_q() -> None:
    tr = _Terminal(tty=False)
    reporter, now, _ = _reporter(tr)
    tr.currentfspath = "suite.yaml"
    tr.write("suite.yaml ..")
    reporter.update()
    assert tr.currentfspath == "suite.yaml"  # the next dots go on the line after it
    tr.write(".")
    assert tr.screen()[0] == "suite.yaml .." and tr.screen()[2] == "."
    assert tr.screen()[1].startswith("ragbench progress: ")
    # xdist's controller writes its dots with no file name: still a line of its own
    xdist = _Terminal(tty=False)
    on_controller, _, _ = _reporter(xdist)
    xdist.currentfspath = None
    xdist.write("....")
    on_controller.update()
    assert xdist.screen()[0] == "...." and xdist.screen()[1].startswith("ragbench progress: ")
    now[0] += 5.0
    reporter.update()  # not due yet
    now[0] += 5.0
    reporter.update()
    assert len(tr.lines) == 2
    quiet_tr = _Terminal(tty=False)
    quiet, _, _ = _reporter(quiet_tr, verbosity=-1)
    assert quiet.update() is None and quiet_tr.out.getvalue() == ""


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


def _llm_dataset(pytester: pytest.Pytester, mini_suite: Any) -> None:
    """N_QUERIES queries with reference answers over four documents, for SUITE."""
    mini_suite()
    docs = [{"_id": f"d{i}", "title": f"doc {i}", "text": f"passage {i} about topic {i}"}
            for i in range(4)]
    queries = [{"_id": f"q{i}", "text": f"topic {i % 4} question {i}",
                "relevant": {f"d{i % 4}": 1}, "answer": "passage"} for i in range(N_QUERIES)]
    write_jsonl(pytester.path / "corpus.jsonl", docs)
    write_jsonl(pytester.path / "queries.jsonl", queries)


def test_an_llm_run_reports_progress_in_plain_lines_and_none_with_q(
        pytester: pytest.Pytester, mini_suite: Any) -> None:
    _llm_dataset(pytester, mini_suite)
    pytester.makeini(BASE_INI + "ragbench_progress_interval = 0.02\n")
    with FakeOpenAIServer(latency=0.02, reply=lambda messages: "the passage") as server:
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


def _run_on_a_pty(args: list[str], cwd: Any, columns: int) -> str:
    """Run ``args`` with a real pseudo-terminal as its stdout and stderr; all it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm", "COLUMNS": str(columns), "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode("utf-8", errors="replace").replace("\r\n", "\n")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_on_a_real_terminal_the_progress_is_one_line_redrawn_in_place(
        pytester: pytest.Pytester, mini_suite: Any) -> None:
    _llm_dataset(pytester, mini_suite)
    with FakeOpenAIServer(latency=0.02, reply=lambda messages: "the passage") as server:
        (pytester.path / "suite.yaml").write_text(SUITE.format(base_url=server.base_url),
                                                  encoding="utf-8")
        raw = _run_on_a_pty([sys.executable, "-m", "pytest", "--ragbench=suite.yaml",
                             "-p", "no:xdist", "-p", "no:cacheprovider",
                             "--ragbench-no-output"], pytester.path, columns=100)
    # at 100 columns the compact form: "ragbench 3/8, 6 req (2 in flight), 354 tok, ..."
    status = re.compile(r"ragbench \d+/8, \d+ req \(\d+ in flight\), \d+ tok, \$\d+\.\d{4}, ETA")
    draws = [m.end() for m in re.finditer(r"\nragbench \d[^\r\n\x1b]*", raw)]
    # drawn again after each of pytest's writes, erased before the next one
    assert len(draws) >= N_QUERIES, raw
    assert raw.count("\r\x1b[K\x1b[1A") >= len(draws) - 1
    for end in draws:
        screen = render(raw[:end], 100)
        # one status line, right under pytest's line of dots, never piling up
        assert status.match(screen[-1]), screen
        assert screen[-2].startswith("suite.yaml "), screen
        assert sum(bool(status.match(row)) for row in screen) == 1, screen
        assert len(screen[-1]) <= 99
    final = render(raw, 100)
    assert not any(status.match(row) for row in final), final
    dots = next(row for row in final if row.startswith("suite.yaml "))
    assert dots.removeprefix("suite.yaml ").split()[0] == "." * N_QUERIES
    assert dots.endswith("[100%]")
    assert any(f"{N_QUERIES} passed" in row for row in final)


def test_progress_says_when_its_tokens_and_cost_rest_on_estimates() -> None:
    """Requests counted by an estimate (no usage sent) showed in the line as measured."""
    pools = {"a": {"requests": 10, "in_flight": 2, "tokens": 700, "estimated": 3}}
    note = "700 tokens (estimated for 3 of 8 requests: the endpoint sent no usage)"
    capped = progress_of({"pools": pools, "costs": {"k": {"estimated": 3}}, "spent": 0.5},
                         items_done=4, items_total=8, elapsed=2.0, case_cost=None)
    assert capped is not None
    assert f"{note}, $0.5000 (estimated)," in capped.line()
    assert "~700 tok, ~$0.5000, ETA" in capped.compact()
    # without a cap the finished cases' cost is shown: estimated when theirs were
    cases = progress_of({"pools": pools, "costs": {}}, items_done=4, items_total=8,
                        elapsed=2.0, case_cost=0.25, case_cost_estimated=True)
    assert cases is not None and f"{note}, $0.2500 (estimated)," in cases.line()
    measured = {"a": {**pools["a"], "estimated": 0}}
    plain = progress_of({"pools": measured, "costs": {}}, items_done=4, items_total=8,
                        elapsed=2.0, case_cost=0.25)
    assert plain is not None and "estimated" not in plain.line()
    assert "~" not in plain.compact()
    # of the requests whose tokens came back: not those refused (429) or failed
    answered = {"a": {**pools["a"], "settled": 6}}
    some = progress_of({"pools": answered, "costs": {}}, items_done=4, items_total=8,
                       elapsed=2.0, case_cost=None)
    assert some is not None and "8 LLM requests done" in some.line()
    assert "(estimated for 3 of 6 requests: the endpoint sent no usage)" in some.line()


def test_requests_to_an_http_pipeline_are_not_counted_as_llm_requests() -> None:
    """An ``http`` pipeline's requests go through a pool of the run budget (its concurrency
    is the run's): a suite with no LLM showed 'ragbench progress: ..., 5 LLM requests done,
    0 tokens, cost unknown (no prices)', and a judged one counted them with the judge's."""
    from pytest_ragbench.budget import PoolLimits
    from pytest_ragbench.budget.wiring import pool_key

    limits = PoolLimits(concurrency=8)
    app = pool_key("http://127.0.0.1:1/answer", "", limits, kind="pipeline")
    judge = pool_key("http://127.0.0.1:2/v1", "m", limits)
    pools = {app: {"requests": 5, "in_flight": 1, "tokens": 0},
             judge: {"requests": 3, "in_flight": 1, "tokens": 300}}
    assert progress_of({"pools": {app: pools[app]}, "costs": {}}, items_done=2,
                       items_total=5, elapsed=1.0, case_cost=None) is None
    p = progress_of({"pools": pools, "costs": {}}, items_done=2, items_total=5, elapsed=1.0,
                    case_cost=None)
    assert p is not None and (p.requests, p.in_flight, p.tokens) == (2, 1, 300)


def test_embedding_requests_are_named_apart_from_the_llm_requests_the_summary_counts() -> None:
    """The line counted an embedder's requests and tokens as LLM requests ('195 LLM requests
    done, 57.4k tokens') beside a summary whose llm column counts the chat requests
    ('130 req, 56.5k tok'): a user comparing them could not tell why they differ."""
    from pytest_ragbench.budget import PoolLimits
    from pytest_ragbench.budget.wiring import pool_key

    limits = PoolLimits(concurrency=8)
    chat = pool_key("http://127.0.0.1:2/v1", "m", limits)
    emb = pool_key("http://127.0.0.1:2/v1", "e", limits, kind="embedding")
    pools = {chat: {"requests": 131, "in_flight": 1, "tokens": 56_500},
             emb: {"requests": 66, "in_flight": 1, "tokens": 912}}
    p = progress_of({"pools": pools, "costs": {}}, items_done=2, items_total=5, elapsed=1.0,
                    case_cost=0.5)
    assert p is not None
    assert (p.requests, p.tokens, p.embedding_requests, p.embedding_tokens) == (
        130, 56_500, 65, 912)
    assert ", 130 LLM + 65 embedding requests done, 2 in flight, 56.5k LLM + 912 embedding " \
           "tokens, $0.5000," in p.line()
    assert "ragbench 2/5, 130 req +65 emb (2 in flight), 56.5k tok, $0.5000" in p.compact()
    # estimates are over every request whose tokens were counted, of both kinds
    pools[emb]["estimated"] = 66
    estimated = progress_of({"pools": pools, "costs": {}}, items_done=2, items_total=5,
                            elapsed=1.0, case_cost=None)
    assert estimated is not None
    assert "(estimated for 66 of 195 requests" in estimated.line()
    # an embedder alone (a dense retriever's): its requests, named as such
    alone = progress_of({"pools": {emb: pools[emb]}, "costs": {}}, items_done=2,
                        items_total=5, elapsed=1.0, case_cost=None)
    assert alone is not None
    assert ", 65 embedding requests done, 1 in flight, 912 embedding tokens (" in alone.line()


def test_the_progress_line_counts_the_requests_and_tokens_the_summary_shows(
        pytester: pytest.Pytester, mini_suite: Any) -> None:
    _llm_dataset(pytester, mini_suite)
    pytester.makeini(BASE_INI + "ragbench_progress_interval = 0.000001\n")
    with FakeOpenAIServer(reply=lambda messages: "the passage") as server:
        # a dense retriever's embedder: its requests go through the run budget too
        dense = (f"retrievers: {{overlap: {{type: dense, embedder: {{type: openai, "
                 f"base_url: {server.base_url}, model: e, api_key_env: null}}}}}}\n")
        (pytester.path / "suite.yaml").write_text(
            SUITE.format(base_url=server.base_url).replace(
                'retrievers: {overlap: {type: "overlap_retriever:Overlap"}}\n', dense),
            encoding="utf-8")
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:xdist",
                                    "--ragbench-no-output")
        embeddings = server.count("/v1/embeddings")
    result.assert_outcomes(passed=N_QUERIES)
    last = [line for line in result.outlines if line.startswith("ragbench progress:")][-1]
    row = next(line for line in result.outlines if line.strip().startswith("overlap "))
    found = re.search(r"(\d+) req, ([\d.]+k?) tok", row)
    assert found is not None, row
    assert embeddings
    assert (f", {found[1]} LLM + {embeddings} embedding requests done, 0 in flight, "
            f"{found[2]} LLM + ") in last, (last, row)
