"""A scaling check's call: is the model within its target of what was measured?

The repeat is the unit of evidence on both sides: the checked cell's repeats, and one
prediction per repeat of the one-device cell it is predicted from (the model applied
to that repeat's phases, so the inputs' noise reaches the predictions). The error is
the ratio of the two sides' geometric means, less 1, and the call is
bench.analyze.noise.decide's, the rule bench.compare uses, at the target:

- ``within``: the error's 90% interval lies inside the target on both sides (an
  equivalence test); a model whose true error is the target's is called within in
  about ALPHA of checks (at most 5.8% in the simulation);
- ``too fast`` / ``too slow``: the model is off by more than the target, Welch's test
  significant;
- ``can't tell``: neither, with the repeats a side that would tell at the noise seen:
  enough to resolve the gap between the error seen and the target's edge (an error of
  +11% against 15% needs far more than one of 0%).

Their error rates, by seeded simulation: bench.analyze.power.check_table
(``python -m bench.scale --power``). The link's own noise (the comm cells it was fitted
from) is not in the interval: every prediction of a check shares one link.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bench.analyze.noise import FASTER, SAME, SLOWER, decide, repeats_needed

TARGET = 0.15  # the model within 15% of the measured samples/s
CANT_TELL = "can't tell"
CALLS = {SAME: "within", FASTER: "too fast", SLOWER: "too slow"}  # else CANT_TELL


@dataclass(frozen=True)
class Verdict:
    call: str  # within / too fast / too slow / can't tell
    error: float  # predicted / measured - 1, geometric means over the repeats
    low: float  # its 95% interval (NaN with one repeat on a side)
    high: float
    repeats_needed: int | None  # a side, to tell at the target (can't tell only)


def judge(predicted: tuple[float, ...], measured: tuple[float, ...],
          target: float = TARGET) -> Verdict:
    """The call on samples/s ``predicted`` (one per input repeat) against ``measured``
    (one per repeat of the checked cell) at ``target`` (a fraction)."""
    found = decide(np.log(measured), np.log(predicted), target)
    call = CALLS.get(str(found.verdict), CANT_TELL)
    # the gap, in log samples/s, between the error seen and the nearer edge of the target
    gap = abs(math.log1p(target) - abs(math.log1p(float(found.change))))
    needed = repeats_needed(float(found.sigma), math.expm1(gap)) if call == CANT_TELL else None
    return Verdict(call, float(found.change), float(found.low), float(found.high), needed)


def geomean(values: tuple[float, ...]) -> float | None:
    return float(stats.gmean(values)) if values else None
