"""Fixtures for hand-written tests: parametrizing over a suite's cases, the retriever, LLM and
embedder fixtures, and ragbench_record producing records aggregated like collected cases."""

from __future__ import annotations

import json
import re
import signal
import textwrap
import time

import pytest
from conftest import BASE_INI, DOCS, OVERLAP_RETRIEVER, QUERIES, error_sections, write_jsonl

# Imported here, in the outer process: in-process pytester runs drop modules first imported
# during a run, and numpy's compiled parts (used by scipy.sparse) cannot be imported twice.
import pytest_ragbench.retrievers.bm25  # noqa: F401

SUITE_TEXT = """\
name: mini
dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
retrievers:
  overlap: {type: "overlap_retriever:Overlap"}
  bm25: {}
metrics: [ndcg@10, recall@10]
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A dataset and suite in a sub folder (not collected as suite items: named suite.yaml)."""
    write_suite_folder(pytester)
    pytester.makeini(BASE_INI)
    return pytester


def write_suite_folder(pytester: pytest.Pytester) -> None:
    data = pytester.mkdir("suites")
    write_jsonl(data / "corpus.jsonl", DOCS)
    write_jsonl(data / "queries.jsonl", QUERIES)
    (data / "suite.yaml").write_text(SUITE_TEXT, encoding="utf-8")
    pytester.makepyfile(overlap_retriever=OVERLAP_RETRIEVER)


def _records(pytester: pytest.Pytester) -> list[dict]:
    path = pytester.path / ".ragbench" / "runs" / "latest" / "cases.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _test_file(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(test_hand=textwrap.dedent(body))


def _passed(result: pytest.RunResult, test: str, file: str = "test_hand.py") -> list[str]:
    """The ids of ``test``'s items (in ``file``) that passed (from ``-v`` output)."""
    return [m.group(1) for line in result.outlines
            if (m := re.match(rf"{re.escape(file)}::{test}\[(.+?)\] PASSED", line))]


APP_SUITE = """\
name: app
dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
pipelines:
  app: {type: "app_pipeline:App"}
metrics: [recall@10]
"""

APP_PIPELINE = """
class App:
    def answer(self, query):
        return {"answer": "?", "contexts": [{"id": "d1"}]}
"""


