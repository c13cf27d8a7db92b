"""The case runner (:class:`pytest_ragbench.execution.runtime.SuiteRuntime`) without a pytest run.

A suite with an inline dataset is loaded from a temporary file, a fake retriever is registered
in a plain :class:`~pytest_ragbench.registry.Registry`, and ``run_case`` is called the way a
collected item calls it. The expected metric values are computed by hand in the comments.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_ragbench.datasets import Query
from pytest_ragbench.execution.runtime import SuiteRuntime
from pytest_ragbench.metrics.spec import CaseResult, MetricSpec, resolve_metric
from pytest_ragbench.registry import BuildContext, Registry
from pytest_ragbench.retrievers.hits import RankedHits
from pytest_ragbench.suite.loader import load_suite

SUITE = textwrap.dedent("""\
    name: unit
    dataset:
      documents:
        - {_id: d1, text: one}
        - {_id: d2, text: two}
        - {_id: d3, text: three}
        - {_id: d4, text: four}
        - {_id: d5, text: five}
      items:
        - {_id: q1, text: alpha, relevant: {d1: 2, d3: 1}}
        - {_id: q2, text: beta, relevant: {d2: 1, d4: 0}}
        - {_id: q3, text: gamma, relevant: {d5: 1}}
        - {_id: q4, text: delta}
    retrievers:
      fake: {}
    metrics: [ndcg@3, recall@2, mrr@3]
    k: 3
    thresholds: {recall@2: 0.5}
""")

CASES = ("q1", "q2", "q3", "q4")

# What the fake retrievers return per query text (k=3 in the suite).
RANKINGS: dict[str, list[tuple[str, float]]] = {
    "alpha": [("d3", 3.0), ("d1", 2.0), ("d2", 1.0)],
    "beta": [("d4", 2.0), ("d5", 1.0), ("d2", 0.5)],
    # A tie: trec_eval breaks it by document id descending, so d5 ranks first.
    "gamma": [("d1", 0.5), ("d5", 0.5)],
    "delta": [("d2", 1.0)],
}

_L3 = math.log2(3)
EXPECTED: dict[str, dict[str, float | None]] = {
    # DCG@3 = 1/log2(2) + 2/log2(3); IDCG@3 = 2/log2(2) + 1/log2(3). d1 and d3 both in top 2.
    "q1": {"ndcg@3": (1 + 2 / _L3) / (2 + 1 / _L3), "recall@2": 1.0, "mrr@3": 1.0},
    # the only relevant document (d2) is at rank 3: DCG = 1/log2(4), IDCG = 1.
    "q2": {"ndcg@3": 0.5, "recall@2": 0.0, "mrr@3": 1 / 3},
    "q3": {"ndcg@3": 1.0, "recall@2": 1.0, "mrr@3": 1.0},
    # no labels: nothing can be computed, the values are NaN (None in the record)
    "q4": {"ndcg@3": None, "recall@2": None, "mrr@3": None},
}
EXPECTED_STATUS = {"q1": "ok", "q2": "failed", "q3": "ok", "q4": "ok"}


class PlainRetriever:
    """Only ``index`` and ``retrieve``."""

    def __init__(self) -> None:
        self.indexed: list[str] = []
        self.calls: list[str] = []

    def index(self, corpus: Sequence[Any]) -> None:
        self.indexed = [d.id for d in corpus]

    def retrieve(self, query: str, k: int) -> Any:
        self.calls.append(query)
        return RANKINGS[query][:k]


class BatchRetriever(PlainRetriever):
    """``retrieve_many`` too; ``retrieve`` is only a fallback."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        self.batches.append(list(queries))
        return [RANKINGS[q][:k] for q in queries]


class AsyncRetriever:
    """Coroutine ``index`` and ``retrieve``, awaited on the runtime's own loop."""

    def __init__(self) -> None:
        self.indexed: list[str] = []
        self.calls: list[str] = []

    async def index(self, corpus: Sequence[Any]) -> None:
        self.indexed = [d.id for d in corpus]

    async def retrieve(self, query: str, k: int) -> list[tuple[str, float]]:
        self.calls.append(query)
        return RANKINGS[query][:k]


