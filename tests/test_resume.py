"""``--ragbench-resume``: a stopped, interrupted or killed run is finished without redoing
what it finished, and the resumed run is the run an uninterrupted one would have been."""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import latest_run

SUITE = "--ragbench=suite.yaml"

# Scores as the conftest's Overlap does; writes each finished retrieval to calls.log, and
# while a file "hold" exists waits in every query not listed in it (so a run can be stopped
# between two cases from outside).
LOGGED = '''
import os
import time


class Logged:
    def __init__(self, drop: str = ""):
        self.drop = set(drop.split(",")) if drop else set()

    def index(self, corpus):
        self.docs = [(d.id, set((d.title + " " + d.text).lower().replace(".", "").split()))
                     for d in corpus]

    def retrieve(self, query, k):
        deadline = time.monotonic() + 60
        while os.path.exists("hold") and time.monotonic() < deadline:
            with open("hold") as fh:
                if query in fh.read().splitlines():
                    break
            time.sleep(0.05)
        q = set(query.lower().split())
        scored = [(i, float(len(q & t))) for i, t in self.docs if i not in self.drop]
        scored = sorted((s for s in scored if s[1] > 0), key=lambda x: (-x[1], x[0]))
        with open("calls.log", "a") as fh:
            fh.write(query + "\\n")
        return scored[:k]
'''

# Retriever "a" misses q4's only relevant document: below the threshold, a failed case.
TWO = """\
name: mini
dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
retrievers:
  a: {type: "logged:Logged", drop: d4}
  b: {type: "logged:Logged"}
metrics: [ndcg@10, recall@10, mrr@10]
thresholds: {recall@10: 0.5}
"""


@pytest.fixture
def logged(pytester: pytest.Pytester, mini_suite):
    mini_suite()
    pytester.makepyfile(logged=LOGGED)

    def write(text: str = TWO) -> None:
        (pytester.path / "suite.yaml").write_text(text)

    write()
    return write


def _calls(path: Path) -> Counter[str]:
    log = path / "calls.log"
    return Counter(log.read_text().splitlines()) if log.exists() else Counter()


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "cases.jsonl").read_text().splitlines()]


def _results(summary: dict) -> list:
    """What a run measured: every suite's metrics and comparisons, and the gates."""
    return [[{k: v for k, v in r.items() if k != "latency"} for r in s["retrievers"]]
            + [s.get("ab")] for s in summary["suites"]]


def test_a_run_stopped_by_maxfail_is_finished_under_xdist_as_if_never_stopped(
        pytester, logged):
    stopped = pytester.runpytest(SUITE, "-x", "-p", "no:cacheprovider")
    stopped.assert_outcomes(passed=3, failed=1)  # a::q4 failed; b's cases never ran
    first = latest_run(pytester.path)
    assert _summary(first)["run"]["partial"] is True
    assert sum(_calls(pytester.path).values()) == 4

    resumed = pytester.runpytest(SUITE, "--ragbench-resume", "-n", "2", "-p", "no:cacheprovider")
    # Replayed cases are still items: pytest counts and reports every case.
    resumed.assert_outcomes(passed=9, failed=1)
    resumed.stdout.fnmatch_lines([f"resumed from {first.name}: 4 cases reused, 6 run"])
    # Nothing finished was retrieved again: every query once per retriever over both runs.
    assert _calls(pytester.path) == Counter({q: 2 for q in _calls(pytester.path)})
    assert len(_calls(pytester.path)) == 5
    run = latest_run(pytester.path)
    summary = _summary(run)
    assert summary["run"]["partial"] is False and summary["verdict"]["coverage"] == \
        "10 of 10 cases"
    assert summary["run"]["resumed"] == {"from": first.name, "reused": 4, "run": 6,
                                         "not_reused": {}}
    assert len(_records(run)) == 10 and all(r["case_key"] for r in _records(run))

    full = pytester.runpytest(SUITE, "-p", "no:cacheprovider", "--ragbench-out", "full")
    full.assert_outcomes(passed=9, failed=1)
    whole = next(p for p in (pytester.path / "full").iterdir() if p.name != "latest")
    assert _results(summary) == _results(_summary(whole))
    assert summary["gates"] == _summary(whole)["gates"]

    def measured(r: Path) -> dict:
        return {(x["retriever"], x["case_id"]): (x["metrics"], x["status"], x["case_key"])
                for x in _records(r)}

    assert measured(run) == measured(whole)


# On the controller, before its worker starts: the runs folder (or, with OLDER_RUN, that one
# run) is out of the worker's sight (hidden, or each cases.jsonl cut to its first record)
# until the run ends, as on another host without a shared filesystem, where it is missing or
# an older copy. A run stops after the case STOP_AFTER.
OTHER_HOST = """
import os, shutil
from pathlib import Path

PART = Path(".ragbench") / "runs" / os.environ.get("OLDER_RUN", "")
HIDDEN = Path("hidden-runs")
MODE = os.environ.get("OTHER_HOST", "")

def pytest_configure_node(node):
    if MODE == "missing" and PART.exists():
        PART.rename(HIDDEN)
    elif MODE == "stale" and not HIDDEN.exists():
        shutil.copytree(PART, HIDDEN, symlinks=True)
        for cases in [*PART.glob("cases.jsonl"), *PART.glob("*/cases.jsonl")]:
            cases.write_text(cases.read_text().splitlines()[0] + "\\n")

def pytest_unconfigure(config):
    if not hasattr(config, "workerinput") and HIDDEN.exists():
        shutil.rmtree(PART, ignore_errors=True)
        HIDDEN.rename(PART)

def pytest_runtest_teardown(item):
    if item.name == os.environ.get("STOP_AFTER"):
        item.session.shouldstop = "stopped after " + item.name
"""


