"""The pair verdict's error rates, by seeded simulation.

A simulated repeat is a process: its speed is the cell's true speed times a
process factor (log-normal at a coefficient of variation ``cv``, or heavy-tailed:
a Student t with 3 degrees of freedom on the log scale, scaled to the same spread),
and inside it ``STEPS`` steps whose times wander around that speed with
autocorrelation ``STEP_AUTOCORRELATION`` (AR(1), as the torchvision cells show)
and ``STEP_CV`` spread. Its throughput is its samples over the sum of its step
times, as in a record. B's true speed is A's times (1 + change). Each setting
runs ``COMPARISONS`` comparisons through ``bench.analyze.noise.decide``, the code
that ``bench.compare`` uses.

The reference rule, for power: Welch's t-test on the repeats' throughputs is
significant AND the change of the means is beyond the threshold (pyperf's rule).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.analyze.noise import ALPHA, FASTER, SAME, SLOWER, decide

COMPARISONS = 2000
NOISE_CVS = (0.05, 0.10, 0.20)
REPEATS = (3, 5, 10)
CHANGES = (0.0, -0.10, -0.20)
STEPS, STEP_CV, STEP_AUTOCORRELATION = 30, 0.05, 0.65
TAILS = ("log-normal", "heavy")


@dataclass(frozen=True)
class Setting:
    repeats: int  # per side
    cv: float  # of the process factor
    change: float  # true B/A - 1
    tail: str = "log-normal"


def _process_factors(rng: np.random.Generator, shape: tuple[int, ...], cv: float,
                     tail: str) -> np.ndarray:
    sigma = math.sqrt(math.log1p(cv * cv))  # a log-normal of this CV
    if tail == "heavy":  # Student t(3) has variance 3: scaled to the same sigma
        return np.exp(sigma / math.sqrt(3) * rng.standard_t(3, size=shape))
    return np.exp(sigma * rng.standard_normal(shape))


def _step_means(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """The mean of STEPS autocorrelated step-time factors (mean 1) of each repeat."""
    innovation = STEP_CV * math.sqrt(1 - STEP_AUTOCORRELATION**2)
    step = STEP_CV * rng.standard_normal(shape)
    total = np.zeros(shape)
    for _ in range(STEPS):
        total += 1 + step
        step = STEP_AUTOCORRELATION * step + innovation * rng.standard_normal(shape)
    return total / STEPS


def simulate(setting: Setting, comparisons: int = COMPARISONS,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) throughputs, each ``comparisons`` x ``setting.repeats`` (true A speed 1)."""
    rng = np.random.default_rng(seed)
    shape = (comparisons, setting.repeats)
    sides = []
    for speed in (1.0, 1.0 + setting.change):
        time = _process_factors(rng, shape, setting.cv, setting.tail) * _step_means(rng, shape)
        sides.append(speed / time)
    return sides[0], sides[1]


def reference_rule(a: np.ndarray, b: np.ndarray, threshold: float) -> np.ndarray:
    """pyperf's rule: Welch significant on the throughputs and the change beyond the
    threshold; FASTER / SLOWER or None."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_ind(b, a, axis=-1, equal_var=False).pvalue
    change = b.mean(axis=-1) / a.mean(axis=-1) - 1
    called = (p < ALPHA) & (np.abs(change) > threshold)
    return np.where(called, np.where(change > 0, FASTER, SLOWER), None)


def rates(setting: Setting, threshold: float = 0.05, comparisons: int = COMPARISONS,
          seed: int = 0) -> dict[str, float]:
    """Shares of the comparisons: called faster, slower, same, and the reference
    rule's slower, for one setting."""
    a, b = simulate(setting, comparisons, seed)
    verdict = decide(np.log(a), np.log(b), threshold).verdict
    return {"faster": float(np.mean(verdict == FASTER)),
            "slower": float(np.mean(verdict == SLOWER)),
            "same": float(np.mean(verdict == SAME)),
            "reference slower": float(np.mean(reference_rule(a, b, threshold) == SLOWER))}


def power_table(threshold: float = 0.05, comparisons: int = COMPARISONS,
                seed: int = 0, tails: tuple[str, ...] = TAILS) -> pd.DataFrame:
    """One row per (noise, tail, repeats a side): the false faster/slower share at no
    change, how often a true zero is called same, and how often a true -10% and -20%
    are called slower (and by the reference rule)."""
    rows = []
    for tail in tails:
        for cv in NOISE_CVS:
            for repeats in REPEATS:
                row: dict[str, object] = {"noise": f"{cv:.0%}", "tail": tail,
                                          "repeats": repeats}
                for change in CHANGES:
                    found = rates(Setting(repeats, cv, change, tail), threshold, comparisons,
                                  seed)
                    if change == 0:
                        row["false faster/slower"] = found["faster"] + found["slower"]
                        row["same at 0%"] = found["same"]
                    else:
                        row[f"slower at {change:.0%}"] = found["slower"]
                        row[f"Welch+threshold at {change:.0%}"] = found["reference slower"]
                rows.append(row)
    return pd.DataFrame(rows)


CHECK_REPEATS = (2, 3, 5, 10)


def check_table(target: float, comparisons: int = COMPARISONS, seed: int = 0
                ) -> pd.DataFrame:
    """The scaling check's calls (bench.analyze.scale_verdict: decide at ``target``,
    the predictions as B, the measured repeats as A) on simulated sides of equal noise,
    log-normal: one row per (noise, repeats a side): how often a true error of 0 is
    called within and called too fast or too slow, how often a true error at the
    target's edge (+ or -, the worse) is called within, and how often a true +2x the
    target is called too fast."""
    rows = []
    for cv in NOISE_CVS:
        for repeats in CHECK_REPEATS:
            found = {change: rates(Setting(repeats, cv, change), target, comparisons, seed)
                     for change in (0.0, target, -target, 2 * target)}
            rows.append({"noise": f"{cv:.0%}", "repeats": repeats,
                         "within at 0%": found[0.0]["same"],
                         "too fast/slow at 0%": found[0.0]["faster"] + found[0.0]["slower"],
                         f"within at ±{target * 100:g}%": max(found[target]["same"],
                                                        found[-target]["same"]),
                         f"too fast at +{2 * target * 100:g}%": found[2 * target]["faster"]})
    return pd.DataFrame(rows)
