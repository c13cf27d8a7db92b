"""Statistics behind the run summary and the regression gates.

Everything here is deterministic given ``seed``: randomness comes only from
``numpy.random.default_rng(seed)``. Every number returned is a plain Python ``float`` or
``int`` (never a numpy scalar), because these values are serialised and sent between
processes.

Bootstrap resampling draws query *positions*, so results depend on the order of the input
values. Callers must pass values in a canonical order (sorted by query id) so that a serial run
and an ``xdist`` run (``-n 0`` and ``-n 2``) produce byte-identical figures.

Missing values (``None``, NaN, and also +/-inf, i.e. anything that is not a finite number)
are never silently dropped: :func:`summarize` counts them in ``n_nan`` and the paired functions
report how many pairs were actually used in ``n``.

Nothing here imports pytest.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = [
    "ALTERNATIVES",
    "TESTS",
    "PairedComparison",
    "Summary",
    "best_system",
    "holm",
    "paired_compare",
    "pairwise_table",
    "summarize",
]

TESTS: tuple[str, ...] = ("paired-t", "wilcoxon", "permutation", "bootstrap")
"""Names accepted by ``paired_compare(test=...)``."""

ALTERNATIVES: tuple[str, ...] = ("two-sided", "less", "greater")
"""Names accepted by ``paired_compare(alternative=...)``; they refer to ``mean(b - a)``."""

# Upper bound on the number of elements in one block of resampled data, so a bootstrap of
# 10,000 queries does not materialise a (n_boot, n) matrix at once (~16 MB per block).
_BLOCK_ELEMENTS = 1 << 21



def _scipy_stats() -> Any:
    """scipy.stats, imported on first use: it costs most of a second, and a plain summary
    (means and bootstrap CIs) needs only numpy."""
    import scipy.stats

    return scipy.stats


def _permutation_rng_kw() -> str:
    # scipy 1.15 renamed permutation_test's ``random_state`` to ``rng``; the old name is slated
    # to warn, the new one does not exist before 1.15, and the project supports scipy >= 1.10.
    params = inspect.signature(_scipy_stats().permutation_test).parameters
    return "rng" if "rng" in params else "random_state"


@dataclass(frozen=True)
class Summary:
    """Mean of one metric over the queries of a run, with a bootstrap confidence interval.

    ``n`` finite values were used; ``n_nan`` values were missing or not finite and were excluded.
    ``mean``, ``ci_low`` and ``ci_high`` are NaN when ``n == 0``; when ``n == 1`` or all values
    are equal, the mean is that value exactly and the interval collapses onto it. ``std`` is
    the sample standard deviation (``ddof=1``), NaN when ``n < 2``.
    """

    n: int
    n_nan: int
    mean: float
    ci_low: float
    ci_high: float
    std: float


@dataclass(frozen=True)
class PairedComparison:
    """Comparison of a candidate ``b`` against a baseline ``a`` on the same queries.

    ``delta`` is ``mean(b - a)`` over the ``n`` pairs where both values are finite, and
    ``[ci_low, ci_high]`` is a percentile bootstrap interval for it. ``alternative`` is stated
    in terms of ``delta``: ``"less"`` tests whether the candidate scores lower than the
    baseline, ``"greater"`` whether it scores higher. ``p_value`` is NaN when it cannot be
    computed (fewer than two pairs, unless every difference is exactly zero, which gives 1.0).
    """

    metric: str
    n: int
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    alternative: str


def _as_float_array(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """Convert to a float array with None mapped to NaN."""
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def _check_resamples(name: str, value: int) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _bootstrap_means(columns: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` bootstrap resamples of the rows of ``columns`` (shape ``(n, k)``).

    Returns shape ``(n_boot, k)``. The same resampled row indices are used for every column,
    which is what makes the resamples *paired* across systems. Work is done in blocks whose
    size depends only on ``n`` and ``k``, so the draw sequence (and result) is reproducible.
    """
    n, k = columns.shape
    rows_per_block = max(1, _BLOCK_ELEMENTS // (n * k))
    out = np.empty((n_boot, k), dtype=float)
    for start in range(0, n_boot, rows_per_block):
        stop = min(n_boot, start + rows_per_block)
        idx = rng.integers(0, n, size=(stop - start, n))
        for j in range(k):
            # One contiguous (rows, n) gather per column keeps the reduction along the last,
            # contiguous axis -- the same summation order on every run.
            out[start:stop, j] = columns[:, j][idx].mean(axis=1)
    return out


def _percentile_ci(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return float(low), float(high)


def summarize(
    values: Sequence[float | None],
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Summary:
    """Mean, percentile-bootstrap confidence interval of the mean, and standard deviation.

    ``None``, NaN and infinite values are excluded and counted in ``n_nan``. The bootstrap draws
    ``n_boot`` resamples with ``numpy.random.default_rng(seed)``; same values in the same order
    with the same seed give identical floats. Pass values in a canonical order (sorted by query
    id): order matters only through which positions the resampler picks, but it does matter.
    """
    _check_confidence(confidence)
    _check_resamples("n_boot", n_boot)
    raw = _as_float_array(values)
    finite = raw[np.isfinite(raw)]
    n = int(finite.size)
    n_nan = int(raw.size - n)
    if n == 0:
        return Summary(
            n=0, n_nan=n_nan, mean=math.nan, ci_low=math.nan, ci_high=math.nan, std=math.nan
        )
    if bool(np.all(finite == finite[0])):
        # Summation roundoff would report e.g. 0.10000000000000002 +/- 1e-17 for a run in which
        # every query scored 0.1; every resample is that same value, so report it exactly.
        value = float(finite[0])
        return Summary(
            n=n,
            n_nan=n_nan,
            mean=value,
            ci_low=value,
            ci_high=value,
            std=0.0 if n > 1 else math.nan,
        )
    mean = float(finite.mean())
    std = float(finite.std(ddof=1))
    rng = np.random.default_rng(seed)
    boot = _bootstrap_means(finite[:, None], int(n_boot), rng)[:, 0]
    ci_low, ci_high = _percentile_ci(boot, confidence)
    return Summary(n=n, n_nan=n_nan, mean=mean, ci_low=ci_low, ci_high=ci_high, std=std)


def _mean_along(x: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(x, axis=axis)


def _p_from_tails(p_less: float, p_greater: float, alternative: str) -> float:
    if alternative == "less":
        return p_less
    if alternative == "greater":
        return p_greater
    return min(1.0, 2.0 * min(p_less, p_greater))


def _p_paired_t(d: np.ndarray, a: np.ndarray, b: np.ndarray, alternative: str) -> float:
    # The t statistic is scale-free; scaling by a power of two (exact) keeps the variance of
    # tiny (e.g. subnormal) differences from underflowing to 0, which would give a NaN p-value.
    _, exponent = np.frexp(np.max(np.abs(d)))
    d = np.ldexp(d, -int(exponent))
    spread = float(np.max(np.abs(d - d.mean())))
    if spread <= 64 * np.finfo(float).eps * float(np.max(np.abs(d))):
        # Differences constant up to roundoff: the t statistic is +/-infinite, so the p-value
        # is its limit. scipy would instead warn about catastrophic cancellation or return NaN.
        sign = 1.0 if d.mean() > 0 else -1.0
        p_less, p_greater = (1.0, 0.0) if sign > 0 else (0.0, 1.0)
        return _p_from_tails(p_less, p_greater, alternative)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # scipy's precision check divides by the mean, which overflows for a mean near 0;
        # the statistic itself is fine, and a user's -W error must not turn it into a crash.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(_scipy_stats().ttest_1samp(d, 0.0, alternative=alternative).pvalue)


def _p_wilcoxon(d: np.ndarray, alternative: str) -> float:
    return float(_scipy_stats().wilcoxon(d, alternative=alternative).pvalue)


def _p_permutation(
    d: np.ndarray, alternative: str, n_resamples: int, rng: np.random.Generator
) -> float:
    # A single sample with permutation_type="samples" is scipy's sign-flip test: under the null,
    # which system got which score within a pair is exchangeable, i.e. each difference is
    # equally likely to have either sign.
    if d.size >= 63 or (1 << d.size) > n_resamples:  # else scipy enumerates every sign
        return _p_sign_flip(d, alternative, n_resamples, rng)
    rng_kw: dict[str, Any] = {_permutation_rng_kw(): rng}
    result = _scipy_stats().permutation_test(
        (d,),
        _mean_along,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        batch=max(1, _BLOCK_ELEMENTS // d.size),
        alternative=alternative,
        **rng_kw,
    )
    return float(result.pvalue)


def _p_sign_flip(
    d: np.ndarray, alternative: str, n_resamples: int, rng: np.random.Generator
) -> float:
    """The randomised sign-flip test exactly as :func:`scipy.stats.permutation_test` computes
    it (one sample, ``permutation_type="samples"``): the same random signs from the same
    stream, the same resample means, tie tolerance and add-one p-values.

    scipy builds each resample with Python-level steps per pair (at 20,000 pairs one test took
    30 s); here the signs come from the stream directly and each block of resamples is one
    array operation. scipy draws a sign by shuffling the pair ``(d, -d)`` with
    ``Generator.permuted``, which for two elements takes one 32-bit draw and swaps when its
    lowest bit is 0; a 32-bit draw is one half of a 64-bit output of the bit generator, the
    low half first (the high half is kept for the next draw).
    """
    n = d.size
    rows = max(1, _BLOCK_ELEMENTS // n)
    bitgen = rng.bit_generator
    state = bitgen.state
    # A half left over from an earlier 32-bit draw comes first.
    cached = [int(state["uinteger"])] if state.get("has_uint32") else []
    if cached:
        state = {**state, "has_uint32": 0, "uinteger": 0}
        bitgen.state = state
    null = np.empty(n_resamples)
    neg = -d
    # The lowest bit of each 32-bit draw still to be used, in draw order.
    pending = np.asarray([w & 1 for w in cached], dtype=bool)
    for start in range(0, n_resamples, rows):
        m = min(rows, n_resamples - start)
        need = m * n - len(pending)
        raw = bitgen.random_raw((need + 1) // 2) if need > 0 else np.zeros(0, np.uint64)
        bits = np.empty(2 * len(raw), dtype=bool)
        np.bitwise_and(raw, np.uint64(1), out=bits[0::2], casting="unsafe")
        np.bitwise_and(raw >> np.uint64(32), np.uint64(1), out=bits[1::2], casting="unsafe")
        if len(pending):
            bits = np.concatenate([pending, bits])
        pending = bits[m * n:]
        # Lowest bit 1: no swap, the pair's first value is d; 0: swapped, -d.
        values = np.where(bits[: m * n].reshape(m, n), d, neg)
        null[start:start + m] = np.mean(values, axis=1)
    observed = float(np.mean(d))
    gamma = abs(np.finfo(float).eps * 100 * observed)
    p_less = (float(np.count_nonzero(null <= observed + gamma)) + 1.0) / (n_resamples + 1.0)
    p_greater = (float(np.count_nonzero(null >= observed - gamma)) + 1.0) / (n_resamples + 1.0)
    return _p_from_tails(min(1.0, p_less), min(1.0, p_greater), alternative)


def _p_bootstrap(boot: np.ndarray, delta: float, alternative: str) -> float:
    # Shift method (Efron & Tibshirani, ch. 16): recentre the bootstrap distribution of the
    # mean difference on 0 to get a null distribution, T* = m* - delta, and count how often
    # it is at least as extreme as the observed delta. With the +1 correction (as for
    # randomised permutation tests) the p-value is never 0:
    #   p_greater = (1 + #{T* >= delta}) / (B + 1),  p_less = (1 + #{T* <= delta}) / (B + 1),
    #   two-sided = min(1, 2 * min(p_less, p_greater)).
    null = boot - delta
    b = boot.size
    p_greater = (1.0 + float(np.count_nonzero(null >= delta))) / (b + 1.0)
    p_less = (1.0 + float(np.count_nonzero(null <= delta))) / (b + 1.0)
    return _p_from_tails(min(1.0, p_less), min(1.0, p_greater), alternative)


def paired_compare(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    metric: str = "",
    test: str = "permutation",
    alternative: str = "two-sided",
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Compare candidate ``b`` with baseline ``a`` over the same queries, position by position.

    Pairs in which either value is ``None``/NaN/infinite are dropped; ``n`` reports how many
    pairs were used. ``delta = mean(b - a)``; the confidence interval is a percentile bootstrap
    of the mean paired difference from ``n_resamples`` resamples (the same whichever test is
    chosen). ``alternative`` refers to ``delta`` (``"less"``: the candidate is worse when
    higher is better). Tests:

    * ``"paired-t"``: :func:`scipy.stats.ttest_rel`.
    * ``"wilcoxon"``: :func:`scipy.stats.wilcoxon` on the differences (zero differences are
      dropped, scipy's default).
    * ``"permutation"``: :func:`scipy.stats.permutation_test` on the differences with
      ``permutation_type="samples"``, i.e. a sign-flip test of the mean difference, with
      ``n_resamples`` random sign assignments (exact when ``2**n <= n_resamples``).
    * ``"bootstrap"``: the shift method on the bootstrap distribution used for the interval:
      it is recentred on 0 and the p-value is the (add-one) fraction of recentred resample
      means at least as extreme as ``delta``.

    If every difference is exactly zero the result is ``delta = 0``, ``CI = [0, 0]`` and
    ``p = 1.0`` for every test, without warnings. With a single non-zero pair the p-value is
    NaN. Inputs must have equal length. Deterministic given ``seed``.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; expected one of {', '.join(TESTS)}")
    if alternative not in ALTERNATIVES:
        raise ValueError(
            f"unknown alternative {alternative!r}; expected one of {', '.join(ALTERNATIVES)}"
        )
    _check_confidence(confidence)
    _check_resamples("n_resamples", n_resamples)
    xa = _as_float_array(a)
    xb = _as_float_array(b)
    if xa.size != xb.size:
        raise ValueError(f"paired samples differ in length: {xa.size} != {xb.size}")
    keep = np.isfinite(xa) & np.isfinite(xb)
    xa, xb = xa[keep], xb[keep]
    n = int(xa.size)

    def result(
        mean_a: float, mean_b: float, delta: float, low: float, high: float, p: float
    ) -> PairedComparison:
        return PairedComparison(
            metric=metric,
            n=n,
            mean_a=mean_a,
            mean_b=mean_b,
            delta=delta,
            ci_low=low,
            ci_high=high,
            p_value=p,
            test=test,
            alternative=alternative,
        )

    if n == 0:
        nan = math.nan
        return result(nan, nan, nan, nan, nan, nan)
    d = xb - xa
    mean_a, mean_b = float(xa.mean()), float(xb.mean())
    if not np.any(d):
        return result(mean_a, mean_b, 0.0, 0.0, 0.0, 1.0)
    delta = float(d.mean())
    if n == 1:
        return result(mean_a, mean_b, delta, delta, delta, math.nan)

    rng = np.random.default_rng(seed)
    # Bootstrap first so the interval does not depend on which test consumes the stream next.
    boot = _bootstrap_means(d[:, None], int(n_resamples), rng)[:, 0]
    if bool(np.all(d == d[0])):
        # Every resample mean is delta up to roundoff; report the exact degenerate interval.
        low = high = delta
    else:
        low, high = _percentile_ci(boot, confidence)
    if test == "paired-t":
        p = _p_paired_t(d, xa, xb, alternative)
    elif test == "wilcoxon":
        p = _p_wilcoxon(d, alternative)
    elif test == "permutation":
        p = _p_permutation(d, alternative, int(n_resamples), rng)
    else:
        p = _p_bootstrap(boot, delta, alternative)
    return result(mean_a, mean_b, delta, low, high, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given.

    The i-th smallest of m p-values becomes ``max over j <= i of min(1, (m - j + 1) * p_(j))``,
    so adjusted values are monotone in the order of the raw ones, never below them, and capped
    at 1. NaN p-values (tests that could not be run) stay NaN and do not count towards m.
    """
    raw = np.asarray(list(p_values), dtype=float)
    out = np.full(raw.shape, math.nan)
    finite = np.flatnonzero(~np.isnan(raw))
    m = finite.size
    # Stable sort so tied p-values keep their input order; ties get equal adjusted values anyway.
    order = finite[np.argsort(raw[finite], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(raw[i])))
        out[i] = running
    return [float(x) for x in out]


def _pair_seed(seed: int, i: int, j: int) -> int:
    """A distinct, reproducible seed per system pair, so pairs do not share random draws."""
    return int(np.random.SeedSequence([seed, i, j]).generate_state(1)[0])


def pairwise_table(
    scores: Mapping[str, Sequence[float | None]],
    *,
    metric: str,
    test: str = "permutation",
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = 10000,
) -> list[PairedComparison]:
    """Compare every pair of systems in one run, with Holm-adjusted p-values.

    For systems in the mapping's order, yields one comparison per pair ``(a, b)`` with ``a``
    before ``b`` (``a`` is the baseline, so ``delta = mean(b - a)``), two-sided. ``p_value`` in
    each returned comparison is Holm-adjusted over all pairs in the table; a pair differs
    significantly at family-wise level ``alpha`` when ``p_value < alpha``. ``alpha`` also sets
    the confidence level of the (unadjusted) intervals, ``1 - alpha``.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    names = list(scores)
    raw: list[PairedComparison] = []
    for i, name_a in enumerate(names):
        for j in range(i + 1, len(names)):
            raw.append(
                paired_compare(
                    scores[name_a],
                    scores[names[j]],
                    metric=metric,
                    test=test,
                    n_resamples=n_resamples,
                    confidence=1.0 - alpha,
                    seed=_pair_seed(seed, i, j),
                )
            )
    adjusted = holm([c.p_value for c in raw])
    return [replace(c, p_value=p) for c, p in zip(raw, adjusted, strict=True)]


def best_system(
    scores: Mapping[str, Sequence[float | None]],
    *,
    higher_is_better: bool = True,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[str, float]:
    """The system with the best mean score, and the bootstrap probability that it is best.

    Only queries scored finitely by *every* system are used (so all means are over the same
    queries). The probability is the fraction of ``n_boot`` paired bootstrap resamples of those
    queries in which the chosen system has the top mean; when several systems tie for the top
    in a resample, the credit is shared equally. Ties in the observed means go to the system
    listed first. Raises ``ValueError`` when there are no systems, the score lists differ in
    length, or no query has a finite score for every system.
    """
    _check_resamples("n_boot", n_boot)
    names = list(scores)
    if not names:
        raise ValueError("best_system needs at least one system")
    columns = [_as_float_array(scores[name]) for name in names]
    lengths = {c.size for c in columns}
    if len(lengths) != 1:
        raise ValueError(f"score lists differ in length: {sorted(lengths)}")
    matrix = np.column_stack(columns)
    matrix = matrix[np.all(np.isfinite(matrix), axis=1)]
    if matrix.shape[0] == 0:
        raise ValueError("no query has a finite score for every system")
    if not higher_is_better:
        matrix = -matrix
    # argmax returns the first maximum, which gives observed ties to the system listed first.
    best = int(np.argmax(matrix.mean(axis=0)))
    if len(names) == 1:
        return names[0], 1.0
    rng = np.random.default_rng(seed)
    boot = _bootstrap_means(matrix, int(n_boot), rng)
    top = boot.max(axis=1, keepdims=True)
    is_top = boot == top
    share = is_top[:, best] / is_top.sum(axis=1)
    return names[best], float(share.mean())
