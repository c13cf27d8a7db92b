"""The gate language: parsing (including property tests), suite forms, threshold evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ragbench.results.gates import (
    SCOPE_KEYS,
    TESTS,
    DropGate,
    Gate,
    SignificanceGate,
    evaluate_threshold,
    parse_gate,
    parse_gate_expression,
    parse_gate_list,
    parse_tolerance,
)


@dataclass(frozen=True)
class _M:
    direction: str


METRICS = {"ndcg@10": _M("higher"), "recall@10": _M("higher"), "latency_ms": _M("lower")}


@pytest.mark.parametrize(("text", "expected"), [
    ("ndcg@10 >= 0.60", Gate("ndcg@10", ">=", 0.6)),
    ("ndcg@10: 0.5", Gate("ndcg@10", ">=", 0.5)),
    ("latency_ms: 250", Gate("latency_ms", "<=", 250.0)),
    ("error_rate <= 0.01", Gate("error_rate", "<=", 0.01)),
    ("ndcg@10 >= 50%", Gate("ndcg@10", ">=", 0.5)),
    ("ndcg@10: drop <= 0.02", DropGate("ndcg@10", 0.02)),
    ("ndcg@10: drop <= 5%", DropGate("ndcg@10", 5.0, relative=True)),
    ("ndcg@10: drop < 0.1", DropGate("ndcg@10", 0.1, op="<")),
    ("ndcg@10: no significant drop", SignificanceGate("ndcg@10", None, None)),
    ("ndcg@10: no significant drop at 0.01 using wilcoxon",
     SignificanceGate("ndcg@10", 0.01, "wilcoxon")),
    ("difficulty=hard: recall@10 >= 0.5",
     Gate("recall@10", ">=", 0.5, (("difficulty", "hard"),))),
    ("tag=numeric, retriever=bm25: ndcg@10: drop <= 0.02",
     DropGate("ndcg@10", 0.02, scope=(("tag", "numeric"), ("retriever", "bm25")))),
    ("type=factoid: ndcg@10 > 0.3", Gate("ndcg@10", ">", 0.3, (("type", "factoid"),))),
])
def test_expressions_parse_to_checks(text, expected):
    assert parse_gate_expression(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("ndcg@10 at least 0.5", "cannot parse 'at least 0.5': expected '>= 0.5'"),
    ("ndcg@10: drop 5", "expected 'drop <= NUMBER' or 'drop <= NUMBER%'"),
    ("ndcg@10: drop <= -1", "allowed drop must be non-negative"),
    ("ndcg@10: no significant drop using magic", "unknown test 'magic'"),
    ("ndcg@10: no significant drop at 1.5", "alpha must be strictly between 0 and 1"),
    ("ndcg@10: no big drop", "expected 'no significant drop'"),
    ("colour=red: ndcg@10 >= 1", "unknown scope key 'colour'"),
    ("hard: ndcg@10 >= 1", "'hard' before ':' is neither a metric with a bound nor a scope"),
    ("ndcg@10", "nothing after 'ndcg@10'"),
    (">= 0.5", "expected a metric name"),
    ("ndcg@10 >= 1e999", "threshold must be a finite number"),
])
def test_bad_expressions_say_what_was_not_understood(text, message):
    with pytest.raises(ValueError) as info:
        parse_gate_expression(text)
    assert message in str(info.value)


@pytest.mark.parametrize("text", ["error_rate: drop <= 0.01", "error_rate: drop <= 5%",
                                  "error_rate: no significant drop",
                                  "difficulty=hard: error_rate: no significant drop at 0.01"])
def test_a_gate_against_the_baseline_on_the_error_rate_says_to_write_a_ceiling(text):
    """The error rate is no per-query score a baseline is compared on: such a gate was
    accepted and always skipped, "not in the baseline; nothing to compare", with the error
    rate gone from 0 to 0.2."""
    with pytest.raises(ValueError, match=(
            r"the error rate is not compared against the baseline \(it has no per-query "
            r"scores\); gate it with a ceiling such as 'error_rate <= 0\.01'")):
        parse_gate_expression(text)
    with pytest.raises(ValueError, match="the error rate is not compared"):
        parse_gate(text.rsplit(":", 1)[0], text.rsplit(":", 1)[1], METRICS,
                   allow_baseline=True)


@pytest.mark.parametrize(("spec", "text"), [
    ("7%", "7%"), ("14%", "14%"), ("29%", "29%"), ("57%", "57%"), ("1.1%", "1.1%"),
    ("0.3%", "0.3%"), ("12.5%", "12.5%"), ("50%", "50%"), ("100%", "100%"), ("250%", "250%"),
    ("0.07", "0.07"), (0.02, "0.02")])
def test_a_tolerance_reads_as_written(spec, text):
    """'tolerance: 7%' read 'tolerance 7.000000000000001%' (29%: '28.999999999999996%') in
    every baseline row, junit's testcase name and the stored settings."""
    tol = parse_tolerance(spec)
    assert tol.text == text
    assert parse_tolerance(tol.text) == tol


