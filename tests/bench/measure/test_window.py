"""bench.measure.window: the step count of a time window, chosen at the end of the
warm-up from its step times, the same on every rank, kept by later repeats; a fixed
window measures exactly its steps. The clock runs on a fake perf_counter, so step
times are exactly as written (tests/bench/measure/test_warmup.py)."""

from __future__ import annotations

import pytest
import torch

from bench.matrix import Cell
from bench.measure.clock import StepClock
from bench.measure.warmup import WarmupRule
from bench.measure.window import (
    MAX_WINDOW_STEPS,
    Window,
    WindowChoice,
    step_time_estimate,
    window_steps,
)
from tests.bench.measure import test_warmup
from tests.bench.measure.test_warmup import FakeTime

CPU = torch.device("cpu")
fake_time = test_warmup.fake_time  # the clock on a fake perf_counter, moved by hand


@pytest.mark.parametrize("min_steps, min_window_s, step_s, steps", [
    (30, 2.0, 0.1, 30),  # a CPU step: 30 steps already exceed 2.2 s
    (30, 2.0, 0.004, 550),  # a GPU step of 4 ms: 2.2 s / 4 ms
    (30, 2.0, 0.25, 30),
    (3, 2.0, 0.25, 9),  # 8.8 steps, rounded up
    (3, 0.5, 0.011, 50),
    (30, 2.0, 1e-6, MAX_WINDOW_STEPS),  # capped
    (20_000, 2.0, 1e-6, 20_000),  # but never below the cell's steps
    (30, 2.0, 0.0, MAX_WINDOW_STEPS),  # a step too short to time
])
def test_a_time_window_takes_enough_steps_for_its_time_with_a_margin(
        min_steps: int, min_window_s: float, step_s: float, steps: int) -> None:
    assert window_steps(min_steps, min_window_s, step_s) == steps
    assert MAX_WINDOW_STEPS == 10_000


def test_the_estimate_is_the_median_of_the_last_three_warm_up_steps() -> None:
    assert step_time_estimate([3.0, 0.5, 0.3, 0.1, 0.12, 0.11]) == pytest.approx(0.11)
    assert step_time_estimate([3.0, 0.2]) == pytest.approx(1.6)  # what there is
    assert step_time_estimate([3.0]) == 3.0


def test_each_cell_gets_its_window() -> None:
    assert Window.for_cell(Cell(mode="accuracy"), 0) is None
    fixed = Window.for_cell(Cell(window="fixed", steps=7), 2, WindowChoice(99, 0, 0.1))
    assert fixed is not None and (fixed.steps, fixed.most_steps, fixed.calibrates) == (7, 7, False)
    first = Window.for_cell(Cell(steps=7, min_window_s=3.0), 0)
    assert first == Window("time", 7, 3.0, 0)
    assert (first.steps, first.most_steps, first.calibrates) == (None, MAX_WINDOW_STEPS, True)
    later = Window.for_cell(Cell(steps=7), 1, WindowChoice(40, 0, 0.05))
    assert later is not None and (later.steps, later.most_steps, later.calibrates) == (40, 40,
                                                                                      False)


def test_a_choice_travels_as_json_and_back_from_its_record() -> None:
    choice = WindowChoice(550, 0, 0.004)
    assert WindowChoice.from_json(choice.to_json()) == choice
    window = Window("time", 30, 2.0, 3, choice)
    assert WindowChoice.from_record(window.to_record()) == choice
    assert WindowChoice.from_record(Window("fixed", 30, 2.0, 0).to_record()) is None
    assert WindowChoice.from_record(None) is None  # a record written before windows


def measure(clock: StepClock, fake: FakeTime, step_s: list[float]) -> list[float]:
    """Steps of the given times until the clock's window is done; the measured ones."""
    clock.start()
    for seconds in step_s:
        clock.mark("forward")
        fake.now += seconds
        clock.step_done(torch.tensor(0.0), 8)
        if clock.window_done:
            break
    clock.finish()
    return clock.rank_raw(0).step_s


def test_the_first_repeat_chooses_at_the_end_of_its_warm_up(fake_time: FakeTime) -> None:
    asked: list[float] = []

    def agree_min(value: float) -> float:
        asked.append(value)
        return value

    window = Window("time", 3, 2.0, repeat=0)
    clock = StepClock(WarmupRule(2, 8), CPU, window, agree=lambda flag: flag,
                      agree_min=agree_min)
    # Warm-up is steady after the fifth step; its last three steps take 0.25 s.
    measured = measure(clock, fake_time, [3.0, 0.5, 0.25, 0.25, 0.25] + [0.25] * 20)
    assert clock.warmup_steps == 5 and asked == [0.25]
    assert measured == pytest.approx([0.25] * 9)  # 2.2 s / 0.25 s, rounded up
    assert window.to_record() == {"rule": "time", "min_steps": 3, "min_window_s": 2.0,
                                  "max_steps": MAX_WINDOW_STEPS, "steps": 9,
                                  "chosen_in_repeat": 0, "step_s_estimate": 0.25}


def test_every_rank_takes_the_count_of_the_fastest_estimate(fake_time: FakeTime) -> None:
    """This rank's steps take 0.25 s; another rank's warm-up said 0.2 s. Both measure
    11 steps (2.2 s / 0.2 s): the longer window, the same on every rank."""
    window = Window("time", 3, 2.0, repeat=1)
    clock = StepClock(WarmupRule.fixed(2), CPU, window,
                      agree_min=lambda value: min(value, 0.2))
    measured = measure(clock, fake_time, [0.25] * 30)
    assert len(measured) == 11
    assert window.to_record()["step_s_estimate"] == 0.2
    assert window.to_record()["chosen_in_repeat"] == 1


def test_a_later_repeat_measures_the_count_it_was_given(fake_time: FakeTime) -> None:
    def agree_min(value: float) -> float:
        raise AssertionError("a count already chosen needs no agreement")

    window = Window("time", 3, 2.0, repeat=1, choice=WindowChoice(9, 0, 0.25))
    clock = StepClock(WarmupRule.fixed(2), CPU, window, agree_min=agree_min)
    measured = measure(clock, fake_time, [1.0] * 30)  # slower now: still 9 steps
    assert measured == pytest.approx([1.0] * 9)
    assert window.to_record() == {"rule": "time", "min_steps": 3, "min_window_s": 2.0,
                                  "max_steps": MAX_WINDOW_STEPS, "steps": 9,
                                  "chosen_in_repeat": 0, "step_s_estimate": 0.25}


def test_a_fixed_window_measures_exactly_its_steps(fake_time: FakeTime) -> None:
    def agree_min(value: float) -> float:
        raise AssertionError("a fixed window is not timed")

    window = Window("fixed", 4, 2.0, repeat=0)
    clock = StepClock(WarmupRule.fixed(1), CPU, window, agree_min=agree_min)
    measured = measure(clock, fake_time, [0.01] * 30)  # a window of 0.04 s, as asked
    assert measured == pytest.approx([0.01] * 4)
    assert window.to_record() == {"rule": "fixed", "min_steps": 4, "min_window_s": None,
                                  "max_steps": None, "steps": 4, "chosen_in_repeat": None,
                                  "step_s_estimate": None}


def test_a_time_window_without_warm_up_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a warm-up step"):
        StepClock(WarmupRule.fixed(0), CPU, Window("time", 3, 2.0, 0))
