"""Aggregation (:func:`pytest_ragbench.results.aggregate.summarize_run`) from hand-made records.

Records are plain dicts shaped like the lines of ``cases.jsonl``; nothing here runs pytest.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ragbench.records import dumps_json, error_record, mark_expected_failure
from pytest_ragbench.results.aggregate import summarize_run
from pytest_ragbench.results.spec import suite_spec
from pytest_ragbench.results.stats import summarize
from pytest_ragbench.suite.loader import Suite, load_suite

SID = "suites/s.yaml"


def rec(case_id: str, metrics: dict[str, float | None], *, retriever: str = "a",
        status: str = "ok", run: int = 0, suite: str = SID, **extra: Any) -> dict[str, Any]:
    """A record as the runtime writes it, with only what aggregation reads filled in."""
    out: dict[str, Any] = {
        "schema": 1, "suite": suite, "suite_name": "s", "suite_hash": "h" * 64,
        "dataset_hash": "d" * 64, "retriever": retriever, "case_id": case_id, "run": run,
        "query": f"text of {case_id}", "type": None, "difficulty": None, "tags": [],
        "status": status, "error": None, "metrics": metrics, "latency_ms": 1.0,
        "n_relevant": 1, "no_relevant": False, "retrieved": [], "missed": [],
        "thresholds": [], "xfail": None,
    }
    out.update(extra)
    return out


def errored(case_id: str, *, retriever: str = "a", message: str = "boom") -> dict[str, Any]:
    out = error_record(suite=SID, retriever=retriever, case_id=case_id, message=message,
                       stage="retrieve", etype="RuntimeError")
    out["metrics"] = {"ndcg@10": None, "recall@10": None}
    return out


# Retriever "a": three scored queries, one unjudged (NaN), one error, one below a threshold.
RECORDS_A = [
    rec("q1", {"ndcg@10": 1.0, "recall@10": 1.0}),
    rec("q2", {"ndcg@10": 0.5, "recall@10": 0.25}, status="failed"),
    rec("q3", {"ndcg@10": None, "recall@10": None}, n_relevant=None),
    errored("q4"),
    rec("q5", {"ndcg@10": 0.0, "recall@10": 0.0}, no_relevant=True, n_relevant=0),
]
# Retriever "b": every query scored, one known failure.
B_NDCG = [0.713, 0.251, 0.482, 0.967, 0.031]  # by query id
RECORDS_B = [
    rec("q1", {"ndcg@10": 0.713, "recall@10": 1.0}, retriever="b"),
    rec("q2", {"ndcg@10": 0.251, "recall@10": 0.5}, retriever="b", status="failed"),
    rec("q3", {"ndcg@10": 0.482, "recall@10": 0.5}, retriever="b"),
    rec("q4", {"ndcg@10": 0.967, "recall@10": 1.0}, retriever="b"),
    rec("q5", {"ndcg@10": 0.031, "recall@10": 0.0}, retriever="b", no_relevant=True,
        n_relevant=0),
]
mark_expected_failure(RECORDS_B[1], "known miss", applied=True)
RECORDS = RECORDS_A + RECORDS_B


def group(summary: dict[str, Any], retriever: str, suite: int = 0) -> dict[str, Any]:
    return next(g for g in summary["suites"][suite]["retrievers"] if g["name"] == retriever)


def test_counts_means_and_nan_of_one_retriever() -> None:
    summary = summarize_run(RECORDS, {SID: None})
    assert [s["id"] for s in summary["suites"]] == [SID]
    assert summary["suites"][0]["metrics"] == ["ndcg@10", "recall@10"]
    a = group(summary, "a")
    assert (a["n_cases"], a["n_errors"], a["n_failed"], a["n_xfailed"], a["n_xpassed"],
            a["n_no_relevant"]) == (5, 1, 1, 0, 0, 1)
    assert a["error_rate"] == 0.2
    assert a["errors"] == [{"case_id": "q4", "stage": "retrieve", "message": "boom"}]
    ndcg = a["metrics"]["ndcg@10"]
    # The error (q4) has no scores at all; the unjudged q3 is NaN and counted as such.
    assert (ndcg["n"], ndcg["n_nan"]) == (3, 1)
    assert ndcg["mean"] == 0.5  # (1.0 + 0.5 + 0.0) / 3
    assert ndcg["std"] == pytest.approx(statistics.stdev([1.0, 0.5, 0.0]))
    assert ndcg["direction"] == "higher"
    recall = a["metrics"]["recall@10"]
    assert recall["mean"] == pytest.approx(1.25 / 3) and recall["n"] == 3
    assert ndcg["ci_low"] <= ndcg["mean"] <= ndcg["ci_high"]
    assert 0.0 <= ndcg["ci_low"] < ndcg["ci_high"] <= 1.0


def test_known_failures_are_counted_apart_from_failures() -> None:
    b = group(summarize_run(RECORDS, {SID: None}), "b")
    assert (b["n_cases"], b["n_errors"], b["n_failed"], b["n_xfailed"]) == (5, 0, 0, 1)
    ndcg = b["metrics"]["ndcg@10"]
    assert ndcg["mean"] == pytest.approx(sum(B_NDCG) / 5) and ndcg["n_nan"] == 0


def test_a_group_with_only_errors_has_nan_means_and_full_error_rate() -> None:
    summary = summarize_run([errored("q1", retriever="c"), errored("q2", retriever="c")],
                            {SID: None})
    c = group(summary, "c")
    assert c["n_errors"] == 2 and c["error_rate"] == 1.0
    ndcg = c["metrics"]["ndcg@10"]
    assert ndcg["n"] == 0 and ndcg["n_nan"] == 0 and math.isnan(ndcg["mean"])
    assert [e["case_id"] for e in c["errors"]] == ["q1", "q2"]


def test_ci_is_the_seeded_bootstrap_of_the_values_in_query_order(tmp_path: Path) -> None:
    suite = _suite(tmp_path, seed=7)
    first = summarize_run(RECORDS, {SID: suite_spec(suite)})
    again = summarize_run(RECORDS, {SID: suite_spec(suite)})
    assert dumps_json(first) == dumps_json(again)
    assert first["suites"][0]["seed"] == 7
    expected = summarize(B_NDCG, seed=7)
    ndcg = group(first, "b")["metrics"]["ndcg@10"]
    assert (ndcg["mean"], ndcg["ci_low"], ndcg["ci_high"], ndcg["std"]) == (
        expected.mean, expected.ci_low, expected.ci_high, expected.std)
    other_seed = summarize(B_NDCG, seed=8)
    # The seed is what makes the interval reproducible; another one draws other resamples.
    assert (other_seed.ci_low, other_seed.ci_high) != (expected.ci_low, expected.ci_high)


def test_suite_gates_are_checked_against_the_means(tmp_path: Path) -> None:
    suite = _suite(tmp_path, gates="gates: {ndcg@10: '>= 0.45', error_rate: '<= 0.1'}")
    summary = summarize_run(RECORDS, {SID: suite_spec(suite)})
    verdicts = {(g["retriever"], g["metric"]): g["passed"] for g in summary["gates"]}
    assert verdicts == {("a", "ndcg@10"): True, ("a", "error_rate"): False,
                        ("b", "ndcg@10"): True, ("b", "error_rate"): True}
    assert summary["gates_passed"] is False


def test_two_suites_are_summarized_apart_in_id_order() -> None:
    other = [rec("q1", {"ndcg@10": 0.2}, suite="a_first.yaml")]
    summary = summarize_run(RECORDS + other, {SID: None, "a_first.yaml": None})
    assert [s["id"] for s in summary["suites"]] == ["a_first.yaml", SID]
    only = group(summary, "a", suite=0)
    assert only["n_cases"] == 1 and only["metrics"]["ndcg@10"]["mean"] == 0.2
    assert group(summary, "a", suite=1)["n_cases"] == 5


def _suite(tmp_path: Path, *, seed: int = 0, gates: str = "") -> Suite:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: s
        dataset:
          documents: [{{_id: d1, text: one}}]
          items: [{{_id: q1, text: alpha, relevant: {{d1: 1}}}}]
        retrievers: {{a: {{}}, b: {{}}}}
        metrics: [ndcg@10, recall@10]
        seed: {seed}
        {gates}
    """), encoding="utf-8")
    return load_suite(path, None)