@given(st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_a_relative_tolerances_text_reads_back_exactly(percent):
    # as the suite's settings are stored (as text) and read back by a later comparison
    tol = parse_tolerance(f"{percent!r}%")
    assert parse_tolerance(tol.text) == tol
    assert float(tol.text.removesuffix("%")) == pytest.approx(percent, rel=1e-12)


def test_mapping_form_keeps_old_meaning_and_checks_metric_names():
    assert parse_gate("ndcg@10", ">= 0.5", METRICS) == Gate("ndcg@10", ">=", 0.5)
    assert parse_gate("latency_ms", 100, METRICS) == Gate("latency_ms", "<=", 100.0)
    assert parse_gate("error_rate", "<= 0.1", METRICS) == Gate("error_rate", "<=", 0.1)
    assert parse_gate("difficulty=hard: ndcg@10", "drop <= 2%", METRICS,
                      allow_baseline=True) == DropGate("ndcg@10", 2.0, True,
                                                       scope=(("difficulty", "hard"),))
    with pytest.raises(ValueError, match="not among the suite's metrics"):
        parse_gate("mrr@10", 0.5, METRICS)
    # Per-query thresholds have no baseline: drop gates are not understood there.
    with pytest.raises(ValueError, match=r"cannot parse 'drop <= 0\.1'"):
        parse_gate("ndcg@10", "drop <= 0.1", METRICS)


def test_list_form_checks_metric_names():
    gates = parse_gate_list(["ndcg@10 >= 0.5", "latency_ms: 300"], METRICS)
    assert gates == [Gate("ndcg@10", ">=", 0.5), Gate("latency_ms", "<=", 300.0)]
    with pytest.raises(ValueError, match="'mrr@10', which is not among"):
        parse_gate_list(["mrr@10 >= 0.5"], METRICS)


def test_drop_gate_direction_and_relative_allowance():
    g = DropGate("ndcg@10", 5.0, relative=True)
    assert g.allowed(0.6) == pytest.approx(0.03)
    assert g.passes(0.029, 0.6) and not g.passes(0.031, 0.6)
    assert not DropGate("x", 0.0).passes(math.nan, 1.0)


def test_scoped_threshold_uses_only_matching_queries():
    meta = {"q1": {"difficulty": "hard", "tags": ["numeric"]},
            "q2": {"difficulty": "easy", "tags": []},
            "q3": {"difficulty": "hard", "tags": []}}
    cases = {"q1": (0.2, False), "q2": (1.0, False), "q3": (None, True)}
    gate = parse_gate_expression("difficulty=hard: recall@10 >= 0.5")
    res = evaluate_threshold(gate, suite="s", retriever="r", mean=0.6, error_rate=1 / 3,
                             cases=cases, meta=meta)
    assert res["value"] == pytest.approx(0.2) and res["n"] == 2 and not res["passed"]
    err = evaluate_threshold(parse_gate_expression("difficulty=hard: error_rate <= 0.4"),
                             suite="s", retriever="r", mean=None, error_rate=1 / 3,
                             cases=cases, meta=meta)
    assert err["value"] == pytest.approx(0.5) and not err["passed"]
    tag = evaluate_threshold(parse_gate_expression("tag=numeric: recall@10 >= 0.1"),
                             suite="s", retriever="r", mean=0.6, error_rate=0.0,
                             cases=cases, meta=meta)
    assert tag["n"] == 1 and tag["passed"]


# -- property tests ------------------------------------------------------------------------

_names = st.from_regex(r"[a-z][a-z_]{0,8}(@[1-9][0-9]{0,2})?", fullmatch=True)
_values = st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True)
_scopes = st.lists(st.tuples(st.sampled_from(SCOPE_KEYS[1:]), _values), max_size=2).map(tuple)
_nums = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
_checks = st.one_of(
    st.builds(Gate, _names, st.sampled_from([">=", ">", "<=", "<"]), _nums, _scopes),
    st.builds(DropGate, _names, _nums, st.booleans(), st.sampled_from(["<=", "<"]), _scopes),
    st.builds(SignificanceGate, _names,
              st.one_of(st.none(), st.floats(min_value=1e-6, max_value=0.999)),
              st.one_of(st.none(), st.sampled_from(TESTS)), _scopes),
)


