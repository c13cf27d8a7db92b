"""What a run pays for beyond its cases: the garbage collector, optional modules, run metadata."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_INI, latest_run

SUITE = "--ragbench=suite.yaml"

# Reports, per item, how many objects the collector had frozen when the item ran.
FREEZE_PROBE = """
import gc

def pytest_runtest_setup(item):
    item.config._freeze_counts = getattr(item.config, "_freeze_counts", [])
    item.config._freeze_counts.append(gc.get_freeze_count())

def pytest_terminal_summary(terminalreporter):
    counts = getattr(terminalreporter.config, "_freeze_counts", [])
    terminalreporter.write_line(f"FROZEN {min(counts) if counts else -1}")
"""


def _frozen_during_run(result: pytest.RunResult) -> int:
    line = next(x for x in result.outlines if x.startswith("FROZEN "))
    return int(line.split()[1])


def test_the_collected_heap_is_frozen_during_the_cases_and_thawed_after(pytester, mini_suite,
                                                                          unfrozen_heap):
    mini_suite()
    pytester.makeconftest(FREEZE_PROBE)
    result = pytester.runpytest(SUITE, "--ragbench-no-output")
    result.assert_outcomes(passed=5)
    assert _frozen_during_run(result) > 0
    # An in-process run (pytester, an IDE) gets every object back for the collector.
    assert gc.get_freeze_count() == 0


def test_a_heap_frozen_by_someone_else_is_left_as_it_is(pytester, mini_suite, unfrozen_heap):
    mini_suite()
    pytester.makeconftest(FREEZE_PROBE)
    gc.freeze()  # what a user's conftest or an in-process host may have done
    try:
        before = gc.get_freeze_count()
        assert before > 0
        result = pytester.runpytest(SUITE, "--ragbench-no-output")
        result.assert_outcomes(passed=5)
        # not frozen again (the run's own objects would add thousands), and above all not
        # thawed: the host's freeze survives the run (frozen objects freed meanwhile by
        # reference counting leave the count)
        assert 0 < _frozen_during_run(result) <= before
        assert 0 < gc.get_freeze_count() <= before
    finally:
        gc.unfreeze()


def test_a_heap_frozen_elsewhere_is_counted_once_per_run(pytester, unfrozen_heap, monkeypatch):
    # the count walks every frozen object: a host's large frozen heap cost every run two walks
    from pytest_ragbench.plugin import STATE_KEY

    state = pytester.parseconfigure().stash[STATE_KEY]
    real = gc.get_freeze_count
    calls: list[int] = []
    monkeypatch.setattr(gc, "get_freeze_count", lambda: calls.append(1) or real())
    gc.freeze()
    try:
        state.freeze_heap()  # after collection
        state.freeze_heap()  # an xdist controller again at the session's end
        assert len(calls) == 1
        state.thaw_heap()
        assert real() > 0  # the host's freeze is left as it is
    finally:
        gc.unfreeze()


def test_heap_freezing_can_be_switched_off(pytester, mini_suite, unfrozen_heap):
    mini_suite()
    pytester.makeconftest(FREEZE_PROBE)
    before = gc.get_freeze_count()
    result = pytester.runpytest(SUITE, "--ragbench-no-output", "-o", "ragbench_gc_freeze=false")
    result.assert_outcomes(passed=5)
    assert _frozen_during_run(result) == before


def test_a_run_without_ragbench_cases_leaves_the_collector_alone(pytester, unfrozen_heap):
    pytester.makeconftest(FREEZE_PROBE)
    pytester.makeini(BASE_INI)
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    before = gc.get_freeze_count()
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert _frozen_during_run(result) == before


# Each xdist process says how many objects the collector had frozen at its very end: a
# worker at exit (atexit runs after pytest's cleanups, before the interpreter's own
# collections), the controller at unconfigure (pytest's closing collections come after).
XDIST_FREEZE_PROBE = """
import atexit
import gc
from pathlib import Path

def pytest_configure(config):
    wid = getattr(config, "workerinput", {}).get("workerid")
    if wid:
        out = Path(f"frozen_{wid}.txt").resolve()
        atexit.register(lambda: out.write_text(str(gc.get_freeze_count())))

