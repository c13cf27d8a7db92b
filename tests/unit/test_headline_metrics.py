"""Which metrics a suite leads with (report.views.headline_metrics): the same pick for the
HTML trends and the terminal summary."""

from __future__ import annotations

import pytest

from pytest_ragbench.report.views import headline_metrics

pytestmark = pytest.mark.unit

SUITE = {"id": "suites/a.yaml", "name": "a",
         "metrics": ["ndcg@10", "recall@10", "mrr@10", "hit@10", "latency_ms", "map"]}


def test_first_listed_metrics_without_gates() -> None:
    assert headline_metrics(SUITE) == ["ndcg@10", "recall@10", "mrr@10"]
    assert headline_metrics(SUITE, count=1) == ["ndcg@10"]
    assert headline_metrics({**SUITE, "metrics": ["a"]}) == ["a"]


def test_gated_metrics_join_in_listing_order() -> None:
    gates = [{"suite": "a", "metric": "map"}, {"suite": "suites/a.yaml", "metric": "hit@10"},
             {"suite": "other", "metric": "latency_ms"},  # another suite's gate
             {"suite": "a", "metric": "error_rate"},  # not a listed metric
             {"suite": "x", "suite_id": "suites/a.yaml", "metric": "ndcg@10"}]
    # three gated metrics already make the three; more gated ones would all lead
    assert headline_metrics(SUITE, gates) == ["ndcg@10", "hit@10", "map"]
    assert headline_metrics(SUITE, gates[:1]) == ["ndcg@10", "recall@10", "map"]
    assert headline_metrics(SUITE, gates, count=5) == ["ndcg@10", "recall@10", "mrr@10",
                                                       "hit@10", "map"]


def test_gates_inside_the_suite_summary_count_too() -> None:
    suite = {**SUITE, "retrievers": [{"name": "bm25", "gates": [
        {"suite": "a", "metric": "map"}, {"suite": "a", "metric": "latency_ms"}]}]}
    assert headline_metrics(suite, count=1) == ["map"]
    # latency has a column (and a chart) of its own, gated or not
    assert "latency_ms" not in headline_metrics(suite, count=9)


def test_a_gate_of_another_file_of_the_same_name_does_not_count() -> None:
    # two suite files of a run may share a name: a gate names its file, which decides
    gates = [{"suite": "a", "suite_id": "suites/b.yaml", "metric": "map"},
             {"suite": "a", "suite_id": "suites/a.yaml", "metric": "hit@10"}]
    assert headline_metrics(SUITE, gates, count=1) == ["hit@10"]