# Hand-written tests that pass (or fail on purpose), one test file each, share one run: a run's
# start-up costs more than their items, and each file's items, records and suites are its
# own. test_hand_written_tests_in_one_run runs them; one check function per file.
HAND_TESTS = {
    # one test function per way of parametrizing over a suite's cases
    "test_hand": """
        import pytest
        from pytest_ragbench.fixtures import cases

        # the marker: one item per case, with labels and metadata
        @pytest.mark.ragbench_suite("suites/suite.yaml", retriever="overlap")
        def test_case(ragbench_case):
            assert ragbench_case.text
            if ragbench_case.id == "q1":
                assert dict(ragbench_case.relevant) == {"d1": 2, "d5": 1}
                assert ragbench_case.difficulty == "easy"
                assert ragbench_case.tags == ("espresso",)

        # without a retriever the test runs for every retriever
        @pytest.mark.ragbench_suite("suites/suite.yaml")
        def test_every(ragbench_case, ragbench_retriever):
            assert ragbench_retriever.name in ("overlap", "bm25")

        # the retriever fixture retrieves checked hits
        @pytest.mark.ragbench_suite("suites/suite.yaml", retriever="bm25")
        def test_top_hit_is_relevant(ragbench_case, ragbench_retriever):
            hits = ragbench_retriever.retrieve(ragbench_case, k=3)
            assert len(hits) <= 3
            assert hits == sorted(hits, key=lambda h: -h[1])
            assert ragbench_retriever.component.__class__.__name__ == "BM25Retriever"
            top = hits[0][0]
            assert ragbench_case.relevant.get(top, 0) > 0, (ragbench_case.id, hits)

        @pytest.mark.ragbench_suite("suites/suite.yaml", retriever="overlap")
        def test_text_query(ragbench_retriever):
            assert ragbench_retriever.retrieve("cold brew")[0][0] == "d2"

        # the cases() helper parametrizes directly
        @pytest.mark.parametrize("ragbench_case", cases("suites/suite.yaml", retriever="bm25"),
                                 indirect=True)
        def test_helper(ragbench_case, ragbench_retriever, ragbench_record):
            assert ragbench_retriever.name == "bm25"
            ragbench_record("len", len(ragbench_case.text))
    """,
    # over a suite of pipelines (suites/app.yaml)
    "test_app": """
        import pytest
        from pytest_ragbench.fixtures import cases

        @pytest.mark.ragbench_suite("suites/app.yaml")
        def test_every(ragbench_case, ragbench_record):
            ragbench_record("one", 1.0)

        @pytest.mark.ragbench_suite("suites/app.yaml", retriever="app")
        def test_named(ragbench_case, ragbench_record):
            ragbench_record.evaluate([("d1", 1.0)])

        @pytest.mark.parametrize("ragbench_case", cases("suites/app.yaml", retriever="app"),
                                 indirect=True)
        def test_helper(ragbench_case, ragbench_retriever):
            pass
    """,
    # async tests (pytest-asyncio) of an async retriever and an async pipeline
    "test_async": """
        import pytest

        @pytest.mark.asyncio
        @pytest.mark.ragbench_suite("suites/async.yaml", retriever="slow")
        async def test_retrieve(ragbench_case, ragbench_retriever, ragbench_record):
            ragbench_record.evaluate(ragbench_retriever.retrieve(ragbench_case))

        @pytest.mark.asyncio
        @pytest.mark.ragbench_suite("suites/async_app.yaml")
        async def test_score(ragbench_case, ragbench_record):
            scores = ragbench_record.score("a fine grind", ["Espresso needs a fine grind."],
                                           references=["a fine grind"])
            assert scores["token_f1"] == 1.0
    """,
    # a context variable the test sets, seen by the retriever
    "test_traced": """
        import pytest
        from traced_parts import DOC

        @pytest.mark.ragbench_suite("suites/traced.yaml", retriever="traced")
        def test_sync(ragbench_case, ragbench_retriever):
            DOC.set("d1")
            assert ragbench_retriever.retrieve(ragbench_case)[0][0] == "d1"

        @pytest.mark.asyncio
        @pytest.mark.ragbench_suite("suites/traced.yaml", retriever="traced")
        async def test_async(ragbench_case, ragbench_retriever):
            DOC.set("d1")
            assert ragbench_retriever.retrieve(ragbench_case)[0][0] == "d1"

        @pytest.mark.ragbench_suite("suites/traced.yaml", retriever="bounded")
        def test_bounded(ragbench_case, ragbench_retriever):
            DOC.set("d1")
            assert ragbench_retriever.retrieve(ragbench_case)[0][0] == "d1"
    """,
}

ASYNC_PARTS = """
    import asyncio

    class Slow:
        async def index(self, corpus):
            await asyncio.sleep(0)

        async def retrieve(self, query, k):
            await asyncio.sleep(0)
            return [("d1", 1.0)]

    class App:
        async def answer(self, query):
            return "a fine grind"
"""

TRACED_PARTS = """
    import contextvars

    DOC = contextvars.ContextVar("doc", default="d2")

    class Traced:
        def index(self, corpus):
            pass

        async def retrieve(self, query, k):
            return [(DOC.get(), 1.0)]

    class Bounded(Traced):
        def retrieve(self, query, k):
            return [(DOC.get(), 1.0)]
"""

HAND_SUITES = {
    "app.yaml": APP_SUITE,
    "async.yaml": """\
        name: async
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers:
          slow: {type: "async_parts:Slow"}
        metrics: [recall@10]
    """,
    "async_app.yaml": """\
        name: async_app
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines:
          app: {type: "async_parts:App"}
        metrics: [token_f1]
    """,
    "traced.yaml": """\
        name: traced
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl, max_queries: 1}
        retrievers:
          traced: {type: "traced_parts:Traced"}
          bounded: {type: "traced_parts:Bounded", case_timeout: 30}
        metrics: [recall@10]
    """,
}