@given(_checks)
def test_round_trip_of_generated_expressions(check):
    assert parse_gate_expression(check.text) == check


@given(_checks, st.sampled_from(["bm25", "dense_1"]))
def test_round_trip_with_retriever_scope(check, retriever):
    scoped = type(check)(**{**check.__dict__, "scope": (("retriever", retriever),)})
    assert parse_gate_expression(scoped.text) == scoped


def _quotes_part_of(message: str, text: str) -> bool:
    """Whether ``message`` quotes ``text`` or a non-blank piece of it (as repr() writes it)."""
    pieces = {text[i:j] for i in range(len(text)) for j in range(i + 1, len(text) + 1)}
    return repr(text) in message or any(
        p.strip() and repr(p) in message for p in pieces)


def _says_what_was_expected(message: str) -> bool:
    return any(says in message for says in (
        "expected", "must be", "more than one retriever", "scopes are written key=value"))


# Texts shaped like gates ("scope: metric body") reach the scope and number errors too.
_gate_like = st.builds(
    "{}: {} {}".format,
    st.text(alphabet="ab=, ", max_size=12),
    st.sampled_from(["ndcg@10", "recall@5", "x"]),
    st.text(alphabet="<>=0123456789.e%-drop nsigficatuwlx", max_size=24),
)


@given(st.one_of(st.text(max_size=60), _gate_like))
def test_garbage_raises_only_value_error_naming_the_bad_part(text):
    try:
        check = parse_gate_expression(text)
    except ValueError as exc:
        message = str(exc)
        # One clear message: the gate (or the part of it not understood) and what would be.
        assert _quotes_part_of(message, text), message
        assert _says_what_was_expected(message), message
    else:
        # Whatever parsed must print as an expression that parses back to the same check.
        assert parse_gate_expression(check.text) == check


@given(st.one_of(st.none(), st.integers(), st.floats(), st.booleans(),
                 st.lists(st.integers(), max_size=2), st.text(max_size=20)))
def test_mapping_values_of_any_type_raise_only_value_error(value):
    try:
        parse_gate("ndcg@10", value, METRICS, allow_baseline=True)
    except ValueError as exc:
        message = str(exc)
        if isinstance(value, str):
            assert _quotes_part_of(message, value), message
        else:
            assert f"got {value!r}" in message, message
        assert _says_what_was_expected(message), message


def test_an_empty_scope_item_names_the_gate():
    with pytest.raises(ValueError) as info:
        parse_gate_expression("difficulty=hard,: ndcg@10 >= 0.5")
    assert "difficulty=hard," in str(info.value)


