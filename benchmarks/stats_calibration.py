"""Calibration of pytest_ragbench.results.stats on simulated benchmark runs.

Prints figures; not a test.

Two questions decide whether the regression gates can be trusted:

1. **False alarms.** When a candidate is really no worse than the baseline (an A/A
   comparison), how often does a one-sided test at alpha = 0.05 report a "significant drop"?
   It should be close to 5%; we accept 3%-7% (about +/-3 Monte Carlo standard errors at
   1,000 simulations).
2. **Interval coverage.** When the true mean difference is known, how often does the 95%
   bootstrap interval of ``paired_compare`` contain it? We accept 93%-97%.

Per-query scores come from a generative model with realistic shape: each query has a latent
difficulty drawn from a Beta mixture (a hard and an easy population), and each system's score
is that difficulty plus independent per-system noise, clipped to [0, 1] (so there is mass at 0
and 1, like recall or nDCG). A second A/A scenario uses a discrete, tie-heavy metric
(reciprocal rank at 10 from a geometric first-hit rank), where the Wilcoxon and t tests are
furthest from their assumptions. In the A/A scenarios both systems share the same
distribution, so the differences are symmetric about 0 and the true difference is exactly 0.
In the coverage scenario the candidate's latent score is shifted by ``SHIFT``; the true mean
difference of the clipped scores is computed by numerical integration (and cross-checked by a
large Monte Carlo sample).

Run: ``python benchmarks/stats_calibration.py``. Exit status 1 if any check fails.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.integrate
import scipy.stats

from pytest_ragbench.results.stats import TESTS, paired_compare

N_SIMULATIONS = 1000
N_QUERIES = 100
ALPHA = 0.05
FALSE_ALARM_RANGE = (0.03, 0.07)
COVERAGE_RANGE = (0.93, 0.97)
MASTER_SEED = 20240601

# Latent difficulty: 35% hard queries, 65% easy ones.
MIXTURE = ((0.35, 1.2, 4.0), (0.65, 4.0, 1.5))  # (weight, alpha, beta)
NOISE_SD = 0.15
SHIFT = 0.03

# Resamples per comparison. The permutation test is the slowest (scipy's generic machinery),
# so it gets 2,000 as the brief allows; the coverage check uses the library default.
RESAMPLES = {"paired-t": 2000, "wilcoxon": 2000, "permutation": 2000, "bootstrap": 2000}
COVERAGE_RESAMPLES = 10000

ScorePair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    check: str
    test: str
    rate: float
    target: tuple[float, float] | None
    seconds: float

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info"
        low, high = self.target
        return "PASS" if low <= self.rate <= high else "FAIL"


def _difficulty(rng: np.random.Generator, n: int) -> np.ndarray:
    weights = np.array([w for w, _, _ in MIXTURE])
    component = rng.choice(len(MIXTURE), size=n, p=weights / weights.sum())
    a = np.array([al for _, al, _ in MIXTURE])[component]
    b = np.array([be for _, _, be in MIXTURE])[component]
    return rng.beta(a, b)


def _clipped_pair(rng: np.random.Generator, shift: float = 0.0) -> ScorePair:
    q = _difficulty(rng, N_QUERIES)
    base = np.clip(q + rng.normal(0.0, NOISE_SD, N_QUERIES), 0.0, 1.0)
    cand = np.clip(q + shift + rng.normal(0.0, NOISE_SD, N_QUERIES), 0.0, 1.0)
    return base, cand


def _reciprocal_rank_pair(rng: np.random.Generator) -> ScorePair:
    # Difficulty is the per-rank hit probability; both systems share it, ranks are independent.
    p = np.clip(_difficulty(rng, N_QUERIES), 0.02, 0.98)

    def rr() -> np.ndarray:
        rank = rng.geometric(p)
        return np.where(rank <= 10, 1.0 / rank, 0.0)

    return rr(), rr()


def _expected_clipped(x: float, shift: float) -> float:
    """E[clip(x + shift + e, 0, 1)] for e ~ N(0, NOISE_SD), in closed form.

    E[clip(y + e)] = integral over t in [0, 1] of P(y + e > t) = G(y) - G(y - 1), where
    G(u) = u * Phi(u / s) + s * phi(u / s) is an antiderivative of Phi(u / s).
    """
    s = NOISE_SD

    def g(u: float) -> float:
        return u * scipy.stats.norm.cdf(u / s) + s * scipy.stats.norm.pdf(u / s)

    y = x + shift
    return float(g(y) - g(y - 1.0))


def _true_delta() -> float:
    def integrand(x: float) -> float:
        density = sum(w * scipy.stats.beta.pdf(x, al, be) for w, al, be in MIXTURE)
        return density * (_expected_clipped(x, SHIFT) - _expected_clipped(x, 0.0))

    value, _ = scipy.integrate.quad(integrand, 0.0, 1.0, limit=200)
    return float(value)


def _monte_carlo_delta(n: int = 2_000_000) -> tuple[float, float]:
    rng = np.random.default_rng([MASTER_SEED, 99])
    q = _difficulty(rng, n)
    d = np.clip(q + SHIFT + rng.normal(0.0, NOISE_SD, n), 0.0, 1.0) - np.clip(
        q + rng.normal(0.0, NOISE_SD, n), 0.0, 1.0
    )
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))


def _simulations(
    scenario: int, make: Callable[[np.random.Generator], ScorePair]
) -> list[ScorePair]:
    return [make(np.random.default_rng([MASTER_SEED, scenario, i])) for i in range(N_SIMULATIONS)]


def _false_alarm_rows(label: str, data: list[ScorePair]) -> list[Row]:
    rows = []
    for test in TESTS:
        start = time.perf_counter()
        alarms = 0
        for i, (a, b) in enumerate(data):
            r = paired_compare(
                a, b, test=test, alternative="less", n_resamples=RESAMPLES[test], seed=i
            )
            alarms += r.p_value < ALPHA
        rows.append(
            Row(label, test, alarms / len(data), FALSE_ALARM_RANGE, time.perf_counter() - start)
        )
    return rows


def _shift_rows(data: list[ScorePair], truth: float) -> list[Row]:
    rows = []
    start = time.perf_counter()
    covered = 0
    for i, (a, b) in enumerate(data):
        r = paired_compare(a, b, test="bootstrap", n_resamples=COVERAGE_RESAMPLES, seed=i)
        covered += r.ci_low <= truth <= r.ci_high
    rows.append(
        Row(
            "95% CI covers true delta",
            f"bootstrap ({COVERAGE_RESAMPLES})",
            covered / len(data),
            COVERAGE_RANGE,
            time.perf_counter() - start,
        )
    )
    for test in TESTS:
        start = time.perf_counter()
        hits = 0
        for i, (a, b) in enumerate(data):
            r = paired_compare(
                a, b, test=test, alternative="greater", n_resamples=RESAMPLES[test], seed=i
            )
            hits += r.p_value < ALPHA
        rows.append(
            Row(
                f"power, delta={truth:.4f}",
                test,
                hits / len(data),
                None,
                time.perf_counter() - start,
            )
        )
    return rows


def main() -> int:
    """Run the simulations, print the table, and return the process exit status."""
    total_start = time.perf_counter()
    truth = _true_delta()
    mc, mc_se = _monte_carlo_delta()
    se = math.sqrt(ALPHA * (1 - ALPHA) / N_SIMULATIONS)
    print(
        f"{N_SIMULATIONS} simulations x {N_QUERIES} queries; one-sided alpha={ALPHA}; "
        f"Monte Carlo SE of a 5% rate = {se:.4f}"
    )
    print(f"true delta (quadrature) = {truth:.5f}; Monte Carlo check = {mc:.5f} +/- {mc_se:.5f}")
    print("resamples: " + ", ".join(f"{t}={n}" for t, n in RESAMPLES.items()))
    print()

    rows = _false_alarm_rows("A/A false alarm (clipped Beta mix)", _simulations(1, _clipped_pair))
    rows += _false_alarm_rows(
        "A/A false alarm (RR@10, ties)", _simulations(2, _reciprocal_rank_pair)
    )
    rows += _shift_rows(_simulations(3, lambda rng: _clipped_pair(rng, SHIFT)), truth)

    header = f"{'check':<36} {'test':<20} {'rate':>6}  {'target':<11} {'result':<6} {'wall s':>7}"
    print(header)
    print("-" * len(header))
    for row in rows:
        target = f"{row.target[0]:.2f}-{row.target[1]:.2f}" if row.target else "-"
        print(
            f"{row.check:<36} {row.test:<20} {row.rate:>6.3f}  {target:<11} "
            f"{row.verdict:<6} {row.seconds:>7.1f}"
        )
    failed = sum(row.verdict == "FAIL" for row in rows)
    checked = sum(row.verdict != "info" for row in rows)
    print()
    print(
        f"{checked - failed}/{checked} checks passed; "
        f"total wall time {time.perf_counter() - total_start:.1f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