def test_hand_written_tests_in_one_run(project):
    """The hand-written tests of HAND_TESTS, one run: each check below is one file's."""
    for name, text in HAND_SUITES.items():
        (project.path / "suites" / name).write_text(textwrap.dedent(text), encoding="utf-8")
    project.makepyfile(app_pipeline=APP_PIPELINE, async_parts=textwrap.dedent(ASYNC_PARTS),
                       traced_parts=textwrap.dedent(TRACED_PARTS))
    project.makepyfile(**{name: textwrap.dedent(body) for name, body in HAND_TESTS.items()})
    result = project.runpytest("-v", "-p", "no:randomly", *(f"{name}.py" for name in HAND_TESTS))
    result.assert_outcomes(passed=(5 + 10 + 5 + 1 + 5) + 10 + 10 + 3, errors=5)
    recs = _records(project)
    _marker_retriever_fixture_and_cases_helper_parametrize_over_cases(result, recs)
    _hand_written_tests_over_a_suite_of_pipelines(result, recs)
    _the_fixtures_work_inside_an_async_test(result, recs)
    _a_tests_context_reaches_the_retriever_whatever_runs_it(result)


def _marker_retriever_fixture_and_cases_helper_parametrize_over_cases(
        result: pytest.RunResult, recs: list[dict]) -> None:
    result.stdout.fnmatch_lines(["*test_hand.py::test_case[[]q1[]] PASSED*",
                                 "*test_hand.py::test_case[[]q5[]] PASSED*"])
    assert len(_passed(result, "test_case")) == 5
    result.stdout.fnmatch_lines(["*test_hand.py::test_every[[]overlap-q1[]]*",
                                 "*test_hand.py::test_every[[]bm25-q5[]]*"])
    assert len(_passed(result, "test_every")) == 10
    assert len(_passed(result, "test_top_hit_is_relevant")) == 5
    assert "test_hand.py::test_text_query PASSED" in result.stdout.str()
    result.stdout.fnmatch_lines(["*test_hand.py::test_helper[[]q3[]] PASSED*"])
    assert len(_passed(result, "test_helper")) == 5
    assert {r["metrics"]["len"] for r in recs if "len" in r["metrics"]} == {
        float(len(q["text"])) for q in QUERIES}


def _hand_written_tests_over_a_suite_of_pipelines(result: pytest.RunResult,
                                                  recs: list[dict]) -> None:
    """A suite whose systems are pipelines (the user's RAG app) gave hand-written tests no
    case: the marker's test was skipped ("got empty parameter set"), and naming the pipeline
    was "has no retriever 'app' (it has: )". (A name that is not one of them lists them: in
    test_a_bad_suite_retriever_or_pipeline_named_by_a_marker_or_cases_is_one_collection_error.)
    """
    # (none skipped: the run's outcomes count no skip)
    assert len(_passed(result, "test_every", "test_app.py")) == len(
        _passed(result, "test_named", "test_app.py")) == 5
    # the retriever fixture on a pipeline's case says what it is instead: the run's 5 errors
    assert len([line for line in result.outlines
                if re.match(r"test_app\.py::test_helper\[q\d\] ERROR", line)]) == 5
    result.stdout.fnmatch_lines(["*ragbench_retriever: 'app' is a pipeline of *app.yaml, "
                                 "not a retriever*"])
    by_key = {(r["suite"], r["case_id"]): r for r in recs}
    named = by_key["test_app.py::test_named", "q1"]
    assert named["retriever"] == "app" and named["metrics"]["recall@10"] == 0.5
    assert by_key["test_app.py::test_every", "q5"]["metrics"]["one"] == 1.0


def _the_fixtures_work_inside_an_async_test(result: pytest.RunResult,
                                            recs: list[dict]) -> None:
    """Called from an async test (pytest-asyncio), ragbench_retriever.retrieve of an async
    retriever and ragbench_record.score failed: "retriever 'slow' raised RuntimeError: Cannot
    run the event loop while another loop is running", blaming the retriever."""
    assert len(_passed(result, "test_retrieve", "test_async.py")) == 5
    assert len(_passed(result, "test_score", "test_async.py")) == 5
    retrieved = [r for r in recs if r["suite"] == "test_async.py::test_retrieve"]
    assert sorted(r["metrics"]["recall@10"] for r in retrieved) == [0.0, 0.0, 0.0, 0.0, 0.5]


