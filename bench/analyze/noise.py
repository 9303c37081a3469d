"""How far a throughput change between two runs of one cell can be trusted.

The repeat (a fresh process) is the unit of evidence: steps inside one process
share its machine state (its clocks, its memory layout, its neighbours), so they
never decide a verdict. The statistic is the change in the mean of log throughput
over the repeats, d = mean(log B) - mean(log A), with Welch's t-interval (the two
runs may be unequally noisy); the change shown is exp(d) - 1 (the ratio of the
geometric means), so the direction and the test come from one number.

- ``faster`` / ``slower``: Welch's test is significant (p < ALPHA) and the change
  is beyond the threshold.
- ``same``: the (1 - 2 ALPHA) interval of d lies within the threshold on both sides
  (an equivalence test, TOST at ALPHA).
- ``inconclusive``: anything else; ``repeats_needed`` says how many repeats a side
  would decide a change of the threshold's size at the noise seen, and
  ``detectable_pct`` the smallest change this pair could have found with 80% power.

Their error rates come from a seeded simulation (bench.analyze.power) that calls
``decide``; ``python -m bench.compare --power`` prints them.

Everything here works on arrays whose last axis holds the repeats, so that one
call decides thousands of simulated comparisons as well as one real one.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
Z_TWO_SIDED, Z_POWER = 1.959964, 0.841621  # alpha 0.05 two-sided, power 0.8
FASTER, SLOWER, SAME, INCONCLUSIVE = "faster", "slower", "same", "inconclusive"


@dataclass(frozen=True)
class Decision:
    """The verdicts of one or many comparisons (arrays of one shape, the repeats' axis
    gone). Changes are fractions of A (exp(d) - 1); NaN where a side has < 2 repeats."""

    verdict: np.ndarray  # FASTER / SLOWER / SAME / INCONCLUSIVE
    change: np.ndarray  # exp(d) - 1
    low: np.ndarray  # the (1 - ALPHA) interval of the change
    high: np.ndarray
    p_value: np.ndarray
    detectable: np.ndarray  # the smallest |change| found with POWER at this noise
    sigma: np.ndarray  # the pooled standard deviation of log throughput of one repeat


def _welch(log_a: np.ndarray, log_b: np.ndarray) -> tuple[np.ndarray, ...]:
    """(d, its standard error, Welch's degrees of freedom, p) along the last axis;
    identical repeats (no spread) give se 0 and p 0 or 1 instead of NaN."""
    n_a, n_b = log_a.shape[-1], log_b.shape[-1]
    d = log_b.mean(axis=-1) - log_a.mean(axis=-1)
    var_a, var_b = log_a.var(axis=-1, ddof=1), log_b.var(axis=-1, ddof=1)
    se = np.sqrt(var_a / n_a + var_b / n_b)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # near-identical repeats: scipy warns of catastrophic cancellation; the
        # degenerate case is settled below, and no library warning reaches the table
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(log_b, log_a, axis=-1, equal_var=False)
    flat = se <= 1e-12 * np.maximum(np.abs(log_a.mean(axis=-1)), 1.0)
    p = np.where(flat, np.where(np.abs(d) > 1e-12, 0.0, 1.0), result.pvalue)
    df = np.asarray(result.df, float)
    return d, np.where(flat, 0.0, se), np.where(flat, n_a + n_b - 2, df), p


def decide(log_a: np.ndarray, log_b: np.ndarray, threshold: float,
           alpha: float = ALPHA) -> Decision:
    """The verdict of B against A from the log throughputs of their repeats (last
    axis); ``threshold`` is a fraction (0.05 = 5%)."""
    log_a, log_b = np.asarray(log_a, float), np.asarray(log_b, float)
    shape = np.broadcast_shapes(log_a.shape[:-1], log_b.shape[:-1])
    if min(log_a.shape[-1], log_b.shape[-1]) < 2:  # no spread to test against
        d = np.broadcast_to(log_b.mean(axis=-1) - log_a.mean(axis=-1), shape)
        nan = np.full(shape, np.nan)
        spread = [side.std(axis=-1, ddof=1) for side in (log_a, log_b) if side.shape[-1] > 1]
        sigma = np.broadcast_to(spread[0], shape) if spread else nan
        return Decision(np.full(shape, INCONCLUSIVE, dtype=object), np.expm1(d), nan, nan,
                        nan, nan, sigma)
    d, se, df, p = _welch(log_a, log_b)
    half = stats.t.ppf(1 - alpha / 2, df) * se
    half_tost = stats.t.ppf(1 - alpha, df) * se
    lower, upper = math.log1p(-threshold) if threshold < 1 else -np.inf, math.log1p(threshold)
    beyond = (d < lower) | (d > upper)
    verdict = np.where((p < alpha) & beyond, np.where(d > 0, FASTER, SLOWER),
                       np.where((d - half_tost >= lower) & (d + half_tost <= upper),
                                SAME, INCONCLUSIVE)).astype(object)
    n_a, n_b = log_a.shape[-1], log_b.shape[-1]
    sigma = np.sqrt(((n_a - 1) * log_a.var(axis=-1, ddof=1)
                     + (n_b - 1) * log_b.var(axis=-1, ddof=1)) / (n_a + n_b - 2))
    detectable = np.expm1((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(POWER, df)) * se)
    return Decision(verdict, np.expm1(d), np.expm1(d - half), np.expm1(d + half), p,
                    detectable, sigma)


def repeats_needed(sigma: float, change: float) -> int | None:
    """Repeats per side that a two-sided test at ALPHA with 80% power needs to see a
    change of ``change`` (a fraction) when one repeat's log throughput varies by
    ``sigma``: n = 2 (z_0.975 + z_0.8)^2 sigma^2 / log(1 + change)^2, plus one for
    the t-distribution's heavier tails (so at least 2). None without a spread."""
    if math.isnan(sigma) or sigma <= 0 or change == 0 or change <= -1:
        return None
    effect = math.log1p(change)
    return math.ceil(2 * (Z_TWO_SIDED + Z_POWER) ** 2 * sigma**2 / effect**2) + 1
