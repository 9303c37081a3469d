"""bench.analyze.noise and the compare verdict: "within noise" means it; too few
repeats give "inconclusive" with the repeats that would decide, and the per-step
values (block bootstrap) give the test its power."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.analyze.compare import INCONCLUSIVE, throughput_verdict
from bench.analyze.load import load_records
from bench.analyze.noise import repeats_needed, step_interval

REFERENCE = Path(__file__).resolve().parents[3] / "results/reference/cpu-AMD-EPYC-2-cores"
TUTORIAL = "cpu-1x-single-32-true-bs64-torchvision"


@pytest.fixture(scope="module")
def tutorial() -> tuple[list[float], list[dict[str, Any]]]:
    """The committed reference's tutorial-default cell: 3 repeats, about 214/s."""
    df = load_records(REFERENCE)
    cell = df[(df["cell_id"] == TUTORIAL) & (df["status"] == "ok")]
    return list(cell["samples_per_s"]), list(cell["raw"])


def slowed(raw: dict[str, Any], factor: float) -> dict[str, Any]:
    """The same steps, each ``factor`` times as long (a uniformly slower machine)."""
    raw = copy.deepcopy(raw)
    for rank in raw["ranks"]:
        rank["step_s"] = [s * factor for s in rank["step_s"]]
    return raw


def test_two_slower_repeats_are_not_called_within_noise(tutorial: tuple) -> None:
    """A run of the tutorial cell elsewhere: 2 repeats at 140 and 170/s against 214/s.
    A Welch test over 3 and 2 repeats cannot see it (p about 0.12)."""
    values, raws = tutorial
    b_values = [140.0, 170.0]
    b_raws = [slowed(raws[0], values[0] / 140), slowed(raws[1], values[1] / 170)]
    # Without the steps: the repeats cannot decide, and say how many would.
    verdict, change, p, basis = throughput_verdict(values, b_values)
    assert verdict == INCONCLUSIVE and p > 0.05 and change == pytest.approx(-27.6, abs=0.5)
    assert "needs ~" in basis and "repeats a side" in basis
    # With them: the block bootstrap over the steps calls it.
    verdict, _, _, basis = throughput_verdict(values, b_values, 5.0, raws, b_raws)
    assert verdict == "slower" and basis.startswith("steps: 95% CI")


def test_the_same_steps_twice_are_within_noise_and_the_interval_holds_zero(
        tutorial: tuple) -> None:
    values, raws = tutorial
    low, high = step_interval(raws, raws)  # type: ignore[misc]
    assert low < 0 < high and high - low < 0.05
    assert throughput_verdict(values, values, 5.0, raws, raws)[0] == "within noise"


def test_step_interval_brackets_a_known_slowdown(tutorial: tuple) -> None:
    _, raws = tutorial
    interval = step_interval(raws, [slowed(raw, 1 / 0.8) for raw in raws])
    assert interval is not None
    low, high = interval
    assert low < -0.2 < high  # 20% fewer samples/s, within the interval
    assert high < 0


def test_noisy_steps_and_few_repeats_stay_inconclusive() -> None:
    """Steps that vary as much as the change: the interval holds zero."""
    rng = np.random.default_rng(1)

    def raw(mean: float) -> dict[str, Any]:
        steps = list(np.clip(rng.normal(mean, 0.4 * mean, 30), 0.01, None))
        return {"ranks": [{"rank": 0, "step_s": steps, "samples": 30 * 64}]}

    verdict, _, _, basis = throughput_verdict([100.0], [90.0], 5.0, [raw(0.64)], [raw(0.70)])
    assert verdict == INCONCLUSIVE and "CI" in basis


def test_repeats_needed_grows_with_the_noise() -> None:
    tight, loose = np.array([100, 101, 99.0]), np.array([100, 120, 80.0])
    assert repeats_needed(tight, tight * 0.9, -0.1) == 2
    assert repeats_needed(loose, loose * 0.9, -0.1) > 10
    assert repeats_needed(np.array([100.0]), np.array([90.0]), -0.1) is None