def _a_tests_context_reaches_the_retriever_whatever_runs_it(result: pytest.RunResult) -> None:
    """A context variable the test set (a tracing span: LangSmith's, OpenTelemetry's) reaches
    the retriever as a plain call does. ``traced`` (async): seen from a sync test but not
    from an async one, the runtime's loop running in a thread of its own with a context of
    its own. ``bounded`` (sync, with a ``case_timeout``): it runs in a thread of its own (a
    call that cannot be interrupted is left behind past its limit), with an empty context."""
    # (traced.yaml keeps q1 alone: one item each)
    for test in ("test_sync", "test_async", "test_bounded"):
        assert _passed(result, test, "test_traced.py") == ["q1"], test


# The record fixture's check needs a serial and an -n 2 run; tests/test_answer_metrics_e2e.py
# collects this test file beside its own in its pair of runs (worker start-up is most of an
# xdist run's time), and checks both with check_record_runs.
RECORD_TESTS = """
    import pytest

    @pytest.mark.ragbench_suite("suites/suite.yaml", retriever="overlap")
    def test_scored(ragbench_case, ragbench_retriever, ragbench_record):
        hits = ragbench_retriever.retrieve(ragbench_case)
        scores = ragbench_record.evaluate(hits, latency_ms=2.5)
        assert set(scores) == {"ndcg@10", "recall@10"}
        ragbench_record("hits", len(hits))
        assert ragbench_case.id != "q4", "deliberate failure"

    @pytest.mark.ragbench_suite("suites/suite.yaml", retriever="bm25")
    def test_bm25(ragbench_case, ragbench_retriever, ragbench_record):
        ragbench_record.evaluate(ragbench_retriever.retrieve(ragbench_case))
"""
#: what RECORD_TESTS adds to a run's outcomes
RECORD_OUTCOMES = {"passed": 4 + 5, "failed": 1}


def write_record_tests(pytester: pytest.Pytester) -> None:
    """The suite folder and test_hand.py of the record fixture's check."""
    write_suite_folder(pytester)
    _test_file(pytester, RECORD_TESTS)


def _is_hand(record: dict) -> bool:
    return str(record["suite"]).startswith("test_hand.py::")


def check_record_runs(serial: pytest.RunResult, serial_recs: list[dict],
                      parallel_recs: list[dict]) -> None:
    """ragbench_record's records are aggregated like cases, with and without xdist: the
    serial run's summary section and records, and the -n 2 run's records the same."""
    lines = serial.outlines
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("suite mini:test_scored [test_hand.py::test_scored]"))
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith(("suite ", "=", "results:"))), len(lines))
    assert any("ragbench summary" in line for line in lines[:start])
    pytest.LineMatcher(lines[start:end]).fnmatch_lines([
        "suite mini:test_scored [[]test_hand.py::test_scored[]]*",
        "  overlap: 5 cases, 0 errors, 1 below per-query thresholds",
        "    hits *",
        "    ndcg@10 *",
    ])
    recs = {r["case_id"]: r for r in serial_recs if r["suite"] == "test_hand.py::test_scored"}
    assert set(recs) == {"q1", "q2", "q3", "q4", "q5"}
    assert recs["q4"]["status"] == "failed"
    assert recs["q1"]["status"] == "ok"
    assert recs["q1"]["suite"] == "test_hand.py::test_scored"
    assert recs["q1"]["retriever"] == "overlap"
    assert recs["q1"]["latency_ms"] == 2.5
    # d1 (grade 2) shares two words with the query, d5 (grade 1) one: the ideal order
    assert recs["q1"]["metrics"]["ndcg@10"] == 1.0
    assert recs["q1"]["metrics"]["hits"] == 2.0
    assert recs["q1"]["retrieved"][0][0] == "d1"

    # with xdist: the same outcomes, and records with the same metrics
    def key(r: dict) -> tuple[str, str, str]:
        return r["suite"], r["retriever"], r["case_id"]

    hand_serial = sorted((r for r in serial_recs if _is_hand(r)), key=key)
    hand_parallel = sorted((r for r in parallel_recs if _is_hand(r)), key=key)
    assert sum(r["retriever"] == "bm25" for r in hand_serial) == 5
    assert len(hand_serial) == 10
    assert [r["status"] for r in hand_serial].count("failed") == 1
    assert [(key(r), r["status"], r["metrics"]) for r in hand_serial] == [
        (key(r), r["status"], r["metrics"]) for r in hand_parallel]