class AsyncBatchRetriever(AsyncRetriever):
    """A coroutine ``retrieve_many`` besides the coroutine ``retrieve``."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    async def retrieve_many(self, queries: Sequence[str],
                            k: int) -> list[list[tuple[str, float]]]:
        self.batches.append(list(queries))
        return [RANKINGS[q][:k] for q in queries]


class ScriptedRetriever(PlainRetriever):
    """Returns ``make(query, k)``, whatever that is."""

    def __init__(self, make: Callable[[str, int], Any]) -> None:
        super().__init__()
        self.make = make

    def retrieve(self, query: str, k: int) -> Any:
        self.calls.append(query)
        return self.make(query, k)


@pytest.fixture
def suite_path(tmp_path: Path) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE, encoding="utf-8")
    return path


@pytest.fixture
def make_runtime(suite_path: Path) -> Iterator[Callable[[Callable[[], Any]], SuiteRuntime]]:
    """Build a runtime whose retriever ``fake`` is made by the given factory; closed after."""
    runtimes: list[SuiteRuntime] = []

    def make(factory: Callable[[], Any]) -> SuiteRuntime:
        registry = Registry(use_entry_points=False)
        registry.add("retriever", "fake", factory, origin="the test")
        suite = load_suite(suite_path, None)
        runtime = SuiteRuntime(suite, "suite.yaml", registry, BuildContext())
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        runtime.close()


def run_all(runtime: SuiteRuntime, *, batched: bool = False) -> dict[str, dict[str, Any]]:
    """Every case in dataset order, telling the runtime what comes next when ``batched``."""
    out = {}
    for i, cid in enumerate(CASES):
        upcoming = (lambda i=i: list(CASES[i + 1:])) if batched else None
        out[cid] = runtime.run_case("fake", cid, upcoming=upcoming)
    return out


def comparable(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without its wall-clock latency (the only field allowed to differ)."""
    return {k: v for k, v in rec.items() if k != "latency_ms"}


# -- the three ways of asking a retriever give the same records ----------------------------


def test_plain_retriever_records_have_the_hand_computed_metrics(make_runtime) -> None:
    retriever = PlainRetriever()
    records = run_all(make_runtime(lambda: retriever))
    assert retriever.indexed == ["d1", "d2", "d3", "d4", "d5"]
    assert retriever.calls == ["alpha", "beta", "gamma", "delta"]
    for cid, rec in records.items():
        assert rec["metrics"] == pytest.approx(EXPECTED[cid], abs=1e-12), cid
        assert rec["status"] == EXPECTED_STATUS[cid], cid
        assert rec["error"] is None
        assert isinstance(rec["latency_ms"], float) and rec["latency_ms"] >= 0
        json.dumps(rec, allow_nan=False)  # plain JSON, as it crosses the xdist wire
    q1, q2, q3, q4 = (records[c] for c in CASES)
    assert q1["retrieved"] == [["d3", 3.0, 1], ["d1", 2.0, 2], ["d2", 1.0, None]]
    assert q1["missed"] == [] and q1["n_relevant"] == 2 and q1["no_relevant"] is False
    assert q2["missed"] == [] and q2["retrieved"][0] == ["d4", 2.0, 0]
    assert q3["retrieved"] == [["d5", 0.5, 1], ["d1", 0.5, None]]  # the tie, in trec order
    assert q4["n_relevant"] is None and q4["thresholds"][0]["passed"] is None
    assert q2["thresholds"] == [{"metric": "recall@2", "op": ">=", "threshold": 0.5,
                                 "value": 0.0, "passed": False, "margin": -0.5}]
    assert q1["thresholds"][0]["passed"] is True and q1["thresholds"][0]["margin"] == 0.5


def test_missed_lists_relevant_documents_outside_the_top_k(make_runtime) -> None:
    rec = make_runtime(lambda: ScriptedRetriever(lambda q, k: [("d2", 1.0)])).run_case("fake",
                                                                                        "q1")
    assert rec["missed"] == [["d1", 2], ["d3", 1]]  # higher grade first
    assert rec["metrics"] == {"ndcg@3": 0.0, "recall@2": 0.0, "mrr@3": 0.0}
    assert rec["status"] == "failed"


