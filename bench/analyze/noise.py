"""How much a throughput change can be trusted, from the repeats and from the steps.

Repeats are the honest unit (each is a fresh process on the machine as it was
then), but two or three of them cannot see a 30% change through 10% noise. Then
the per-step values help: 30+ steps per repeat, correlated in time (a slow stretch
lasts several steps), so they are resampled in blocks of consecutive steps (a
circular block bootstrap, block length ceil(n^(1/3)) of a repeat's n steps), within
each repeat, and the throughput of each resample is its samples / its time. The
percentile interval of B/A - 1 over ``RESAMPLES`` resamples is the change's 95%
interval.

``repeats_needed``: how many repeats per side a two-sided test at ALPHA with 80%
power needs to see a change of this size, given the spread the repeats show (the
normal approximation n = 2 (z_0.975 + z_0.8)^2 cv^2 / change^2, plus one for the
t-distribution's heavier tails).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

ALPHA = 0.05
RESAMPLES = 2000
Z_TWO_SIDED, Z_POWER = 1.959964, 0.841621  # alpha 0.05 two-sided, power 0.8


def step_values(raw: Any) -> tuple[np.ndarray, float] | None:
    """(the time of each measured step: the slowest rank's, samples per step) of one
    record's raw values; None without steps."""
    ranks = (raw or {}).get("ranks") if isinstance(raw, dict) else None
    if not ranks or not all(rank.get("step_s") for rank in ranks):
        return None
    steps = min(len(rank["step_s"]) for rank in ranks)
    times = np.max([rank["step_s"][:steps] for rank in ranks], axis=0)
    samples = sum(rank.get("samples", 0) / len(rank["step_s"]) for rank in ranks)
    return np.asarray(times, float), float(samples)


def _resampled_throughput(repeats: list[tuple[np.ndarray, float]],
                          rng: np.random.Generator) -> np.ndarray:
    """RESAMPLES throughputs of one side, each over block-resampled steps of every repeat."""
    time = np.zeros(RESAMPLES)
    samples = 0.0
    for times, per_step in repeats:
        n = len(times)
        block = max(1, math.ceil(n ** (1 / 3)))
        blocks = math.ceil(n / block)
        starts = rng.integers(0, n, size=(RESAMPLES, blocks))
        index = (starts[:, :, None] + np.arange(block)) % n  # circular blocks
        time += times[index.reshape(RESAMPLES, -1)[:, :n]].sum(axis=1)
        samples += per_step * n
    return samples / time


def step_interval(raws_a: Sequence[Any], raws_b: Sequence[Any],
                  seed: int = 0) -> tuple[float, float] | None:
    """The 95% interval of B/A - 1 in throughput from the per-step values (block
    bootstrap); None where a side has no steps."""
    sides = [[v for v in map(step_values, raws) if v is not None] for raws in (raws_a, raws_b)]
    if not all(sides):
        return None
    rng = np.random.default_rng(seed)
    a, b = (_resampled_throughput(side, rng) for side in sides)
    change = b / a - 1
    return (float(np.percentile(change, 100 * ALPHA / 2)),
            float(np.percentile(change, 100 * (1 - ALPHA / 2))))


def repeats_needed(a: np.ndarray, b: np.ndarray, change: float) -> int | None:
    """Repeats per side that would decide a change of ``change`` (a fraction); None
    when the repeats show no spread to size it by (a single repeat)."""
    spreads = [side.std(ddof=1) / side.mean() for side in (a, b) if len(side) > 1]
    if not spreads or change == 0:
        return None
    cv = math.sqrt(sum(s * s for s in spreads) / len(spreads))
    return max(2, math.ceil(2 * (Z_TWO_SIDED + Z_POWER) ** 2 * cv**2 / change**2) + 1)
