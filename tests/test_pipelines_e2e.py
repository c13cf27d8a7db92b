"""Pipelines (the user's RAG systems) through a whole pytest run: a conftest registration, a
module path, an async factory function, the built-in http and recorded types, an installed
distribution's entry point, bad outputs per item, judged metrics and xdist."""

from __future__ import annotations

import fnmatch
import json
import os
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    BASE_INI,
    DOCS,
    OVERLAP_RETRIEVER,
    QUERIES,
    error_sections,
    latest_run,
    write_jsonl,
)
from test_pipelines import _Service

from pytest_ragbench.llm.testing import FakeOpenAIServer, Fault

ANSWERS = {"q1": "a fine grind", "q2": "for hours", "q3": "about 60 degrees",
           "q4": "citric acid", "q5": "airtight away from light"}
SITE = Path(__file__).parent / "data" / "thirdparty" / "site_pipelines"

# A pipeline as a user would write it: its own tiny store and a keyword ranking.
TINY_RAG = '''
import json
from collections.abc import Callable
from pathlib import Path

DOCS = [json.loads(line) for line in
        Path(__file__).with_name("corpus.jsonl").read_text().splitlines()]


def words(text):
    return set(text.lower().replace(".", "").split())


class TinyRAG:
    def __init__(self, top: int = 2, fail_on: str = ""):
        self.top, self.fail_on = top, fail_on

    def answer(self, query):
        if self.fail_on and self.fail_on in query.id:
            raise RuntimeError("the LLM backend is down")
        q = words(query.text)
        ranked = sorted(DOCS, key=lambda d: (-len(q & words(d["title"] + " " + d["text"])),
                                             d["_id"]))[: self.top]
        return {"answer": ranked[0]["text"],
                "contexts": [{"id": d["_id"], "text": d["text"]} for d in ranked],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.001}}


async def make_async(answers: dict):
    """A factory function whose pipeline answers asynchronously, by query id."""

    class Remote:
        async def answer(self, query):
            if query.id == "q2":
                return {"answer": None}
            if query.id == "q3":
                return ["not", "a", "mapping"]
            return {"answer": answers.get(query.id, ""), "contexts": ["some text"]}

    return Remote()


def sync_factory(answers: dict):
    class Fixed:
        def answer(self, query):
            return answers[query.id]

    return Fixed()
'''

CONFTEST = '''
from tiny_rag import TinyRAG


def pytest_ragbench_register(registry):
    registry.add("pipeline", "tiny", TinyRAG)
'''


@pytest.fixture
def app(pytester: pytest.Pytester):
    """The mini dataset with reference answers, the user's pipeline module and conftest."""
    write_jsonl(pytester.path / "corpus.jsonl", DOCS)
    write_jsonl(pytester.path / "queries.jsonl",
                [{**q, "answer": ANSWERS[q["_id"]]} for q in QUERIES])
    pytester.makepyfile(tiny_rag=TINY_RAG)
    pytester.makeconftest(CONFTEST)
    pytester.makeini(BASE_INI)

    def write(body: str) -> Path:
        path = pytester.path / "suite.yaml"
        path.write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
        return path

    return write


def records(root: Path) -> list[dict]:
    path = root / ".ragbench" / "runs" / "latest" / "cases.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_case(recs: list[dict], system: str) -> dict[str, dict]:
    return {r["case_id"]: r for r in recs if r["retriever"] == system}


FINDS_FEW = '''
class FindsFew:
    def answer(self, query):
        if query.id in ("q1", "q3"):
            return {"answer": "a", "contexts": [{"id": "d1"}, {"id": "d5"}, {"id": "d3"}]}
        if query.id == "q5":
            return {"answer": "a"}  # an answer alone: retrieval metrics stay n/a
        return {"answer": "a", "contexts": []}
'''


def test_conftest_module_path_and_framework_pipelines_scored_in_one_run(pytester, app):
    """Four suites share one run (a run's start-up costs more than its items; each suite's
    thresholds and gates are its own): a conftest's pipeline scored like a retriever
    (app.yaml), pipelines by module path, sync and async, with bad outputs (modules.yaml), a
    pipeline that found no context for some questions (few.yaml) and the langchain and
    llamaindex adapters (frameworks.yaml). Each check below is one of them."""
    answers = json.dumps(ANSWERS)
    pytester.makepyfile(finds_few=FINDS_FEW, frameworks=FRAMEWORKS)
    suites = {
        "app.yaml": """
            name: app
            dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
            pipelines:
              tiny: {top: 2}
            metrics: [recall@10, token_f1, answer_contains, latency_ms]
            thresholds: {recall@10: 0.5}
            gates: {recall@10: '>= 0.5', token_f1: '>= 0.1'}
        """,
        "modules.yaml": f"""
            name: modules
            dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
            pipelines:
              remote: {{type: "tiny_rag:make_async", answers: {answers}}}
              fixed: {{type: "tiny_rag:sync_factory", answers: {answers}}}
              flaky: {{type: tiny, fail_on: q4}}
            metrics: [recall@10]
        """,
        "few.yaml": """
            name: few
            dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
            pipelines:
              few: {type: "finds_few:FindsFew"}
            metrics: [recall@10]
            gates: {recall@10: '>= 0.9'}
        """,
        "frameworks.yaml": """
            name: frameworks
            dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
            pipelines:
              lc: {type: langchain, chain: "frameworks:chain", input_key: input}
              li: {type: llamaindex, engine: "frameworks:make_engine"}
            metrics: [recall@10, answer_contains]
        """,
    }
    for name, body in suites.items():
        (pytester.path / name).write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    result = pytester.runpytest("--ragbench-summary=full", "-p", "no:randomly",
                                *(f"--ragbench={name}" for name in suites))
    recs = records(pytester.path)
    outcomes = {name: Counter(r["status"] for r in recs if r["suite_name"] == name)
                for name in ("app", "modules", "few", "frameworks")}
    assert outcomes == {"app": {"ok": 5}, "modules": {"ok": 12, "error": 3},
                        "few": {"ok": 5}, "frameworks": {"ok": 10}}
    result.assert_outcomes(passed=5 + 12 + 5 + 10, errors=3)
    assert "Traceback" not in result.stdout.str()
    _conftest_pipeline_scored_like_a_retriever(result, recs)
    _python_pipelines_by_module_path_sync_and_async_with_bad_outputs(result, recs)
    _a_pipeline_that_found_no_context_scores_0_not_nan(result, recs)
    _langchain_and_llamaindex_adapters(recs)


