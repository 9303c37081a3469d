"""bench.measure.warmup: warm-up goes on until the step time is steady, bounded, and
every rank ends it at the same step."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from bench.analyze.summary import stability
from bench.measure.clock import StepClock
from bench.measure.derive import derive_metrics
from bench.measure.warmup import MAX_FACTOR, WarmupRule, all_ranks_agree, steady
from bench.record import Raw

CPU = torch.device("cpu")


class FakeTime:
    """The clock's perf_counter, moved by hand: step times exactly as written."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def run_steps(clock: StepClock, fake: FakeTime, step_s: list[float],
              until_measured: int | None = None) -> None:
    clock.start()
    for seconds in step_s:
        clock.mark("forward")
        fake.now += seconds
        clock.step_done(torch.tensor(0.0), 8)
        if until_measured is not None and clock.measured_steps == until_measured:
            break
    clock.finish()


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr("bench.measure.clock.time", SimpleNamespace(perf_counter=fake.perf_counter))
    monkeypatch.setattr("bench.measure.clock.memory_peaks", lambda device: {})
    return fake


def test_steady_means_the_last_three_steps_within_ten_percent_of_their_median() -> None:
    assert steady([5.0, 0.20, 0.21, 0.19])
    assert not steady([0.20, 0.21])  # too few steps to tell
    # The reference run's case: the warm-up's last step still 5x the median.
    assert not steady([0.159, 0.16, 0.868])
    assert not steady([0.10, 0.10, 0.115])


def test_rule_per_cell() -> None:
    assert WarmupRule.for_cell(5, "steady", "throughput") == WarmupRule(5, 5 * MAX_FACTOR)
    assert WarmupRule.for_cell(5, "fixed", "throughput") == WarmupRule(5, 5)
    assert WarmupRule.for_cell(5, "steady", "accuracy") == WarmupRule(5, 5)  # to target
    assert WarmupRule.for_cell(0, "steady", "throughput") == WarmupRule(0, 0)


def test_warmup_goes_on_until_steady_and_the_window_holds_only_steady_steps(
        fake_time: FakeTime) -> None:
    asked: list[int] = []

    def agree(flag: bool) -> bool:
        asked.append(len(asked))
        return flag

    clock = StepClock(WarmupRule(2, 8), CPU, agree=agree)
    # A compile, a cold cache, then two more slow steps before the steady 0.1 s.
    run_steps(clock, fake_time, [3.0, 0.5, 0.3, 0.1, 0.1, 0.1] + [0.1] * 4, until_measured=4)
    rank = clock.rank_raw(0)
    assert rank.warmup_step_s == pytest.approx([3.0, 0.5, 0.3, 0.1, 0.1, 0.1])
    assert rank.warmup_steady is True
    assert rank.step_s == pytest.approx([0.1] * 4)
    assert len(asked) == 5  # from the second step (the least warm-up) to the sixth
    metrics = derive_metrics(Raw(ranks=[rank]), 1)
    assert metrics["warmup_steps_taken"] == 6 and metrics["warmup_steady"] is True


def test_warmup_is_bounded_and_a_never_steady_cell_is_flagged_unstable(
        fake_time: FakeTime) -> None:
    clock = StepClock(WarmupRule(2, 8), CPU, agree=lambda flag: flag)
    run_steps(clock, fake_time, [0.1, 0.2] * 10, until_measured=4)
    rank = clock.rank_raw(0)
    assert len(rank.warmup_step_s) == 8 and rank.warmup_steady is False
    assert len(rank.step_s) == 4
    metrics = derive_metrics(Raw(ranks=[rank]), 1)
    assert metrics["warmup_steady"] is False
    one_repeat = pd.DataFrame([{"samples_per_s": metrics["samples_per_s"],
                                "window_median_ratio": 1.0, "warmup_steady": False}])
    assert stability(one_repeat)["unstable"]


def test_a_rank_not_yet_steady_keeps_every_rank_warming_up(fake_time: FakeTime) -> None:
    """This rank is steady from its third step; another is not until the sixth."""
    other_rank_steady = iter([False, False, False, True])
    clock = StepClock(WarmupRule(3, 12), CPU,
                      agree=lambda flag: flag and next(other_rank_steady))
    run_steps(clock, fake_time, [0.1] * 20, until_measured=2)
    assert clock.warmup_steps == 6 and clock.warmup_steady is True


def test_fixed_warmup_takes_exactly_its_steps_and_asks_nobody(fake_time: FakeTime) -> None:
    def agree(flag: bool) -> bool:
        raise AssertionError("a fixed warm-up needs no agreement")

    clock = StepClock(WarmupRule.fixed(2), CPU, agree=agree)
    run_steps(clock, fake_time, [0.1, 0.5, 0.9, 0.1])
    rank = clock.rank_raw(0)
    assert len(rank.warmup_step_s) == 2 and rank.warmup_steady is None
    assert rank.step_s == pytest.approx([0.9, 0.1])


def test_one_process_agrees_with_itself() -> None:
    assert all_ranks_agree(True, CPU) and not all_ranks_agree(False, CPU)