def test_batched_and_async_retrievers_give_identical_records(make_runtime) -> None:
    plain = run_all(make_runtime(PlainRetriever))
    batch = BatchRetriever()
    batched = run_all(make_runtime(lambda: batch), batched=True)
    async_ = AsyncRetriever()
    awaited = run_all(make_runtime(lambda: async_))
    # One retrieve_many call served every case; retrieve was never needed.
    assert batch.batches == [["alpha", "beta", "gamma", "delta"]]
    assert batch.calls == []
    assert async_.indexed == ["d1", "d2", "d3", "d4", "d5"]
    assert async_.calls == ["alpha", "beta", "gamma", "delta"]
    for cid in CASES:
        assert comparable(batched[cid]) == comparable(plain[cid]), cid
        assert comparable(awaited[cid]) == comparable(plain[cid]), cid
        assert plain[cid]["metrics"] == pytest.approx(EXPECTED[cid], abs=1e-12)


def test_async_retrieve_many_is_awaited_and_gives_the_same_records(make_runtime) -> None:
    plain = run_all(make_runtime(PlainRetriever))
    retriever = AsyncBatchRetriever()
    records = run_all(make_runtime(lambda: retriever), batched=True)
    assert retriever.batches == [["alpha", "beta", "gamma", "delta"]] and retriever.calls == []
    for cid in CASES:
        assert comparable(records[cid]) == comparable(plain[cid]), cid


def test_retrieve_case_gets_the_whole_query_and_wins_over_the_others(make_runtime) -> None:
    class ById(BatchRetriever):
        def __init__(self) -> None:
            super().__init__()
            self.cases: list[str] = []

        def retrieve_case(self, query: Query, k: int) -> list[tuple[str, float]]:
            self.cases.append(query.id)
            return RANKINGS[query.text][:k]

    plain = run_all(make_runtime(PlainRetriever))
    retriever = ById()
    records = run_all(make_runtime(lambda: retriever), batched=True)
    assert retriever.cases == list(CASES)
    assert retriever.batches == [] and retriever.calls == []
    for cid in CASES:
        assert comparable(records[cid]) == comparable(plain[cid]), cid


def test_ranked_hits_score_like_a_list_of_pairs(make_runtime) -> None:
    def ranked(query: str, k: int) -> RankedHits:
        ids, scores = zip(*RANKINGS[query][:k], strict=True)
        return RankedHits(list(ids), list(scores))

    plain = run_all(make_runtime(PlainRetriever))
    hits = run_all(make_runtime(lambda: ScriptedRetriever(ranked)))
    for cid in CASES:
        assert comparable(hits[cid]) == comparable(plain[cid]), cid


def test_a_failing_retrieve_many_falls_back_to_retrieve(make_runtime) -> None:
    class BrokenBatch(BatchRetriever):
        def retrieve_many(self, queries: Sequence[str], k: int) -> Any:
            self.batches.append(list(queries))
            return [RANKINGS[q] for q in queries][:-1]  # one result list short

    plain = run_all(make_runtime(PlainRetriever))
    broken = BrokenBatch()
    records = run_all(make_runtime(lambda: broken), batched=True)
    assert len(broken.batches) == 1  # switched off after the first wrong shape
    assert broken.calls == ["alpha", "beta", "gamma", "delta"]
    for cid in CASES:
        assert comparable(records[cid]) == comparable(plain[cid]), cid


# -- what a retriever does wrong becomes an error record with the reason -------------------