# -- order independence --------------------------------------------------------------------

_REPEATED = [  # repetitions make flaky-case lists and usage totals part of the summary too
    rec("q1", {"ndcg@10": 0.9, "recall@10": 1.0}, retriever="r", run=1,
        usage={"requests": 2, "prompt_tokens": 10, "completion_tokens": 3}, cost=0.5),
    rec("q1", {"ndcg@10": 0.1, "recall@10": 0.0}, retriever="r", run=0,
        usage={"requests": 1, "prompt_tokens": 7, "completion_tokens": 2}, cost=0.25),
]
_BASELINE_BYTES = dumps_json(summarize_run(RECORDS + _REPEATED, {SID: None}))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(RECORDS + _REPEATED))
def test_any_order_of_records_gives_the_same_summary_bytes(records: list[dict[str, Any]]) -> None:
    assert dumps_json(summarize_run(records, {SID: None})) == _BASELINE_BYTES


def test_the_order_independent_summary_still_sees_every_record() -> None:
    summary = summarize_run(RECORDS + _REPEATED, {SID: None})
    r = group(summary, "r")
    assert r["usage"]["requests"] == 3 and r["usage"]["cost"] == 0.75
    assert [(f["case_id"], f["metric"], f["flips"]) for f in r["flaky"]] == [
        ("q1", "recall@10", True), ("q1", "ndcg@10", True)]
    # Pairs of retrievers are compared on the queries both scored.
    ab = {p["metric"]: p for p in summary["suites"][0]["ab"]}
    pair = next(p for p in ab["ndcg@10"]["pairs"] if (p["a"], p["b"]) == ("a", "b"))
    assert pair["n"] == 3  # q1, q2, q5: q3 is NaN for a, q4 an error


