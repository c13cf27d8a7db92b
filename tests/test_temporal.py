"""Temporal nDCG: hand-computed values, time and duration parsing, suite syntax."""

from __future__ import annotations

import json
import math
import random
import textwrap
from datetime import date, datetime, timedelta, timezone

import pytest
from conftest import BASE_INI

from pytest_ragbench.datasets import Document, Query
from pytest_ragbench.metrics.retrieval import parse_metric
from pytest_ragbench.metrics.spec import CaseResult, resolve_metric
from pytest_ragbench.metrics.temporal import TemporalNDCG, parse_duration, parse_time

DAY = 86400.0
NOW = 1_700_000_000.0


def _docs(ages_days: dict[str, float | None]) -> dict[str, Document]:
    return {
        d: Document(id=d, text=d, metadata={} if age is None else {"timestamp": NOW - age * DAY})
        for d, age in ages_days.items()
    }


def _result(ranked: list[str], docs: dict[str, Document], run_start: float | None = None
            ) -> CaseResult:
    return CaseResult(ranked=tuple(ranked), documents=docs, run_start=run_start)


def _dcg(gains: list[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def test_gains_halve_per_period_with_lambda_ln2() -> None:
    metric = TemporalNDCG(k=3, lambda_=math.log(2), T="1d", now=NOW, gain="linear")
    docs = _docs({"a": 0, "b": 1, "c": 0, "d": 0})
    case = Query(id="q", text="q", relevant={"a": 2, "b": 2, "c": 1, "d": 0}, judged=True)
    value = metric.compute(case, _result(["b", "a", "d"], docs))
    # gains: a 2, b 2 * 1/2 = 1, c 1, d 0; ranking b, a, d; ideal 2, 1, 1
    expected = _dcg([1.0, 2.0, 0.0]) / _dcg([2.0, 1.0, 1.0])
    assert value == pytest.approx(expected, abs=1e-12)
    assert value == pytest.approx(0.722425, abs=1e-6)


def test_ideal_ordering_is_by_discounted_gain() -> None:
    metric = TemporalNDCG(k=2, lambda_=math.log(2), T="1d", now=NOW, gain="linear")
    docs = _docs({"old": 3, "new": 0})
    case = Query(id="q", text="q", relevant={"old": 3, "new": 1}, judged=True)
    # old: 3 / 2^3 = 0.375; new: 1. The ideal list puts the fresh, less relevant one first.
    assert metric.compute(case, _result(["new", "old"], docs)) == pytest.approx(1.0)
    graded_first = metric.compute(case, _result(["old", "new"], docs))
    assert graded_first == pytest.approx(_dcg([0.375, 1.0]) / _dcg([1.0, 0.375]))
    assert graded_first < 1.0


def test_defaults_follow_the_original_definition() -> None:
    """k=10, T=7 days, lambda=0.3, gain 2^rel - 1, IDCG by decayed gain (hand-computed)."""
    metric = TemporalNDCG(now=NOW)
    assert (metric.k, metric.T, metric.lambda_) == (10, 7 * DAY, 0.3)
    docs = _docs({"a": 0, "b": 7, "c": 14, "x": 1, "z": 3.5})
    case = Query(id="q", text="q", relevant={"a": 2, "b": 1, "c": 3, "x": 0}, judged=True)
    # gains: a (2^2-1) e^0 = 3; b (2^1-1) e^-0.3 = 0.740818220681718;
    # c (2^3-1) e^-0.6 = 3.841681452658185; x and z 0
    # DCG = 0.740818220681718/1 + 3/log2(3) + 0/2 + 3.841681452658185/log2(5)
    #     = 0.740818220681718 + 1.892789260714372 + 1.654522145245220 = 4.288129626641310
    # IDCG = 3.841681452658185/1 + 3/log2(3) + 0.740818220681718/2 = 6.104879823713416
    value = metric.compute(case, _result(["b", "a", "x", "c", "z"], docs))
    assert value == pytest.approx(4.288129626641310 / 6.104879823713416, abs=1e-12)
    assert value == pytest.approx(0.702410, abs=1e-6)
    assert metric.gain("c", 3, NOW, docs) == pytest.approx(7 * math.exp(-0.6), abs=1e-15)


def test_linear_gain_without_decay_is_trec_evals_ndcg() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = random.Random(1)
    ids = [f"d{i:02d}" for i in range(40)]
    docs = _docs({d: rng.uniform(0, 30) for d in ids})
    checked = 0
    for _ in range(50):
        qrels = {d: rng.choice([0, 0, 1, 1, 2, 3]) for d in rng.sample(ids, rng.randint(1, 12))}
        if not any(g > 0 for g in qrels.values()):
            continue
        scores = {d: float(s) for s, d in enumerate(rng.sample(ids, rng.randint(1, 25)))}
        ranking = sorted(scores, key=lambda d: -scores[d])
        for k in (1, 5, 10):
            trec = pytrec_eval.RelevanceEvaluator({"q": qrels}, {f"ndcg_cut.{k}"})
            expected = trec.evaluate({"q": scores})["q"][f"ndcg_cut_{k}"]
            case = Query(id="q", text="q", relevant=qrels, judged=True)
            metric = TemporalNDCG(k=k, lambda_=0, now=NOW, gain="linear")
            assert metric.compute(case, _result(ranking, docs)) == pytest.approx(
                expected, abs=1e-12)
            checked += 1
    assert checked > 100


def test_lambda_zero_is_plain_ndcg() -> None:
    docs = _docs({f"d{i}": float(i) for i in range(6)})
    case = Query(id="q", text="q", relevant={"d0": 1, "d2": 3, "d4": 2, "d5": 0}, judged=True)
    ranking = ["d5", "d4", "d1", "d0", "d2"]
    plain = parse_metric("ndcg@4").compute(ranking, case.relevant)
    temporal = TemporalNDCG(k=4, lambda_=0, now=NOW, gain="linear").compute(
        case, _result(ranking, docs))
    assert temporal == pytest.approx(plain, abs=1e-12)


def test_cutoff_and_no_relevant_documents() -> None:
    metric = TemporalNDCG(k=1, lambda_=0.3, now=NOW)
    docs = _docs({"a": 0, "b": 0})
    case = Query(id="q", text="q", relevant={"a": 1, "b": 2}, judged=True)
    # only rank 1 counts: a's gain 2^1 - 1 = 1 against the ideal b's 2^2 - 1 = 3
    assert metric.compute(case, _result(["a", "b"], docs)) == pytest.approx(1 / 3)
    linear = TemporalNDCG(k=1, lambda_=0.3, now=NOW, gain="linear")
    assert linear.compute(case, _result(["a", "b"], docs)) == pytest.approx(0.5)
    nothing = Query(id="q", text="q", relevant={"a": 0}, judged=True)
    assert metric.compute(nothing, _result(["a"], docs)) == 0.0


def test_future_documents_are_not_decayed() -> None:
    metric = TemporalNDCG(k=2, lambda_=5.0, T=1, now=NOW)
    docs = _docs({"a": -10})  # ten days in the future
    case = Query(id="q", text="q", relevant={"a": 1}, judged=True)
    assert metric.gain("a", 1, NOW, docs) == 1.0
    assert metric.compute(case, _result(["a"], docs)) == 1.0


def test_missing_timestamp_policies() -> None:
    docs = _docs({"a": 0, "undated": None})
    case = Query(id="q", text="q", relevant={"a": 1, "undated": 1}, judged=True)
    ranking = ["undated", "a"]
    zero = TemporalNDCG(k=2, lambda_=0, now=NOW, missing="zero")
    assert zero.compute(case, _result(ranking, docs)) == pytest.approx(
        _dcg([0.0, 1.0]) / _dcg([1.0]))
    no_decay = TemporalNDCG(k=2, lambda_=0, now=NOW, missing="no_decay")
    assert no_decay.compute(case, _result(ranking, docs)) == pytest.approx(1.0)
    strict = TemporalNDCG(k=2, now=NOW, missing="error")
    with pytest.raises(ValueError, match="document 'undated' has no readable 'timestamp'"):
        strict.compute(case, _result(ranking, docs))
    absent = Query(id="q", text="q", relevant={"gone": 1}, judged=True)
    with pytest.raises(ValueError, match="document 'gone' is not in the corpus"):
        strict.compute(absent, _result([], docs))


def test_now_defaults_to_the_run_start() -> None:
    metric = TemporalNDCG(k=1, lambda_=math.log(2), T="1d")
    docs = _docs({"a": 0})  # stamped NOW
    case = Query(id="q", text="q", relevant={"a": 1, "b": 0}, judged=True)
    one_day_later = NOW + DAY
    # ideal and actual decay alike, so look at the gain itself: (2^2 - 1) / 2
    assert metric.gain("a", 2, one_day_later, docs) == pytest.approx(1.5)
    assert metric.compute(case, _result(["a"], docs, run_start=one_day_later)) == 1.0
    assert metric._now(_result([], docs, run_start=one_day_later)) == one_day_later


def test_custom_timestamp_field() -> None:
    docs = {"a": Document(id="a", text="", metadata={"published": "2026-01-01T00:00:00Z"})}
    metric = TemporalNDCG(k=1, lambda_=1.0, T="1d", now="2026-01-03T00:00:00Z",
                          field="published")
    assert metric.gain("a", 1, metric.now or 0.0, docs) == pytest.approx(math.exp(-2))


@pytest.mark.parametrize(("value", "seconds"), [
    ("7d", 7 * DAY), ("12h", 43200.0), ("30m", 1800.0), ("45s", 45.0), ("2w", 14 * DAY),
    ("1.5h", 5400.0), (" 3D ", 3 * DAY), ("600", 600.0), (3600, 3600.0), (0.5, 0.5),
])
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["7x", "", "d", 0, -1, True, None, float("inf")])
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-01-01T00:00:00Z", datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()),
    ("2026-01-01T00:00:00", datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()),
    ("2026-01-01T02:00:00+02:00", datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()),
    ("2026-01-01", datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()),
    ("1700000000", 1_700_000_000.0),
    (1_700_000_000, 1_700_000_000.0),
    (datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
     datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()),
    (date(2026, 1, 1), datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()),
])
def test_parse_time(value: object, expected: float) -> None:
    assert parse_time(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", True, None, [1]])
def test_parse_time_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_time(value)


def test_suite_mapping_parameters_resolve_through_the_registry() -> None:
    spec = resolve_metric("temporal_ndcg@5", {"lambda": 0.5, "T": "3d",
                                              "now": "2026-01-01T00:00:00Z"})
    assert spec.name == "temporal_ndcg@5"
    assert spec.k == 5
    assert spec.kind == "temporal_ndcg"
    assert spec.direction == "higher"
    assert spec.needs_qrels
    metric = spec.component
    assert (metric.lambda_, metric.T) == (0.5, 3 * DAY)
    assert metric.now == datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    assert resolve_metric("temporal_ndcg").name == "temporal_ndcg@10"
    with pytest.raises(ValueError, match="lambda must be a number >= 0"):
        resolve_metric("temporal_ndcg@5", {"lambda": -1})
    with pytest.raises(ValueError, match="the cutoff is given twice"):
        resolve_metric("temporal_ndcg@5", {"k": 3})
    with pytest.raises(ValueError, match="missing must be one of zero, no_decay, error"):
        resolve_metric("temporal_ndcg@5", {"missing": "skip"})
    with pytest.raises(ValueError, match="gain must be one of exponential, linear"):
        resolve_metric("temporal_ndcg@5", {"gain": "log"})
    assert resolve_metric("temporal_ndcg@5", {"gain": "linear"}).component.gain_kind == "linear"


def test_temporal_ndcg_in_a_suite_run(pytester: pytest.Pytester) -> None:
    pytester.makeini(BASE_INI)
    pytester.makepyfile(fixed="""
        class Fixed:
            def index(self, corpus):
                pass
            def retrieve(self, query, k):
                return [("old", 2.0), ("new", 1.0)]
    """)
    pytester.path.joinpath("suite.yaml").write_text(textwrap.dedent("""\
        name: fresh
        dataset:
          documents:
            - {_id: old, text: an old article, timestamp: "2025-12-29T00:00:00Z"}
            - {_id: new, text: a new article, timestamp: 1767225600}
          items:
            - {_id: q1, text: article, relevant: {old: 3, new: 1}}
        retrievers: {f: {type: "fixed:Fixed"}}
        metrics:
          - ndcg@2
          - {name: temporal_ndcg@2, lambda: 0.6931471805599453, T: 1d,
             now: "2026-01-01T00:00:00Z"}
          - {name: temporal_ndcg@2, lambda: 0.6931471805599453, T: 1d,
             now: "2026-01-01T00:00:00Z", gain: linear, as: temporal_ndcg_linear@2}
    """), encoding="utf-8")
    result = pytester.runpytest("--ragbench=suite.yaml")
    result.assert_outcomes(passed=1)
    rec = json.loads((pytester.path / ".ragbench/runs/latest/cases.jsonl").read_text())
    # old is 3 days old at "now": gain (2^3 - 1)/8 = 0.875; new (epoch 1767225600 = now)
    # keeps gain 2^1 - 1 = 1
    expected = _dcg([0.875, 1.0]) / _dcg([1.0, 0.875])
    assert rec["metrics"]["temporal_ndcg@2"] == pytest.approx(expected, abs=1e-9)
    # linear gains: 3/8 and 1
    linear = _dcg([0.375, 1.0]) / _dcg([1.0, 0.375])
    assert rec["metrics"]["temporal_ndcg_linear@2"] == pytest.approx(linear, abs=1e-9)
    assert rec["metrics"]["ndcg@2"] == pytest.approx(1.0)


def test_a_timestamp_field_no_document_has_is_a_collection_error(pytester: pytest.Pytester
                                                                  ) -> None:
    # every gain was the missing one: temporal nDCG 0 for every query, without a word
    pytester.makeini(BASE_INI)
    pytester.path.joinpath("suite.yaml").write_text(textwrap.dedent("""\
        name: fresh
        dataset:
          documents:
            - {_id: old, text: an old article, published: "2025-12-29T00:00:00Z"}
            - {_id: new, text: a new article, published: 1767225600}
          items:
            - {_id: q1, text: article, relevant: {old: 3, new: 1}}
        retrievers: {bm25: {}}
        metrics:
          - ndcg@2
          - {name: temporal_ndcg@2, field: publshed}
    """), encoding="utf-8")
    result = pytester.runpytest("--ragbench=suite.yaml")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "*suite.yaml:11: metrics[[]1[]]: temporal_ndcg@2: no document of the corpus has a "
        "'publshed' field to date it (did you mean 'published'?) (their other fields: "
        "published); set the metric's field"])
    # the default field on an undated corpus
    assert TemporalNDCG(2).check_corpus([Document("d1", "x")]) == (
        "temporal_ndcg@2: no document of the corpus has a 'timestamp' field to date it (they "
        "have no field but id, title and text); set the metric's field")
    assert TemporalNDCG(2, field="published").check_corpus(
        [Document("d1", "x"), Document("d2", "y", metadata={"published": 0})]) is None