def test_a_bad_suite_retriever_or_pipeline_named_by_a_marker_or_cases_is_one_collection_error(
        project):
    """Each of four test files names something its suite lacks, each its own collection
    error in one run: the marker a retriever (test_marker.py) or a pipeline (test_app.py:
    the suite's pipelines are listed), cases() a misspelt suite (test_hand.py) or a retriever
    (test_other.py). cases() runs while the module is imported: it showed a traceback
    through the plugin's loader, where the ragbench_suite marker shows the message alone."""
    (project.path / "suites" / "typo.yaml").write_text(SUITE_TEXT + "metric: [mrr@10]\n")
    (project.path / "suites" / "app.yaml").write_text(APP_SUITE, encoding="utf-8")
    project.makepyfile(app_pipeline=APP_PIPELINE)
    files = {
        "test_marker": """
            import pytest

            @pytest.mark.ragbench_suite("suites/suite.yaml", retriever="bm52")
            def test_case(ragbench_case):
                pass
        """,
        "test_app": """
            import pytest

            @pytest.mark.ragbench_suite("suites/app.yaml", retriever="ap")
            def test_case(ragbench_case):
                pass
        """,
        "test_hand": """
            import pytest
            from pytest_ragbench.fixtures import cases

            @pytest.mark.parametrize("ragbench_case", cases("suites/typo.yaml"), indirect=True)
            def test_case(ragbench_case):
                pass
        """,
        "test_other": """
            import pytest
            from pytest_ragbench.fixtures import cases

            @pytest.mark.parametrize("ragbench_case", cases("suites/suite.yaml", retriever="bm52"),
                                     indirect=True)
            def test_case(ragbench_case):
                pass
        """,
    }
    project.makepyfile(**{name: textwrap.dedent(body) for name, body in files.items()})
    result = project.runpytest(*(f"{name}.py" for name in files))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=4)
    out = result.stdout.str()
    sections = error_sections(out)
    assert set(sections) == {f"{name}.py" for name in files}, out
    for name, pattern in (
            ("test_marker.py", "*has no retriever 'bm52' (it has: overlap, bm25)*"),
            ("test_app.py", "*app.yaml has no pipeline 'ap' (it has: app)"),
            ("test_hand.py",
             "cases: *typo.yaml:*: metric: unknown key 'metric' (did you mean 'metrics'?)*"),
            ("test_other.py", "cases: *suite.yaml: no retriever 'bm52' (it has: overlap, bm25)")):
        pytest.LineMatcher(sections[name]).fnmatch_lines([pattern])
    assert "fixtures.py" not in out and "SuiteError" not in out


def test_embedder_and_llm_fixtures_are_built_once_and_closed_and_unset_ones_are_clear_errors(
        project):
    """test_hand.py's fixtures are built once and closed; test_unset.py, in the same run,
    uses ragbench_case without the marker and ragbench_llm with no llm configured: a clear
    error each."""
    project.makeconftest("""
        import os
        from pytest_ragbench.embedders import HashingEmbedder

        class Tracked(HashingEmbedder):
            def __init__(self, **kw):
                super().__init__(**kw)
                with open("built.txt", "a") as fh:
                    fh.write("built\\n")

            def close(self):
                with open("closed.txt", "a") as fh:
                    fh.write("closed\\n")

        class Flaky:
            calls = 0

            async def chat(self, messages, **params):
                from pytest_ragbench.llm.base import Completion, ProviderError
                Flaky.calls += 1
                if Flaky.calls == 1:
                    raise ProviderError("slow down", status=429, retry_after=0)
                return Completion("ok")

        def pytest_ragbench_register(registry):
            registry.add("embedder", "tracked", Tracked)
            registry.add("llm", "flaky", Flaky)
    """)
    _test_file(project, """
        import asyncio
        import pytest

        pytestmark = pytest.mark.ragbench_components(
            embedder={"type": "tracked", "dim": 16}, llm="extractive")

        @pytest.mark.parametrize("text", ["a b", "c d", "e f"])
        def test_embed(ragbench_embedder, text):
            vec = asyncio.run(ragbench_embedder.embed([text]))
            assert vec.shape == (1, 16)

        def test_llm(ragbench_llm):
            reply = asyncio.run(ragbench_llm.chat([{"role": "user", "content":
                "[1] Espresso needs a fine grind.\\n\\nQuestion: what grind for espresso?"}]))
            assert "fine grind" in reply.text

        # a registered LLM is called as in a suite: its call keys are not factory parameters
        @pytest.mark.ragbench_components(llm={"type": "flaky", "retries": 1, "backoff": 0})
        def test_registered_llm_is_retried(ragbench_llm):
            reply = asyncio.run(ragbench_llm.chat([{"role": "user", "content": "q"}]))
            assert reply.text == "ok" and reply.usage.requests == 2

        @pytest.mark.ragbench_components(llm={"type": "flaky", "retries": -1})
        def test_bad_call_key(ragbench_llm):
            pass
    """)
    project.makepyfile(test_unset="""
        def test_case(ragbench_case):
            pass

        def test_llm(ragbench_llm):
            pass
    """)
    result = project.runpytest("test_hand.py", "test_unset.py")
    result.assert_outcomes(passed=5, errors=3)
    result.stdout.fnmatch_lines(["*ragbench_llm: llm 'flaky' retries: expected an integer "
                                 ">= 0, got -1*"])
    # (test_hand.py's test_llm passes)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_case*",
                                 "ragbench_case needs @pytest.mark.ragbench_suite*",
                                 "*ERROR at setup of test_llm*",
                                 "ragbench_llm: no llm configured*"])
    result.stdout.fnmatch_lines(["ERROR test_unset.py::test_case - *",
                                 "ERROR test_unset.py::test_llm - *"])
    assert "another exception occurred" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()
    assert (project.path / "built.txt").read_text() == "built\n"  # once for three tests
    assert (project.path / "closed.txt").read_text() == "closed\n"