# -- records and specs only ------------------------------------------------------------------

SPEC = {
    "name": "s", "metrics": ["recall@10", "ndcg@10"],
    "directions": {"recall@10": "higher", "ndcg@10": "higher"}, "retrievers": ["b", "a"],
    "seed": 3, "gates": ["ndcg@10 >= 0.45", "difficulty=hard: ndcg@10 >= 0.9",
                         "ndcg@10: drop <= 0.02"],
    "baseline_settings": {"tolerance": {}, "require_same_dataset": False, "test": "wilcoxon",
                          "alpha": 0.1},
}


def test_aggregation_takes_records_and_a_plain_spec_without_any_suite() -> None:
    records = [dict(r, difficulty="hard" if r["case_id"] == "q1" else None) for r in RECORDS]
    summary = summarize_run(records, {SID: SPEC})  # type: ignore[dict-item]
    s = summary["suites"][0]
    # The spec orders metrics and retrievers, names the suite and gives seed and settings.
    assert s["metrics"] == ["recall@10", "ndcg@10"] and s["name"] == "s"
    assert [r["name"] for r in s["retrievers"]] == ["b", "a"]
    assert s["seed"] == 3 and s["gate_texts"] == SPEC["gates"]
    assert s["ab"][0]["test"] == "wilcoxon" and s["ab"][0]["alpha"] == 0.1
    # Threshold gates are parsed back from their texts; the baseline gate waits for a baseline.
    checked = {(g["retriever"], g["text"]): g["passed"] for g in summary["gates"]}
    assert checked == {("b", "ndcg@10 >= 0.45"): True, ("a", "ndcg@10 >= 0.45"): True,
                       ("b", "difficulty=hard: ndcg@10 >= 0.9"): False,
                       ("a", "difficulty=hard: ndcg@10 >= 0.9"): True}


def test_the_spec_of_a_suite_gives_the_summary_the_suite_itself_gave(tmp_path: Path) -> None:
    import json

    suite = _suite(tmp_path, seed=5, gates="gates: {ndcg@10: 0.45, error_rate: '<= 0.1'}")
    spec = suite_spec(suite)
    # Plain JSON: it is written to run.json and read back by `ragbench report`.
    assert json.loads(json.dumps(spec)) == spec
    summary = summarize_run(RECORDS, {SID: json.loads(json.dumps(spec))})
    assert summary["suites"][0]["gate_texts"] == ["ndcg@10 >= 0.45", "error_rate <= 0.1"]
    assert {(g["retriever"], g["metric"]): g["passed"] for g in summary["gates"]} == {
        ("a", "ndcg@10"): True, ("a", "error_rate"): False,
        ("b", "ndcg@10"): True, ("b", "error_rate"): True}