def _conftest_pipeline_scored_like_a_retriever(result: pytest.RunResult,
                                               recs: list[dict]) -> None:
    result.stdout.fnmatch_lines(["*tiny: 5 cases, 0 errors*", "*PASS app/tiny: recall@10 *"])
    tiny = by_case(recs, "tiny")
    q1 = tiny["q1"]
    assert q1["pipeline"] == "tiny" and q1["status"] == "ok"
    # "espresso grind size": d1 shares two words, d5 one; both are labelled relevant
    assert [r[0] for r in q1["retrieved"]] == ["d1", "d5"] and q1["missed"] == []
    assert q1["metrics"]["recall@10"] == 1.0
    assert q1["answer"] == "Espresso needs a fine grind and 9 bar."
    assert q1["contexts"] == ["d1", "d5"]
    # SQuAD F1 of the answer against "a fine grind": 2 shared of 7 answer tokens
    assert q1["metrics"]["token_f1"] == pytest.approx(4 / 9)
    assert q1["metrics"]["answer_contains"] == 1.0
    assert q1["usage"]["prompt_tokens"] == 10 and q1["cost"] == 0.001
    assert q1["system_usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.001}
    assert all(r["latency_ms"] is not None and r["latency_ms"] >= 0 for r in tiny.values())


def _python_pipelines_by_module_path_sync_and_async_with_bad_outputs(
        result: pytest.RunResult, recs: list[dict]) -> None:
    remote, fixed, flaky = (by_case(recs, n) for n in ("remote", "fixed", "flaky"))
    assert remote["q1"]["status"] == "ok" and remote["q1"]["answer"] == "a fine grind"
    # text-only contexts rank nothing against the labels: retrieval metrics are not computed
    assert remote["q1"]["metrics"]["recall@10"] is None
    assert remote["q2"]["status"] == "error"
    assert remote["q2"]["error"]["message"] == (
        "pipeline 'remote' returned an output outside the contract: 'answer' must be a "
        "string, got null")
    assert "pipeline 'remote' returned an output outside the contract: returned list" \
        in remote["q3"]["error"]["message"]
    assert flaky["q4"]["error"] == {
        "stage": "answer", "type": "RuntimeError",
        "message": "pipeline 'flaky' raised RuntimeError: the LLM backend is down"}
    assert all(r["status"] == "ok" for r in fixed.values())
    assert fixed["q5"]["answer"] == ANSWERS["q5"] and fixed["q5"]["contexts"] == []
    result.stdout.fnmatch_lines(["*remote: 5 cases, 2 errors*"])


def _a_pipeline_that_found_no_context_scores_0_not_nan(result: pytest.RunResult,
                                                        recs: list[dict]) -> None:
    # "contexts": [] says the application found nothing: an empty ranking, 0 on retrieval
    # metrics as for a retriever that returns nothing. It was n/a, as for an answer alone, and
    # a NaN is left out of the mean: an application that found the relevant document for 2
    # of 5 questions and nothing for the rest read recall 1.0 and passed a 0.9 gate.
    few = by_case(recs, "few")
    assert {q: r["metrics"]["recall@10"] for q, r in few.items()} == {
        "q1": 1.0, "q2": 0.0, "q3": 1.0, "q4": 0.0, "q5": None}
    assert few["q2"]["missed"] == [["d2", 2]] and few["q2"]["relevant_ranks"] == {"d2": None}
    assert few["q5"]["missed"] == [] and few["q5"]["relevant_ranks"] == {}
    # the run's one gate failure is few's (app's gates pass); its errors are modules'
    result.stdout.fnmatch_lines(["ragbench: gate failed: few/few recall@10 = 0.5000, expected "
                                 ">= 0.9*", "ragbench: FAILED: 3 items errored; 1 gate failed"])
    assert result.ret == 1


def _langchain_and_llamaindex_adapters(recs: list[dict]) -> None:
    lc, li = by_case(recs, "lc"), by_case(recs, "li")
    assert lc["q4"]["metrics"] == {"recall@10": 1.0, "answer_contains": 1.0}
    assert lc["q4"]["contexts"] == ["d4"]
    assert li["q5"]["metrics"] == {"recall@10": 1.0, "answer_contains": 1.0}
    assert li["q5"]["retrieved"] == [["d6", 2.5, 2]]


def test_recorded_http_and_entry_point_pipelines_in_one_run(pytester, app, monkeypatch):
    """Recorded outputs without a corpus (offline.yaml), an http pipeline (http.yaml) and an
    installed distribution's entry point pipeline (echo.yaml, listed by --ragbench-list
    first) share one run: a run's start-up costs more than its items, and each suite's
    outcomes, records and pool are its own (offline's threshold is per suite)."""
    # In process, with the distribution on sys.path: each run scans the entry points anew.
    monkeypatch.syspath_prepend(SITE)
    secret = "tok-0123456789abcdef"
    monkeypatch.setenv("RAG_TOKEN", secret)
    items = [{"id": q["_id"], "question": q["text"], "answer": ANSWERS[q["_id"]]}
             for q in QUERIES]
    outputs = [{"query_id": q, "answer": a if q != "q2" else "overnight",
                "contexts": [{"text": "context text"}]}
               for q, a in ANSWERS.items() if q != "q5"]
    write_jsonl(pytester.path / "outputs.jsonl", outputs)
    reply = {"answer": "Descale the kettle with citric acid.",
             "contexts": [{"id": "d4", "score": 3.0}, {"id": "d1", "score": 1.0}]}
    with _Service([(503, "warming up"), (200, reply)]) as svc:
        suites = {
            "offline.yaml": f"""
                name: offline
                dataset: {{items: {json.dumps(items)}}}
                pipelines:
                  last_night: {{type: recorded, path: outputs.jsonl}}
                metrics: [exact_match, token_f1]
                thresholds: {{exact_match: 1}}
            """,
            "http.yaml": f"""
                name: app
                dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
                pipelines:
                  prod:
                    type: http
                    url: {svc.url}
                    headers: {{Authorization: "Bearer ${{RAG_TOKEN}}"}}
                    backoff: 0.0
                metrics: [recall@10, answer_contains]
            """,
            "echo.yaml": """
                dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
                pipelines: {echo: {prefix: "about"}}
                metrics: [token_f1]
            """,
        }
        for name, body in suites.items():
            (pytester.path / name).write_text(textwrap.dedent(body).lstrip("\n"),
                                              encoding="utf-8")
        result = pytester.runpytest("--ragbench=echo.yaml", "--ragbench-list",
                                    "-p", "no:cacheprovider")
        result.stdout.fnmatch_lines(["pipelines (type names for suite files)",
                                     "  echo -- distribution ragbench-rag-app 0.1.0"])
        assert svc.bodies == []  # listed, then exited
        result = pytester.runpytest(*(f"--ragbench={name}" for name in suites),
                                    "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3 + 5 + 5, failed=1, errors=1)
    recs = records(pytester.path)
    # recorded outputs without a corpus: a wrong answer fails its threshold, a missing one
    # is an error naming the file
    offline = by_case(recs, "last_night")
    assert sorted(r["status"] for r in offline.values()) == ["error", "failed", "ok", "ok", "ok"]
    assert offline["q2"]["status"] == "failed" and offline["q2"]["metrics"]["exact_match"] == 0.0
    assert offline["q5"]["status"] == "error"
    assert "outputs.jsonl has no output for query 'q5' (4 output(s) recorded)" \
        in offline["q5"]["error"]["message"]
    # the http pipeline, end to end
    prod = by_case(recs, "prod")
    assert all(r["status"] == "ok" for r in prod.values()) and len(prod) == 5
    assert prod["q4"]["metrics"] == {"recall@10": 1.0, "answer_contains": 1.0}
    assert prod["q4"]["retrieved"] == [["d4", 3.0, 1], ["d1", 1.0, None]]
    # asked for several cases at once (its concurrency): whichever came first met the 503
    # and was asked again
    asked = Counter(b["query_id"] for b in svc.bodies)
    assert sorted(asked) == ["q1", "q2", "q3", "q4", "q5"] and sorted(asked.values()) == [
        1, 1, 1, 1, 2]
    assert all(h["Authorization"] == f"Bearer {secret}" for h in svc.headers)
    # its concurrency is the run's (one pool for every xdist worker), counted with its attempts
    result.stdout.fnmatch_lines([f"pipeline pool at {svc.url}: 6 requests, max * in flight, "
                                 "0 throttled (429), 0 timed out, 1 failed * (concurrency 8)"])
    # the entry point's pipeline
    echo = by_case(recs, "echo")
    assert all(r["status"] == "ok" for r in echo.values()) and len(echo) == 5
    assert echo["q3"]["answer"] == "about milk temperature for steaming"


# The scheduling check needs a serial and an -n 2 run; tests/test_answer_metrics_e2e.py
# collects these two suites beside its own in its pair of runs (worker start-up is most of an
# xdist run's time): write_scheduling_suites, then check_scheduling_run after each run.
SCHEDULING_ARGS = ("--ragbench=app.yaml", "--ragbench=rag.yaml", "--ragbench-cache=off")
#: what the two suites add to a run's outcomes: 10 pipeline and 5 retriever items
SCHEDULING_PASSED = 15


def write_scheduling_suites(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                            judge_url: str, rag_url: str) -> None:
    """A suite of pipelines with judged metrics (app.yaml) and a retriever suite whose answers
    are generated and judged (rag.yaml, from tests/test_plugin_rag.py), each with its own fake
    server, over the mini corpus and app_queries.jsonl (the mini queries with reference
    answers)."""
    from test_plugin_rag import rag_suite

    monkeypatch.setenv("RAGBENCH_TEST_KEY", "sk-test-0123456789abcdef")
    write_jsonl(pytester.path / "corpus.jsonl", DOCS)
    write_jsonl(pytester.path / "app_queries.jsonl",
                [{**q, "answer": ANSWERS[q["_id"]]} for q in QUERIES])
    pytester.makepyfile(tiny_rag=TINY_RAG, overlap_retriever=OVERLAP_RETRIEVER)
    pytester.makeconftest(CONFTEST)
    outputs = json.dumps({q: {"answer": a, "contexts": [{"id": "d1"}]}
                          for q, a in ANSWERS.items()})
    (pytester.path / "app.yaml").write_text(textwrap.dedent(f"""
        name: app
        dataset: {{corpus: corpus.jsonl, queries: app_queries.jsonl}}
        pipelines:
          ids_only: {{type: "tiny_rag:sync_factory", answers: {outputs}}}
          tiny: {{}}
        metrics: [faithfulness, token_f1, ndcg@10, recall@10, rouge_l]
        judge:
          llm: {{base_url: {judge_url}, model: m, api_key_env: RAGBENCH_TEST_KEY,
                 retries: 0}}
        cache: off
    """).lstrip("\n"), encoding="utf-8")
    rag = rag_suite(rag_url)
    assert "queries: queries.jsonl" in rag
    (pytester.path / "rag.yaml").write_text(
        rag.replace("queries: queries.jsonl", "queries: app_queries.jsonl"), encoding="utf-8")


def check_scheduling_run(server: FakeOpenAIServer, rag_server: FakeOpenAIServer,
                         run: Path, serial: dict | None) -> dict:
    """After each run: no call made twice (one batched judge call per pipeline item, one
    generation and one judge call per retriever item), every item of both suites passed,
    and, given the serial run's scores (``serial``), the same scores. Returns the scores."""
    assert server.count("/v1/chat/completions") == 10
    assert rag_server.count("/v1/chat/completions") == 10
    server.reset_counts()
    rag_server.reset_counts()
    everything = [json.loads(line) for line in
                  (run / "cases.jsonl").read_text().splitlines()]
    mine = [r for r in everything if r["suite_name"] in ("app", "rag")]
    assert len(mine) == SCHEDULING_PASSED and all(r["status"] == "ok" for r in mine)
    summary = json.loads((run / "summary.json").read_text())
    # The run's verdict (its exit status) counts nothing of these suites: the items it counts
    # as failed or errored are those of the run's other suites (these have no gates).
    others = [r for r in everything if r["suite_name"] not in ("app", "rag")]
    expected = {"items_failed": sum(r["status"] == "failed" for r in others),
                "items_errored": sum(r["status"] == "error" for r in others)}
    assert {r["kind"]: r["count"] for r in summary["verdict"]["reasons"]
            if r["kind"] in expected} == {k: n for k, n in expected.items() if n}
    assert not any(g["suite"] in ("app", "rag") for g in summary["gates"])
    recs = [r for r in mine if r["suite_name"] == "app"]
    scores = {(r["retriever"], r["case_id"]): r["metrics"] for r in recs}
    assert len(scores) == 10
    if serial is not None:
        assert scores == serial
    assert all(r["metrics"]["faithfulness"] == 0.5 and r["judge"] for r in recs)
    assert all(r["usage"]["requests"] == 1 for r in recs)
    # contexts given by id only are judged with the corpus text of that id
    ids_only = by_case(recs, "ids_only")
    assert ids_only["q2"]["contexts"] == ["d1"]
    # the pipeline's reported spend plus the judge's
    assert by_case(recs, "tiny")["q1"]["usage"]["prompt_tokens"] > 10
    return scores


COUNTED = '''
from collections.abc import Callable
from pathlib import Path


class Counted:
    """A pipeline that logs each question it is asked (to ``log``), asked for
    ``concurrency`` of them at once."""

    def __init__(self, log: str = "asked.log", concurrency: int = 1):
        self.log = log
        self.ragbench_concurrency = concurrency

    def answer(self, query):
        with open(Path(__file__).with_name(self.log), "a") as fh:
            fh.write(query.id + "\\n")
        return {"answer": "a fine grind", "contexts": [{"id": "d1"}]}
'''


def _counted_judged(name: str, base_url: str, concurrency: int = 8, asks: int = 1) -> str:
    """Suite ``name`` of the ``Counted`` app (it logs each query it is asked to
    ``name``.log, ``asks`` at once) judged for faithfulness by the endpoint at ``base_url``
    (``concurrency`` requests at once), without a cache."""
    return f"""
        name: {name}
        dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
        pipelines: {{sys: {{type: "counted:Counted", log: {name}.log, concurrency: {asks}}}}}
        metrics: [faithfulness]
        judge:
          llm: {{base_url: {base_url}, model: m, retries: 0, concurrency: {concurrency}}}
        cache: off
    """


def _asked(pytester: pytest.Pytester, name: str) -> list[str]:
    return sorted((pytester.path / f"{name}.log").read_text().split())


def test_a_pipelines_judging_runs_ahead_but_not_for_a_case_a_conftest_skips_or_will_not_run(
        pytester, app):
    """Three suites, each with its own judge endpoint and question log, share a run and a
    ``--runxfail`` rerun (a run's start-up costs more than its items; the conftest marks the
    items of its own suite file only):

    - ahead.yaml: a pipeline's judging runs ahead, concurrently, each question asked once;
    - skips.yaml: a case a conftest marks skip (or skipif with a true condition) was still
      answered by the user's application and judged ahead of its item: paid calls for a case
      that never ran, and a pool line of 5 judge requests beside a table of 4 (its app is
      asked for three cases at once);
    - xfail.yaml: ``xfail(run=False)`` keeps a case from running as a skip does (pytest
      reports it "[NOTRUN]"): it was still answered and judged ahead, the pool line counting
      5 judge requests beside a table of 4. ``--runxfail`` runs it, so it is asked then."""
    from test_plugin_rag import judge_reply

    pytester.makepyfile(counted=COUNTED)
    pytester.makeconftest(CONFTEST + textwrap.dedent("""
        import pytest


        def pytest_collection_modifyitems(items):
            for item in items:
                if item.nodeid.startswith("skips.yaml"):
                    if item.name.endswith("q2"):
                        item.add_marker(pytest.mark.skip(reason="upstream outage"))
                    if item.name.endswith("q4"):
                        item.add_marker(pytest.mark.skipif(True, reason="not on this branch"))
                    if item.name.endswith("q5"):
                        item.add_marker(pytest.mark.skipif(False, reason="runs"))
                if item.nodeid.startswith("xfail.yaml") and item.name.endswith("q2"):
                    item.add_marker(pytest.mark.xfail(run=False, reason="known"))
    """))
    # ahead's judge requests asked ahead go out within milliseconds of each other: 0.03 s in
    # flight overlaps them (all four did at 0.01 s in trials)
    with FakeOpenAIServer(reply=judge_reply, latency=0.03) as ahead, \
            FakeOpenAIServer(reply=judge_reply) as skips, \
            FakeOpenAIServer(reply=judge_reply) as xfail:
        for name, server, concurrency, asks in (("ahead", ahead, 4, 1), ("skips", skips, 8, 3),
                                                ("xfail", xfail, 8, 1)):
            (pytester.path / f"{name}.yaml").write_text(textwrap.dedent(
                _counted_judged(name, server.base_url, concurrency, asks)).lstrip("\n"),
                encoding="utf-8")
        args = ("--ragbench=ahead.yaml", "--ragbench=skips.yaml", "--ragbench=xfail.yaml",
                "-p", "no:randomly")
        result = pytester.runpytest(*args)
        result.assert_outcomes(passed=5 + 3 + 4, skipped=2, xfailed=1)
        # ahead: items report one by one, yet their judge calls were in flight together
        assert ahead.count("/v1/chat/completions") == 5
        assert 1 < ahead.max_in_flight <= 4
        recs = [r for r in records(pytester.path) if r["suite_name"] == "ahead"]
        assert [r["case_id"] for r in recs] == ["q1", "q2", "q3", "q4", "q5"]
        assert all(r["metrics"]["faithfulness"] == 0.5 and r["usage"]["requests"] == 1
                   for r in recs)
        # asked ahead, but each question exactly once
        assert _asked(pytester, "ahead") == ["q1", "q2", "q3", "q4", "q5"]
        # skips: the skipped cases neither asked nor judged
        assert skips.count("/v1/chat/completions") == 3
        assert _asked(pytester, "skips") == ["q1", "q3", "q5"]
        # xfail: the case not run neither asked nor judged
        result.stdout.fnmatch_lines([f"llm pool m at {xfail.base_url}*: 4 requests,*"])
        assert xfail.count("/v1/chat/completions") == 4
        assert _asked(pytester, "xfail") == ["q1", "q3", "q4", "q5"]
        result = pytester.runpytest(*args, "--runxfail")
        result.assert_outcomes(passed=5 + 3 + 5, skipped=2)
        assert xfail.count("/v1/chat/completions") == 4 + 5


def test_the_pipeline_example_runs_offline_and_passes(pytester):
    import shutil

    examples = Path(__file__).resolve().parents[1] / "example_suites"
    for name in ("pipeline", "quickstart"):
        shutil.copytree(examples / name, pytester.path / "example_suites" / name)
    pytester.makeini(BASE_INI)
    result = pytester.runpytest("--ragbench-summary=full",
                                "--ragbench=example_suites/pipeline/suite.yaml",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=130)
    result.stdout.fnmatch_lines([
        "  coffee_bot: 65 cases, 0 errors*",
        "  last_release: 65 cases, 0 errors*",
        "A/B pipeline recall@3 *",
        "  last_release vs coffee_bot: *",
        "*PASS pipeline/coffee_bot: recall@3 *",
        "ragbench: passed",
    ])


NOVELTY_CONFTEST = '''
class Novelty:
    def __init__(self, k: int = 10):
        self.name, self.direction = f"novelty@{k}", "higher"

    def compute(self, case, result):
        return 0.1


def pytest_ragbench_register(registry):
    registry.add("metric", "novelty", Novelty)
'''


def test_suites_whose_pipeline_or_metric_a_folder_conftest_registers_keep_their_gates_under_xdist(
        pytester, app):
    """The xdist controller does not load the conftest.py of a suite's folder, so it could
    not validate the suite: the run aggregated without its spec, dropped its gates and passed
    at -n 2 (metrics in name order) where -n 0 failed them (the pipeline example at -n 2).
    Not even the suite's metrics resolve on the controller then: the workers, which
    validated it, send its spec; without it the gate on the metric was dropped at -n 2.

    Both suites, each in a folder whose conftest registers its own component (app/: the
    pipeline, nov/: the metric), share the -n 0 run (it saves the baseline) and the -n 2 run
    (against it): an xdist run's cost is its workers' start-up. Each suite's gate is its own
    (gates are per suite), and each fails on its own line."""
    (pytester.path / "conftest.py").unlink()
    pytester.makepyfile(overlap_retriever=OVERLAP_RETRIEVER)
    for folder, conftest, suite in (
            ("bench", CONFTEST, """
                name: app
                dataset: {corpus: ../corpus.jsonl, queries: ../queries.jsonl}
                pipelines:
                  tiny: {top: 1}
                metrics: [token_f1, recall@10]
                gates: {recall@10: '>= 0.99', token_f1: '>= 0.1'}
            """),
            ("nov", NOVELTY_CONFTEST, """
                name: nov
                dataset: {corpus: ../corpus.jsonl, queries: ../queries.jsonl}
                retrievers: {overlap: {type: "overlap_retriever:Overlap"}}
                metrics: [novelty@10, recall@10]
                gates: {novelty@10: '>= 0.5'}
            """)):
        (pytester.path / folder).mkdir()
        (pytester.path / folder / "conftest.py").write_text(conftest, encoding="utf-8")
        (pytester.path / folder / "suite.yaml").write_text(
            textwrap.dedent(suite).lstrip(), encoding="utf-8")
    args = ("--ragbench=bench/suite.yaml", "--ragbench=nov/suite.yaml", "-p", "no:cacheprovider")
    outs = {}
    # the -n 2 run's baseline (nov's) is matched by the suite's name before the first item,
    # as at -n 0 (it was matched by the suite's path and refused: "matches no suite of this
    # run", exit 4)
    for n, baseline in (("0", "--ragbench-save-baseline=base.json"),
                        ("2", "--ragbench-baseline=base.json")):
        result = pytester.runpytest(*args, "-n", n, baseline)
        assert result.ret == 1, (n, result.stdout.str())
        result.stdout.fnmatch_lines([
            "*system  cases  errors  token_f1 * recall@10 *",
            "*system * cases * errors * novelty@10 * recall@10 *",
            "ragbench: gate failed: app/tiny recall@10 = *",
            "ragbench: gate failed: nov/overlap novelty@10 = 0.1000, expected >= 0.5*",
            "ragbench: FAILED: 2 gates failed"])
        summary = json.loads((latest_run(pytester.path) / "summary.json").read_text())
        run_doc = json.loads((latest_run(pytester.path) / "run.json").read_text())
        assert run_doc["suites"]["bench/suite.yaml"]["pipelines"] == ["tiny"], n
        assert run_doc["suites"]["nov/suite.yaml"]["gates"] == ["novelty@10 >= 0.5"], n
        outs[n] = (summary["suites"], summary["gates"])
        if n == "0":
            # the baseline keeps nov alone: a baseline one suite of the run matches is not
            # refused, so app's entry would hide a nov matched by nothing
            base = json.loads((pytester.path / "base.json").read_text())
            assert sorted(s["name"] for s in base["suites"].values()) == ["app", "nov"]
            base["suites"] = {k: s for k, s in base["suites"].items() if s["name"] == "nov"}
            (pytester.path / "base.json").write_text(json.dumps(base))
    result.stdout.fnmatch_lines(["baseline base.json:", "  0 of 2 metrics regressed"])
    assert outs["0"] == outs["2"]


def test_the_pipeline_examples_answers_do_not_depend_on_the_hash_seed():
    """Each xdist worker has its own hash seed: the example summed its scores in set order,
    and two documents that tie to the last bit swapped places (token_f1 0.2892 or 0.2880)."""
    import subprocess
    import sys

    examples = Path(__file__).resolve().parents[1] / "example_suites"
    script = textwrap.dedent("""\
        import json, sys
        sys.path.insert(0, sys.argv[1] + "/pipeline")
        from coffee_bot import CoffeeBot
        bot = CoffeeBot("../quickstart/corpus.jsonl")
        rows = [json.loads(line) for line in open(sys.argv[1] + "/quickstart/queries.jsonl")]
        for row in rows:
            out = bot.answer(type("Q", (), {"text": row["text"]})())
            print(json.dumps([out["answer"], [c["id"] for c in out["contexts"]]]))
    """)
    outs = {seed: subprocess.run([sys.executable, "-c", script, str(examples)],
                                 capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "60")}
    assert outs["1"].count("\n") == 65 and outs["1"] == outs["60"]


# Two LLMs a conftest registers: one that fails each question twice (503) and logs every
# call, one whose provider_id is its version (a plain string, as the dense cache takes it).
LLMS_CONFTEST = '''
from collections.abc import Callable
from pathlib import Path

from pytest_ragbench.llm.base import Completion, ProviderError, Usage


class Overloaded:
    """Fails each question twice with HTTP 503, then answers; logs every call."""

    def __init__(self, model: str = "ovl-1"):
        self.model = model
        self.seen = {}

    async def chat(self, messages, **params):
        text = messages[-1]["content"]
        with open(Path(__file__).with_name("calls.log"), "a") as fh:
            fh.write("call\\n")
        self.seen[text] = self.seen.get(text, 0) + 1
        if self.seen[text] <= 2:
            raise ProviderError("overloaded", status=503)
        return Completion("a fine grind", Usage(20, 4), model=self.model)


class Versioned:
    """Answers as its version says; its provider_id is that version (a plain string)."""

    provider_id = "versioned-{version}"

    async def chat(self, messages, **params):
        return Completion("answer {version}", Usage(10, 2), model="v")


def pytest_ragbench_register(registry):
    registry.add("llm", "overloaded", Overloaded)
    registry.add("llm", "versioned", Versioned)
'''


def test_entry_point_and_conftest_llms_are_retried_metered_cached_and_keyed_by_provider_id(
        pytester, app, monkeypatch):
    """Three suites, each with its own LLM and cache, share a cold run and a rerun (a run's
    start-up costs more than its items; each suite's llm line, budget and pool are its own):
    an installed distribution's entry point LLM named in ``llm`` (canned.yaml) and a conftest's
    (overloaded.yaml), each retried, metered, priced and then served from the cache; and a
    registered LLM whose provider_id (a plain string) changes between the runs
    (versioned.yaml). The response cache keyed on type and parameters alone and ignored that
    provider_id: bumping it after a code change still served the old code's answers."""
    # real .dist-info metadata on sys.path: the registry finds the ragbench.llms entry point
    monkeypatch.syspath_prepend(str(SITE))
    suites = {
        "canned.yaml": """
            name: canned
            dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
            retrievers: {bm25: {}}
            metrics: [recall@10, token_f1]
            llm: {type: canned, answer: "a fine grind", log: canned.log, fail_first: 2,
                  retries: 2, backoff: 0}
            cache: {path: canned.sqlite}
        """,
        "overloaded.yaml": """
            name: overloaded
            dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
            retrievers: {bm25: {}}
            metrics: [token_f1]
            llm: {type: overloaded, model: ovl-1, retries: 3, backoff: 0, concurrency: 2}
            prices: {ovl-1: {prompt: 1000, completion: 1000}}
            max_cost: 10
            cache: {path: overloaded.sqlite}
        """,
        "versioned.yaml": """
            name: versioned
            dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
            retrievers: {bm25: {}}
            metrics: [token_f1]
            llm: {type: versioned}
            cache: {path: versioned.sqlite}
        """,
    }
    for name, body in suites.items():
        (pytester.path / name).write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")

    def run(version: str) -> tuple[pytest.RunResult, dict[str, list[dict]]]:
        pytester.makeconftest(LLMS_CONFTEST.replace("{version}", version))
        result = pytester.runpytest(*(f"--ragbench={name}" for name in suites),
                                    "-p", "no:randomly", "--ragbench-summary=full")
        result.assert_outcomes(passed=15)
        recs = records(pytester.path)
        return result, {name: [r for r in recs if r["suite_name"] == name]
                        for name in ("canned", "overloaded", "versioned")}

    result, recs = run("1")
    canned = {r["case_id"]: r for r in recs["canned"]}
    assert canned["q1"]["answer"] == "a fine grind"
    assert canned["q1"]["metrics"]["token_f1"] == 1.0
    assert canned["q1"]["usage"]["prompt_tokens"] == 7
    # two 429s, then answers: every attempt is counted, in the records and the summary
    assert sum(r["usage"]["requests"] for r in canned.values()) == 7
    assert (pytester.path / "canned.log").read_text().count("call") == 7
    overloaded = recs["overloaded"]
    assert all(r["usage"]["requests"] == 3 and r["answer"] == "a fine grind"
               for r in overloaded)
    # priced as its model: 24 tokens at $1000 per 1M each
    assert all(r["cost"] == pytest.approx(0.024) for r in overloaded)
    assert (pytester.path / "calls.log").read_text().count("call") == 15
    result.stdout.fnmatch_lines(["*llm: 7 requests, 35 prompt + 15 completion tokens*",
                                 "*llm pool canned at registered llm 'canned': 7 requests*"])
    result.stdout.fnmatch_lines(["*llm: 15 requests, 100 prompt + 20 completion tokens, "
                                 "cost $0.12*",
                                 "*run budget * spent $0.1200 of $10.0000*",
                                 "*llm pool ovl-1 at registered llm 'overloaded': 15 requests, "
                                 "max * in flight*(concurrency 2)*"])
    assert {r["answer"] for r in recs["versioned"]} == {"answer 1"}

    # the response cache wraps them like any provider: a rerun asks neither anything, and
    # asks the versioned LLM again under its new provider_id
    result, recs = run("2")
    assert (pytester.path / "canned.log").read_text().count("call") == 7
    assert (pytester.path / "calls.log").read_text().count("call") == 15
    result.stdout.fnmatch_lines(["*llm: 0 requests, 35 prompt + 15 completion tokens*"])
    result.stdout.fnmatch_lines(["*llm: 0 requests, 100 prompt + 20 completion tokens*"])
    assert {r["answer"] for r in recs["versioned"]} == {"answer 2"}


FRAMEWORKS = '''
from dataclasses import dataclass, field


@dataclass
class Document:
    page_content: str
    metadata: dict = field(default_factory=dict)


class Chain:
    """Shaped like a LangChain retrieval chain (create_retrieval_chain)."""

    async def ainvoke(self, inputs):
        question = inputs["input"]
        return {"input": question, "answer": "citric acid",
                "context": [Document("Descale with citric acid.", {"doc_id": "d4"})]}


@dataclass
class Node:
    text: str
    node_id: str
    metadata: dict

    def get_content(self):
        return self.text


@dataclass
class Scored:
    node: Node
    score: float


@dataclass
class Response:
    response: str
    source_nodes: list


class Engine:
    """Shaped like a LlamaIndex query engine (sync query only)."""

    def query(self, text):
        return Response("airtight away from light",
                        [Scored(Node("Store beans airtight.", "n-1", {"doc_id": "d6"}), 2.5)])


def make_engine():
    return Engine()


chain = Chain()
'''


# -- suites refused at collection: one run, one error block each --------------------------------

BROKEN = {
    # an unknown pipeline type, with a did-you-mean
    "tinny.yaml": ("""
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines: {mine: {type: tinny}}
        metrics: [recall@10]
    """, "*tinny.yaml:2: pipelines.mine.type: unknown pipeline 'tinny' (did you mean 'tiny'?)*"),
    # a parameter the pipeline's factory does not take
    "topp.yaml": ("""
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines: {tiny: {topp: 3}}
        metrics: [recall@10]
    """, "*topp.yaml:2: pipelines.tiny.topp: pipeline 'tiny' got unknown parameter(s) topp "
         "(did you mean 'top'?)*"),
    # a pipeline suite may go without a corpus; its retrievers may not
    "no_corpus.yaml": ("""
        dataset: {queries: queries.jsonl}
        retrievers: {tiny_r: {type: "tiny_rag:TinyRAG"}}
        metrics: [recall@10]
    """, "*no_corpus.yaml:1: dataset: expected 'path' (a BEIR-layout folder), 'corpus' (a file), "
         "'documents' (inline), 'hf' or 'ir_datasets': retrievers search a corpus*"),
    # the http pipeline's header names an unset variable
    "http.yaml": ("""
        name: app
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines:
          prod:
            type: http
            url: http://127.0.0.1:9/answer
            headers: {Authorization: "Bearer ${RAG_TOKEN}"}
            backoff: 0.0
        metrics: [recall@10, answer_contains]
    """, "*environment variable RAG_TOKEN is not set or empty*"),
    "judge_same.yaml": ("""
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines: {tiny: {}}
        metrics: [faithfulness]
        judge: {llm: same}
    """, "*judge.llm: 'same' means the generation LLM, and a suite of pipelines has none*"),
    # an entry point LLM's parameters are checked against its factory before any item
    "answr.yaml": ("""
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        retrievers: {bm25: {}}
        metrics: [token_f1]
        llm: {type: canned, answr: "x"}
    """, "*llm* got unknown parameter(s) answr (did you mean 'answer'?)*"),
    # recorded outputs whose ids match no query: the error lists them
    "offline/suite.yaml": (f"""
        name: offline
        dataset: {{items: {json.dumps(
            [{"id": q["_id"], "question": q["text"], "answer": ANSWERS[q["_id"]]}
             for q in QUERIES])}}}
        pipelines:
          last_night: {{type: recorded, path: outputs.jsonl}}
        metrics: [exact_match, token_f1]
    """, "*pipelines.last_night: *outputs.jsonl: 1 output(s) match no query of the suite: "
         "'q99'*"),
}


def test_broken_pipeline_suites_are_one_collection_error_each(pytester, app, monkeypatch):
    monkeypatch.delenv("RAG_TOKEN", raising=False)
    monkeypatch.syspath_prepend(str(SITE))  # the canned LLM's distribution
    (pytester.path / "offline").mkdir()
    write_jsonl(pytester.path / "offline" / "outputs.jsonl",
                [*({"query_id": q, "answer": a} for q, a in ANSWERS.items()),
                 {"query_id": "q99", "answer": "x"}])
    for name, (body, _) in BROKEN.items():
        (pytester.path / name).write_text(textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    result = pytester.runpytest(*(f"--ragbench={name}" for name in BROKEN))
    assert result.ret != 0
    out = result.stdout.str()
    sections = error_sections(out)
    assert set(sections) == set(BROKEN), out
    for name, (_, pattern) in BROKEN.items():
        assert [line for line in sections[name] if fnmatch.fnmatchcase(line, pattern)], (
            name, pattern, sections[name])
    assert "Traceback" not in out


def _answers_without_usage(app: Callable[[str], Path], server: FakeOpenAIServer,
                           *lines: str) -> None:
    """A suite whose priced endpoint answers every chat request without ``usage``."""
    reply = json.dumps({"choices": [{"message": {"content": "a fine grind"}}]})
    server.set_default(Fault("status", 200, body=reply))
    app("\n".join([
        "name: app",
        "dataset: {corpus: corpus.jsonl, queries: queries.jsonl}",
        "retrievers: {bm25: {}}",
        "metrics: [recall@10, token_f1]",
        f'llm: {{type: openai, base_url: "{server.base_url}", model: m, retries: 0}}',
        "prices: {m: {prompt: 1, completion: 1}}",
        *lines]) + "\n")


def test_tokens_estimated_for_a_reply_without_usage_say_so_cold_and_from_the_cache(
        pytester, app):
    """An endpoint that sends no ``usage``: its tokens are estimated (4 characters a token).
    Every output said them as if measured, and the response cache stored them as counted, so
    they read as measured on every later run too."""
    with FakeOpenAIServer() as server:
        _answers_without_usage(app, server, "cache: {path: cache.sqlite}")
        # cold at the full level (the llm line), then every reply from the cache at the
        # default level (the table's llm cell, as in summary.md)
        for level, said in (("full", [
                "*llm: 5 requests, * prompt + * completion tokens (estimated for 5 of 5 cases: "
                "the endpoint sent no usage), cost $*"]),
                ("default", ["*  0 req, * tok (estimated), $*"])):
            result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:randomly",
                                        f"--ragbench-summary={level}")
            result.assert_outcomes(passed=5)
            assert server.count("/v1/chat/completions") == 5
            recs = by_case(records(pytester.path), "bm25")
            assert all(r["usage"]["estimated"] == 1 for r in recs.values())
            result.stdout.fnmatch_lines(said)
            run = latest_run(pytester.path)
            (group,) = json.loads((run / "summary.json").read_text())["suites"][0][
                "retrievers"]
            assert group["usage"]["n_estimated"] == 5
            html = (run / "report.html").read_text()
            assert '<span title="estimated for 5 of 5 cases: the endpoint sent no usage">' \
                   'estimated</span>' in html
            assert "(estimated: the endpoint sent no usage)" in html  # each case's details
        assert fnmatch.fnmatch((run / "summary.md").read_text(),
                               "*| 0 req, * tok (estimated), $*")


def test_a_spend_and_tokens_counted_by_estimates_say_so_in_the_budget_progress_and_resumed_runs(
        pytester, app):
    """Replies without ``usage`` under a ``max_cost``: the case records and the tables said
    their tokens were estimates, but the cap's 'spent $X', the pool's line (terminal,
    summary.json, summary.md) and the live progress line showed the same figures as
    measured. Then the run stopped after three cases and resumed: the reused cases' cost
    counted toward the cap's spend, but as measured. The resumed run's 'spent $X of $Y'
    (terminal, summary.json, summary.md, HTML run details) said 'estimated for 2 of 2
    requests' where a run of the same cases said 5 of 5. (The whole run, with live progress
    lines, is the one the resumed run is compared with.)"""
    note = "estimated for 5 of 5 requests: the endpoint sent no usage"
    with FakeOpenAIServer() as server:
        _answers_without_usage(app, server, "max_cost: 5", "cache: {mode: off}")
        pytester.makeini(BASE_INI + "ragbench_progress_interval = 0.001\n")
        whole = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:randomly")
        whole.assert_outcomes(passed=5)
        # (a line at every item's end but the last, maybe: they are at most every 1 ms; the
        # requests run ahead of the items, so some may still be in flight)
        whole.stdout.fnmatch_lines([
            "ragbench progress: */5 items, * in flight, * tokens (estimated for * of * "
            "requests: the endpoint sent no usage), $* (estimated), *",
            f"run budget suite.yaml: spent $* of $5.0000 (all workers; {note})",
            f"llm pool m at *: 5 requests, *, spent $* ({note}) (concurrency *)"])
        run = latest_run(pytester.path)
        budget = json.loads((run / "summary.json").read_text())["run"]["budget"]
        assert budget["costs"]["suite.yaml"]["estimated"] == 5
        assert budget["costs"]["suite.yaml"]["charges"] == 5
        assert budget["pools"][0]["estimated"] == 5
        assert f"(all workers; {note})" in (run / "summary.md").read_text()
        assert f"(all workers; {note})" in (run / "report.html").read_text()
        expected = budget["costs"]["suite.yaml"]
        pytester.runpytest("--ragbench=suite.yaml", "-p", "no:randomly",
                           "-k", "not q4 and not q5").assert_outcomes(passed=3)
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:randomly",
                                    "--ragbench-resume=latest")
        result.assert_outcomes(passed=5)
        assert server.count("/v1/chat/completions") == 5 + 3 + 2
    assert (expected["estimated"], expected["charges"]) == (5, 5)
    result.stdout.fnmatch_lines(["*resumed from * 3 cases reused, 2 run*",
                                 f"run budget suite.yaml: spent $* of $5.0000 "
                                 f"(all workers; {note})"])
    run = latest_run(pytester.path)
    cost = json.loads((run / "summary.json").read_text())["run"]["budget"]["costs"][
        "suite.yaml"]
    assert cost == pytest.approx(expected)
    assert f"(all workers; {note})" in (run / "summary.md").read_text()
    assert f"(all workers; {note})" in (run / "report.html").read_text()


def test_a_pipeline_whose_close_raises_is_in_the_warnings_summary(pytester, mini_suite):
    """A pipeline's close() that raised was swallowed at the end of the run without a word.
    Under ``-W error`` (or an ini's ``filterwarnings = error``) its CloseWarning was then
    raised out of the session's end: a traceback in place of the ragbench summary and
    pytest's counts (at -n 0; an xdist worker's was lost without a word). It is listed in
    the warnings summary either way."""
    mini_suite("""\
        name: closing
        dataset: {corpus: corpus.jsonl, queries: queries.jsonl}
        pipelines:
          app: {type: "closing_app:App"}
        metrics: [recall@10]
        """)
    pytester.makepyfile(closing_app="""
        class App:
            def answer(self, query):
                return {"answer": "x", "contexts": [{"id": "d1"}]}

            def close(self):
                raise RuntimeError("flush failed")
    """)
    for extra in ([], ["-W", "error"]):
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:randomly", *extra)
        # at the app's close(), not at a line of the plugin the user cannot fix
        result.stdout.fnmatch_lines(["*closing_app.py:5: CloseWarning: pipeline 'app': close() "
                                     "raised RuntimeError: flush failed", "*ragbench: passed"])
        result.assert_outcomes(passed=5, warnings=1)


def test_an_http_pipeline_is_asked_for_its_concurrency_of_cases_at_once(pytester, mini_suite):
    """Asked one case at a time, an http pipeline with ``concurrency: 8`` in front of a
    service that took a second an answer took six seconds for six cases. Here each of the
    first four replies waits until four requests are in flight: one at a time, each waited
    out its patience."""
    import threading

    from json_service import JsonService

    mini_suite()
    lock = threading.Lock()
    seen = {"now": 0, "most": 0}
    four_in = threading.Event()

    def reply(body: bytes, headers: dict[str, str], n: int) -> tuple[int, object]:
        with lock:
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
            if seen["now"] >= 4:
                four_in.set()
        try:
            if n <= 4:
                four_in.wait(10.0)
            qid = json.loads(body)["query_id"]
            return 200, {"answer": ANSWERS[qid], "contexts": [{"id": "d1"}]}
        finally:
            with lock:
                seen["now"] -= 1

    with JsonService(reply, path="/answer") as svc:
        (pytester.path / "suite.yaml").write_text(textwrap.dedent(f"""\
            name: app
            dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
            pipelines:
              prod: {{type: http, url: {svc.url}, concurrency: 4}}
            metrics: [recall@10]
        """), encoding="utf-8")
        result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)
    assert four_in.is_set() and seen["most"] == 4
    assert len(svc.received) == 5
    result.stdout.fnmatch_lines([f"pipeline pool at {svc.url}: 5 requests, max 4 in flight,*"])
    recs = by_case(records(pytester.path), "prod")
    assert all(r["answer"] == ANSWERS[cid] and r["latency_ms"] > 0 for cid, r in recs.items())