def test_embedder_fixture_from_ini_and_an_ini_component_that_is_not_json_is_said_once(project):
    """An embedder the ini configures is built from it; an ini llm that is not JSON: the
    decoder's error was shown first, then the message as a chained exception. (An llm
    configured nowhere: test_embedder_and_llm_fixtures_are_built_once_and_closed_and_unset_
    ones_are_clear_errors.)"""
    project.makeini(BASE_INI + 'ragbench_embedder = {"type": "hashing", "dim": 8}\n'
                    "ragbench_llm = {type: extractive}\n")
    _test_file(project, """
        import asyncio

        def test_embed(ragbench_embedder):
            assert asyncio.run(ragbench_embedder.embed(["x"])).shape == (1, 8)

        def test_llm(ragbench_llm):
            pass
    """)
    result = project.runpytest("test_hand.py")
    result.assert_outcomes(passed=1, errors=1)
    out = result.stdout.str()
    assert out.count("Expecting property name enclosed in double quotes") == 1, out
    result.stdout.fnmatch_lines(["ini option ragbench_llm: not valid JSON: Expecting property "
                                 "name enclosed in double quotes: line 1 column 2 (char 1)"])
    assert "During handling" not in out


def test_a_hand_written_case_that_crashes_its_worker_is_an_error_record(pytester, mini_suite):
    """A worker that died in a hand-written test of a suite's case sent no record: the case
    was missing from cases.jsonl and the tables while the verdict counted its error."""
    mini_suite()
    pytester.makepyfile(test_hand="""
        import os
        import pytest

        @pytest.mark.ragbench_suite("suite.yaml", retriever="overlap")
        def test_hand(ragbench_case, ragbench_retriever, ragbench_record):
            if ragbench_case.id == "q3":
                os._exit(7)
            ragbench_record.evaluate(ragbench_retriever.retrieve(ragbench_case))
    """)
    result = pytester.runpytest("test_hand.py", "-n", "2", "-p", "no:randomly")
    assert result.parseoutcomes().get("failed") == 1
    run = pytester.path / ".ragbench" / "runs" / "latest"
    recs = [json.loads(x) for x in (run / "cases.jsonl").read_text().splitlines()]
    assert sorted(r["case_id"] for r in recs) == ["q1", "q2", "q3", "q4", "q5"]
    (crashed,) = [r for r in recs if r["status"] == "error"]
    assert crashed["case_id"] == "q3" and crashed["retriever"] == "overlap"
    assert "crashed" in crashed["error"]["message"]


