"""Answer metrics as components through a pytest run: an entry-point answer metric of an
installed distribution (real ``.dist-info`` metadata on the path), custom criteria declared in
the suite, and ``ragbench_record.score`` in hand-written tests; the fake OpenAI-compatible
server counts the judge's requests (one chat and one embedding request per item)."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import QUERIES, error_sections, write_jsonl

from pytest_ragbench.llm.testing import CHAT_PATH, EMBEDDINGS_PATH, FakeOpenAIServer

SITE = Path(__file__).parent / "data" / "thirdparty" / "site_metrics"
ANSWERS = {"q1": "a fine grind", "q2": "for hours", "q3": "about 60 degrees",
           "q4": "citric acid", "q5": "airtight away from light"}
GRADES = {"helpfulness": 4, "grounded_rubric": 3}


def reply(messages: Sequence[dict[str, str]]) -> str:
    """A judge reply for whatever the prompt asks (criteria graded from GRADES); generation
    requests get a fixed answer."""
    if messages[0].get("role") != "system":
        return "Espresso needs a fine grind."
    prompt = str(messages[1]["content"])
    contexts = len(re.findall(r"^\[\d+\] ", prompt, flags=re.MULTILINE))
    wanted = re.search(r'"questions": (\d+) different questions', prompt)
    body: dict = {
        "answer_claims": [
            {"claim": "Fine grind.", "supported": 1, "ctx": [1] if contexts else [],
             "in_reference": 1},
            {"claim": "Unsupported.", "supported": 0, "in_reference": 0}],
        "reference_claims": [{"claim": "Ref.", "attributed": 1, "in_answer": 1}],
        "useful": [1] + [0] * max(contexts - 1, 0),
        "questions": [f"q{i}?" for i in range(int(wanted.group(1)) if wanted else 0)],
        "noncommittal": 0,
    }
    names = re.findall(r'^  "([^"]+)" \(an integer from', prompt, flags=re.MULTILINE)
    if names:
        body["criteria"] = {n: {"score": GRADES[n], "why": "fine"} for n in names}
    return json.dumps(body)


@pytest.fixture
def server():
    with FakeOpenAIServer(reply=reply) as srv:
        yield srv


@pytest.fixture
def suite(pytester, mini_suite, monkeypatch):
    """The mini suite with reference answers; the metrics distribution on the path."""
    write_jsonl(pytester.path / "queries.jsonl",
                [{**q, "answer": ANSWERS[q["_id"]]} for q in QUERIES])
    # importlib.metadata finds the distribution's entry points through sys.path
    monkeypatch.syspath_prepend(str(SITE))
    return mini_suite


def suite_text(base_url: str, metrics: str, *, systems: str | None = None) -> str:
    return f"""
