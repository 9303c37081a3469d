"""The change rule of bench.history on arrays: a batch of series (rows) of runs
(columns) of repeats (NaN where a run has fewer), so that one cell and a simulation
of thousands of series go through the same code.

Everything is in log throughput: a drop of x% and the rise that undoes it are the
same distance, and noise that scales with the speed is one number.

- A run's *level*: the median of log(samples/s) over its ok repeats.
- *sigma*, the noise of a level between runs, from the series itself: the
  successive differences of the levels (a slow trend only moves their centre),
  the one in ten farthest from their median left out (a step change makes one
  such difference, an outlier run two), their variance / 2, scaled to be right
  for normal noise (a seeded calibration per series length, which also gives the
  degrees of freedom of the estimate). Floored at what the repeats alone imply for
  a level (their pooled variance / repeats), so a short flat series cannot claim
  less noise than its repeats show.
- *band* = max(-log(1 - threshold), q x sigma x sqrt(1 + v(k))) around a level taken
  as the median of k runs (v(k) = pi / 2k, the variance of that median in units of
  sigma^2, 1/k below 3 runs); q = the 95% quantile of Student's t with sigma's
  degrees of freedom, so a run of a steady series is past one side of its band
  about 5% of the time, and a short series (few degrees of freedom) needs more.
  Past 10 runs the 5% shrinks as 1 / sqrt(runs), so that a longer window does not
  fail more often (2-3% at 15 to 50 runs).
- *Change points*: walk the runs keeping a segment (the runs since the last change
  point). Run i is a candidate only once the segment holds 3 runs; it is a change
  point when it is beyond the band around the segment's median AND run i + 1 is too,
  in the same direction (confirmed; the segment restarts at i). The last run beyond
  the band is unconfirmed. A run beyond the band that the next does not follow is
  an outlier, left out of the segment.
- *Against the baseline*: the baseline level is the median of 3 runs from the
  baseline run (one run alone is too noisy a reference: its own offset would make
  every later run look changed). Every later run is compared with it using the
  band for k = 3; two consecutive runs beyond it in the same direction are a
  confirmed change against the baseline, which catches a slow slide that never
  makes a step.
- *The gate* (--fail-on-change) fails on a confirmed slowdown change point, or on a
  confirmed slowdown against the baseline at the end of the window (the last two
  runs). An unconfirmed last run never fails it.

Error rates, measured by tests/bench/analyze/test_history_simulation.py (4,000
seeded series per setting, 10 runs of 3 repeats, log-normal noise: between runs
as given, 3% inside a run; threshold 5%; about +-0.7% each):

- steady, 5% between runs: the gate fails 1.9% of series; some run marked 7.1%
- steady, 10% between runs: the gate fails 2.1%; some run marked 7.2% (the rule
  before this one: 34% and 51%); 20 or 30 runs: fails 2.8% / 2.4%
- a 15% drop at run 6 (2% between runs): confirmed at run 6 or 7 in 93.9%
- a 2%-per-run slide (-17% over 10 runs, 2% between runs): a confirmed slowdown
  against the baseline at the end, failing the gate, in 91.4%
- one run of a steady series 25% slow, anywhere: the gate fails 0.1% (2% between
  runs) / 0.4% (5%); as the last run it is DROP? in 99.4%, never confirmed (the gate fails 0.9%)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

DEFAULT_THRESHOLD = 0.05  # smallest change called, as a ratio (5%)
MIN_SEGMENT_RUNS = 3  # runs a segment holds before its next run can be a change point
BASELINE_RUNS = 3  # runs from the baseline run whose median is the baseline level
RUN_TAIL = 0.05  # one-sided chance that one run of a steady series is past its band
TESTED_RUNS = 6  # runs a 10-run window can confirm as change points; longer ones get less tail
TRIM_EVERY = 10  # one successive difference in ten (rounded) is left out of sigma
CALIBRATION_DRAWS = 2_000_000  # normal values simulated per series length to calibrate sigma
CALIBRATION_SEED = 20261127

NONE, CONFIRMED, UNCONFIRMED = 0, 1, 2  # marks of a run (vs_mark: UNCONFIRMED = beyond alone)


@dataclass(frozen=True)
class Assessment:
    """The rule's verdict on a batch of S series of R runs (log units throughout)."""

    level: np.ndarray  # (S, R) each run's median log(samples/s)
    sigma: np.ndarray  # (S,) noise of a level between runs
    quantile: float  # q of the band
    mark: np.ndarray  # (S, R) NONE / CONFIRMED / UNCONFIRMED change points
    change: np.ndarray  # (S, R) level - segment level at a change point, NaN elsewhere
    segment: np.ndarray  # (S, R) the segment level a change point is measured from
    vs_base: np.ndarray  # (S, R) level - baseline level after the baseline's runs, else NaN
    vs_mark: np.ndarray  # (S, R) CONFIRMED: this and the previous run beyond the baseline's
    #                      band in the same direction; UNCONFIRMED: this one alone
    base_level: np.ndarray  # (S,) NaN where the series has too few runs from the baseline
    base_band: np.ndarray  # (S,) half-width of the band around the baseline level
    fails: np.ndarray  # (S, R) the runs that fail the gate

    @property
    def failed(self) -> np.ndarray:
        """(S,) whether each series fails the gate."""
        return self.fails.any(axis=1)