def test_a_resume_whose_workers_cannot_read_the_run_or_an_older_run_of_its_chain_says_so(
        pytester, logged, tmp_path_factory, monkeypatch):
    """The workers read the run to resume at the controller's path, on their own host: one
    without it (``missing``) took 'nothing to resume' and ran every case again, one with an
    older copy (``stale``) resumed from that copy. They checked the newest run against the
    controller's, not the older runs of its chain, whose records a resume stopped early never
    replayed: one without the older run (or with an older copy) ran those cases again, and
    said no more than fewer 'reused'. With --lf, the worker read the run while pytest's
    last-failed plugin chose its cases, before the check: the error escaped as the worker's
    internal error (a traceback) instead of the one collection error.

    A refused resume runs no case and makes no run of its own: every refusal here is of the
    one stopped run (then of the one stopped resume of it), which the next one sees as the
    last did."""
    pytester.makeconftest(OTHER_HOST)
    # with the cache provider: --lf below reads its last failures
    pytester.runpytest(SUITE, "-x").assert_outcomes(passed=3, failed=1)
    first = latest_run(pytester.path)
    what = {"missing": "its run folder is not on the host of this worker",
            "stale": "the host of this worker (*) holds another copy of it (1 record, "}

    # the run itself out of the workers' sight
    for host in ("missing", "stale"):
        monkeypatch.setenv("OTHER_HOST", host)
        gw = tmp_path_factory.mktemp("gateway")
        before = _calls(pytester.path)
        result = pytester.runpytest(SUITE, "--ragbench-resume", f"--tx=popen//chdir={gw}",
                                    "-d", "-p", "no:cacheprovider")
        result.assert_outcomes(errors=1)  # one collection error, no case
        assert _calls(pytester.path) == before
        result.stdout.fnmatch_lines([
            f"ragbench: cannot resume from {first.name}: {what[host]}*"
            f"a resume reads the run in {first} on every host*"])
        assert latest_run(pytester.path) == first  # no run folder of its own

    # and with --lf
    monkeypatch.setenv("OTHER_HOST", "missing")
    gw = pytester.mkdir("gateway")  # inside the project: its rootdir, and its last failures
    result = pytester.runpytest(SUITE, "--lf", "--ragbench-resume", f"--tx=popen//chdir={gw}",
                                "-d")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        f"ragbench: cannot resume from {first.name}: its run folder is not on the host of "
        "this worker*"])
    assert latest_run(pytester.path) == first

    # a resume of it stopped after one case: its newest run holds that record alone
    monkeypatch.delenv("OTHER_HOST")
    monkeypatch.setenv("STOP_AFTER", "q1")
    pytester.runpytest(SUITE, "--ragbench-resume", "-p", "no:cacheprovider").assert_outcomes(
        passed=1)
    second = latest_run(pytester.path)
    assert len(_records(second)) == 1 and len(_records(first)) == 4
    monkeypatch.delenv("STOP_AFTER")

    # the older run of the chain out of the workers' sight
    monkeypatch.setenv("OLDER_RUN", first.name)
    for host in ("missing", "stale"):
        monkeypatch.setenv("OTHER_HOST", host)
        gw = tmp_path_factory.mktemp("gateway")
        result = pytester.runpytest(SUITE, "--ragbench-resume", f"--tx=popen//chdir={gw}",
                                    "-d", "-p", "no:cacheprovider")
        assert _calls(gw) == Counter(), result.stdout.str()  # the worker's retrievals
        result.assert_outcomes(errors=1)  # one collection error, no case
        result.stdout.fnmatch_lines([
            f"ragbench: cannot resume from {second.name}: it resumed {first.name}, whose "
            f"records it holds: {what[host]}*a resume reads the run in {first} on every "
            "host*"])
        assert latest_run(pytester.path) == second

    monkeypatch.delenv("OTHER_HOST")  # the same host: the chain is whole
    resumed = pytester.runpytest(SUITE, "--ragbench-resume", f"--tx=popen//chdir={gw}", "-d",
                                 "-p", "no:cacheprovider")
    resumed.assert_outcomes(passed=9, failed=1)
    resumed.stdout.fnmatch_lines([f"resumed from {second.name}: 4 cases reused, 6 run"])
    assert sum(_calls(gw).values()) == 6


# Workers take the host name WORKER_HOST: another host than the controller's.
WORKERS_ON_ANOTHER_HOST = """
import os, socket

def pytest_configure(config):
    if hasattr(config, "workerinput") and os.environ.get("WORKER_HOST"):
        socket.gethostname = lambda: os.environ["WORKER_HOST"]
"""