def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        Path("frozen_controller.txt").write_text(str(gc.get_freeze_count()))
"""


def test_xdist_processes_end_with_their_heaps_frozen(pytester, mini_suite, unfrozen_heap):
    """A worker's process ends with its session, so its heap stays frozen to the end: the
    interpreter's shutdown would otherwise collect it several times over while the
    controller waits for every worker to exit. The controller, which collects nothing,
    freezes its heap when the session ends (pytest's closing collections then skip it) and
    hands it back after, as any run does."""
    mini_suite()
    pytester.makeconftest(XDIST_FREEZE_PROBE)
    result = pytester.runpytest(SUITE, "--ragbench-no-output", "-n", "2")
    result.assert_outcomes(passed=5)
    # (an in-process run numbers its gateways on from the test process's earlier ones)
    probes = sorted(pytester.path.glob("frozen_*.txt"))
    assert len(probes) == 3  # two workers and the controller
    for probe in probes:
        assert int(probe.read_text()) > 0, probe.name
    assert gc.get_freeze_count() == 0


EXIT_PROBE = """
import atexit
import gc
from pathlib import Path

HERE = Path.cwd()


def _after_the_plugin():
    # registered before the plugin's exit handler, so it runs after it
    (HERE / "exit_frozen.txt").write_text(str(gc.get_freeze_count()))


atexit.register(_after_the_plugin)


class Cycle:
    def __del__(self):
        (HERE / "finalized.txt").write_text("yes")


def _garbage_at_exit():
    gc.disable()  # only a collection at exit can find it
    cycle = Cycle()
    cycle.me = cycle


def pytest_configure(config):
    # cleanups run last in, first out: this one after the plugin's, which registers its
    # exit handler; registered after it, this one runs before it (pytest's closing
    # collections are over by then)
    config.add_cleanup(lambda: atexit.register(_garbage_at_exit))
"""


OPTIONAL_MODULES = ("sqlite3", "pytest_ragbench.outputs",
                    "pytest_ragbench.results.compare", "pytest_ragbench.results.history",
                    "pytest_ragbench.results.baseline", "pytest_ragbench.report.html",
                    "pytest_ragbench.budget.wiring")
MODULE_PROBE = f"""
import sys

def pytest_terminal_summary(terminalreporter):
    loaded = sorted(m for m in {OPTIONAL_MODULES!r} if m in sys.modules)
    terminalreporter.write_line(f"LOADED {{loaded}}")
    parser = sorted(m for m in ("yaml", "pydantic") if m in sys.modules)
    terminalreporter.write_line(f"PARSER {{parser}}")
"""


@dataclass
class FreshProcessRun:
    """One plain run of the mini suite in a fresh process, with both probes above: the exit
    probe looks only at the process's end (after the summary), the module probe only at its
    summary, and neither imports a module the other looks for."""

    root: Path
    result: pytest.RunResult


@pytest.fixture(scope="module")
def shared_runs() -> dict[str, Any]:
    """Runs made once for this module, each by the first test that needs it."""
    return {}


@pytest.fixture
def fresh_process(pytester: pytest.Pytester, mini_suite: Any,
                  shared_runs: dict[str, Any]) -> FreshProcessRun:
    # a fresh process costs about a second, the checks on it nothing
    if "fresh" not in shared_runs:
        try:
            mini_suite()
            pytester.makeconftest(EXIT_PROBE + MODULE_PROBE)
            result = pytester.runpytest_subprocess(SUITE, "--ragbench-no-output",
                                                   "-p", "no:hypothesispytest")
            result.assert_outcomes(passed=5)
            shared_runs["fresh"] = FreshProcessRun(pytester.path, result)
        except Exception as exc:
            # the first test shows the failure; the others say so instead of running it again
            shared_runs["fresh"] = f"{type(exc).__name__}: {exc}"
            raise
    run = shared_runs["fresh"]
    if isinstance(run, str):
        pytest.fail(f"the shared fresh-process run failed (see the first test that used it): "
                    f"{run}")
    assert isinstance(run, FreshProcessRun)
    return run


def test_a_run_ends_its_process_with_one_collection_then_a_frozen_heap(
        fresh_process: FreshProcessRun) -> None:
    """The interpreter's shutdown collects the whole heap several times over (0.15-0.2 s
    after the summary is printed); the plugin collects once at exit and freezes the rest.
    Garbage cycles alive then are still collected and finalized, as in any shutdown."""
    assert int((fresh_process.root / "exit_frozen.txt").read_text()) > 0
    assert (fresh_process.root / "finalized.txt").read_text() == "yes"


def test_a_run_with_nothing_to_compare_or_keep_skips_baselines_and_history(
        fresh_process: FreshProcessRun) -> None:
    """The same fresh process also shows that collecting a suite does import the suite parser:
    the guard of tests/test_suite_startup.py (a run without suites imports neither YAML nor
    pydantic) must be able to fail, and a second process only for that cost about a second."""
    fresh_process.result.stdout.fnmatch_lines(["LOADED []", "PARSER [[]'pydantic', 'yaml'[]]"])


def test_suite_gates_against_a_baseline_are_reported_as_skipped_without_one(pytester, mini_suite):
    mini_suite(
        "name: mini\n"
        "dataset:\n  corpus: corpus.jsonl\n  queries: queries.jsonl\n"
        "retrievers:\n  overlap:\n    type: overlap_retriever:Overlap\n"
        "metrics: [ndcg@10, recall@10, mrr@10]\n"
        'gates:\n  - "ndcg@10: drop <= 0.02"\n'
    )
    result = pytester.runpytest(SUITE)
    assert result.ret == 0
    summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
    skipped = [g for g in summary["gates"] if g.get("skipped")]
    assert [(g["text"], g["note"]) for g in skipped] == [
        ("ndcg@10: drop <= 0.02", "no baseline to compare with")]


def test_a_command_line_gate_is_checked_without_a_baseline_or_outputs(pytester, mini_suite):
    mini_suite()
    # a gate the perfect scores of the mini suite miss (a bound above 1, 'ndcg@10 >= 1.01',
    # is refused before the first item, as in a suite file)
    result = pytester.runpytest(SUITE, "--ragbench-no-output", "--ragbench-gate",
                                "ndcg@10 > 1")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*gate failed*ndcg@10 = 1.0000, expected > 1*"])


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_run_records_the_commit_of_its_repository(pytester, mini_suite):
    mini_suite()

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=pytester.path, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q",
        "--allow-empty", "-m", "x")
    result = pytester.runpytest(SUITE)
    assert result.ret == 0
    run = json.loads((latest_run(pytester.path) / "summary.json").read_text())["run"]
    assert run["git_commit"] == git("rev-parse", "HEAD")
    assert run["versions"]["pytest-ragbench"] == __import__("pytest_ragbench").__version__
    assert run["versions"]["pytest"] == pytest.__version__


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_outside_a_repository_the_commit_is_none(pytester, mini_suite):
    mini_suite()
    result = pytester.runpytest(SUITE, "--rootdir", str(pytester.path))
    assert result.ret == 0
    run = json.loads((latest_run(pytester.path) / "summary.json").read_text())["run"]
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=pytester.path, capture_output=True,
                      check=False).returncode == 0:
        pytest.skip("the temporary folder is inside a git repository")
    assert run["git_commit"] is None
