"""pytest_ragbench.results.stats: summaries, paired tests, Holm correction, best system."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.stats
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from pytest_ragbench.results.stats import (
    ALTERNATIVES,
    TESTS,
    PairedComparison,
    Summary,
    best_system,
    holm,
    paired_compare,
    pairwise_table,
    summarize,
)

# A small hand-made paired example: per-query scores of a baseline and a candidate.
BASE = [0.20, 0.35, 0.50, 0.10, 0.80, 0.65, 0.40, 0.55, 0.30, 0.70]
CAND = [0.25, 0.45, 0.48, 0.30, 0.85, 0.75, 0.52, 0.50, 0.41, 0.90]

unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def _assert_plain_numbers(obj: Summary | PairedComparison) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name == "n" or f.name == "n_nan":
            assert type(value) is int, f.name
        elif f.type == "float":
            assert type(value) is float, f.name


def _shifted(seed: int, n: int, shift: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.beta(2.0, 2.0, size=n)
    return a, a + shift + rng.normal(0.0, noise, size=n)


# --- summarize -------------------------------------------------------------------------------


def test_summarize_is_deterministic_given_seed() -> None:
    values = list(np.random.default_rng(3).random(300))
    first = summarize(values, seed=7)
    assert summarize(values, seed=7) == first
    assert summarize(values, seed=8) != first  # the seed really drives the resampling


def test_summarize_counts_missing_values() -> None:
    s = summarize([1.0, None, math.nan, 3.0, math.inf, -math.inf])
    assert (s.n, s.n_nan) == (2, 4)
    assert s.mean == 2.0


def test_summarize_ci_contains_mean_and_narrows_with_n() -> None:
    rng = np.random.default_rng(11)
    small = summarize(list(rng.beta(2, 5, size=30)))
    large = summarize(list(rng.beta(2, 5, size=3000)))
    for s in (small, large):
        assert s.ci_low < s.mean < s.ci_high
    assert (large.ci_high - large.ci_low) < (small.ci_high - small.ci_low) / 5


def test_summarize_wider_confidence_gives_wider_interval() -> None:
    values = list(np.random.default_rng(5).random(100))
    narrow = summarize(values, confidence=0.8)
    wide = summarize(values, confidence=0.99)
    assert wide.ci_low < narrow.ci_low and narrow.ci_high < wide.ci_high


def test_summarize_empty() -> None:
    s = summarize([None, math.nan])
    assert (s.n, s.n_nan) == (0, 2)
    assert all(math.isnan(x) for x in (s.mean, s.ci_low, s.ci_high, s.std))
    _assert_plain_numbers(s)


def test_summarize_single_value() -> None:
    s = summarize([0.4, None])
    assert (s.n, s.n_nan) == (1, 1)
    assert s.mean == s.ci_low == s.ci_high == 0.4
    assert math.isnan(s.std)


def test_summarize_constant_values_give_exact_degenerate_interval() -> None:
    s = summarize([0.1] * 37)
    assert s.ci_low == s.mean == s.ci_high == 0.1
    assert s.std == 0.0


def test_summarize_large_input_is_chunked_and_reproducible() -> None:
    values = list(np.random.default_rng(2).random(10_000))
    s = summarize(values, seed=1)
    assert s == summarize(values, seed=1)
    assert s.n == 10_000
    assert s.ci_low < s.mean < s.ci_high
    _assert_plain_numbers(s)


def test_summarize_returns_plain_python_numbers() -> None:
    s = summarize(np.random.default_rng(0).random(50))
    _assert_plain_numbers(s)
    assert type(s.mean) is float and type(s.ci_low) is float and type(s.n) is int


def test_summarize_rejects_bad_confidence() -> None:
    with pytest.raises(ValueError, match="confidence"):
        summarize([0.1, 0.2], confidence=95)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(unit_floats, st.none(), st.just(math.nan)), max_size=60))
def test_summarize_mean_matches_numpy_on_finite_values(values: list[float | None]) -> None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    s = summarize(values, n_boot=200)
    assert s.n == len(finite)
    assert s.n + s.n_nan == len(values)
    if finite:
        assert s.mean == pytest.approx(float(np.mean(finite)), rel=1e-12, abs=1e-300)
        # 1e-12 absorbs summation-order roundoff between the mean and resample means.
        assert s.ci_low - 1e-12 <= s.mean <= s.ci_high + 1e-12
    else:
        assert math.isnan(s.mean)


# --- paired_compare --------------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_paired_t_matches_scipy(alternative: str) -> None:
    r = paired_compare(BASE, CAND, test="paired-t", alternative=alternative)
    expected = scipy.stats.ttest_rel(CAND, BASE, alternative=alternative).pvalue
    assert r.p_value == pytest.approx(float(expected), rel=1e-12)
    assert r.delta == pytest.approx(float(np.mean(np.subtract(CAND, BASE))), rel=1e-12)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_wilcoxon_matches_scipy(alternative: str) -> None:
    r = paired_compare(BASE, CAND, test="wilcoxon", alternative=alternative)
    expected = scipy.stats.wilcoxon(CAND, BASE, alternative=alternative).pvalue
    assert r.p_value == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_permutation_matches_scipy_paired_form(alternative: str) -> None:
    # With 10 pairs, 2**10 <= n_resamples so both sides run the exact test; the reference uses
    # scipy's two-sample "swap within pairs" form rather than the sign-flip form.
    r = paired_compare(BASE, CAND, test="permutation", alternative=alternative)
    expected = scipy.stats.permutation_test(
        (np.array(CAND), np.array(BASE)),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        alternative=alternative,
    ).pvalue
    assert r.p_value == pytest.approx(float(expected), rel=1e-9)


def test_bootstrap_p_value_tails_are_consistent() -> None:
    a, b = _shifted(seed=4, n=40, shift=0.02, noise=0.1)
    two = paired_compare(a, b, test="bootstrap", alternative="two-sided")
    less = paired_compare(a, b, test="bootstrap", alternative="less")
    greater = paired_compare(a, b, test="bootstrap", alternative="greater")
    assert two.p_value == pytest.approx(min(1.0, 2 * min(less.p_value, greater.p_value)))
    # One tail counts T* <= delta, the other T* >= delta: together they cover every resample.
    assert less.p_value + greater.p_value >= 1.0


def test_interval_does_not_depend_on_test() -> None:
    a, b = _shifted(seed=9, n=60, shift=0.03, noise=0.1)
    intervals = {(r.ci_low, r.ci_high) for r in (paired_compare(a, b, test=t) for t in TESTS)}
    assert len(intervals) == 1


@pytest.mark.parametrize("test", TESTS)
def test_planted_shift_gives_small_p_value(test: str) -> None:
    a, b = _shifted(seed=1, n=200, shift=0.05, noise=0.1)
    r = paired_compare(a, b, test=test)
    assert r.p_value < 1e-3
    assert r.ci_low < 0.05 < r.ci_high
    assert paired_compare(a, b, test=test, alternative="greater").p_value < 1e-3
    assert paired_compare(a, b, test=test, alternative="less").p_value > 0.9


@pytest.mark.parametrize("test", TESTS)
def test_aa_comparison_gives_large_p_value(test: str) -> None:
    # Mirrored noise makes the differences symmetric about 0, so there is no effect to find.
    rng = np.random.default_rng(6)
    a = rng.beta(2.0, 2.0, size=100)
    half = rng.normal(0.0, 0.1, size=50)
    b = a + np.concatenate([half, -half])
    r = paired_compare(a, b, test=test)
    assert r.p_value > 0.5
    assert r.ci_low < 0.0 < r.ci_high


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("alternative", ALTERNATIVES)
@pytest.mark.parametrize("test", TESTS)
def test_identical_inputs_give_null_result_without_warnings(test: str, alternative: str) -> None:
    r = paired_compare(BASE, list(BASE), test=test, alternative=alternative)
    assert (r.delta, r.ci_low, r.ci_high, r.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert r.n == len(BASE)
    _assert_plain_numbers(r)


@pytest.mark.filterwarnings("error")
def test_constant_shift_paired_t_has_limit_p_value_without_warnings() -> None:
    a = [0.1, 0.2, 0.3, 0.4, 0.5]
    b = [x + 0.1 for x in a]  # differences equal up to roundoff: t is effectively infinite
    assert paired_compare(a, b, test="paired-t").p_value == 0.0
    assert paired_compare(a, b, test="paired-t", alternative="less").p_value == 1.0
    r = paired_compare(a, b, test="bootstrap")
    assert r.ci_high - r.ci_low < 1e-12
    assert r.p_value < 0.01


def test_paired_drops_incomplete_pairs_and_reports_n() -> None:
    r = paired_compare([1.0, None, 3.0, 4.0, 0.5], [2.0, 3.0, math.nan, 5.0, 0.0], test="paired-t")
    assert r.n == 3
    assert r.mean_a == pytest.approx((1.0 + 4.0 + 0.5) / 3)
    assert r.delta == pytest.approx((1.0 + 1.0 - 0.5) / 3)


def test_paired_edge_cases() -> None:
    empty = paired_compare([None, 1.0], [2.0, None])
    assert empty.n == 0
    assert all(math.isnan(x) for x in (empty.delta, empty.ci_low, empty.ci_high, empty.p_value))
    _assert_plain_numbers(empty)
    single = paired_compare([0.2], [0.5])
    assert single.n == 1
    assert single.delta == single.ci_low == single.ci_high == pytest.approx(0.3)
    assert math.isnan(single.p_value)


@pytest.mark.parametrize("test", TESTS)
def test_paired_compare_is_deterministic_and_plain(test: str) -> None:
    a, b = _shifted(seed=2, n=80, shift=0.01, noise=0.2)
    r = paired_compare(a, b, metric="ndcg@10", test=test, seed=5)
    assert paired_compare(a, b, metric="ndcg@10", test=test, seed=5) == r
    assert (r.metric, r.test, r.alternative) == ("ndcg@10", test, "two-sided")
    _assert_plain_numbers(r)
    assert type(r.p_value) is float and type(r.delta) is float and type(r.n) is int


def test_paired_compare_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown test"):
        paired_compare(BASE, CAND, test="t-test")
    with pytest.raises(ValueError, match="unknown alternative"):
        paired_compare(BASE, CAND, alternative="two_sided")
    with pytest.raises(ValueError, match="length"):
        paired_compare(BASE, CAND[:-1])


# scipy's Wilcoxon test on 10-13 pairs with ties is an exact permutation test of up to a second
# per call (on fewer pairs it is cheap, on more a normal approximation), and this property calls
# it twice per example: generated Wilcoxon examples skip that band, and the explicit example
# (10 pairs in two tied groups) runs the permutation path.
@settings(max_examples=25, deadline=None)
@example(pairs=[(0.0, 1.0)] * 4 + [(1.0, 0.5)] * 6, test="wilcoxon")
@given(
    st.lists(st.tuples(unit_floats, unit_floats), min_size=3, max_size=30),
    st.sampled_from(["paired-t", "wilcoxon"]),
)
def test_swapping_systems_negates_delta_and_keeps_p(
    pairs: list[tuple[float, float]], test: str
) -> None:
    if test == "wilcoxon" and len(pairs) in range(10, 14):
        assume(pairs == [(0.0, 1.0)] * 4 + [(1.0, 0.5)] * 6)
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    forward = paired_compare(a, b, test=test, n_resamples=200)
    backward = paired_compare(b, a, test=test, n_resamples=200)
    assert backward.delta == pytest.approx(-forward.delta, abs=1e-12)
    assert backward.ci_low == pytest.approx(-forward.ci_high, abs=1e-9)
    assert backward.p_value == pytest.approx(forward.p_value, rel=1e-9, abs=1e-12)
    assert 0.0 <= forward.p_value <= 1.0


# --- holm ------------------------------------------------------------------------------------


def test_holm_against_hand_computed_values() -> None:
    # Sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, max(0.04*1, 0.06)=0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # 0.5*2 = 1.0 caps, and monotonicity lifts 0.6 to 1.0.
    assert holm([0.6, 0.5]) == [1.0, 1.0]
    assert holm([0.2]) == [0.2]
    assert holm([]) == []


def test_holm_keeps_nan_and_excludes_it_from_m() -> None:
    out = holm([0.01, math.nan, 0.02])
    assert out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
    assert math.isnan(out[1])
    assert all(type(x) is float for x in out)


@settings(max_examples=100, deadline=None)
@given(st.lists(unit_floats, max_size=25))
def test_holm_properties(p_values: list[float]) -> None:
    adjusted = holm(p_values)
    assert len(adjusted) == len(p_values)
    assert all(type(x) is float for x in adjusted)
    assert all(raw <= adj <= 1.0 for raw, adj in zip(p_values, adjusted, strict=True))
    by_raw = [adj for _, adj in sorted(zip(p_values, adjusted, strict=True))]
    assert by_raw == sorted(by_raw)
    if p_values:
        # The smallest p-value is multiplied by the number of tests (then capped at 1).
        assert min(adjusted) == min(1.0, min(p_values) * len(p_values))


# --- pairwise_table --------------------------------------------------------------------------


def test_pairwise_table_orders_pairs_and_holm_adjusts() -> None:
    rng = np.random.default_rng(8)
    x = rng.random(60)
    scores = {
        "bm25": list(x),
        "dense": list(x + 0.05 + rng.normal(0, 0.1, 60)),
        "hybrid": list(x + 0.02 + rng.normal(0, 0.1, 60)),
    }
    table = pairwise_table(scores, metric="recall@5", test="paired-t")
    assert [(r.mean_a, r.mean_b) for r in table] == [
        (float(np.mean(scores["bm25"])), float(np.mean(scores["dense"]))),
        (float(np.mean(scores["bm25"])), float(np.mean(scores["hybrid"]))),
        (float(np.mean(scores["dense"])), float(np.mean(scores["hybrid"]))),
    ]
    raw = [
        paired_compare(scores[a], scores[b], test="paired-t").p_value
        for a, b in (("bm25", "dense"), ("bm25", "hybrid"), ("dense", "hybrid"))
    ]
    assert [r.p_value for r in table] == pytest.approx(holm(raw))
    assert all(r.metric == "recall@5" for r in table)
    assert pairwise_table(scores, metric="recall@5", test="paired-t") == table


def test_pairwise_table_alpha_sets_interval_level() -> None:
    rng = np.random.default_rng(12)
    scores = {"a": list(rng.random(50)), "b": list(rng.random(50))}
    strict = pairwise_table(scores, metric="m", alpha=0.01, test="bootstrap")[0]
    loose = pairwise_table(scores, metric="m", alpha=0.2, test="bootstrap")[0]
    assert strict.ci_low < loose.ci_low and loose.ci_high < strict.ci_high


def test_pairwise_table_single_system_is_empty() -> None:
    assert pairwise_table({"only": [0.1, 0.2]}, metric="m") == []


# --- best_system -----------------------------------------------------------------------------


def test_best_system_finds_planted_winner() -> None:
    rng = np.random.default_rng(4)
    base = rng.random(200)
    scores = {"a": base, "b": base + 0.1, "c": base + rng.normal(0, 0.05, 200)}
    name, prob = best_system(scores)
    assert name == "b"
    assert prob > 0.99
    assert type(prob) is float


def test_best_system_lower_is_better_and_ties_share_credit() -> None:
    vals = list(np.random.default_rng(1).random(30))
    assert best_system({"x": vals, "y": vals}) == ("x", 0.5)
    worse = [v + 1.0 for v in vals]
    assert best_system({"hi": worse, "lo": vals}, higher_is_better=False) == ("lo", 1.0)


def test_best_system_uses_queries_scored_by_every_system() -> None:
    # Averaging each system over its own finite scores would make "b" win (0.5 vs 0.33) just
    # because its bad query is missing; over the common queries the two tie.
    scores = {"a": [0.5, 0.5, 0.0], "b": [0.5, 0.5, None]}
    assert best_system(scores, n_boot=100) == ("a", 0.5)


def test_best_system_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    scores = {"a": list(rng.random(50)), "b": list(rng.random(50))}
    assert best_system(scores, seed=2) == best_system(scores, seed=2)


def test_best_system_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        best_system({})
    with pytest.raises(ValueError, match="length"):
        best_system({"a": [0.1], "b": [0.1, 0.2]})
    with pytest.raises(ValueError, match="finite"):
        best_system({"a": [None], "b": [0.3]})


def test_single_system_is_certainly_best() -> None:
    assert best_system({"solo": [0.1, 0.9]}) == ("solo", 1.0)


# --- module hygiene --------------------------------------------------------------------------


def test_stats_module_does_not_import_pytest() -> None:
    code = "import sys, pytest_ragbench.results.stats; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.0, 0.25, 0.0, 5e-324], [5e-324, 0.25, 5e-324, 5e-324]),  # variance underflows
        ([0.0, 0.5, 0.0], [0.25, 0.25, 5e-324]),  # mean near 0: scipy's check overflows
    ],
)
def test_paired_t_on_tiny_differences_gives_a_p_value(a: list[float], b: list[float]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forward = paired_compare(a, b, test="paired-t", n_resamples=50)
        backward = paired_compare(b, a, test="paired-t", n_resamples=50)
    assert 0.0 <= forward.p_value <= 1.0
    assert backward.p_value == pytest.approx(forward.p_value, rel=1e-9)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_randomised_sign_flip_is_scipys_to_the_last_bit(alternative: str) -> None:
    # Beyond the exact case the sign-flip test is our own (scipy's took 30 s per metric at
    # 20,000 pairs), drawing the same signs from the same stream: the p-values are scipy's.
    from pytest_ragbench.results.stats import (
        _BLOCK_ELEMENTS,
        _p_sign_flip,
        _permutation_rng_kw,
    )

    rng = np.random.default_rng(8)
    # an odd number of pairs: each block of resamples leaves half a 64-bit word for the next.
    # The identity holds at any size; scipy's cost grows with it (at 300 pairs its batches
    # are 6 resamples each, 3 s per alternative), so the pairs are few and the resamples many.
    for size, resamples in ((30, 3001), (31, 999)):
        d = np.round(rng.normal(0.02, 0.3, size=size), 2)  # rounded: zeros and ties
        assert np.count_nonzero(d == 0) >= 1 and len(set(np.abs(d))) < size
        for used in (0, 3):  # an earlier 32-bit draw may leave half a word in the generator
            ours, theirs = np.random.default_rng(1), np.random.default_rng(1)
            ours.integers(0, 10, size=used)
            theirs.integers(0, 10, size=used)
            expected = scipy.stats.permutation_test(
                (d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                vectorized=True, n_resamples=resamples, batch=_BLOCK_ELEMENTS // size // 1000,
                alternative=alternative, **{_permutation_rng_kw(): theirs}).pvalue
            assert _p_sign_flip(d, alternative, resamples, ours) == float(expected)


def test_permutation_is_exact_when_the_resamples_cover_every_sign_assignment() -> None:
    # 4 pairs have 16 sign assignments: n_resamples=16 enumerates them all, as scipy does,
    # and only the assignment observed is as extreme as it (one tail: 1/16, two: 2/16)
    a = [0.0, 0.0, 0.0, 0.0]
    b = [0.1, 0.2, 0.3, 0.4]
    r = paired_compare(a, b, test="permutation", n_resamples=16)
    assert r.p_value == pytest.approx(2 / 16)
    assert paired_compare(a, b, test="permutation", alternative="greater",
                          n_resamples=16).p_value == pytest.approx(1 / 16)


def test_bootstrap_counts_a_resample_equal_to_delta_in_both_tails() -> None:
    # scores in quarters: many resample means lie exactly at 2 * delta, i.e. a recentred
    # mean exactly at delta, which is "at least as extreme" in either direction
    a, b = [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]
    less = paired_compare(a, b, test="bootstrap", alternative="less", n_resamples=2000)
    greater = paired_compare(a, b, test="bootstrap", alternative="greater", n_resamples=2000)
    assert less.p_value + greater.p_value > 1.1