def test_a_scoped_gate_counts_what_an_errored_case_measured() -> None:
    # q4 errored after retrieval was scored (say, its judge failed): its ndcg counts, as it
    # does in the unscoped mean.
    late = dict(errored("q4"), metrics={"ndcg@10": 0.2, "recall@10": 1.0}, difficulty="hard")
    early = dict(rec("q1", {"ndcg@10": 1.0, "recall@10": 1.0}), difficulty="hard")
    spec = dict(SPEC, gates=["difficulty=hard: ndcg@10 >= 0.7", "ndcg@10 >= 0.7"])
    summary = summarize_run([late, early], {SID: spec})  # type: ignore[dict-item]
    values = {g["text"]: g["value"] for g in summary["gates"]}
    assert values == {"difficulty=hard: ndcg@10 >= 0.7": 0.6, "ndcg@10 >= 0.7": 0.6}


def test_repetitions_of_a_query_are_one_sample_of_their_mean() -> None:
    """``runs: N`` gives N records per query: identical copies add no information, so n, the
    interval and the deviation are those of the queries (as comparisons pair them), not of
    N times as many samples."""
    values = {"q1": 0.9, "q2": 0.2, "q3": 0.6, "q4": 0.35}
    once = [rec(q, {"ndcg@10": v}) for q, v in values.items()]
    thrice = [rec(q, {"ndcg@10": v}, run=r) for q, v in values.items() for r in range(3)]
    single = group(summarize_run(once, {SID: None}), "a")["metrics"]["ndcg@10"]
    repeated = group(summarize_run(thrice, {SID: None}), "a")["metrics"]["ndcg@10"]
    assert repeated == single and single["n"] == 4
    # unequal repetitions (one run of q1 errored before it scored): each query weighs one
    uneven = [*thrice[1:], dict(errored("q1"), run=0)]
    scored = group(summarize_run(uneven, {SID: None}), "a")
    assert scored["metrics"]["ndcg@10"]["mean"] == pytest.approx(sum(values.values()) / 4)
    assert (scored["n_cases"], scored["n_errors"]) == (12, 1)


def test_a_scoped_gate_weighs_repetitions_as_the_unscoped_one_does() -> None:
    """With ``runs: 2`` a scoped error_rate counted a query as errored only when every run
    of it errored (an error in one run passed 'error_rate <= 0'), and a scoped mean
    weighed queries where the unscoped one weighed runs."""
    recs = [dict(errored("q1"), run=0, metrics={"ndcg@10": None}, difficulty="hard"),
            dict(rec("q1", {"ndcg@10": 0.4}, run=1), difficulty="hard"),
            dict(rec("q2", {"ndcg@10": 1.0}, run=0), difficulty="hard"),
            dict(rec("q2", {"ndcg@10": 0.8}, run=1), difficulty="hard")]
    spec = dict(SPEC, gates=["difficulty=hard: error_rate <= 0", "error_rate <= 0",
                             "difficulty=hard: ndcg@10 >= 0.5", "ndcg@10 >= 0.5"])
    summary = summarize_run(recs, {SID: spec})  # type: ignore[dict-item]
    values = {g["text"]: g["value"] for g in summary["gates"]}
    assert values["difficulty=hard: error_rate <= 0"] == values["error_rate <= 0"] == 0.25
    assert values["difficulty=hard: ndcg@10 >= 0.5"] == pytest.approx(0.65)  # (0.4 + 0.9) / 2
    assert values["ndcg@10 >= 0.5"] == pytest.approx(0.65)
    # `ragbench compare` checks the gates of a stored run as the run did
    from pytest_ragbench.results.baseline import make_baseline
    from pytest_ragbench.results.compare import compare_docs

    stored = compare_docs(None, make_baseline(summary, recs, {}))
    assert {g["text"]: g["value"] for g in stored["gates"]} == pytest.approx(values)


