"""What was measured counts (issue 11.8): a case whose generation or judge failed is an error
with its reason, and the retrieval (and lexical) scores it measured are in its record and in
the means, so retrieval means do not move with LLM flakiness."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import write_jsonl

from pytest_ragbench.results.aggregate import case_scores, metric_values, summarize_run

KEY = "RAGBENCH_MEASURED_KEY"
GENERATION_FAILS = "how long to steep cold brew"  # q2
JUDGE_FAILS = "remove scale with citric acid"  # q4


def reply(messages: Sequence[dict[str, str]]) -> str:
    """Generation answers, the judge grades; one query's generation and another's judge
    call fail (an exception here is an HTTP 500 from the server)."""
    text = "\n".join(str(m.get("content", "")) for m in messages)
    judging = any(m.get("role") == "system" for m in messages)
    if not judging:
        if GENERATION_FAILS in text:
            raise RuntimeError("generation outage")
        return "a fine grind"
    if JUDGE_FAILS in text:
        raise RuntimeError("judge outage")
    return json.dumps({"answer_claims": [{"claim": "c", "supported": 1, "ctx": [1]}]})


def suite(base_url: str) -> str:
    return f"""
name: measured
dataset: {{corpus: corpus.jsonl, queries: queries.jsonl}}
retrievers: {{overlap: {{type: "overlap_retriever:Overlap"}}}}
metrics: [recall@10, ndcg@10, token_f1, faithfulness]
llm: {{type: openai, base_url: "{base_url}", model: m, api_key_env: {KEY}, retries: 1,
      backoff: 0.01, timeout: 5}}
judge: {{llm: same}}
cache: off
"""


# A suite whose generation fails for q2 and whose judge fails for q4, serially and with two
# workers: the serial and the -n 2 run of tests/test_answer_metrics_e2e.py::
# test_hand_written_tests_and_failed_answers_serially_and_with_two_workers collect it (as
# measured.yaml, beside a hand-written test) and check it with the function below.


def check_failed_answers_keep_their_retrieval_scores(
        result: pytest.RunResult, recs: dict[str, dict], summary: dict) -> None:
    """What one run of suite() shows: its records (by case id) and its summary entry."""
    # Each failed item's own report; under xdist pytest lists them as workers finish.
    result.stdout.fnmatch_lines(["*error [[]generation[]]: generation: *"])
    result.stdout.fnmatch_lines(["*error [[]judge[]]: faithfulness: *"])
    # The summary lists them in dataset order whatever the scheduling.
    result.stdout.fnmatch_lines(["    error q2 [[]generation[]]: generation: *",
                                 "    error q4 [[]judge[]]: faithfulness: *"])
    assert len(recs) == 5
    gen, judge = recs["q2"], recs["q4"]
    assert (gen["status"], gen["error"]["stage"]) == ("error", "generation")
    assert (judge["status"], judge["error"]["stage"]) == ("error", "judge")
    for rec in (gen, judge):
        assert rec["metrics"]["recall@10"] is not None
        assert rec["metrics"]["ndcg@10"] is not None
        assert rec["metrics"]["faithfulness"] is None
    # Generation failed: nothing to score lexically. Only the judge failed: token_f1 was
    # measured and stays.
    assert gen["metrics"]["token_f1"] is None
    assert judge["metrics"]["token_f1"] == 1.0
    group = summary["retrievers"][0]
    assert group["n_cases"] == 5 and group["n_errors"] == 2
    metrics = group["metrics"]
    assert metrics["recall@10"]["n"] == metrics["ndcg@10"]["n"] == 5
    assert metrics["recall@10"]["n_nan"] == 0
    assert metrics["token_f1"]["n"] == 4  # q2 measured none
    assert metrics["faithfulness"]["n"] == 3
    # The retrieval mean is the mean over every case.
    values = [r["metrics"]["recall@10"] for r in recs.values()]
    assert metrics["recall@10"]["mean"] == pytest.approx(math.fsum(values) / 5)


def test_a_failing_pipeline_build_still_scores_the_retrieval(tmp_path: Path):
    """Without the collection checks (a runtime used directly), an LLM setup that fails is
    each case's error, after its retrieval was scored."""
    from pytest_ragbench.registry import BuildContext, Registry
    from pytest_ragbench.suite.loader import load_suite

    write_jsonl(tmp_path / "corpus.jsonl",
                [{"_id": "d1", "text": "espresso grind"}, {"_id": "d2", "text": "cold brew"}])
    write_jsonl(tmp_path / "queries.jsonl",
                [{"_id": "q1", "text": "espresso", "relevant": {"d1": 1}, "answer": "x"}])
    (tmp_path / "suite.yaml").write_text(
        "name: s\ndataset: {corpus: corpus.jsonl, queries: queries.jsonl}\n"
        "retrievers: {bm25: {}}\nmetrics: [recall@10, token_f1]\n"
        "llm: {type: openai, base_url: 'http://127.0.0.1:9/v1', model: m, "
        "api_key_env: RAGBENCH_MEASURED_NEVER_SET}\n")
    from pytest_ragbench.execution.runtime import SuiteRuntime

    registry = Registry(use_entry_points=False)
    rt = SuiteRuntime(load_suite(tmp_path / "suite.yaml", None), "suite.yaml", registry,
                      BuildContext(registry=registry))
    try:
        rec = rt.run_case("bm25", "q1", upcoming=lambda: [], upcoming_runs=lambda: [])
    finally:
        rt.close()
    assert rec["status"] == "error" and rec["error"]["stage"] == "generation"
    assert "RAGBENCH_MEASURED_NEVER_SET" in rec["error"]["message"]
    assert rec["metrics"]["recall@10"] == 1.0
    assert rec["metrics"]["token_f1"] is None


def _rec(case: str, status: str, **metrics: float | None) -> dict:
    return {"suite": "s.yaml", "suite_name": "s", "retriever": "r", "case_id": case, "run": 0,
            "status": status, "error": {"stage": "generation", "message": "down"}
            if status == "error" else None, "metrics": metrics}


def test_aggregation_counts_what_errored_cases_measured():
    recs = [_rec("a", "ok", recall=1.0, f1=0.5), _rec("b", "error", recall=0.5, f1=None),
            _rec("c", "ok", recall=None, f1=0.0), _rec("d", "error", recall=None, f1=None)]
    # None from a case that did not error could not be computed (NaN, counted); from an
    # errored case it was not measured and is left out.
    assert metric_values(recs, "recall") == [1.0, 0.5, None]
    assert metric_values(recs, "f1") == [0.5, 0.0]
    assert case_scores(recs, "recall") == {"a": (1.0, False), "b": (0.5, True),
                                           "c": (None, False), "d": (None, True)}
    summary = summarize_run(recs, {"s.yaml": None})
    group = summary["suites"][0]["retrievers"][0]
    assert group["n_errors"] == 2
    assert (group["metrics"]["recall"]["n"], group["metrics"]["recall"]["n_nan"]) == (2, 1)
    assert group["metrics"]["recall"]["mean"] == 0.75
    assert (group["metrics"]["f1"]["n"], group["metrics"]["f1"]["n_nan"]) == (2, 0)
