"""bench.analyze.noise: the verdict on a change from the repeats, its direction and
its test from one statistic, "same" only when the interval says so, and the
repeats a side that would decide, against hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from bench.analyze.compare import throughput_verdict
from bench.analyze.noise import FASTER, INCONCLUSIVE, SAME, SLOWER, decide, repeats_needed


def test_a_tight_ten_percent_drop_is_slower_with_its_interval() -> None:
    a, b = [100.0, 101.0, 99.0], [90.0, 91.0, 89.0]
    found = decide(np.log(a), np.log(b), 0.05)
    # the ratio of the geometric means, by hand
    expected = math.exp(sum(map(math.log, b)) / 3 - sum(map(math.log, a)) / 3) - 1
    assert found.verdict == SLOWER
    assert float(found.change) == pytest.approx(expected) == pytest.approx(-0.1, abs=1e-3)
    assert float(found.low) < expected < float(found.high) < -0.05
    assert float(found.p_value) < 0.001


def test_direction_and_interval_come_from_one_statistic() -> None:
    """A = [1, 1, 2]x, B = 1.10x: the medians say +10%, the geometric means -12.7%.
    The verdict follows the mean of logs, the interval brackets it, and nothing is
    called faster on a median that the test does not back."""
    row = throughput_verdict([100.0, 100.0, 200.0], [110.0, 110.0, 110.0])
    assert row["change_pct"] == pytest.approx(100 * (1.1 / 2 ** (1 / 3) - 1))
    assert row["ci_low_pct"] < row["change_pct"] < row["ci_high_pct"]
    assert row["verdict"] == INCONCLUSIVE


def test_same_needs_the_whole_interval_inside_the_threshold() -> None:
    tight = np.array([100.0, 100.1, 99.9])
    # significant (p tiny) but -3%, its 90% interval inside +-5%: the same speed
    assert throughput_verdict(tight, tight * 0.97)["verdict"] == SAME
    # a -3% change whose interval reaches past -5%: not the same, not slower either
    loose = np.array([100.0, 104.0, 96.0])
    row = throughput_verdict(loose, loose * 0.97)
    assert row["verdict"] == INCONCLUSIVE and row["ci_low_pct"] < -5
    assert "repeats a side would decide 5%" in row["basis"]


def test_one_repeat_a_side_is_never_a_verdict() -> None:
    for b in (103.0, 110.0, 68.5):
        row = throughput_verdict([100.0], [b])
        assert row["verdict"] == INCONCLUSIVE and "n=1/1" in row["basis"]
        assert row["change_pct"] == pytest.approx(b - 100)
    # the other side's spread still sizes the repeats needed
    assert throughput_verdict([100.0, 110.0, 90.0], [80.0])["repeats_needed"] > 3


def test_identical_repeats_decide_plainly_and_near_identical_ones_warn_nothing() -> None:
    assert throughput_verdict([100, 100], [90, 90])["verdict"] == SLOWER
    assert throughput_verdict([100, 100], [110, 110])["verdict"] == FASTER
    assert throughput_verdict([100, 100], [100, 100])["verdict"] == SAME
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's precision-loss warning would raise here
        row = throughput_verdict([100.0, 100.0 + 1e-13, 100.0], [100.0, 100.0, 100.0 - 1e-13])
    assert row["verdict"] == SAME


def test_repeats_needed_is_the_formula() -> None:
    """n = 2 (1.959964 + 0.841621)^2 sigma^2 / log(1 + change)^2, rounded up, plus one."""
    assert repeats_needed(0.1, 0.05) == 67  # 65.94 -> 66 + 1
    assert repeats_needed(0.1, -0.05) == 61  # |log 0.95| is larger: 59.66 -> 60 + 1
    assert repeats_needed(0.03, 0.1) == 3  # 1.555 -> 2 + 1
    assert repeats_needed(float("nan"), 0.1) is None
    assert repeats_needed(0.1, 0.0) is None


def test_detectable_change_is_the_t_quantiles_times_the_standard_error() -> None:
    """log A = (0, 0.1, 0.2), B the same: se = sqrt(2 x 0.01 / 3), 4 degrees of
    freedom; (t_0.975 + t_0.8) = 2.7764 + 0.9410 (tables): +35.5%."""
    log_a = np.array([0.0, 0.1, 0.2])
    found = decide(log_a, log_a.copy(), 0.05)
    assert float(found.detectable) == pytest.approx(0.3546, abs=1e-4)
    assert float(found.sigma) == pytest.approx(0.1)
    assert found.verdict == INCONCLUSIVE  # 3 repeats at 10% cannot show +-5%


def test_decide_works_on_many_comparisons_at_once() -> None:
    rng = np.random.default_rng(0)
    log_a = rng.normal(0, 0.01, (4, 5))
    log_b = log_a + np.array([[0.0], [-0.2], [0.2], [0.001]])
    verdicts = decide(log_a, log_b, 0.05).verdict
    assert list(verdicts) == [SAME, SLOWER, FASTER, SAME]