def test_one_bad_result_in_a_batch_errors_only_its_case(make_runtime) -> None:
    class OneBad(BatchRetriever):
        def retrieve_many(self, queries: Sequence[str], k: int) -> Any:
            self.batches.append(list(queries))
            return [[("d9", 1.0)] if q == "beta" else RANKINGS[q][:k] for q in queries]

    retriever = OneBad()
    records = run_all(make_runtime(lambda: retriever), batched=True)
    assert len(retriever.batches) == 1 and retriever.calls == []
    assert records["q2"]["status"] == "error"
    assert records["q2"]["error"]["message"] == (
        "retriever 'fake' returned unknown document id 'd9' at rank 1")
    for cid in ("q1", "q3", "q4"):
        assert records[cid]["error"] is None
        assert records[cid]["metrics"] == pytest.approx(EXPECTED[cid], abs=1e-12)


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([("nope", 1.0)], "retriever 'fake' returned unknown document id 'nope' at rank 1"),
        ([("d1", 1.0), ("d1", 0.5)], "retriever 'fake' returned document 'd1' twice"),
        ([("d1", math.nan)], "retriever 'fake' returned a non-finite score (nan) for 'd1'"),
        ([("d2", 1.0), ("d1", -math.inf)],
         "retriever 'fake' returned a non-finite score (-inf) for 'd1'"),
        ([(f"d{i}", 1.0) for i in range(1, 5)], "retriever 'fake' returned 4 results, "
                                                "more than k=3"),
        ("d1", "retriever 'fake' returned str, expected a list of (doc_id, score) pairs"),
        (None, "retriever 'fake' returned NoneType, expected a list of (doc_id, score) pairs"),
        ([("d1", 1.0), ("d2", 0.5, "x")],
         "retriever 'fake' result 1 is ('d2', 0.5, 'x'), expected a (doc_id, score) pair"),
        ([("d1", "high")], "retriever 'fake' result 0 is ('d1', 'high'), expected a "
                           "(doc_id, score) pair"),
        (RankedHits(["d2", "d2"], [1.0, 0.5]), "retriever 'fake' returned document 'd2' twice"),
    ],
    ids=["unknown-id", "duplicate", "nan", "-inf", "too-many", "str", "none", "triple",
         "text-score", "ranked-hits-duplicate"],
)
def test_bad_retriever_output_is_an_error_record(make_runtime, result, message) -> None:
    runtime = make_runtime(lambda: ScriptedRetriever(lambda q, k: result))
    rec = runtime.run_case("fake", "q1")
    assert rec["status"] == "error"
    assert rec["error"] == {"stage": "retrieve", "type": "Error", "message": message}
    # Nothing was scored from a retrieval that was rejected.
    assert rec["metrics"] == {"ndcg@3": None, "recall@2": None, "mrr@3": None}
    assert rec["retrieved"] == [] and rec["thresholds"] == [] and rec["latency_ms"] is None
    json.dumps(rec, allow_nan=False)


def test_other_shapes_of_valid_hits_are_normalised(make_runtime) -> None:
    import numpy as np

    def odd(query: str, k: int) -> Any:
        # lists for pairs, int and numpy scores; scores whose sum overflows are still finite
        if query == "gamma":
            return [("d5", 1e308), ("d1", 1e308)]
        return [["d1", 2], ("d3", np.float32(1.5))]

    records = run_all(make_runtime(lambda: ScriptedRetriever(odd)))
    assert all(r["status"] != "error" for r in records.values())
    assert records["q1"]["retrieved"] == [["d1", 2.0, 2], ["d3", 1.5, 1]]
    assert records["q3"]["retrieved"] == [["d5", 1e308, 1], ["d1", 1e308, None]]
    assert records["q1"]["metrics"]["ndcg@3"] == 1.0


def test_a_raising_retriever_errors_that_case_and_the_run_goes_on(make_runtime) -> None:
    def flaky(query: str, k: int) -> Any:
        if query == "beta":
            raise RuntimeError("backend unavailable")
        return RANKINGS[query][:k]

    records = run_all(make_runtime(lambda: ScriptedRetriever(flaky)))
    assert records["q2"]["status"] == "error"
    assert records["q2"]["error"] == {
        "stage": "retrieve", "type": "RuntimeError",
        "message": "retriever 'fake' raised RuntimeError: backend unavailable"}
    for cid in ("q1", "q3", "q4"):
        assert records[cid]["error"] is None
        assert records[cid]["metrics"] == pytest.approx(EXPECTED[cid], abs=1e-12)