@pytest.mark.parametrize("workers", ["gateway", "plain"])
def test_workers_take_the_controllers_word_on_which_runs_are_still_going(
        pytester, logged, tmp_path_factory, monkeypatch, workers):
    """A run is 'still going' when its process is alive on its host; here the workers see
    another host's name, so to them the newer run still going on the controller's host looks
    stopped. ``gateway``: workers in another folder (another host sharing the runs folder)
    resumed from it, where the controller, and -n 0, skip it. ``plain``: with plain -n each
    worker checked for itself, so a run in another terminal finishing between the
    controller's start and a worker's collection made that worker resume from it and the
    others from the run before. Every worker now takes the controller's view."""
    from pytest_ragbench.results.runfolder import _process_start

    pytester.runpytest(SUITE, "-x", "-p", "no:cacheprovider").assert_outcomes(passed=3,
                                                                              failed=1)
    first = latest_run(pytester.path)
    pytester.makeconftest(OTHER_HOST + WORKERS_ON_ANOTHER_HOST)
    monkeypatch.setenv("STOP_AFTER", "q1")
    pytester.runpytest(SUITE, "-p", "no:cacheprovider").assert_outcomes(passed=1)
    going = latest_run(pytester.path)
    assert going != first
    monkeypatch.delenv("STOP_AFTER")
    (going / "summary.json").unlink()
    args = ([f"--tx=popen//chdir={tmp_path_factory.mktemp('gateway')}", "-d"]
            if workers == "gateway" else ["-n", "2"])
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # its process, alive on this host: going, as the controller sees it
        doc = json.loads((going / "run.json").read_text())
        doc["process"].update(pid=alive.pid, start=_process_start(alive.pid))
        (going / "run.json").write_text(json.dumps(doc))
        monkeypatch.setenv("WORKER_HOST", "another-host")
        result = pytester.runpytest(SUITE, "--ragbench-resume", *args, "-p",
                                    "no:cacheprovider")
    finally:
        alive.kill()
        alive.wait()
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines([f"resumed from {first.name}: 4 cases reused, 6 run"])


def test_a_resume_from_a_damaged_run_says_which_line_before_any_case_at_n_0_and_under_xdist(
        pytester, logged):
    # At -n 0 a usage error naming the file and line; under xdist each worker raised it
    # while collecting, and the run ended in an INTERNALERROR saying only 'Unexpectedly no
    # active workers available'; then in a collection error, exit 1 where -n 0 said 4: the
    # run the option names cannot be read, whatever -n is (docs/ci.md's exit codes).
    # A refused resume makes no run: both resume the one damaged run.
    pytester.runpytest(SUITE, "-x", "-p", "no:cacheprovider").assert_outcomes(passed=3,
                                                                              failed=1)
    first = latest_run(pytester.path)
    lines = (first / "cases.jsonl").read_text().splitlines(keepends=True)
    (first / "cases.jsonl").write_text("".join([lines[0], '{"suite": \n', *lines[1:]]))
    for xdist in [(), ("-n", "2")]:
        result = pytester.runpytest(SUITE, "--ragbench-resume", *xdist, "-p",
                                    "no:cacheprovider")
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str(), xdist
        assert result.ret == pytest.ExitCode.USAGE_ERROR, xdist
        errors = [line for line in result.stderr.lines if line.strip()]
        assert len(errors) == 1, result.stderr.lines
        assert fnmatch.fnmatch(errors[0], f"ERROR: ragbench: cannot resume from {first}: "
                                          "cannot read cases.jsonl: *cases.jsonl: line 2: "
                                          "not JSON*"), xdist
        assert "ERROR collecting" not in result.stdout.str()
        assert latest_run(pytester.path) == first


def test_workers_in_the_controllers_folder_read_its_runs_as_they_are_now(
        pytester, logged, monkeypatch):
    # The size check is for workers in another folder or on another host: with plain -n the
    # workers read the controller's very files, which may change between its handing them
    # out and the workers' collection (a run of these suites in another terminal finishing),
    # and such a resume was refused as if from "another copy" on "the host of this worker"
    pytester.runpytest(SUITE, "-x", "-p", "no:cacheprovider").assert_outcomes(passed=3,
                                                                              failed=1)
    pytester.makeconftest(OTHER_HOST)
    monkeypatch.setenv("OTHER_HOST", "stale")
    result = pytester.runpytest(SUITE, "--ragbench-resume", "-n", "1", "-p", "no:cacheprovider")
    assert "cannot resume" not in result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) == 0 and outcomes.get("passed", 0) > 0


# Every case of query q5 ends its worker's process on the spot (a crash, not a failure).
Q5_KILLS_ITS_WORKER = """
import os

def pytest_runtest_setup(item):
    if item.name == "q5":
        os._exit(3)
"""


