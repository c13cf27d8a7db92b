"""Retrieval metrics against pytrec_eval (trec_eval) and the parsing/ordering helpers."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import pytrec_eval
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ragbench.metrics.retrieval import (
    KNOWN_METRIC_FORMS,
    RetrievalMetric,
    evaluate,
    parse_metric,
    trec_order,
)

CUTOFFS = (1, 3, 5, 10, 100)
CUT_KINDS = ("ndcg", "recall", "precision", "mrr", "map", "hit")
ALL_METRICS: tuple[RetrievalMetric, ...] = (
    *(parse_metric(f"{kind}@{k}") for kind in CUT_KINDS for k in CUTOFFS),
    *(parse_metric(name) for name in ("ndcg", "mrr", "map", "r_precision")),
)
_CUT_LIST = ",".join(str(k) for k in CUTOFFS)
TREC_MEASURES = {
    f"ndcg_cut.{_CUT_LIST}",
    f"recall.{_CUT_LIST}",
    f"P.{_CUT_LIST}",
    f"map_cut.{_CUT_LIST}",
    f"success.{_CUT_LIST}",
    "recip_rank",
    "Rprec",
    "ndcg",
    "map",
}
_TREC_KEY = {
    "ndcg": "ndcg_cut_{k}",
    "recall": "recall_{k}",
    "precision": "P_{k}",
    "map": "map_cut_{k}",
    "hit": "success_{k}",
}
_UNCUT_KEY = {"ndcg": "ndcg", "mrr": "recip_rank", "map": "map", "r_precision": "Rprec"}

NFCORPUS = Path(__file__).parents[1].parent / "shared" / "datasets" / "nfcorpus"


def expected_value(metric: RetrievalMetric, trec: Mapping[str, float]) -> float:
    """The pytrec_eval value that ``metric`` must equal for one query."""
    if metric.k is None:
        return trec[_UNCUT_KEY[metric.kind]]
    if metric.kind == "mrr":
        # recip_rank is 1/rank of the first relevant doc, so recip_rank on the top k is that
        # value when rank <= k and 0 otherwise; derived without reusing trec_order.
        rr = trec["recip_rank"]
        return rr if rr > 0 and round(1 / rr) <= metric.k else 0.0
    return trec[_TREC_KEY[metric.kind].format(k=metric.k)]


def trec_eval_values(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    return pytrec_eval.RelevanceEvaluator(dict(qrels), TREC_MEASURES).evaluate(dict(run))


def assert_matches_trec_eval(
    hits: Sequence[tuple[str, float]], qrels: Mapping[str, int], trec: Mapping[str, float]
) -> None:
    ours = evaluate(ALL_METRICS, hits, qrels)
    assert list(ours) == [m.name for m in ALL_METRICS]
    ranked = trec_order(hits)
    for metric in ALL_METRICS:
        want = expected_value(metric, trec)
        assert ours[metric.name] == pytest.approx(want, abs=1e-9), metric.name
        assert metric.compute(ranked, qrels) == ours[metric.name], metric.name


# -- random runs against pytrec_eval -------------------------------------------------------------

# Ids of varied length, case and script so ties exercise strcmp order ("d9" > "d10", "a" > "B",
# "é" > "z" in UTF-8 byte order).
DOC_POOL = (
    *(f"d{i}" for i in range(140)),
    *("a", "B", "b", "Z", "z", "é", "Ω", "d-1", "D1", "x10", "x9", "x09"),
)


@st.composite
def query_cases(draw: st.DrawFn) -> tuple[dict[str, int], list[tuple[str, float]]]:
    judged = draw(st.lists(st.sampled_from(DOC_POOL), min_size=1, max_size=25, unique=True))
    # About one query in five has no relevant document (all grades 0).
    if draw(st.integers(0, 4)) == 0:
        qrels = dict.fromkeys(judged, 0)
    else:
        qrels = {doc: draw(st.integers(0, 3)) for doc in judged}
    size = draw(st.sampled_from((0, 1, 2, 4, 7, 12, 40, 120)))
    retrieved = draw(st.lists(st.sampled_from(DOC_POOL), min_size=size, max_size=size, unique=True))
    # Coarse scores make ties frequent; rounding floats keeps them reproducible as doubles.
    score = st.one_of(
        st.integers(-2, 4),
        st.floats(-3, 3, allow_nan=False).map(lambda x: round(x, 1)),
    )
    hits = [(doc, draw(score)) for doc in retrieved]
    return qrels, hits


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query_cases())
def test_random_queries_match_trec_eval(case: tuple[dict[str, int], list[tuple[str, float]]]):
    qrels, hits = case
    trec = trec_eval_values({"q": qrels}, {"q": dict(hits)})
    # pytrec_eval scores a query with qrels even when nothing was retrieved.
    assert set(trec) == {"q"}
    assert_matches_trec_eval(hits, qrels, trec["q"])


def test_all_grade_zero_qrels_score_zero_like_trec_eval():
    qrels = {"d1": 0, "d2": 0}
    hits = [("d1", 2.0), ("d2", 1.0), ("d3", 0.5)]
    trec = trec_eval_values({"q": qrels}, {"q": dict(hits)})["q"]
    assert_matches_trec_eval(hits, qrels, trec)
    assert set(evaluate(ALL_METRICS, hits, qrels).values()) == {0.0}


def test_empty_qrels_score_zero_where_trec_eval_skips_the_query():
    hits = [("d1", 1.0)]
    # trec_eval ignores a query without qrels, and pytrec_eval leaves it out of its answer.
    trec = trec_eval_values({"q": {}, "other": {"d1": 1}}, {"q": dict(hits), "other": dict(hits)})
    assert "q" not in trec
    assert set(evaluate(ALL_METRICS, hits, {}).values()) == {0.0}


def test_negative_grades_are_non_relevant_like_trec_eval():
    qrels = {"a": -1, "b": 2, "c": 0, "d": 1, "e": -2}
    hits = [("a", 5.0), ("b", 4.0), ("c", 3.0), ("e", 2.0), ("d", 1.0), ("f", 1.0)]
    trec = trec_eval_values({"q": qrels}, {"q": dict(hits)})["q"]
    assert_matches_trec_eval(hits, qrels, trec)
    assert evaluate([parse_metric("mrr")], hits, qrels)["mrr"] == 0.5


def test_every_retrieved_document_counts_and_max_retrieved_mirrors_dash_m():
    qrels = {"d1200": 1, "d5": 2}
    hits = [(f"d{i}", float(-i)) for i in range(1500)]
    trec = trec_eval_values({"q": qrels}, {"q": dict(hits)})["q"]
    assert_matches_trec_eval(hits, qrels, trec)
    assert evaluate([parse_metric("map")], hits, qrels)["map"] == pytest.approx(
        (1 / 6 + 2 / 1201) / 2
    )

    capped = evaluate(ALL_METRICS, hits, qrels, max_retrieved=1000)
    top = trec_order(hits)[:1000]
    trec_top = trec_eval_values({"q": qrels}, {"q": {d: s for d, s in hits if d in set(top)}})
    for metric in ALL_METRICS:
        want = expected_value(metric, trec_top["q"])
        assert capped[metric.name] == pytest.approx(want, abs=1e-9), metric.name
    assert capped["map"] == pytest.approx((1 / 6) / 2)


def test_precision_divides_by_k_when_fewer_documents_are_retrieved():
    qrels = {"a": 1, "b": 1}
    hits = [("a", 1.0), ("b", 0.5)]
    values = evaluate([parse_metric("P@10"), parse_metric("recall@10")], hits, qrels)
    assert values == {"precision@10": 0.2, "recall@10": 1.0}


# -- NFCorpus against pytrec_eval ----------------------------------------------------------------


def _read_nfcorpus() -> tuple[dict[str, dict[str, int]], list[str]]:
    qrels: dict[str, dict[str, int]] = {}
    with (NFCORPUS / "qrels" / "test.tsv").open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t")
        header = next(rows)
        assert [cell.strip() for cell in header] == ["query-id", "corpus-id", "score"]
        for query_id, doc_id, grade in rows:
            qrels.setdefault(query_id, {})[doc_id] = int(grade)
    with (NFCORPUS / "corpus.jsonl").open(encoding="utf-8") as handle:
        corpus_ids = [json.loads(line)["_id"] for line in handle if line.strip()]
    return qrels, corpus_ids


@pytest.mark.skipif(
    not (NFCORPUS / "qrels" / "test.tsv").is_file() or not (NFCORPUS / "corpus.jsonl").is_file(),
    reason=f"NFCorpus not found at {NFCORPUS} (expected qrels/test.tsv and corpus.jsonl)",
)
def test_nfcorpus_test_split_matches_trec_eval():
    qrels, corpus_ids = _read_nfcorpus()
    assert len(qrels) > 300
    assert len(corpus_ids) > 3000

    runs: dict[str, dict[str, float]] = {}
    for query_id in sorted(qrels):
        rng = random.Random(f"nfcorpus-run-{query_id}")
        relevant = sorted(qrels[query_id])
        docs = rng.sample(corpus_ids, 100) + rng.sample(relevant, min(len(relevant), 8))
        # Quarter-point scores from a small range: many ties, exactly representable.
        runs[query_id] = {doc: rng.randint(0, 40) / 4 for doc in docs}

    trec = trec_eval_values(qrels, runs)
    assert set(trec) == set(qrels)
    assert any(v["ndcg_cut_10"] > 0 for v in trec.values())
    for query_id, run in runs.items():
        assert_matches_trec_eval(list(run.items()), qrels[query_id], trec[query_id])


# -- parse_metric --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "name", "kind", "k"),
    [
        ("ndcg@10", "ndcg@10", "ndcg", 10),
        ("nDCG@10", "ndcg@10", "ndcg", 10),
        ("ndcg_cut_10", "ndcg@10", "ndcg", 10),
        ("ndcg_cut.10", "ndcg@10", "ndcg", 10),
        ("ndcg", "ndcg", "ndcg", None),
        ("recall@100", "recall@100", "recall", 100),
        ("R@100", "recall@100", "recall", 100),
        ("recall_100", "recall@100", "recall", 100),
        ("mrr@10", "mrr@10", "mrr", 10),
        ("MRR@10", "mrr@10", "mrr", 10),
        ("recip_rank@10", "mrr@10", "mrr", 10),
        ("RR@10", "mrr@10", "mrr", 10),
        ("mrr", "mrr", "mrr", None),
        ("recip_rank", "mrr", "mrr", None),
        ("map@100", "map@100", "map", 100),
        ("AP@100", "map@100", "map", 100),
        ("map_cut_100", "map@100", "map", 100),
        ("map", "map", "map", None),
        ("precision@5", "precision@5", "precision", 5),
        ("P@5", "precision@5", "precision", 5),
        ("p@5", "precision@5", "precision", 5),
        ("P_5", "precision@5", "precision", 5),
        ("P.5", "precision@5", "precision", 5),
        ("hit@10", "hit@10", "hit", 10),
        ("success@10", "hit@10", "hit", 10),
        ("Success_10", "hit@10", "hit", 10),
        ("r_precision", "r_precision", "r_precision", None),
        ("Rprec", "r_precision", "r_precision", None),
        ("R-precision", "r_precision", "r_precision", None),
        ("  NDCG @ 3 ", "ndcg@3", "ndcg", 3),
    ],
)
def test_parse_metric_aliases(spelling: str, name: str, kind: str, k: int | None):
    metric = parse_metric(spelling)
    assert (metric.name, metric.kind, metric.k, metric.direction) == (name, kind, k, "higher")
    assert metric == RetrievalMetric(name=name, kind=kind, k=k)
    assert parse_metric(metric.name) == metric
    assert str(metric) == name


def test_parsed_metrics_are_hashable_values():
    spellings = ["nDCG@10", "ndcg@10", "ndcg_cut_10", "P@5", "precision@5"]
    assert {parse_metric(s) for s in spellings} == {parse_metric("ndcg@10"), parse_metric("P@5")}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ndcg@0", "k must be a positive integer, got 0"),
        ("recall@-3", "k must be a positive integer, got -3"),
        ("ndcg_cut_0", "k must be a positive integer, got 0"),
        ("P@five", "k must be a positive integer, got 'five'"),
        ("ndcg@", "k must be a positive integer, got ''"),
        ("ndgc@10", "unknown metric 'ndgc@10' (did you mean 'ndcg'?)"),
        ("bleu", "unknown metric 'bleu'"),
        ("", "unknown metric ''"),
        ("recall", "recall needs a cutoff"),
        ("P", "precision needs a cutoff"),
        ("success", "hit needs a cutoff"),
        ("ndcg_cut", "ndcg_cut needs a cutoff"),
        ("Rprec@10", "r_precision takes no cutoff"),
    ],
)
def test_parse_metric_errors(name: str, message: str):
    with pytest.raises(ValueError) as info:
        parse_metric(name)
    assert message in str(info.value)
    assert "accepted forms: ndcg@K" in str(info.value)


def test_unknown_metric_message_lists_every_accepted_form():
    with pytest.raises(ValueError) as info:
        parse_metric("bogus@10")
    for form in KNOWN_METRIC_FORMS:
        assert form in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "ndcg@10", "kind": "ndcg", "k": 0}, "k must be a positive integer, got 0"),
        ({"name": "ndcg@10", "kind": "ndcg", "k": 5}, "expected 'ndcg@5'"),
        ({"name": "nDCG@10", "kind": "ndcg", "k": 10}, "expected 'ndcg@10'"),
        ({"name": "bleu", "kind": "bleu", "k": None}, "unknown metric kind 'bleu'"),
        ({"name": "recall", "kind": "recall", "k": None}, "recall needs a cutoff"),
        ({"name": "map", "kind": "map", "k": None, "direction": "lower"}, "must be 'higher'"),
    ],
)
def test_retrieval_metric_rejects_inconsistent_values(kwargs: dict[str, object], message: str):
    with pytest.raises(ValueError) as info:
        RetrievalMetric(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_compute_rejects_duplicate_documents():
    with pytest.raises(ValueError, match="'a' is ranked twice"):
        parse_metric("recall@10").compute(["a", "b", "a"], {"a": 1})


# -- trec_order ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hits", "order"),
    [
        ([], []),
        ([("a", 1.0), ("b", 1.0), ("c", 2.0)], ["c", "b", "a"]),
        ([("d10", 1.0), ("d9", 1.0), ("d100", 1.0)], ["d9", "d100", "d10"]),
        ([("B", 0.5), ("a", 0.5)], ["a", "B"]),
        ([("z", 0.0), ("é", 0.0), ("Ω", 0.0)], ["Ω", "é", "z"]),
        ([("x", 1), ("y", 1.0)], ["y", "x"]),
        ([("p", 0.0), ("q", -0.0)], ["q", "p"]),
        ([("lo", -1.0), ("hi", float("inf")), ("mid", 0.3)], ["hi", "mid", "lo"]),
        ([("a", 1.0), ("b", 3.0), ("a", 5.0)], ["b", "a"]),
        ([("d1", 2.0), ("d2", 2.0), ("d3", 3.0), ("d0", 1.0)], ["d3", "d2", "d1", "d0"]),
    ],
)
def test_trec_order_ties(hits: list[tuple[str, float]], order: list[str]):
    assert trec_order(hits) == order


def test_trec_order_tie_breaking_agrees_with_trec_eval():
    # Only "b" is relevant; its reciprocal rank reveals where trec_eval put it among the ties.
    hits = [("a", 1.0), ("b", 1.0), ("c", 1.0), ("B", 1.0)]
    trec = trec_eval_values({"q": {"b": 1}}, {"q": dict(hits)})["q"]
    assert trec_order(hits) == ["c", "b", "a", "B"]
    assert trec["recip_rank"] == 0.5


@pytest.mark.parametrize("hits", [
    [("a", 1.00000001), ("b", 1.0)],                   # equal in single precision
    [("a", 1.0000000000000002), ("b", 1.0)],
    [("a", 16777217), ("b", 16777216)],                # 2**24 + 1 rounds to 2**24
    [("a", 1e39), ("b", 1e40)],                        # both past float's range
    [("a", 1.0000001), ("b", 1.0)],                    # distinct in single precision
    [("a", 0.30000001), ("b", 0.3), ("c", 0.29999999)],
])
def test_trec_order_compares_scores_as_trec_eval_stores_them(hits: list[tuple[str, float]]):
    # trec_eval keeps a score as a C float: scores equal in single precision tie and go by
    # document id; ranked as doubles, "a" came first and every metric of the query differed
    rel = {"q": {"a": 1}}
    trec = trec_eval_values(rel, {"q": dict(hits)})["q"]
    ranked = trec_order(hits)
    assert trec["recip_rank"] == 1 / (ranked.index("a") + 1)


def test_trec_order_max_retrieved_cuts_after_sorting():
    hits = [("low", 0.1), ("top", 0.9), ("mid", 0.5)]
    assert trec_order(hits, max_retrieved=2) == ["top", "mid"]
    with pytest.raises(ValueError, match="max_retrieved must be a positive integer"):
        trec_order(hits, max_retrieved=0)


def test_trec_order_rejects_nan_scores():
    with pytest.raises(ValueError, match="NaN"):
        trec_order([("a", float("nan"))])
