"""Components as plugins, end to end: entry points of real (fake) distributions, conftest
registrations, the make-component hook, --ragbench-list, collection-time validation, the
retriever contract (errors per item, retrieve_case, retrieve_many batching), metric components
and the case-result hook."""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import BASE_INI, DOCS, QUERIES, error_sections, write_jsonl

# Imported here, in the outer process: in-process pytester runs drop modules first imported
# during a run, and numpy's compiled parts (used by scipy.sparse) cannot be imported twice.
import pytest_ragbench.retrievers.bm25  # noqa: F401
from pytest_ragbench import registry as registry_module

# In-process runs stopped by a collection error skip pytest's unseen long traceback.

SUITE = "--ragbench=suite.yaml"
THIRDPARTY = Path(__file__).parent / "data" / "thirdparty"
SITE_A = THIRDPARTY / "site_a"
SITE_B = THIRDPARTY / "site_b"
DATASET = "dataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"

CONFTEST_REGISTER = '''
from overlap_retriever import Overlap


def pytest_ragbench_register(registry):
    registry.add("retriever", "mine", Overlap)
'''


@pytest.fixture
def project(pytester: pytest.Pytester):
    """The mini dataset, the Overlap test retriever, an ini; returns a suite writer."""
    from conftest import OVERLAP_RETRIEVER

    write_jsonl(pytester.path / "corpus.jsonl", DOCS)
    write_jsonl(pytester.path / "queries.jsonl", QUERIES)
    pytester.makepyfile(overlap_retriever=OVERLAP_RETRIEVER)
    pytester.makeini(BASE_INI)

    def write(body: str, name: str = "suite.yaml") -> Path:
        path = pytester.path / name
        path.write_text(DATASET + textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
        return path

    return write


def _pythonpath(monkeypatch: pytest.MonkeyPatch, *sites: Path) -> None:
    """Make fake distributions visible through real package metadata: to in-process runs on
    sys.path (each run scans the entry points anew), to subprocess runs through PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(str(s) for s in sites))
    for site in reversed(sites):
        monkeypatch.syspath_prepend(site)


def _records(pytester: pytest.Pytester) -> list[dict]:
    path = pytester.path / ".ragbench" / "runs" / "latest" / "cases.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- discovery ---------------------------------------------------------------------------------


def test_list_shows_components_with_origins_and_parameters_or_unavailable(pytester, project,
                                                                         monkeypatch):
    """One listing: built-in, plugin, distribution and conftest components with their
    parameters; and one whose module raises on import (its own error, not an ImportError,
    ended --ragbench-list in a traceback), listed as unavailable."""
    _pythonpath(monkeypatch, SITE_A)
    pytester.makepyfile(raises_on_import="raise RuntimeError('no API key configured')\n")
    pytester.makeconftest(CONFTEST_REGISTER.replace(
        '    registry.add("retriever", "mine", Overlap)\n',
        '    registry.add("retriever", "mine", Overlap)\n'
        '    registry.add("retriever", "broken", "raises_on_import:R")\n'))
    result = pytester.runpytest("--ragbench-list", "-p", "no:cacheprovider")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "retrievers (type names for suite files)",
        "  bm25 -- built-in",
        "      parameters: k1=0.9, b=0.4, *",
        "  broken -- conftest conftest.py",
        "      unavailable: cannot import 'raises_on_import' for 'raises_on_import:R': "
        "RuntimeError: no API key configured (at *raises_on_import.py:1)",
        "  extra-registered -- plugin ragbench_extra (distribution ragbench-extra 1.2.0)",
        "      parameters: boost=1.0, min_len=1",
        "  keyword -- distribution ragbench-extra 1.2.0",
        "      parameters: boost=1.0, min_len=1",
        "      Scores documents by the number of query words*",
        "  mine -- conftest conftest.py",
        "      parameters: fail_on='', crash_on='', interrupt_on='', drop=''",
        "embedders (type names for suite files)",
        "  constant -- distribution ragbench-extra 1.2.0",
        "metrics (type names for suite files)",
        "  novelty -- distribution ragbench-extra 1.2.0",
        "      parameters: k=10, weight=1.0",
        "  temporal_ndcg -- built-in",
        "      parameters: k=10, lambda=0.3, T='7d', now=None, field='timestamp', missing='zero', "
        "gain='exponential'",
    ])
    assert "collected" not in result.stdout.str()  # listed, then exited: nothing ran
    assert "Traceback" not in result.stdout.str()


def test_list_marks_conflicts_and_overrides(pytester, project, monkeypatch):
    _pythonpath(monkeypatch, SITE_A, SITE_B)
    pytester.makeconftest("""
        from overlap_retriever import Overlap

        def pytest_ragbench_register(registry):
            registry.add("retriever", "bm25", Overlap)
    """)
    result = pytester.runpytest("--ragbench-list", "-p", "no:cacheprovider")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "  bm25 -- conftest conftest.py (overrides built-in, distribution ragbench-clash 0.3.0)",
        "  keyword -- CONFLICT: provided by distribution ragbench-* and by distribution "
        "ragbench-*",
    ])


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_registration_the_registry_refuses_is_one_line_naming_the_conftest_for_every_suite_file(
        pytester, project, workers):
    """A kind misspelt in registry.add was a traceback through the plugin (a ValueError), and
    under xdist the controller's head start (a.yaml has an LLM) ended the run in an
    INTERNALERROR. The hook ran once, for the first suite file; the next one was built from
    the half-done registry and read "unknown retriever 'mine'", hiding the cause. One run
    (per worker layout) over both suite files shows both."""
    project("""
        retrievers: {mine: {}}
        metrics: [ndcg@10]
        llm: {type: extractive}
    """, name="a.yaml")
    project("""
        retrievers: {mine: {}}
        metrics: [ndcg@10]
    """, name="b.yaml")
    pytester.makeconftest("""
        from overlap_retriever import Overlap

        def pytest_ragbench_register(registry):
            registry.add("retriever", "other", Overlap)
            registry.add("retrievr", "mine", "overlap_retriever:Overlap")
    """)
    result = pytester.runpytest("--ragbench=a.yaml", "--ragbench=b.yaml", "-p",
                                "no:cacheprovider", *workers)
    out = result.stdout.str()
    assert "INTERNALERROR" not in out and "registry.py" not in out, out
    assert result.ret in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.TESTS_FAILED)
    assert "unknown retriever 'mine'" not in out, out
    # xdist shows the first collection error of its workers only
    for name in ("a.yaml", "b.yaml")[:1 if workers else 2]:
        result.stdout.fnmatch_lines([
            f"*ERROR collecting {name}*",
            "conftest conftest.py: pytest_ragbench_register: unknown component kind 'retrievr' "
            "(did you mean 'retriever'?) (expected one of retriever, pipeline, llm, embedder, "
            "metric)"])


def test_duplicate_name_from_two_distributions_fails_naming_both(pytester, project,
                                                                  monkeypatch):
    _pythonpath(monkeypatch, SITE_A, SITE_B)
    project("""
        retrievers: {kw: {type: keyword}}
        metrics: [ndcg@10]
    """)
    result = pytester.runpytest(SUITE, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    line = next(ln for ln in result.outlines if "is provided by" in ln)
    assert "suite.yaml:2: retrievers.kw: retriever 'keyword' is provided by" in line
    assert "distribution ragbench-extra 1.2.0" in line
    assert "distribution ragbench-clash 0.3.0" in line
    assert "Traceback" not in result.stdout.str()


def test_registration_from_two_conftests_fails_naming_both(pytester, project):
    pytester.makeconftest(CONFTEST_REGISTER)
    sub = pytester.mkpydir("sub")
    (sub / "conftest.py").write_text(CONFTEST_REGISTER)
    (sub / "suite.ragbench.yaml").write_text(
        "dataset: {corpus: ../corpus.jsonl, queries: ../queries.jsonl}\n"
        "retrievers: {mine: {}}\nmetrics: [ndcg@10]\n")
    result = pytester.runpytest("sub")
    result.stdout.fnmatch_lines(["*retriever 'mine' is registered twice: by conftest "
                                 "conftest.py and by conftest sub/conftest.py*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_distribution_and_conftest_components_registered_made_by_the_hook_and_a_failing_metric(
        pytester, project, monkeypatch):
    """One conftest, one run, four suites: a third-party distribution's retriever and metric
    discovered and used (thirdparty.yaml), a conftest-registered retriever (its parameter
    reaches the class), the make-component hook building a name the registry lacks (and passing
    on bm25, which the registry builds), and a conftest metric with parameters that fails for
    one case."""
    _pythonpath(monkeypatch, SITE_A)
    project("""
        name: thirdparty
        retrievers:
          kw: {type: keyword, boost: 2.0}
        metrics: [ndcg@10, {name: novelty@3, weight: 2.0}]
    """, name="thirdparty.yaml")
    pytester.makeconftest("""
        from overlap_retriever import Overlap

        class Depth:
            direction = "lower"

            def __init__(self, k=10, *, scale=1.0):
                self.k, self.scale, self.name = k, scale, f"depth@{k}"

            def compute(self, case, result):
                if case.id == "q5":
                    raise ZeroDivisionError("no depth for q5")
                return self.scale * len(result.ranked[: self.k])

        def pytest_ragbench_register(registry):
            registry.add("retriever", "mine", Overlap)
            registry.add("metric", "depth", Depth)

        def pytest_ragbench_make_component(kind, name, params, context):
            if kind == "retriever" and name == "virtual":
                return Overlap(**params)
            return None
    """)
    project("""
        retrievers: {mine: {drop: d4}}
        metrics: [recall@10]
    """, name="registered.yaml")
    project("""
        retrievers:
          v: {type: virtual, drop: d1}
          b: {type: bm25}
        metrics: [ndcg@10]
    """, name="hook.yaml")
    project("""
        retrievers: {o: {type: "overlap_retriever:Overlap"}}
        metrics: [ndcg@10, {name: depth@2, scale: 10, as: depth_x10}]
        gates:
          depth_x10: "<= 20"
    """, name="metric.yaml")
    result = pytester.runpytest("--ragbench-summary=full", "--ragbench=thirdparty.yaml",
                                "--ragbench=registered.yaml", "--ragbench=hook.yaml",
                                "--ragbench=metric.yaml")
    result.assert_outcomes(passed=5 + 5 + 10 + 4, errors=1)
    # the distribution's system: its row (5 cases, 0 errors) and its metric in the summary
    result.stdout.fnmatch_lines(["  kw*5*0 *"])
    result.stdout.fnmatch_lines(["*novelty@3 *"])
    result.stdout.fnmatch_lines(["  mine: 5 cases, 0 errors*"])
    result.stdout.fnmatch_lines([
        "*error [[]metric[]]: metric 'depth_x10' raised ZeroDivisionError: no depth for q5*",
        "    depth_x10 *",
        "*PASS metric/o: depth_x10 * <= 20*",
    ])
    recs = _records(pytester)
    registered = {r["case_id"]: r for r in recs if r["suite_name"] == "registered"}
    assert registered["q4"]["metrics"]["recall@10"] == 0.0  # the parameter reached the class
    # the hook builds virtual, the registry bm25
    hook = [r for r in recs if r["suite_name"] == "hook"]
    assert sorted(r["retriever"] for r in hook) == ["b"] * 5 + ["v"] * 5
    assert all(r["status"] == "ok" for r in hook)
    metric = {r["case_id"]: r for r in recs if r["suite_name"] == "metric"}
    assert metric["q1"]["metrics"]["depth_x10"] == 20.0
    assert metric["q5"]["status"] == "error"
    thirdparty = {r["case_id"]: r for r in recs if r["suite_name"] == "thirdparty"}
    assert {r["retriever"] for r in thirdparty.values()} == {"kw"} and len(thirdparty) == 5
    # q3 "milk temperature for steaming" retrieves d3 (labelled) and d2 ("for"; not labelled
    # for q3): novelty = weight 2 * 1/2
    assert thirdparty["q3"]["metrics"]["novelty@3"] == pytest.approx(1.0)


# -- collection-time validation ----------------------------------------------------------------
# One run collects every broken suite file: each gets its own collection error block, the one
# that a run of that file alone shows.

BROKEN = {
    "attr.yaml": ("""
        retrievers: {x: {type: "overlap_retriever:Nope"}}
        metrics: [ndcg@10]
    """, "{file}:2: retrievers.x: 'overlap_retriever' has no attribute 'Nope'"),
    # a factory that built something else (one that forgot its return built None): refused
    # before the first item, as a pipeline without answer() is, not an error in every item
    "contract.yaml": ("""
        retrievers: {x: {type: "collections:OrderedDict"}}
        metrics: [ndcg@10]
    """, "{file}:2: retrievers.x: retriever 'x' (collections:OrderedDict) built OrderedDict, "
         "which has no index(corpus) and no retrieve(query, k) method"),
    "param.yaml": ("""
        retrievers:
          o: {type: "overlap_retriever:Overlap", fial_on: milk}
        metrics: [ndcg@10]
    """, "{file}:3: retrievers.o.fial_on: retriever 'overlap_retriever:Overlap' got unknown "
         "parameter(s) fial_on (did you mean 'fail_on'?); it accepts: fail_on, crash_on, "
         "interrupt_on, drop"),
    "embedder.yaml": ("""
        retrievers:
          dense: {type: dense, embedder: {type: hashin, dim: 8}}
        metrics: [ndcg@10]
    """, "{file}:3: retrievers.dense.embedder: unknown embedder 'hashin' (did you mean "
         "'hashing'?) (known: hashing, openai, sentence-transformers; *"),
    "optional.yaml": ("""
        retrievers:
          dense: {type: dense, embedder: {type: sentence-transformers, model: all-MiniLM-L6-v2}}
        metrics: [ndcg@10]
    """, "*retrievers.dense.embedder: embedder 'sentence-transformers' needs the optional "
         "package 'no_such_module_for_ragbench', which is not installed: "
         "pip install 'pytest-ragbench[[]dense[]]'"),
    "cycle.yaml": ("""
        retrievers:
          a: {type: hybrid, retrievers: [b, bm25]}
          b: {type: hybrid, retrievers: [a, bm25]}
          bm25: {}
        metrics: [ndcg@10]
    """, "*retrievers.a: retriever 'hybrid': hybrid retrievers form a cycle: a -> b -> a"),
    "metric.yaml": ("""
        retrievers: {bm25: {}}
        metrics: [{name: temporal_ndcg@10, lamda: 0.5}]
    """, "{file}:3: metrics[[]0[]].lamda: metric 'temporal_ndcg' got unknown parameter(s) lamda "
         "(did you mean 'lambda'?); it accepts: k, lambda, T, now, field, missing, gain"),
}


def test_bad_components_are_one_collection_error_each(pytester, project, monkeypatch):
    """A module path without the attribute, a factory that built no retriever, an unknown
    parameter (the component's parameters listed), an unknown nested embedder, a missing
    optional package (with the install hint), a hybrid cycle, an unknown metric parameter:
    each file's one error block says it."""
    monkeypatch.setitem(registry_module.REQUIRES["embedder"], "sentence-transformers",
                        ("no_such_module_for_ragbench", "pip install 'pytest-ragbench[dense]'"))
    for name, (body, _) in BROKEN.items():
        project(body, name=name)
    result = pytester.runpytest(*(f"--ragbench={name}" for name in BROKEN))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    sections = error_sections(out)
    assert set(sections) == set(BROKEN), out
    for name, (_, pattern) in BROKEN.items():
        expected = pattern.replace("{file}", "*" + name)
        assert [line for line in sections[name] if fnmatch.fnmatchcase(line, expected)], (
            name, expected, sections[name])
    assert "Traceback" not in out


# -- the retriever contract --------------------------------------------------------------------

MISBEHAVING = '''
class Misbehaving:
    """Each query breaks the contract in another way."""

    def index(self, corpus):
        pass

    def retrieve(self, query, k):
        if "espresso" in query:
            raise RuntimeError("backend down")
        if "cold brew" in query:
            return [("d9", 1.0)]
        if "milk" in query:
            return [("d3", 1.0), ("d3", 0.5)]
        if "citric" in query:
            return [("d1", 1.0), ("d2", 0.9), ("d3", 0.8), ("d4", 0.7)]
        return [("d6", float("inf"))]
'''


BATCHED = '''
import json, os

class Batched:
    """Only retrieve_many works; every call is logged to batches.jsonl."""

    def __init__(self, log="batches.jsonl", broken=False):
        self.log, self.broken = log, broken

    def index(self, corpus):
        self.ids = sorted(d.id for d in corpus)

    def retrieve(self, query, k):
        if not self.broken:
            raise AssertionError("retrieve called although retrieve_many exists")
        return [(self.ids[0], 1.0)]

    async def retrieve_many(self, queries, k):
        with open(self.log, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "queries": list(queries)}) + "\\n")
        if self.broken:
            return []  # wrong length: the runtime must fall back to retrieve
        return [[(self.ids[0], 1.0)] for _ in queries]
'''


def _batches(pytester: pytest.Pytester) -> list[dict]:
    path = pytester.path / "batches.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_retriever_contract(pytester, project):
    """One run, three suites: every contract violation is a per-item error and the run goes
    on; a broken retrieve_many falls back to retrieve; retrieve_case is preferred and gets the
    query id."""
    pytester.makepyfile(misbehaving=MISBEHAVING, batched=BATCHED, byid="""
        class ById:
            def index(self, corpus):
                pass
            def retrieve(self, query, k):
                raise AssertionError("retrieve_case must be preferred")
            def retrieve_many(self, queries, k):
                raise AssertionError("retrieve_case must be preferred")
            def retrieve_case(self, query, k):
                return [(d, float(g)) for d, g in query.relevant.items() if g > 0][:k]
    """)
    project("""
        retrievers:
          bad: {type: "misbehaving:Misbehaving"}
          good: {type: "overlap_retriever:Overlap"}
        metrics: [ndcg@3]
        k: 3
    """, name="contract.yaml")
    project("""
        retrievers: {b: {type: "batched:Batched", broken: true}}
        metrics: [recall@10]
    """, name="broken.yaml")
    project("""
        retrievers: {oracle: {type: "byid:ById"}}
        metrics: [ndcg@10]
    """, name="byid.yaml")
    result = pytester.runpytest("--ragbench-summary=full", "--ragbench=contract.yaml",
                                "--ragbench=broken.yaml", "--ragbench=byid.yaml",
                                "-p", "no:randomly")
    result.assert_outcomes(passed=5 + 5 + 5, errors=5)
    result.stdout.fnmatch_lines_random([
        "*retriever 'bad' raised RuntimeError: backend down*",
        "*retriever 'bad' returned unknown document id 'd9' at rank 1*",
        "*retriever 'bad' returned document 'd3' twice*",
        "*retriever 'bad' returned 4 results, more than k=3*",
        "*retriever 'bad' returned a non-finite score (inf) for 'd6'*",
    ])
    result.stdout.fnmatch_lines(["  bad: 5 cases, 5 errors*", "  good: 5 cases, 0 errors*"])
    # broken retrieve_many: tried once, then switched off for this retriever
    assert len(_batches(pytester)) == 1
    # only the byid suite computes ndcg@10: retrieve_case returned the labelled documents
    result.stdout.fnmatch_lines(["    ndcg@10 *1.0000 *"])
    errors = [r for r in _records(pytester) if r["status"] == "error"]
    assert {r["retriever"] for r in errors} == {"bad"}


def test_retrieve_many_batches_the_items_this_process_runs(pytester, project):
    pytester.makepyfile(batched=BATCHED)
    project("""
        retrievers: {b: {type: "batched:Batched"}}
        metrics: [recall@10, latency_ms]
    """)
    result = pytester.runpytest(SUITE, "-k", "not q3")
    result.assert_outcomes(passed=4)
    batches = _batches(pytester)
    assert len(batches) == 1  # one call for every selected case, none for the deselected one
    assert batches[0]["queries"] == [q["text"] for q in QUERIES if q["_id"] != "q3"]
    latencies = {r["latency_ms"] for r in _records(pytester)}
    assert len(latencies) == 1  # batch time / n, the same for each case of the batch
    assert next(iter(latencies)) is not None


# -- metrics as components and the case-result hook -------------------------------------------


# Under xdist, one run shows four things: the case-result hook runs on the controller; workers
# share its run start; retrieve_many batches each worker's queue; the workers discover an
# installed distribution's components (keyword, novelty). Each needs workers, and workers are
# what cost time: the -n 2 run of tests/test_batch_identity.py::
# test_batching_retrievers_serial_equals_xdist collects this suite (XDIST_SUITE) too, set up
# by prepare_xdist_suite and checked by check_xdist_run.

XDIST_CONFTEST = """
    import json, os

    class Start:
        name = "run_start"
        direction = "higher"

        def compute(self, case, result):
            return result.run_start

    def pytest_ragbench_register(registry):
        registry.add("metric", "run_start", Start)

    def pytest_ragbench_case_result(record, config):
        with open(config.rootpath / "sink.jsonl", "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "case": record["case_id"],
                                 "retriever": record["retriever"],
                                 "ndcg": record["metrics"].get("ndcg@10")}) + "\\n")
"""
XDIST_SUITE = "components.yaml"
XDIST_RETRIEVERS = ("o", "b", "kw")


def prepare_xdist_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> str:
    """Write the suite, its conftest and modules, and put the distribution on the workers'
    path; returns the suite file's name (its suite is named "components")."""
    _pythonpath(monkeypatch, SITE_A)
    # The workers of an in-process run start with the sys.path xdist froze when the outer
    # interpreter imported it (not PYTHONPATH): the distribution goes on that path, as if it
    # were installed.
    import xdist.workermanage

    monkeypatch.setattr(xdist.workermanage, "_sys_path", [str(SITE_A), *sys.path])
    pytester.makepyfile(batched=BATCHED)
    pytester.makeconftest(XDIST_CONFTEST)
    (pytester.path / XDIST_SUITE).write_text(DATASET + textwrap.dedent("""
        name: components
        retrievers: {o: {type: "overlap_retriever:Overlap"}, b: {type: "batched:Batched"},
                     kw: {type: keyword}}
        metrics: [ndcg@10, run_start, novelty@3]
    """).lstrip("\n"), encoding="utf-8")
    return XDIST_SUITE


def check_xdist_run(pytester: pytest.Pytester) -> None:
    """After one -n 2 run that collected the suite (and one serial run that did not)."""
    # The case-result hook runs on the controller only.
    sink = [json.loads(line) for line in (pytester.path / "sink.jsonl").read_text().splitlines()]
    for retriever in XDIST_RETRIEVERS:
        assert sorted(s["case"] for s in sink if s["retriever"] == retriever) == [
            "q1", "q2", "q3", "q4", "q5"]
    assert {s["pid"] for s in sink} == {os.getpid()}  # the in-process controller
    assert all(isinstance(s["ndcg"], float) for s in sink if s["retriever"] in XDIST_RETRIEVERS)
    records = [r for r in _records(pytester) if r["suite_name"] == "components"]
    assert len(records) == 15
    assert {r["retriever"] for r in records} == set(XDIST_RETRIEVERS)
    # the distribution's retriever and metric ran in the workers
    assert len([r for r in records if r["retriever"] == "kw"]) == 5
    assert all(isinstance(r["metrics"]["novelty@3"], float) for r in records)
    # Workers share the controller's run start.
    starts = {r["metrics"]["run_start"] for r in records}
    assert len(starts) == 1  # temporal metrics' default "now" agrees across workers
    # retrieve_many under xdist batches each worker's queue.
    batches = _batches(pytester)
    seen = [q for b in batches for q in b["queries"]]
    assert set(seen) == {q["text"] for q in QUERIES}
    assert len(batches) < 5  # some cases were served from a batch