def test_a_retriever_that_cannot_be_indexed_errors_every_case_and_is_built_once(
    make_runtime,
) -> None:
    built: list[int] = []

    class Unindexable(PlainRetriever):
        def index(self, corpus: Sequence[Any]) -> None:
            raise OSError("index folder is read-only")

    def factory() -> Unindexable:
        built.append(1)
        return Unindexable()

    records = run_all(make_runtime(factory))
    assert len(built) == 1  # the failure is remembered, not retried per case
    for rec in records.values():
        assert rec["status"] == "error"
        assert rec["error"] == {
            "stage": "index", "type": "OSError",
            "message": "retriever 'fake' (fake) could not be built or indexed: "
                       "OSError: index folder is read-only"}


def test_an_unknown_retriever_name_is_an_error_naming_the_ones_there_are(make_runtime) -> None:
    rec = make_runtime(PlainRetriever).run_case("other", "q1")
    assert rec["status"] == "error"
    assert rec["error"]["stage"] == "index"
    assert rec["error"]["message"] == "suite 'unit' has no retriever 'other' (it has: fake)"


class _NaNMetric:
    name, direction, family = "nan_metric", "higher", "custom"

    def compute(self, case: Query, result: CaseResult) -> float:
        return math.nan


class _RaisingMetric:
    name, direction, family = "boom", "higher", "custom"

    def compute(self, case: Query, result: CaseResult) -> float:
        if case.id == "q2":
            raise ZeroDivisionError("no documents to divide by")
        return float(len(result.ranked))


def test_a_nan_metric_is_none_and_a_raising_metric_errors_only_its_case(
    suite_path: Path,
) -> None:
    custom = {"nan_metric": _NaNMetric(), "boom": _RaisingMetric()}

    def resolver(name: str, params: Any) -> MetricSpec:
        if name in custom:
            return MetricSpec(name, "custom", component=custom[name])
        return resolve_metric(name, params)

    suite_path.write_text(SUITE.replace("metrics: [ndcg@3, recall@2, mrr@3]",
                                        "metrics: [ndcg@3, recall@2, nan_metric, boom]"))
    registry = Registry(use_entry_points=False)
    registry.add("retriever", "fake", PlainRetriever, origin="the test")
    runtime = SuiteRuntime(load_suite(suite_path, None, resolver), "suite.yaml", registry,
                           BuildContext())
    try:
        records = run_all(runtime)
    finally:
        runtime.close()
    assert records["q1"]["status"] == "ok"
    assert records["q1"]["metrics"] == {"ndcg@3": pytest.approx(EXPECTED["q1"]["ndcg@3"]),
                                        "recall@2": 1.0, "nan_metric": None, "boom": 3.0}
    q2 = records["q2"]
    assert q2["status"] == "error"
    assert q2["error"] == {"stage": "metric", "type": "ZeroDivisionError",
                           "message": "metric 'boom' raised ZeroDivisionError: "
                                      "no documents to divide by"}
    # What was computed before the failing metric still counts.
    assert q2["metrics"]["ndcg@3"] == 0.5 and q2["metrics"]["recall@2"] == 0.0
    assert q2["thresholds"] == []
    assert records["q3"]["metrics"]["boom"] == 2.0 and records["q3"]["status"] == "ok"


# -- pipelines judged ahead ------------------------------------------------------------------

PIPELINE_SUITE = textwrap.dedent("""\
    name: unit
    dataset:
      documents:
        - {_id: d1, text: one}
      items:
        - {_id: q1, text: alpha, answer: one}
        - {_id: q2, text: beta, answer: one}
        - {_id: q3, text: gamma, answer: one}
        - {_id: q4, text: delta, answer: one}
    pipelines:
      sys: {type: sys}
    metrics: [faithfulness]
    judge: {llm: {type: judge, concurrency: 2}}
""")