name: answers
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
{systems or 'retrievers: {overlap: {type: "overlap_retriever:Overlap"}}'}
metrics: {metrics}
llm: {{type: openai, base_url: {base_url}, model: m, retries: 0}}
judge: {{llm: same}}
embedder: {{type: openai, base_url: {base_url}, model: e, retries: 0}}
cache: off
"""


CRITERIA = ('{name: helpfulness, type: criteria, criteria: "Does the answer help a home '
            'barista?", scale: [1, 5], examples: [{answer: "Use beans.", score: 2}]}')


def records(root: Path) -> list[dict]:
    path = root / ".ragbench" / "runs" / "latest" / "cases.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_entry_point_metric_and_criteria_cost_one_judge_call_per_item(pytester, suite, server):
    suite(suite_text(server.base_url, "[recall@10, token_f1, faithfulness, answer_relevancy, "
                                      f"{CRITERIA}, {{name: answer_words, cap: 3}}, "
                                      "grounded_rubric]"))
    result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:randomly",
                                "--ragbench-summary=full")
    result.assert_outcomes(passed=5)
    # per item: one generation and ONE judge request (faithfulness, relevancy, the suite's
    # criterion and the distribution's rubric together), one embedding request
    assert server.count(CHAT_PATH) == 10
    assert server.count(EMBEDDINGS_PATH) == 5
    judge_prompts = [r.body["messages"][1]["content"] for r in server.requests
                     if r.path == CHAT_PATH and len(r.body["messages"]) == 2]
    assert len(judge_prompts) == 5
    assert all('"helpfulness" (an integer from 1 to 5)' in p
               and '"grounded_rubric" (an integer from 0 to 4)' in p for p in judge_prompts)
    recs = records(pytester.path)
    assert len(recs) == 5
    for rec in recs:
        m = rec["metrics"]
        assert m["helpfulness"] == 0.75 and m["grounded_rubric"] == 0.75
        assert m["answer_words"] == 3.0  # 5 words, capped by the suite's parameter
        assert m["faithfulness"] == 0.5
        assert rec["judge"]["helpfulness"] == {"score": 4, "why": "fine", "scale": [1, 5]}
        assert rec["judge"]["grounded_rubric"] == {"score": 3, "why": "fine", "scale": [0, 4]}
        assert rec["usage"]["requests"] == 2
    result.stdout.fnmatch_lines(["*helpfulness * 0.7500 *", "*answer_words * 3.0000 *"])


def test_a_pipeline_suite_scores_entry_point_and_criteria_metrics(pytester, suite, server):
    pytester.makepyfile(app='''
def make():
    class App:
        def answer(self, query):
            return {"answer": "Espresso needs a fine grind.",
                    "contexts": [{"id": "d1", "text": "Espresso needs a fine grind."}]}
    return App()
''')
    # without a judged metric no judge is built: a lexical entry-point metric alone
    suite(suite_text(server.base_url, "[token_f1, answer_words]",
                     systems="pipelines: {app: {type: 'app:make'}}"))
    pytester.runpytest("--ragbench=suite.yaml").assert_outcomes(passed=5)
    assert server.request_count == 0
    assert {r["metrics"]["answer_words"] for r in records(pytester.path)} == {5.0}
    suite(suite_text(server.base_url, f"[answer_words, {CRITERIA}]",
                     systems="pipelines: {app: {type: 'app:make'}}"))
    pytester.runpytest("--ragbench=suite.yaml").assert_outcomes(passed=5)
    assert server.count(CHAT_PATH) == 5 and server.count(EMBEDDINGS_PATH) == 0
    assert {r["metrics"]["helpfulness"] for r in records(pytester.path)} == {0.75}


def test_criteria_errors_name_the_file_line_and_field(pytester, suite, server):
    # two broken suite files, one run: each gets its own collection error block
    suite(suite_text(server.base_url, "[recall@10, {name: helpfulness, type: criteria, "
                                      "criteria: x, scale: [5, 1]}]"), name="scale.yaml")
    suite(suite_text(server.base_url, f"[recall@10, {CRITERIA}]").replace(
        "judge: {llm: same}\n", ""), name="nojudge.yaml")
    result = pytester.runpytest("--ragbench=scale.yaml", "--ragbench=nojudge.yaml")
    assert result.ret != 0
    sections = error_sections(result.stdout.str())
    assert set(sections) == {"scale.yaml", "nojudge.yaml"}, result.stdout.str()
    assert [line for line in sections["scale.yaml"] if fnmatch.fnmatchcase(
        line, "*scale.yaml:5: metrics[[]1[]].scale: expected low < high, got [[]5, 1[]]*")]
    assert [line for line in sections["nojudge.yaml"] if fnmatch.fnmatchcase(
        line, "*nojudge.yaml:5: metrics[[]1[]]: helpfulness is judged by an LLM; add a "
              "'judge:' section*")]
    assert "Traceback" not in result.stdout.str() and server.request_count == 0


HAND_WRITTEN = '''
import pytest

CONTEXTS = {"q1": ["Espresso needs a fine grind and 9 bar."], "q2": [{"id": "d2"}]}


@pytest.mark.ragbench_suite("suite.yaml", retriever="overlap")
def test_my_app(ragbench_case, ragbench_record):
    answer = "Espresso needs a fine grind." if ragbench_case.id != "q3" else "I don't know"
    scores = ragbench_record.score(answer, CONTEXTS.get(ragbench_case.id, []))
    assert scores["helpfulness"] == 0.75
    assert scores["token_f1"] is not None
    assert ragbench_case.id != "q5", "q5 fails on purpose"
'''


def test_hand_written_tests_and_failed_answers_serially_and_with_two_workers(
        pytester, suite, server, monkeypatch, capsys):
    """Two things whose point is that the scheduling changes nothing, in one serial and one
    -n 2 run (worker start-up is most of an xdist run's time): hand-written tests score their
    answers like collected items, one judge request per test; and a suite whose generation
    fails for one query and whose judge fails for another keeps what was measured
    (tests/test_prechecks_measured.py, collected here as measured.yaml). Each suite has its
    own fake server, so every request count is still per suite. The runs also collect the
    record fixture's tests of tests/test_fixtures.py (test_hand.py, suites/), and the suites
    of tests/test_pipelines_e2e.py whose answers and judges must not depend on the scheduling
    (app.yaml, rag.yaml, with their own two fake servers), and the planted regression of
    tests/test_baseline_stats.py against its baseline (planted.yaml). And a suite whose LLM
    replies carry lone surrogates (surrogates.yaml, its own fake server) loses no case, either
    way (see _check_lone_surrogates)."""
    from test_baseline_stats import (
        N_QUERIES,
        PLANTED_ARGS,
        check_planted_parallel,
        check_planted_serial,
        prepare_planted_regression,
    )
    from test_fixtures import RECORD_OUTCOMES, check_record_runs, write_record_tests
    from test_pipelines_e2e import (
        SCHEDULING_ARGS,
        SCHEDULING_PASSED,
        check_scheduling_run,
        write_scheduling_suites,
    )
    from test_plugin_rag import judge_reply
    from test_prechecks_measured import KEY, check_failed_answers_keep_their_retrieval_scores
    from test_prechecks_measured import reply as measured_reply
    from test_prechecks_measured import suite as measured_suite

    suite(suite_text(server.base_url, f"[recall@10, token_f1, faithfulness, {CRITERIA}]"))
    pytester.makepyfile(test_app=HAND_WRITTEN)
    write_record_tests(pytester)
    monkeypatch.setenv(KEY, "sk-measured-0123456789")
    write_jsonl(pytester.path / "measured_queries.jsonl",
                [{**q, "answer": "a fine grind"} for q in QUERIES])
    summaries = []
    runs = []
    run_dirs: list[Path] = []
    scheduled: dict | None = None
    with FakeOpenAIServer(reply=measured_reply) as measured_server, \
            FakeOpenAIServer(reply=judge_reply) as app_server, \
            FakeOpenAIServer(reply=judge_reply) as rag_server, \
            FakeOpenAIServer(reply=_reply_with_lone_surrogates) as surrogates_server:
        write_scheduling_suites(pytester, monkeypatch, app_server.base_url,
                                rag_server.base_url)
        prepare_planted_regression(pytester)
        (pytester.path / "measured.yaml").write_text(
            measured_suite(measured_server.base_url).replace(
                "queries: queries.jsonl", "queries: measured_queries.jsonl"))
        (pytester.path / "surrogates.yaml").write_text(
            surrogates_suite(surrogates_server.base_url))
        for extra in ([], ["-n", "2"]):
            server.reset_counts()
            result = pytester.runpytest("test_app.py", "test_hand.py", "--ragbench=measured.yaml",
                                        *SCHEDULING_ARGS, *PLANTED_ARGS,
                                        "--ragbench=surrogates.yaml", "-p", "no:randomly",
                                        "--ragbench-summary=full", *extra)
            # hand-written: 4 passed, 1 failed; measured: 3 passed, 2 errors; test_hand.py;
            # app.yaml and rag.yaml; planted.yaml; surrogates.yaml: 5 passed
            result.assert_outcomes(
                passed=4 + 3 + RECORD_OUTCOMES["passed"] + SCHEDULING_PASSED + N_QUERIES + 5,
                failed=1 + RECORD_OUTCOMES["failed"], errors=2)
            # one judge request per test, whatever the scheduling
            assert server.count(CHAT_PATH) == 5 and server.count(EMBEDDINGS_PATH) == 0
            everything = records(pytester.path)
            recs = sorted((r for r in everything if r["suite"] == "test_app.py::test_my_app"),
                          key=lambda r: r["case_id"])
            assert [r["status"] for r in recs] == ["ok"] * 4 + ["failed"]
            q1, q2 = recs[0], recs[1]
            assert q1["answer"] == "Espresso needs a fine grind."
            assert q1["metrics"]["faithfulness"] == 0.5 and q1["metrics"]["helpfulness"] == 0.75
            assert q1["judge"]["helpfulness"]["score"] == 4 and q1["usage"]["requests"] == 1
            assert q2["contexts"] == ["d2"]  # a corpus document by id
            assert recs[0]["suite"] == "test_app.py::test_my_app"
            summary = json.loads((pytester.path / ".ragbench" / "runs" / "latest"
                                  / "summary.json").read_text())
            suites = summary["suites"]
            summaries.append(json.dumps(suites, sort_keys=True))
            result.stdout.fnmatch_lines(["*helpfulness * 0.7500 *"])
            measured = {r["case_id"]: r for r in everything if r["suite_name"] == "measured"}
            hand = [r for r in everything if str(r["suite"]).startswith("test_hand.py::")]
            app = [r for r in everything if r["suite_name"] in ("app", "rag", "planted")]
            surrogates = [r for r in everything if r["suite_name"] == "surrogates"]
            assert (len(measured) + len(recs) + len(hand) + len(app) + len(surrogates)
                    == len(everything))
            _check_lone_surrogates(result, surrogates)
            scheduled = check_scheduling_run(app_server, rag_server,
                                             pytester.path / ".ragbench" / "runs" / "latest",
                                             scheduled)
            runs.append((result, everything))
            run_dirs.append((pytester.path / ".ragbench" / "runs" / "latest").resolve())
            if not extra:
                check_planted_serial(result, run_dirs[0], monkeypatch, capsys)
            check_failed_answers_keep_their_retrieval_scores(
                result, measured, next(s for s in suites if s["name"] == "measured"))
    assert summaries[0] == summaries[1]
    check_record_runs(runs[0][0], runs[0][1], runs[1][1])
    check_planted_parallel(runs[0][0], run_dirs[0], runs[1][0], run_dirs[1])


def _reply_with_lone_surrogates(messages: Sequence[dict[str, str]]) -> str:
    """Valid JSON whose escapes decode to lone surrogates, which no UTF-8 file and no xdist
    message can carry: in the generated answer, and in the judge's claim and its reason."""
    if messages[0].get("role") != "system":
        return "A fine \ud83d grind."  # the server's JSON escapes it
    return json.dumps({"answer_claims": [{"claim": "Fine \ud800 grind.", "supported": 0,
                                          "why": "bad \udfff", "in_reference": 1}],
                       "reference_claims": [{"claim": "Ref.", "attributed": 1,
                                             "in_answer": 1}],
                       "useful": [1, 0, 0]})


def surrogates_suite(base_url: str) -> str:
    """The mini suite with reference answers, its LLM and judge replying with lone surrogates
    (``_reply_with_lone_surrogates`` at ``base_url``). It is collected by both runs of
    test_hand_written_tests_and_failed_answers_serially_and_with_two_workers, serial and
    -n 2: runs of its own cost an xdist start-up more, and its checks need the suite and the
    scheduling, nothing of a run by itself."""
    return suite_text(base_url, "[recall@10, token_f1, faithfulness]").replace(
        "name: answers", "name: surrogates", 1)


def _check_lone_surrogates(result: pytest.RunResult, recs: list[dict]) -> None:
    """A judge's "\\ud800" stopped the run with an INTERNALERROR and lost every finished case
    (under xdist the worker could not send its report); the answer's made its judging fail
    as a generation error and dropped its lexical scores."""
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out and "Traceback" not in out, out
    # its 5 cases passed (the run's outcomes count them with the other suites')
    assert len(recs) == 5
    assert [r["status"] for r in recs] == ["ok"] * 5
    for rec in recs:
        assert rec["answer"] == "A fine \ufffd grind."
        assert rec["metrics"]["faithfulness"] == 0.0 and rec["metrics"]["token_f1"] is not None
        claims = rec["judge"]["faithfulness"]["claims"]
        assert claims == [{"claim": "Fine \ufffd grind.", "supported": 0, "ctx": [],
                           "why": "bad \ufffd"}]


def test_priced_embeddings_are_charged_to_the_runs_cost_cap(pytester, suite, server):
    # `prices` listed the embedding model, yet only chat requests were charged: a judged
    # suite's run spent more than its cap said. A batch of embeddings serves several cases,
    # so its cost is the run's (its pool's line, the cap's spend), not a case's.
    suite(suite_text(server.base_url, "[faithfulness, answer_relevancy]")
          + "max_cost: 1000\nprices: {m: {prompt: 1.0, completion: 2.0}, "
            "e: {prompt: 100.0, completion: 0}}\n")
    result = pytester.runpytest("--ragbench=suite.yaml", "-p", "no:randomly")
    result.assert_outcomes(passed=5)
    embed_tokens = sum(len(text.split()) for r in server.requests
                       if r.path == EMBEDDINGS_PATH for text in r.body["input"])
    assert embed_tokens > 0
    embed_cost = embed_tokens * 100.0 / 1e6
    chat_cost = sum(r["cost"] for r in records(pytester.path))
    run = json.loads((pytester.path / ".ragbench" / "runs" / "latest" / "summary.json")
                     .read_text())["run"]["budget"]
    assert run["spent"] == pytest.approx(chat_cost + embed_cost)
    pools = {p["kind"]: p for p in run["pools"]}
    assert pools["embedding"]["spent"] == pytest.approx(embed_cost)
    assert pools["llm"]["spent"] == pytest.approx(chat_cost)
    result.stdout.fnmatch_lines(
        [f"embedding pool e at *: 5 requests, *, spent ${embed_cost:.4f} (concurrency 16)"])