@pytest.mark.parametrize("partial", [False, True], ids=["whole", "partial"])
def test_a_scope_no_case_is_in_fails_a_whole_run_and_is_skipped_in_a_partial_one(
        partial: bool) -> None:
    """A `-k` run that left out the hard queries failed 'difficulty=hard: ...' with nan; a
    whole run with a misspelled scope value failed it without saying why."""
    from pytest_ragbench.report.views import gate_failure_line
    from pytest_ragbench.results.baseline import make_baseline
    from pytest_ragbench.results.compare import compare_docs

    recs = [dict(rec("q1", {"ndcg@10": 1.0}), difficulty="easy")]
    spec = dict(SPEC, gates=["difficulty=hard: ndcg@10 >= 0.5", "ndcg@10 >= 0.5"])
    summary = summarize_run(recs, {SID: spec}, {SID: 2 if partial else 1})  # type: ignore
    stored = compare_docs(None, make_baseline(summary, recs, {}))
    for gates in (summary["gates"], stored["gates"]):
        # system b of the spec ran no case: its gates, listed, judged nothing
        assert [g["text"] for g in gates if g["retriever"] == "b"] == (
            ["difficulty=hard: ndcg@10 >= 0.5", "ndcg@10 >= 0.5"] if partial else [])
        assert all(g["skipped"] and g["note"] == "no case of b ran in this partial run"
                   for g in gates if g["retriever"] == "b")
        (scoped,) = [g for g in gates if g["scope"] and g["retriever"] == "a"]
        if partial:
            assert scoped["passed"] and scoped["skipped"]
            assert scoped["note"] == "no case of its scope ran in this partial run"
        else:
            assert not scoped["passed"] and not scoped.get("skipped")
            assert gate_failure_line(scoped) == (
                "ragbench: gate failed: s/a [difficulty=hard] ndcg@10: no query matches "
                "difficulty=hard (`difficulty=hard: ndcg@10 >= 0.5`): nothing was checked")
    assert summary["gates_passed"] is partial


def test_a_partial_runs_gates_are_labelled_with_what_their_system_ran() -> None:
    """--deselect of one case of system "a" labelled every gate "on 7 of 8 cases", also those
    of "b", which ran all of its cases."""
    recs = [rec(q, {"ndcg@10": 1.0}, retriever=r) for r in ("a", "b")
            for q in ("q1", "q2", "q3", "q4") if (r, q) != ("a", "q3")]
    spec = dict(SPEC, gates=["ndcg@10 >= 0.5"])
    summary = summarize_run(recs, {SID: spec}, {SID: 8})  # type: ignore[dict-item]
    labels = {g["retriever"]: g.get("coverage") for g in summary["gates"]}
    assert labels == {"a": "3 of 4 cases", "b": None}


def test_two_records_of_one_query_in_one_run_are_one_sample() -> None:
    """Hand-written tests parametrized twice over the same case give two records of run 0:
    the shortcut for one run per query took them as two samples."""
    recs = [rec("q1", {"ndcg@10": 1.0}), rec("q1", {"ndcg@10": 0.0}),
            rec("q2", {"ndcg@10": 1.0})]
    ndcg = group(summarize_run(recs, {SID: None}), "a")["metrics"]["ndcg@10"]
    assert ndcg["n"] == 2 and ndcg["mean"] == pytest.approx(0.75)


def test_a_suite_with_a_pipeline_labels_its_gates_with_the_suites_count() -> None:
    """A spec lists the retrievers only: with a pipeline among the systems the per-system
    share of the count was wrong ("4 of 10" for a system of 5 cases)."""
    recs = [rec(q, {"ndcg@10": 1.0}, retriever=r) for r in ("a", "app")
            for q in ("q1", "q2", "q3", "q4", "q5") if (r, q) != ("a", "q1")]
    old_spec = dict(SPEC, retrievers=["a"], gates=["ndcg@10 >= 0.5"])  # an older run.json
    summary = summarize_run(recs, {SID: old_spec}, {SID: 10})  # type: ignore[dict-item]
    assert {g["retriever"]: g.get("coverage") for g in summary["gates"]} == {
        "a": "9 of 10 cases", "app": "9 of 10 cases"}
    # a spec that lists its pipelines shares the count out, also before a system has run
    spec = dict(old_spec, pipelines=["app"])
    summary = summarize_run(recs, {SID: spec}, {SID: 10})  # type: ignore[dict-item]
    assert {g["retriever"]: g.get("coverage") for g in summary["gates"]} == {
        "a": "4 of 5 cases", "app": None}
    only_a = [r for r in recs if r["retriever"] == "a"]
    summary = summarize_run(only_a, {SID: spec}, {SID: 10})  # type: ignore[dict-item]
    assert {g["retriever"]: g.get("coverage") for g in summary["gates"]} == {
        "a": "4 of 5 cases", "app": None}
    # the gate of the system that ran no case is listed, not judged
    (unjudged,) = [g for g in summary["gates"] if g["retriever"] == "app"]
    assert unjudged["skipped"] and unjudged["passed"]
    assert unjudged["note"] == "no case of app ran in this partial run"