def test_a_test_using_the_cases_without_recording_them_writes_no_run(pytester, mini_suite):
    """Naming each case on its setup report (for a crash record) started the session for
    any test parametrized by the cases: one using ragbench_case alone wrote a run folder."""
    mini_suite()
    pytester.makepyfile(test_plain="""
        import pytest

        @pytest.mark.ragbench_suite("suite.yaml", retriever="overlap")
        def test_case(ragbench_case):
            assert ragbench_case.id != "q2"
    """)
    result = pytester.runpytest("test_plain.py", "-p", "no:randomly")
    result.assert_outcomes(passed=4, failed=1)
    assert not (pytester.path / ".ragbench").exists()


def test_a_hand_written_case_under_an_xfail_mark_keeps_its_record(pytester, mini_suite):
    """A hand-written test under an xfail mark that failed as expected, in its call or its
    setup, left no record (its report is a skip): the case vanished from cases.jsonl and the
    tables, and a whole run read "partial: 3 of 5 cases" (never a baseline); the ones that
    passed read "ok" where pytest said xpassed."""
    mini_suite()
    pytester.makepyfile(test_hand="""
        import pytest

        @pytest.fixture
        def backend(ragbench_case):
            if ragbench_case.id == "q2":
                raise RuntimeError("no backend for q2")

        @pytest.mark.ragbench_suite("suite.yaml", retriever="overlap")
        @pytest.mark.xfail(reason="q3 is odd")
        def test_hand(ragbench_case, backend, ragbench_retriever, ragbench_record):
            ragbench_record.evaluate(ragbench_retriever.retrieve(ragbench_case))
            assert ragbench_case.id not in ("q3", "q4")
    """)
    result = pytester.runpytest("test_hand.py", "-p", "no:randomly")
    result.assert_outcomes(xfailed=3, xpassed=2)
    result.stdout.fnmatch_lines(["ragbench: passed"])
    run = pytester.path / ".ragbench" / "runs" / "latest"
    recs = {r["case_id"]: r for r in map(json.loads, (run / "cases.jsonl").read_text()
                                          .splitlines())}
    assert sorted(recs) == ["q1", "q2", "q3", "q4", "q5"]
    assert recs["q3"]["status"] == "failed"
    assert recs["q3"]["xfail"] == {"reason": "q3 is odd", "outcome": "xfailed"}
    assert recs["q1"]["xfail"] == {"reason": "q3 is odd", "outcome": "xpassed"}
    # a setup that failed under the mark (xfailed too): an error of the case, with its query
    assert recs["q2"]["status"] == "error" and recs["q2"]["error"]["stage"] == "setup"
    assert "no backend for q2" in recs["q2"]["error"]["message"]
    assert recs["q2"]["xfail"] == {"reason": "q3 is odd", "outcome": "xfailed"}
    assert (recs["q2"]["difficulty"], recs["q2"]["query"]) == ("hard",
                                                               "how long to steep cold brew")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["verdict"]["coverage"] == "5 of 5 cases" and not summary["run"]["partial"]
    group = summary["suites"][0]["retrievers"][0]
    assert (group["n_failed"], group["n_xfailed"], group["n_xpassed"]) == (0, 3, 2)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_narrowed_run_of_hand_written_cases_is_partial(pytester, mini_suite, workers):
    """A hand-written test's cases had no collection count: a `-k` run of two of its five
    cases read "passed", whole (2 of 2 cases), and could become the `last` baseline."""
    mini_suite()
    pytester.makepyfile(test_hand="""
        import pytest

        @pytest.mark.ragbench_suite("suite.yaml", retriever="overlap")
        def test_hand(ragbench_case, ragbench_retriever, ragbench_record):
            ragbench_record.evaluate(ragbench_retriever.retrieve(ragbench_case))
    """)
    result = pytester.runpytest("test_hand.py", "-k", "q1 or q2", "-p", "no:randomly",
                                *workers)
    assert result.parseoutcomes()["passed"] == 2
    result.stdout.fnmatch_lines(["ragbench: passed (partial: 2 of 5 cases)"])
    summary = json.loads((pytester.path / ".ragbench" / "runs" / "latest" / "summary.json")
                         .read_text())
    assert summary["run"]["partial"] is True and summary["verdict"]["coverage"] == "2 of 5 cases"
    # the whole of it is whole
    result = pytester.runpytest("test_hand.py", "-p", "no:randomly", *workers)
    result.stdout.fnmatch_lines(["ragbench: passed"])