def test_pipeline_cases_are_asked_once_and_judged_ahead_errors_included(tmp_path: Path) -> None:
    from test_plugin_rag import judge_reply

    from pytest_ragbench.llm.base import Completion

    asked: list[str] = []
    judged: list[str] = []

    class System:
        def answer(self, query: Query) -> Any:
            asked.append(query.id)
            if query.id == "q2":
                raise RuntimeError("backend down")
            if query.id == "q3":
                return ["not", "a", "mapping"]
            return {"answer": "one", "contexts": [{"id": "d1"}]}

    class JudgeLLM:
        async def chat(self, messages: Any, **params: Any) -> Completion:
            judged.append(messages[-1]["content"])
            return Completion(judge_reply(messages))

    path = tmp_path / "suite.yaml"
    path.write_text(PIPELINE_SUITE, encoding="utf-8")
    registry = Registry(use_entry_points=False)
    registry.add("pipeline", "sys", System, origin="the test")
    registry.add("llm", "judge", JudgeLLM, origin="the test")
    runtime = SuiteRuntime(load_suite(path, None), "suite.yaml", registry, BuildContext())
    order = ["q1", "q2", "q3", "q4"]
    try:
        recs = {}
        for i, cid in enumerate(order):
            recs[cid] = runtime.run_pipeline_case(
                "sys", cid, upcoming_runs=lambda i=i: [(c, 0) for c in order[i + 1:]])
            if cid == "q1":
                # the judge's concurrency (2) bounds how far ahead the pipeline is asked
                assert asked == ["q1", "q2"]
    finally:
        runtime.close()
    assert asked == order  # each case asked exactly once, errors included
    assert len(judged) == 2  # q1 and q4: the failed cases were not judged
    assert recs["q1"]["status"] == "ok" and recs["q1"]["metrics"]["faithfulness"] == 0.5
    assert recs["q4"]["status"] == "ok" and recs["q4"]["usage"]["requests"] == 1
    assert recs["q2"]["error"] == {"stage": "answer", "type": "RuntimeError",
                                   "message": "pipeline 'sys' raised RuntimeError: backend down"}
    assert "outside the contract" in recs["q3"]["error"]["message"]


def test_prefetched_answers_are_retrieved_in_one_batch(tmp_path: Path) -> None:
    """The controller's head start hands over a slot's worth of cases at a time: one
    ``retrieve_many`` for them, not a retrieval each."""
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.replace("metrics: [ndcg@3, recall@2, mrr@3]",
                                  "metrics: [recall@2, exact_match]\nllm: {type: extractive}"),
                    encoding="utf-8")
    retriever = BatchRetriever()
    registry = Registry(use_entry_points=False)
    registry.add("retriever", "fake", lambda: retriever, origin="the test")
    runtime = SuiteRuntime(load_suite(path, None), "suite.yaml", registry, BuildContext())
    try:
        cases = [("q1", 0), ("q2", 0), ("q3", 0)]
        keys = runtime.prefetch_answers("fake", cases)
        assert keys == [("fake", cid, run) for cid, run in cases]
        assert retriever.batches == [["alpha", "beta", "gamma"]] and retriever.calls == []
        pipeline = runtime.pipeline()
        assert all("answer" in pipeline.result(key) for key in keys)
    finally:
        runtime.close()


def test_a_per_query_threshold_scoped_to_another_retriever_does_not_judge_this_ones_cases(
        make_runtime, suite_path: Path) -> None:
    two = SUITE.replace("  fake: {}\n", "  fake: {}\n  other: {type: fake}\n")
    suite_path.write_text(two.replace("thresholds: {recall@2: 0.5}",
                                      'thresholds: {"retriever=other: recall@2": 0.9, '
                                      '"retriever=fake: mrr@3": 0.3}'), encoding="utf-8")
    runtime = make_runtime(PlainRetriever)
    rec = runtime.run_case("fake", "q2")  # recall@2 0 would fail the other's bound
    assert [(t["metric"], t["passed"]) for t in rec["thresholds"]] == [("mrr@3", True)]
    assert rec["status"] == "ok"
    other = runtime.run_case("other", "q2")
    assert [(t["metric"], t["passed"]) for t in other["thresholds"]] == [("recall@2", False)]
    assert other["status"] == "failed"