def test_pipelines_are_summarized_in_the_suites_order_as_retrievers_are() -> None:
    """A suite listing pipelines small then large showed large first (by name), in the
    terminal, summary.md and the A/B pairs, where its test ids and retrievers keep its order."""
    recs = [rec(q, {"ndcg@10": 1.0}, retriever=r) for r in ("small", "large", "b")
            for q in ("q1", "q2")]
    spec = dict(SPEC, retrievers=["b"], pipelines=["small", "large"], gates=[])
    s = summarize_run(recs, {SID: spec})["suites"][0]  # type: ignore[dict-item]
    assert [r["name"] for r in s["retrievers"]] == ["b", "small", "large"]
    assert [(p["a"], p["b"]) for p in s["ab"][0]["pairs"]] == [
        ("b", "small"), ("b", "large"), ("small", "large")]


def test_a_querys_identical_repetitions_score_what_each_did_in_every_view() -> None:
    """``runs: 3`` of a deterministic query: the scoped gates and baseline pairing
    (case_scores) averaged three copies of 0.7 to 0.7000000000000001, the means
    (query_values) kept 0.7."""
    from pytest_ragbench.results.aggregate import case_scores, query_values

    recs = [{"case_id": "q1", "metrics": {"m": 0.7}, "status": "passed"} for _ in range(3)]
    recs += [{"case_id": "q2", "metrics": {"m": v}, "status": "passed"} for v in (0.2, 0.4)]
    assert case_scores(recs, "m") == {"q1": (0.7, False), "q2": (0.30000000000000004, False)}
    assert query_values(recs, "m") == [0.7, 0.30000000000000004]


def test_a_systems_cost_is_the_same_however_a_shared_call_was_split() -> None:
    """A judge batch (items_per_call > 1) splits one call's cost over the cases that shared
    it, and which cases those were depends on timing: summed left to right, one split gave
    0.6000000000000001 and the other 0.6, so summary.json differed between -n 0 and -n 2."""
    usage = {"requests": 1, "prompt_tokens": 10, "completion_tokens": 2}

    def costs(values: list[float]) -> Any:
        records = [rec(f"q{i}", {"ndcg@10": 1.0}, usage=usage, cost=c)
                   for i, c in enumerate(values)]
        return group(summarize_run(records, {SID: None}), "a")["usage"]

    assert costs([0.1, 0.2, 0.3]) == costs([0.3, 0.0, 0.3])
    assert costs([0.1, 0.2, 0.3])["cost"] == 0.6


def test_a_whole_suite_of_a_partial_run_is_compared_as_whole() -> None:
    """Stored from a partial run (another suite ran none of its cases), a suite that ran all
    of its cases was compared as 'run 1 of 3 cases ran; compared on those': the stored
    document kept case counts only for the partial suites, and a comparison fell back to the
    run's."""
    from pytest_ragbench.results.baseline import make_baseline
    from pytest_ragbench.results.compare import compare_docs

    other = "suites/t.yaml"
    recs = [rec("q1", {"ndcg@10": 1.0, "recall@10": 1.0})]
    specs = {SID: dict(SPEC, retrievers=["a"], gates=[]),
             other: dict(SPEC, name="t", retrievers=["c"], gates=[])}
    summary = summarize_run(recs, specs, {SID: 1, other: 2})  # type: ignore[arg-type]
    run = {"id": "r", "partial": True, "n_cases": 1, "n_cases_total": 3}
    doc = make_baseline(summary, recs, run)
    compared = compare_docs(doc, doc)
    partial = {s["id"]: s.get("partial") for s in compared["suites"]}
    assert partial == {SID: None, other: "0 of 2 cases"}, partial


def test_unknown_labels_count_each_query_once_and_none_without_them() -> None:
    kept = {"action": "kept", "documents": ["gone", "lost"]}
    records = [rec("q1", {"ndcg@10": 0.5}, unknown_labels=kept),
               rec("q1", {"ndcg@10": 0.5}, retriever="b", unknown_labels=kept),
               rec("q1", {"ndcg@10": 0.5}, run=1, unknown_labels=kept),
               rec("q2", {"ndcg@10": 1.0}, unknown_labels={"action": "kept",
                                                          "documents": ["gone"]}),
               rec("q3", {"ndcg@10": 1.0}, unknown_labels=None),
               rec("q4", {"ndcg@10": 1.0})]  # a record written before the field existed
    suite = summarize_run(records, {})["suites"][0]
    assert suite["unknown_labels"] == {"action": "kept", "n_labels": 3, "n_queries": 2}
    assert summarize_run(records[4:], {})["suites"][0]["unknown_labels"] is None