def repeat_levels(log_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(level (S, R), floor (S,)) from log values (S, R, N), NaN for missing repeats.
    floor: the noise of a level the repeats alone imply, sqrt(variance / repeats)
    (the variance of their mean: a lower bound for their median's), the variance
    the median over runs (one run with a wild repeat moves it little), each run's
    divided by chi-square's median / dof so that median is unbiased for normal noise."""
    with warnings.catch_warnings():  # runs of one repeat: no variance, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        level = np.nanmedian(log_values, axis=2)
        count = np.sum(~np.isnan(log_values), axis=2)
        dof = np.maximum(count - 1, 1)
        variance = np.nanvar(log_values, axis=2, ddof=1) / (stats.chi2.median(dof) / dof)
        per_level = np.where(count >= 2, variance / np.maximum(count, 1), np.nan)
        floor = np.sqrt(np.nanmedian(per_level, axis=1))
    return level, np.nan_to_num(floor)


def _raw_sigma(level: np.ndarray) -> np.ndarray:
    """Unscaled sigma per series: see the module docstring."""
    diffs = np.diff(level, axis=1)
    n = diffs.shape[1]
    far = np.abs(diffs - np.median(diffs, axis=1, keepdims=True))
    keep = np.argsort(far, axis=1, kind="stable")[:, : n - (n + TRIM_EVERY // 2) // TRIM_EVERY]
    kept = np.take_along_axis(diffs, keep, axis=1)
    return np.sqrt(kept.var(axis=1, ddof=1) / 2)


@lru_cache(maxsize=64)
def calibration(runs: int) -> tuple[float, float]:
    """(scale, degrees of freedom) of _raw_sigma on steady normal series of ``runs``
    runs with sigma 1: divide by scale to estimate sigma (its geometric mean is then
    right); the spread of log(estimate) gives the degrees of freedom of a chi-square
    estimate with the same spread (var(log s) = 1 / 2 dof)."""
    series = max(1000, CALIBRATION_DRAWS // runs)
    logs = np.log(_raw_sigma(np.random.default_rng(CALIBRATION_SEED).normal(size=(series, runs))))
    return float(np.exp(logs.mean())), float(1 / (2 * logs.var()))


def between_run_sigma(level: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, float]:
    """(sigma (S,), its degrees of freedom): 0 degrees where too few runs to tell."""
    runs = level.shape[1]
    if runs <= MIN_SEGMENT_RUNS:  # no run can be tested: nothing to estimate for
        return floor, 0.0
    scale, dof = calibration(runs)
    return np.maximum(_raw_sigma(level) / scale, floor), dof


def run_tail(runs: int) -> float:
    """The one-sided tail of the band for a window of ``runs`` runs: RUN_TAIL up to 10
    runs, then shrinking as 1 / sqrt(runs tested). A false confirmed change needs two
    runs past the band, so its chance per run goes as the tail squared, and the
    window's false rate stays near its 10-run value however long the window."""
    return RUN_TAIL * min(1.0, TESTED_RUNS / max(runs - 4, 1)) ** 0.5


def median_variance(k: np.ndarray | int) -> np.ndarray:
    """Variance of the median of k levels in units of sigma^2: 1/k up to 2 runs (a
    mean), pi / 2k from 3 (large-k value, a little above the exact one: cautious)."""
    k = np.maximum(np.asarray(k, dtype=float), 1)
    return np.where(k < 3, 1 / k, np.pi / (2 * k))


def _walk(level: np.ndarray, sigma: np.ndarray, q: float,
          floor_log: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mark, change, segment level) of the change-point walk, every series at once."""
    series, runs = level.shape
    inside = np.zeros((series, runs), dtype=bool)  # the segment of each series
    inside[:, 0] = True
    mark = np.zeros((series, runs), dtype=np.int8)
    change = np.full((series, runs), np.nan)
    segment = np.full((series, runs), np.nan)
    for i in range(1, runs):
        k = inside.sum(axis=1)
        centre = np.nanmedian(np.where(inside, level, np.nan), axis=1)
        band = np.maximum(floor_log, q * sigma * np.sqrt(1 + median_variance(k)))
        off = level[:, i] - centre
        beyond = (np.abs(off) > band) & (k >= MIN_SEGMENT_RUNS)
        if i + 1 < runs:
            follow = level[:, i + 1] - centre
            confirmed = beyond & (np.abs(follow) > band) & (np.sign(follow) == np.sign(off))
            marked = confirmed
        else:  # nothing after the last run to confirm it
            confirmed, marked = np.zeros(series, dtype=bool), beyond
        mark[marked, i] = np.where(confirmed[marked], CONFIRMED, UNCONFIRMED)
        change[marked, i], segment[marked, i] = off[marked], centre[marked]
        inside[confirmed] = False  # the segment restarts at the change point
        inside[confirmed | ~beyond, i] = True  # an unfollowed outlier stays out
    return mark, change, segment


def _against_baseline(level: np.ndarray, sigma: np.ndarray, q: float, floor_log: float,
                      start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(vs_base, vs_mark, base_level, base_band): see the module docstring."""
    series, runs = level.shape
    vs_base = np.full((series, runs), np.nan)
    vs_mark = np.zeros((series, runs), dtype=np.int8)
    first = start + BASELINE_RUNS  # the first run compared with the baseline
    if start < 0 or first >= runs or not np.isfinite(q):
        return vs_base, vs_mark, np.full(series, np.nan), np.full(series, np.nan)
    base_level = np.median(level[:, start:first], axis=1)
    base_band = np.maximum(floor_log, q * sigma * np.sqrt(1 + median_variance(BASELINE_RUNS)))
    vs_base[:, first:] = level[:, first:] - base_level[:, None]
    beyond = np.abs(vs_base) > base_band[:, None]  # NaN compares False
    vs_mark[beyond] = UNCONFIRMED
    same_way = np.sign(vs_base[:, first + 1:]) == np.sign(vs_base[:, first:-1])
    both = beyond[:, first + 1:] & beyond[:, first:-1] & same_way
    vs_mark[:, first + 1:][both] = CONFIRMED
    return vs_base, vs_mark, base_level, base_band


def assess(log_values: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
           baseline_at: int = 0) -> Assessment:
    """The rule of the module docstring on log(samples/s) values (S, R, N), NaN for
    missing repeats; the baseline's runs start at column ``baseline_at``."""
    level, floor = repeat_levels(log_values)
    sigma, dof = between_run_sigma(level, floor)
    q = float(stats.t.ppf(1 - run_tail(level.shape[1]), dof)) if dof > 0 else float("inf")
    # a drop of threshold is the larger step in logs: no change smaller than it either way
    floor_log = float(-np.log1p(-threshold)) if threshold < 1 else float("inf")
    mark, change, segment = _walk(level, sigma, q, floor_log)
    vs_base, vs_mark, base_level, base_band = _against_baseline(level, sigma, q, floor_log,
                                                                baseline_at)
    fails = (mark == CONFIRMED) & (change < 0)
    end_slower = (vs_mark[:, -1] == CONFIRMED) & (vs_base[:, -1] < 0)
    fails[:, -1] |= end_slower
    return Assessment(level, sigma, q, mark, change, segment, vs_base, vs_mark, base_level,
                      base_band, fails)


def pad(values: list[list[float]]) -> np.ndarray:
    """One series of runs of positive samples/s (ragged) as log values (1, R, N)."""
    width = max((len(v) for v in values), default=0) or 1
    out = np.full((1, len(values), width), np.nan)
    for i, run in enumerate(values):
        positive = np.asarray([v for v in run if v > 0], dtype=float)
        out[0, i, : len(positive)] = np.log(positive)
    return out


@dataclass(frozen=True)
class Change:
    """A change point of one series, in its units (samples/s) rather than logs."""

    position: int  # in the series given to find_changes
    change: float  # median / segment - 1
    segment: float  # the level (samples/s) of the runs since the last change point
    confirmed: bool


def find_changes(medians: list[float], repeats: list[list[float]],
                 threshold: float = DEFAULT_THRESHOLD) -> list[Change]:
    """The change points of one cell's series (per-run medians and repeat values, in
    run order; a run without repeats counts as its median alone)."""
    values = [list(r) if len(r) else [m] for m, r in zip(medians, repeats, strict=True)]
    verdict = assess(pad(values), threshold)
    return [Change(int(i), float(np.expm1(verdict.change[0, i])),
                   float(np.exp(verdict.segment[0, i])), bool(verdict.mark[0, i] == CONFIRMED))
            for i in np.flatnonzero(verdict.mark[0])]