@pytest.mark.parametrize(("value", "message"), [
    (None, "expected a number or an expression like '>= 0.5', got None"),
    ([1, 2], "expected a number or an expression like '>= 0.5', got [1, 2]"),
    (True, "expected a number or an expression like '>= 0.5', got True"),
    (math.inf, "threshold must be a finite number, got inf"),
    ("somewhat", "cannot parse 'somewhat': expected '>= 0.5'"),
    ("drop <= -1", "allowed drop must be non-negative, got '-1'"),
    ("no significant drop at 2", "alpha must be strictly between 0 and 1, got '2'"),
])
def test_mapping_value_errors_name_the_value_and_what_was_expected(value, message):
    with pytest.raises(ValueError) as info:
        parse_gate("ndcg@10", value, METRICS, allow_baseline=True)
    assert message in str(info.value)


@pytest.mark.parametrize("values", [[0.3, 0.2, 0.1], [0.1, 0.2, 0.3]])
def test_a_mean_equal_to_the_bound_meets_it_in_any_order(values: list[float]) -> None:
    """The mean of 0.3, 0.2 and 0.1 is 0.19999999999999998 or 0.20000000000000004 by the
    order the queries are summed in: the verdict must not depend on the query ids."""
    mean = sum(values) / len(values)
    assert Gate("precision@10", ">=", 0.2).passes(mean)
    assert Gate("precision@10", "<=", 0.2).passes(mean)
    assert not Gate("precision@10", ">", 0.2).passes(mean)
    assert not Gate("precision@10", "<", 0.2).passes(mean)
    assert Gate("precision@10", ">=", 0.2).margin(mean) == 0.0  # not shown as -0.0000
    # a time in milliseconds keeps the same relative allowance, and a real miss still fails
    assert Gate("latency_ms", "<=", 250.0).passes(sum([250.1, 249.9]) / 2)
    assert not Gate("precision@10", ">=", 0.2).passes(0.2 - 1e-9)


def test_a_ceiling_gates_margin_is_positive_on_its_passing_side() -> None:
    # the outputs print it signed: '+0.0050' for an error rate of 0.005 under 0.01
    assert Gate("error_rate", "<=", 0.01).margin(0.005) == pytest.approx(0.005)
    assert Gate("error_rate", "<=", 0.01).margin(0.02) == pytest.approx(-0.01)
    assert Gate("latency_ms", "<", 250.0).margin(300.0) == pytest.approx(-50.0)


def test_a_strict_drop_gate_fails_a_drop_equal_to_its_limit() -> None:
    assert DropGate("ndcg@10", 0.02).passes(0.02, 0.6)
    assert not DropGate("ndcg@10", 0.02, op="<").passes(0.02, 0.6)
    assert DropGate("ndcg@10", 0.02, op="<").passes(0.019, 0.6)
    assert not DropGate("ndcg@10", 5.0, relative=True, op="<").passes(0.03, 0.6)


@pytest.mark.parametrize("expr", ["difficulty=hrad: recall@10 >= 0.5",
                                  "difficulty=hrad: error_rate <= 0.1"])
def test_a_scope_matching_no_query_fails_its_gate_unless_the_run_is_partial(expr: str) -> None:
    # a misspelled scope value must pass nothing; only a -k run may have left the scope out
    meta = {"q1": {"difficulty": "easy", "tags": []}}
    args = dict(suite="s", retriever="r", mean=1.0, error_rate=0.0, cases={"q1": (1.0, False)},
                meta=meta, error_counts={"q1": (0, 1)})
    whole = evaluate_threshold(parse_gate_expression(expr), **args)
    assert not whole["passed"] and not whole.get("skipped")
    assert whole["note"] == "no query matches difficulty=hrad"
    partial = evaluate_threshold(parse_gate_expression(expr), partial=True, **args)
    assert partial["passed"] and partial["skipped"]