def test_a_resume_whose_every_run_case_crashed_its_worker_keeps_the_reused_ones_and_says_why(
        pytester, logged):
    """Three things travelled with a worker's case reports, which a worker that died in its
    first case never sent: why a case is not reused, on its own setup report ("4 cases
    reused, 2 run" without the "errored" of a::q5), the records a resume reuses for the
    cases it does not run, and the count of the cases collected, on the first report (the
    resumed run held the crashed cases alone: whole, "2 of 2 cases", no word of the resume).
    One resume shows all three: -n 1 -k q5 runs a::q5 (errored in the stopped run) and b::q5
    (never run), each the first case of a worker that dies in it."""
    pytester.makeconftest("""
        def pytest_runtest_setup(item):
            if item.name == "q5":
                raise RuntimeError("no fixture data")
    """)
    # a::q4 fails and a::q5 errors: the run stops before b's cases
    pytester.runpytest(SUITE, "--maxfail=2", "-p", "no:cacheprovider").assert_outcomes(
        passed=3, failed=1, errors=1)
    first = latest_run(pytester.path)
    pytester.makeconftest(Q5_KILLS_ITS_WORKER)
    result = pytester.runpytest(SUITE, "--ragbench-resume", "-n", "1", "-k", "q5",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([f"resumed from {first.name}: 4 cases reused, 2 run "
                                 "(1 not reused: errored)"])
    run = latest_run(pytester.path)
    assert _summary(run)["verdict"]["coverage"] == "6 of 10 cases"
    assert sorted((r["retriever"], r["case_id"], r["status"]) for r in _records(run)) == [
        *(("a", q, "ok") for q in ("q1", "q2", "q3")), ("a", "q4", "failed"),
        ("a", "q5", "error"), ("b", "q5", "error")]


def test_a_reused_case_skipped_now_is_not_counted_as_reused(pytester, logged):
    # A conftest's skip mark stops a case before its setup takes the earlier record: the case
    # has no record, yet it was counted as reused ("4 cases reused, 5 run" of 9 records, where
    # 3 were reused and 6 ran).
    pytester.runpytest(SUITE, "-x", "-p", "no:cacheprovider").assert_outcomes(passed=3,
                                                                             failed=1)
    first = latest_run(pytester.path)
    pytester.makeconftest("""
        import pytest

        def pytest_collection_modifyitems(items):
            for item in items:
                if item.nodeid.endswith("::a::q1"):
                    item.add_marker(pytest.mark.skip(reason="backend down"))
    """)
    result = pytester.runpytest(SUITE, "--ragbench-resume", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8, failed=1, skipped=1)
    result.stdout.fnmatch_lines([f"resumed from {first.name}: 3 cases reused, 6 run"])
    assert _summary(latest_run(pytester.path))["run"]["resumed"]["reused"] == 3


CLOCK_METRIC = """
class Clock:
    \"\"\"The clock a case is scored against, as a time-dependent metric reads it.\"\"\"
    name = "clock"
    direction = "higher"

    def compute(self, case, result):
        return result.run_start


def pytest_ragbench_register(registry):
    registry.add("metric", "clock", Clock)
"""


# While a file "crash" exists, case a::q2 ends its process on the spot.
A2_CRASHES = """
import os

def pytest_runtest_setup(item):
    if item.nodeid.endswith("::a::q2") and os.path.exists("crash"):
        os._exit(3)
"""


@pytest.mark.parametrize("workers", ["0", "2"])
def test_the_bare_resume_runs_what_a_crash_left_with_or_without_workers(pytester, logged,
                                                                        workers):
    # Without workers a crash kills the run (no summary: the bare option resumes it); under
    # xdist the run goes on with the crashed case as an error record and finishes, and the
    # bare option said "nothing to resume" and ran all ten cases again
    pytester.makeconftest(A2_CRASHES)
    (pytester.path / "crash").touch()
    args = (SUITE, "-p", "no:cacheprovider", "-p", "no:randomly", "-n", workers)
    if workers == "0":
        pytester.runpytest_subprocess(*args)  # the crash ends the process
    else:
        pytester.runpytest(*args).assert_outcomes(passed=8, failed=2)
    first = latest_run(pytester.path)
    finished = sum(r["status"] != "error" for r in _records(first))
    assert finished == (1 if workers == "0" else 9)
    (pytester.path / "crash").unlink()
    result = pytester.runpytest(*args, "--ragbench-resume")
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines([f"resumed from {first.name}: {finished} case"
                                 f"{'' if finished == 1 else 's'} reused, {10 - finished} run*"])
    summary = _summary(latest_run(pytester.path))
    assert summary["verdict"]["coverage"] == "10 of 10 cases"
    assert [s["n_errors"] for s in summary["suites"][0]["retrievers"]] == [0, 0]
    # done: the bare option has nothing left to resume, and names the run it passed over
    resumed = latest_run(pytester.path)
    again = pytester.runpytest(*args, "--ragbench-resume")
    again.stdout.fnmatch_lines([f"ragbench: nothing to resume (the newest run of these suites, "
                                f"{resumed.name}, finished): 10 cases ran, none reused"])


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_resumed_run_scores_its_new_cases_against_the_clock_of_the_run_it_resumes(
        pytester, logged, xdist):
    """temporal_ndcg without ``now`` decays by the run's start: a resumed run that took its
    own scored old and new cases against two different times."""
    pytester.makeconftest(CLOCK_METRIC)
    logged(TWO.replace("mrr@10]", "mrr@10, clock]"))
    pytester.runpytest(SUITE, "-x", "-p", "no:cacheprovider").assert_outcomes(passed=3,
                                                                             failed=1)
    first = latest_run(pytester.path)
    (clock,) = {r["metrics"]["clock"] for r in _records(first)}

    resumed = pytester.runpytest(SUITE, "--ragbench-resume", "-p", "no:cacheprovider", *xdist)
    resumed.stdout.fnmatch_lines([f"resumed from {first.name}: 4 cases reused, 6 run"])
    second = latest_run(pytester.path)
    assert len(_records(second)) == 10
    assert {r["metrics"]["clock"] for r in _records(second)} == {clock}
    # run.json says it, so that a resume of the resumed run keeps it
    assert [json.loads((run / "run.json").read_text())["clock"] for run in (first, second)] \
        == [clock, clock]

    # a resume that keeps no record of the run it resumes is a run of its own: its clock
    # moves on (a chain of such resumes would otherwise score against the first one's start)
    logged(TWO.replace("mrr@10]", "mrr@10, clock]").replace("0.5}", "0.4}"))
    result = pytester.runpytest(SUITE, f"--ragbench-resume={second.name}", "-p",
                                "no:cacheprovider", *xdist)
    result.stdout.fnmatch_lines([f"resumed from {second.name}: 0 cases reused, 10 run*"])
    third = latest_run(pytester.path)
    (own,) = {r["metrics"]["clock"] for r in _records(third)}
    assert own > clock and json.loads((third / "run.json").read_text())["clock"] == own


def test_last_failed_with_resume_then_a_changed_parameter(pytester, logged):
    """Two resumes of one first run (each used to make its own first run)."""
    pytester.runpytest(SUITE).assert_outcomes(passed=9, failed=1)
    first = latest_run(pytester.path)
    before = _calls(pytester.path)

    # --lf with resume judges the whole suite
    result = pytester.runpytest(SUITE, "--lf", "--ragbench-resume")
    result.assert_outcomes(failed=1, deselected=9)
    result.stdout.fnmatch_lines([f"resumed from {first.name}: 9 cases reused, 1 run"])
    assert _calls(pytester.path) - before == Counter({"remove scale with citric acid": 1})
    summary = _summary(latest_run(pytester.path))
    assert summary["verdict"]["partial"] is False
    assert summary["verdict"]["coverage"] == "10 of 10 cases"
    assert _results(summary) == _results(_summary(first))
    result.stdout.fnmatch_lines(["ragbench: FAILED: 1 item failed"])

    # a changed parameter reruns that retriever's cases and says why
    logged(TWO.replace('b: {type: "logged:Logged"}', 'b: {type: "logged:Logged", drop: d3}')
           .replace("thresholds", "gates: {ndcg@10: 0.1}\nthresholds"))
    # Deselected cases keep their earlier records when resuming (a::q4 failed): they count.
    result = pytester.runpytest(SUITE, f"--ragbench-resume={first.name}",
                                "--deselect=suite.yaml::a", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1, deselected=5)  # b::q3 now misses d3
    # A new gate changes no case: a's cases are reused.
    result.stdout.fnmatch_lines([f"resumed from {first.name}: 5 cases reused, 5 run "
                                 "(5 not reused: retriever 'b' parameters changed)",
                                 "ragbench: FAILED: 2 items failed"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # asked by a and b in the first run, by b again now (not by the --lf run)
    assert _calls(pytester.path)["milk temperature for steaming"] == 3
    assert _summary(latest_run(pytester.path))["verdict"]["coverage"] == "10 of 10 cases"


def test_junit_shows_the_failed_cases_a_resume_keeps_without_running_them(pytester, logged):
    """A resumed run deselecting a failed case keeps its record, and fails on it: junit must
    not read green (no item of the case reports)."""
    import xml.etree.ElementTree as ET

    pytester.runpytest(SUITE).assert_outcomes(passed=9, failed=1)  # a::q4 fails
    first = latest_run(pytester.path)
    result = pytester.runpytest(SUITE, f"--ragbench-resume={first.name}", "-k", "q1",
                                "--junitxml=j.xml")
    result.assert_outcomes(passed=2, deselected=8)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    suite = ET.parse(pytester.path / "j.xml").getroot().find("testsuite")
    assert suite is not None and int(suite.get("failures", 0)) == 1
    (case,) = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert case.get("name") == "q4" and "a" in case.get("classname", "")
    assert f"failed in run {first.name}" in case.find("failure").get("message", "")


def test_a_resume_after_the_datasets_metadata_changed_runs_its_cases_again(pytester, logged):
    """A query's tags (markers, the summary's slices, the record) and a document's metadata
    (what temporal_ndcg reads) are not in the content hash baselines compare by, but records
    depend on them: a resume reruns the suite's cases and says why."""
    from conftest import DOCS, QUERIES, write_jsonl

    pytester.runpytest(SUITE).assert_outcomes(passed=9, failed=1)
    first = latest_run(pytester.path)
    queries = [dict(q) for q in QUERIES]
    queries[0]["tags"] = ["espresso", "seasonal"]
    write_jsonl(pytester.path / "queries.jsonl", queries)
    result = pytester.runpytest(SUITE, f"--ragbench-resume={first.name}")
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines([f"resumed from {first.name}: 0 cases reused, 10 run (10 not "
                                 "reused: suite 'mini' dataset metadata changed (*)"])
    (rec,) = [r for r in _records(latest_run(pytester.path))
              if r["case_id"] == "q1" and r["retriever"] == "b"]
    assert rec["tags"] == ["espresso", "seasonal"]

    docs = [dict(d) for d in DOCS]
    docs[0]["metadata"] = {"timestamp": "2026-01-01"}
    write_jsonl(pytester.path / "corpus.jsonl", docs)
    second = latest_run(pytester.path)
    result = pytester.runpytest(SUITE, f"--ragbench-resume={second.name}")
    result.stdout.fnmatch_lines([f"resumed from {second.name}: 0 cases reused, 10 run (10 not "
                                 "reused: suite 'mini' dataset metadata changed (*)"])
    # and with nothing changed, everything is reused
    third = latest_run(pytester.path)
    result = pytester.runpytest(SUITE, f"--ragbench-resume={third.name}")
    result.stdout.fnmatch_lines([f"resumed from {third.name}: 10 cases reused, 0 run"])


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_last_failed_with_resume_after_a_stop_runs_the_cases_never_finished(pytester, logged,
                                                                              xdist):
    # -x stopped the run at a::q4: --lf deselected a::q5 and b's cases as "not failed", and
    # the run passed on 4 of 10 cases
    stopped = pytester.runpytest(SUITE, "-x")
    stopped.assert_outcomes(passed=3, failed=1)
    first = latest_run(pytester.path)
    before = _calls(pytester.path)
    result = pytester.runpytest(SUITE, "--lf", "--ragbench-resume", *xdist)
    result.stdout.fnmatch_lines([f"resumed from {first.name}: 3 cases reused, 7 run"])
    # (xdist's summary does not count its workers' deselections)
    result.assert_outcomes(passed=6, failed=1, deselected=0 if xdist else 3)
    # a::q1-q3 are not retrieved again; a::q4 (failed), a::q5 and b's five are
    assert sum((_calls(pytester.path) - before).values()) == 7
    summary = _summary(latest_run(pytester.path))
    assert summary["verdict"]["coverage"] == "10 of 10 cases"
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_resume_latest_names_the_newest_run_finished_or_not(pytester, logged):
    # Bare, the option resumes only an unfinished newest run; `=latest` is a run reference
    # like any other (it used to be read as the bare option, and refused a finished run)
    pytester.runpytest(SUITE).assert_outcomes(passed=9, failed=1)
    first = latest_run(pytester.path)
    before = _calls(pytester.path)
    result = pytester.runpytest(SUITE, "--ragbench-resume")
    # it names the run it passed over (no errored case a resume of it would run again)
    result.stdout.fnmatch_lines([f"ragbench: nothing to resume (the newest run of these "
                                 f"suites, {first.name}, finished): 10 cases ran, none reused"])
    assert sum((_calls(pytester.path) - before).values()) == 10
    latest = latest_run(pytester.path)
    # another suite's run since: `latest` is still the newest run of this suite
    other = (pytester.path / "suite.yaml").read_text().replace("name: ", "name: other", 1)
    assert other != (pytester.path / "suite.yaml").read_text()
    (pytester.path / "other.yaml").write_text(other)
    pytester.runpytest("--ragbench=other.yaml")
    assert latest_run(pytester.path) != latest
    before = _calls(pytester.path)
    result = pytester.runpytest(SUITE, "--ragbench-resume=latest")
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines([f"resumed from {latest.name}: 10 cases reused, 0 run"])
    assert _calls(pytester.path) == before
    assert _results(_summary(latest_run(pytester.path))) == _results(_summary(first))
    # summary.md says it too (it said nothing of the resume)
    md = (latest_run(pytester.path) / "summary.md").read_text()
    assert f"> Resumed from {latest.name}: 10 cases reused, 0 run.\n" in md
    # and the HTML report's run details (they said nothing of it)
    html = (latest_run(pytester.path) / "report.html").read_text()
    assert f"<dd>resumed from {latest.name}: 10 cases reused, 0 run</dd>" in html
    # the other suite's run named on purpose: a usage error before any case is paid for
    # again (it said "nothing to resume" and ran every case)
    others = sorted(p for p in latest_run(pytester.path).parent.iterdir()
                    if p.is_dir() and not p.is_symlink() and "other.yaml" in (p / "run.json")
                    .read_text())
    result = pytester.runpytest(SUITE, f"--ragbench-resume={others[-1].name}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*ragbench: --ragbench-resume={others[-1].name}: run "
                                 f"{others[-1].name} holds other.yaml, none of the suites of "
                                 "this run (suite.yaml): nothing to resume from it"])
    assert _calls(pytester.path) == before
    # a suite found by collection (a test path) is known only later: a run of it is resumed
    (pytester.path / "x.ragbench.yaml").write_text(other)
    pytester.runpytest("x.ragbench.yaml")
    found = latest_run(pytester.path)
    result = pytester.runpytest(SUITE, "x.ragbench.yaml", f"--ragbench-resume={found.name}")
    result.stdout.fnmatch_lines([f"resumed from {found.name}: 10 cases reused, 10 run"])


def test_the_bare_resume_takes_for_each_suite_the_newest_run_of_it(pytester, logged):
    """A run of two suites stopped in the second; the first resumed alone since (a newer run
    holding it alone, finished): the bare resume of both said "nothing to resume" (the newest
    run of these suites finished) and ran the second suite's finished cases again."""
    (pytester.path / "other.yaml").write_text(
        TWO.replace("name: mini", "name: other").replace('  a: {type: "logged:Logged", '
                                                         'drop: d4}\n', ""))
    both = ("--ragbench=other.yaml", SUITE, "-p", "no:cacheprovider", "-p", "no:randomly")
    pytester.runpytest(*both, "-x").assert_outcomes(passed=8, failed=1)  # a::q4 stops it
    first = latest_run(pytester.path)
    pytester.runpytest("--ragbench=other.yaml", "--ragbench-resume", "-p", "no:cacheprovider"
                       ).stdout.fnmatch_lines([f"resumed from {first.name}: 5 cases reused, "
                                               "0 run"])
    before = _calls(pytester.path)
    result = pytester.runpytest(*both, "--ragbench-resume")
    result.assert_outcomes(passed=14, failed=1)
    # other.yaml's newest run finished: it runs again, as alone; suite.yaml's is resumed
    result.stdout.fnmatch_lines([f"resumed from {first.name}: 4 cases reused, 11 run"])
    assert sum((_calls(pytester.path) - before).values()) == 11
    assert _summary(latest_run(pytester.path))["verdict"]["coverage"] == "15 of 15 cases"


def test_a_failed_case_interrupted_between_its_setup_and_call_counts_once_everywhere(
        pytester, logged):
    """The record comes with the setup report and the failure is raised in the call: a
    Ctrl-C (or the SIGTERM the controller sends its workers) between the two left the case
    failed in the tables and not among the verdict's failed items (17 against 18)."""
    pytester.makeconftest("""
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if item.nodeid == "suite.yaml::a::q4":
        raise KeyboardInterrupt
""")
    result = pytester.runpytest(SUITE, "-p", "no:cacheprovider", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    summary = _summary(latest_run(pytester.path))
    (a,) = (r for s in summary["suites"] for r in s["retrievers"] if r["name"] == "a")
    assert (a["n_cases"], a["n_failed"]) == (4, 1)
    reasons = [r["text"] for r in summary["verdict"]["reasons"] if r["fails"]]
    assert "1 item failed" in reasons, summary["verdict"]
    # --setup-only runs no call and is not interrupted: no failure counted, and no case run
    # (test_plugin_core.py::test_setup_only_and_plan_run_no_case), so no run of its own
    pytester.makeconftest("")
    interrupted = latest_run(pytester.path)
    result = pytester.runpytest(SUITE, "--setup-only", "-p", "no:cacheprovider")
    assert result.ret == 0
    assert latest_run(pytester.path) == interrupted


def test_a_resume_with_x_that_stops_at_a_reused_failure_says_why(pytester, logged):
    """A reused failed case is a failure again: a CI command that always passes -x stopped
    every resume at the same case with no word of why."""
    pytester.runpytest(SUITE, "-x", "-p", "no:cacheprovider").assert_outcomes(passed=3,
                                                                              failed=1)
    for _ in range(2):  # the same stop each time
        result = pytester.runpytest(SUITE, "--ragbench-resume", "-x", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=3, failed=1)
        result.stdout.fnmatch_lines([
            "resumed from *: 4 cases reused, 0 run",
            "ragbench: -x/--maxfail counts the failed cases this resume reuses "
            "(suite.yaml::a::q4) and stopped there; resume without it to run the 6 cases "
            "still missing"])
    # a partial resume that --maxfail did not stop (-k left out cases never run) is not
    # blamed on it
    result = pytester.runpytest(SUITE, "--ragbench-resume", "--maxfail=5", "-k", "not q5",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=7, failed=1, deselected=2)
    result.stdout.fnmatch_lines(["ragbench: FAILED (partial: 8 of 10 cases)*"])
    assert "-x/--maxfail" not in result.stdout.str()
    result = pytester.runpytest(SUITE, "--ragbench-resume", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines(["resumed from *: * cases reused, * run"])
    assert "-x/--maxfail" not in result.stdout.str()


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_resume_stopped_before_its_replays_keeps_the_run_it_resumed(pytester, logged, xdist):
    # a resumed run holds a reused case's record only once its item has replayed it: a
    # resume of a stopped resume ran again what the first run had finished
    pytester.runpytest(SUITE, "suite.yaml::b", "-p", "no:cacheprovider")  # b's 5 cases
    first = latest_run(pytester.path)
    stopped = pytester.runpytest(SUITE, "--ragbench-resume", "-x", "-p", "no:cacheprovider")
    stopped.stdout.fnmatch_lines([f"resumed from {first.name}: *"])
    assert stopped.ret == 1  # a::q4 failed first: b's replays never ran
    middle = latest_run(pytester.path)
    assert len(_records(middle)) < 9
    before = _calls(pytester.path)
    result = pytester.runpytest(SUITE, "--ragbench-resume", *xdist, "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([f"resumed from {middle.name}: 9 cases reused, 1 run"])
    # only a::q5, unfinished in both runs, retrieves again
    assert sum((_calls(pytester.path) - before).values()) == 1
    result.assert_outcomes(passed=9, failed=1)
    assert len(_records(latest_run(pytester.path))) == 10


def test_resume_narrowed_by_node_ids_keeps_every_case_a_case_a_system_and_under_xdist(
        pytester, logged):
    # node ids leave the suite's other cases uncollected (no item to carry their records):
    # they are carried over all the same, and the resumed run is whole. Each resume reuses
    # every case and adds none: the next resumes the run it made, with the same records.
    pytester.runpytest(SUITE).assert_outcomes(passed=9, failed=1)
    first = latest_run(pytester.path)
    for narrowed in [("suite.yaml::b::q2",), ("suite.yaml::b",),
                     ("suite.yaml::b::q2", "-n", "2")]:
        newest = latest_run(pytester.path)
        before = _calls(pytester.path)
        result = pytester.runpytest(SUITE, "--ragbench-resume=latest", *narrowed)
        result.stdout.fnmatch_lines([f"resumed from {newest.name}: 10 cases reused, 0 run"])
        assert _calls(pytester.path) == before, narrowed
        assert latest_run(pytester.path) != newest
        summary = _summary(latest_run(pytester.path))
        assert summary["verdict"]["coverage"] == "10 of 10 cases", narrowed
        assert not summary["verdict"]["partial"]
        assert _results(summary) == _results(_summary(first)), narrowed


# conftest's quick_interrupt_memo as an inner project's conftest, for runs in processes
# of their own: a controller and each xdist worker stopped by SIGTERM format the long
# traceback nobody sees before they end (the workers 0.2-1 s, which the controller waits for).
QUICK_CTRL_C_MEMO = """
from _pytest.terminal import TerminalReporter

_full = TerminalReporter.pytest_keyboard_interrupt


def _memo(self, excinfo):
    if self.config.option.fulltrace:
        _full(self, excinfo)
    else:
        self._keyboardinterrupt_memo = excinfo.getrepr(funcargs=True, style="native")


TerminalReporter.pytest_keyboard_interrupt = _memo
"""


def _start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", SUITE, "-p", "no:cacheprovider", "-v", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _stop_after(proc: subprocess.Popen[str], line: str, sig: int) -> str:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 60
    for out in proc.stdout:
        seen.append(out)
        if line in out or time.monotonic() > deadline:
            break
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=60)
    return "".join(seen) + rest


def test_killed_then_terminated_runs_lose_nothing_and_redo_nothing(pytester, logged):
    pytester.makeconftest(QUICK_CTRL_C_MEMO)
    logged(TWO.replace("  a: {type: \"logged:Logged\", drop: d4}\n", ""))
    queries = ["espresso grind size", "how long to steep cold brew"]
    hold = pytester.path / "hold"
    hold.write_text(queries[0] + "\n")
    killed = _stop_after(_start(pytester.path), "::q1 PASSED", signal.SIGKILL)
    first = latest_run(pytester.path)
    assert not (first / "summary.json").exists(), killed  # killed: no end of run
    assert [r["case_id"] for r in _records(first)] == ["q1"]

    hold.write_text("\n".join(queries) + "\n")
    proc = _start(pytester.path, "--ragbench-resume")
    text = _stop_after(proc, "::q2 PASSED", signal.SIGTERM)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, text
    second = latest_run(pytester.path)
    assert second != first and _summary(second)["run"]["partial"] is True
    assert [r["case_id"] for r in _records(second)] == ["q1", "q2"]
    assert f"resumed from {first.name}: 1 case reused, 1 run" in text

    hold.unlink()
    result = pytester.runpytest(SUITE, "--ragbench-resume", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines([f"resumed from {second.name}: 2 cases reused, 3 run"])
    assert _calls(pytester.path) == Counter({q: 1 for q in _calls(pytester.path)})
    assert len(_calls(pytester.path)) == 5
    assert _summary(latest_run(pytester.path))["verdict"]["coverage"] == "5 of 5 cases"


def _start_in_background(cwd: Path) -> subprocess.Popen[str]:
    """``-n 2`` as a shell starts a background job: SIGINT ignored in every process, in a
    process group of its own (the test signals the group as a terminal's Ctrl-C would)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", SUITE, "-p", "no:cacheprovider", "-v", "-n", "2"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))


def _until_passed(proc: subprocess.Popen[str], nodeid: str) -> list[str]:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if f"PASSED {nodeid}" in line:
            break
    return seen


def _children_end(pid: int, timeout: float) -> None:
    """Wait until process ``pid`` has no child left (its xdist workers), at most ``timeout``."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not children.read_text().split():
                return
        except OSError:  # gone, or no /proc here
            return
        time.sleep(0.05)


# Each xdist worker leaves a file when its session's teardown runs.
WORKER_END_PROBE = """
from pathlib import Path


def pytest_unconfigure(config):
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        Path("ended_" + worker).write_text("")
"""

QUERIES_TEXT = ["espresso grind size", "how long to steep cold brew",
                "milk temperature for steaming", "remove scale with citric acid",
                "keeping beans fresh"]


def test_a_sigterm_to_the_controller_alone_stops_its_workers_at_once(pytester, logged):
    """A supervisor or ``timeout`` signals the controller's process only. The workers used to
    run the cases they were handed for 5 s more (execnet's grace before it interrupts them)
    while the controller no longer recorded them, and a resume ran those again."""
    pytester.makeconftest(WORKER_END_PROBE + QUICK_CTRL_C_MEMO)
    hold = pytester.path / "hold"
    hold.write_text(QUERIES_TEXT[0] + "\n")  # a::q1 passes; each worker waits in its next case
    proc = _start_in_background(pytester.path)
    seen = _until_passed(proc, "suite.yaml::a::q1")
    proc.send_signal(signal.SIGTERM)
    # Then a worker still running cases would run all the rest (the old one did, for 5 s).
    _children_end(proc.pid, 4.0)
    hold.unlink()
    text = "".join(seen) + proc.communicate(timeout=60)[0]
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, text
    interrupted = latest_run(pytester.path)
    assert [(r["retriever"], r["case_id"]) for r in _records(interrupted)] == [("a", "q1")]
    # nothing ran that the controller did not record
    assert _calls(pytester.path) == Counter({QUERIES_TEXT[0]: 1}), text
    # each worker stopped as on a Ctrl-C: its session ended and its teardown ran
    assert sorted(p.name for p in pytester.path.glob("ended_*")) == ["ended_gw0", "ended_gw1"]

    result = pytester.runpytest(SUITE, "--ragbench-resume", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines([f"resumed from {interrupted.name}: 1 case reused, 9 run"])
    assert _calls(pytester.path) == Counter({q: 2 for q in QUERIES_TEXT})


def _taken_by_its_group(pgid: int, sig: int, timeout: float = 10.0) -> None:
    """Wait until no process of group ``pgid`` holds ``sig`` pending, at most ``timeout``.

    A process that ignores the signal drops it when it is sent; one with a handler (or the
    default action) takes it as soon as it next runs: its Python handler runs in the main
    thread then (a sleep or a lock wait is cut short by it), before it can run the rest of its
    cases. This is what a fixed 0.3 s wait gave it time for, without the guess (and the
    wait). Without Linux's /proc, the fixed wait.
    """
    bit = 1 << (sig - 1)
    deadline = time.monotonic() + timeout
    if not Path("/proc/self/status").is_file():
        time.sleep(0.3)
        return
    while time.monotonic() < deadline:
        pending = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rpartition(")")[2].split()[2]) != pgid:
                    continue
                status = (stat.parent / "status").read_text().splitlines()
            except (OSError, ValueError, IndexError):  # ended meanwhile
                continue
            masks = [int(line.split()[1], 16) for line in status
                     if line.startswith(("SigPnd:", "ShdPnd:"))]
            pending = pending or any(m & bit for m in masks)
        if not pending:
            return
        time.sleep(0.01)


def test_a_background_run_still_ignores_a_ctrl_c_at_its_terminal(pytester, logged):
    """A job a shell starts in the background ignores SIGINT, and a Ctrl-C at the terminal
    reaches its whole group: workers must go on ignoring it, as the controller does (making
    them take SIGINT for the controller's own stop lost both of them to it, as crashes)."""
    hold = pytester.path / "hold"
    hold.write_text(QUERIES_TEXT[0] + "\n")
    proc = _start_in_background(pytester.path)
    seen = _until_passed(proc, "suite.yaml::a::q1")
    os.killpg(proc.pid, signal.SIGINT)
    _taken_by_its_group(proc.pid, signal.SIGINT)  # acted on, were it not ignored
    hold.unlink()
    text = "".join(seen) + proc.communicate(timeout=60)[0]
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, text  # a::q4 fails, as designed
    assert "crash" not in text and "keyboard-interrupt" not in text, text
    assert len(_records(latest_run(pytester.path))) == 10