def test_evaluate_on_a_pipeline_case_names_the_pipeline(project):
    """ragbench_record.evaluate given bad hits on a pipeline's case said "retriever 'app'
    returned unknown document id ...": the app is a pipeline, and there is no retriever. Given
    something not iterable it failed with "TypeError: 'int' object is not iterable"."""
    (project.path / "suites" / "app.yaml").write_text(textwrap.dedent("""\
        name: app
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines:
          app: {type: "app_pipeline:App"}
        metrics: [recall@10]
    """), encoding="utf-8")
    project.makepyfile(app_pipeline="""
        class App:
            def answer(self, query):
                return "?"
    """)
    _test_file(project, """
        import pytest

        @pytest.mark.ragbench_suite("suites/app.yaml", retriever="app")
        def test_unknown(ragbench_case, ragbench_record):
            ragbench_record.evaluate([("nope", 1.0)])

        @pytest.mark.ragbench_suite("suites/app.yaml", retriever="app")
        def test_twice(ragbench_case, ragbench_record):
            ragbench_record.evaluate([("d1", 1.0), ("d1", 0.5)])

        # not a list: "TypeError: 'int' object is not iterable" from the fixture's own code
        @pytest.mark.ragbench_suite("suites/suite.yaml", retriever="overlap")
        def test_not_a_list(ragbench_case, ragbench_record):
            ragbench_record.evaluate(3)

        # a generator of pairs is read as the list it yields
        @pytest.mark.ragbench_suite("suites/suite.yaml", retriever="overlap")
        def test_generator(ragbench_case, ragbench_record):
            assert ragbench_record.evaluate(h for h in [("d1", 1.0)])["recall@10"] == 0.5
    """)
    result = project.runpytest("test_hand.py", "-p", "no:randomly", "-k", "q1")
    result.assert_outcomes(failed=3, passed=1)
    result.stdout.fnmatch_lines([
        "*pipeline 'app' returned unknown document id 'nope' at rank 1*",
        "*pipeline 'app' returned document 'd1' twice*",
        "*retriever 'overlap' returned int, expected a list of (doc_id, score) pairs*"])
    assert "'int' object is not iterable" not in result.stdout.str()
    assert "retriever 'app'" not in result.stdout.str()


def test_an_async_test_interrupted_while_its_retrieval_runs_ends_as_interrupted(project):
    """Ctrl-C twice (pytest-asyncio's runner raises on the second) while an async test waited
    for an async retriever: the retrieval went on in the runtime's thread, and the session's
    teardown raised "RuntimeError: Cannot close a running event loop" (exit 1, a traceback)
    instead of ending as an interrupted run."""
    project.makepyfile(async_parts="""
        import asyncio
        import os
        import signal

        class Stuck:
            def index(self, corpus):
                pass

            async def retrieve(self, query, k):
                os.kill(os.getpid(), signal.SIGINT)  # the runner cancels the test's task
                await asyncio.sleep(0.05)
                os.kill(os.getpid(), signal.SIGINT)  # and raises KeyboardInterrupt
                await asyncio.sleep(30)
                return [("d1", 1.0)]
    """)
    (project.path / "suites" / "async.yaml").write_text(textwrap.dedent("""\
        name: async
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers:
          stuck: {type: "async_parts:Stuck"}
        metrics: [recall@10]
    """), encoding="utf-8")
    _test_file(project, """
        import pytest

        @pytest.mark.asyncio
        @pytest.mark.ragbench_suite("suites/async.yaml", retriever="stuck")
        async def test_retrieve(ragbench_case, ragbench_retriever):
            ragbench_retriever.retrieve(ragbench_case)
    """)
    # Ctrl-C as at a terminal's foreground: a shell's background job (`cmd &`, some CI
    # runners) starts with SIGINT ignored, and then no SIGINT interrupts anything
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    try:
        result = project.runpytest("test_hand.py", "-p", "no:randomly", no_reraise_ctrlc=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 20  # the retrieval was cancelled, not waited out
    output = result.stdout.str() + result.stderr.str()
    assert "running event loop" not in output
    assert result.ret == pytest.ExitCode.INTERRUPTED, output
    result.stdout.fnmatch_lines(["collected 5 items", "*KeyboardInterrupt*"])
