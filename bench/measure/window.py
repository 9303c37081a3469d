"""How many steps a throughput cell measures: its window.

``window="time"`` (the default): at least the cell's ``steps`` and at least
``min_window_s`` seconds, as timeit's autorange and pyperf's loop calibration size
a measurement by time. A fixed 30 steps is ~0.1 s on a GPU, too short for a stable
figure at clock boost; on a CPU 30 steps already take seconds and the rule changes
nothing. The count is chosen once per cell per run, at the end of the warm-up of
the cell's first repeat that measures: the warm-up steps are synchronised with the
device, so the median of the last ``STEADY_STEPS`` of them is a step's time;
``window_steps`` turns it into a count, and every rank takes the same one (the
ranks agree on the smallest estimate, so the longest window). Every later repeat
of the cell in the run measures that same count (``WindowChoice``, handed on by
the orchestrator), so its repeats are comparable; the record says how the count
was chosen (``Window.to_record``).

``window="fixed"``: exactly ``steps``. Accuracy cells have no window.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.matrix import Cell
from bench.measure.warmup import STEADY_STEPS

# A window step is not synchronised and a warm-up step is: with the host's dispatch
# overlapping the device's work, a window step can be faster than the estimate, so
# the count aims this much above min_window_s.
WINDOW_MARGIN = 1.1
# At most this many steps however fast a step is: a record keeps every step's times
# (about 200 bytes a step and rank), and a CUDA event per phase mark.
MAX_WINDOW_STEPS = 10_000


def window_steps(min_steps: int, min_window_s: float, step_s: float) -> int:
    """The steps of a time window: enough for WINDOW_MARGIN x ``min_window_s`` at
    ``step_s`` seconds a step, at most MAX_WINDOW_STEPS, never fewer than
    ``min_steps``."""
    if step_s <= 0:
        return max(min_steps, MAX_WINDOW_STEPS)
    # Rounded first, so that 2.2 / 0.004 (550.0000000000001 in binary) is 550 steps.
    wanted = math.ceil(round(WINDOW_MARGIN * min_window_s / step_s, 6))
    return max(min_steps, min(wanted, MAX_WINDOW_STEPS))


def step_time_estimate(warmup_step_s: Sequence[float]) -> float:
    """A step's time from the warm-up: the median of its last STEADY_STEPS steps
    (fewer when it took fewer), past the compilation and cold caches of its first."""
    return float(statistics.median(warmup_step_s[-STEADY_STEPS:]))


@dataclass(frozen=True)
class WindowChoice:
    """A time window's step count, as the repeat that chose it chose it."""

    steps: int
    chosen_in_repeat: int
    step_s_estimate: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WindowChoice:
        return cls(**json.loads(text))

    @classmethod
    def from_record(cls, window: dict[str, Any] | None) -> WindowChoice | None:
        """The choice in a record's ``raw.window``; None for a fixed window or a record
        without one."""
        if not window or window.get("rule") != "time" or window.get("steps") is None:
            return None
        return cls(int(window["steps"]), int(window["chosen_in_repeat"]),
                   float(window["step_s_estimate"]))


@dataclass
class Window:
    """The window of one (cell, repeat): its rule and, once known, its step count."""

    rule: str  # bench.matrix.WINDOW_MODES
    min_steps: int
    min_window_s: float
    repeat: int
    choice: WindowChoice | None = None  # time: handed on by an earlier repeat, or chosen here

    @classmethod
    def for_cell(cls, cell: Cell, repeat: int, choice: WindowChoice | None = None
                 ) -> Window | None:
        """None for an accuracy cell (it trains to its target)."""
        if cell.mode != "throughput":
            return None
        return cls(cell.window, cell.steps, cell.min_window_s, repeat,
                   choice if cell.window == "time" else None)

    @property
    def steps(self) -> int | None:
        """The steps to measure; None while a time window is still to be chosen."""
        if self.rule == "fixed":
            return self.min_steps
        return self.choice.steps if self.choice else None

    @property
    def most_steps(self) -> int:
        """The most steps the window can take, known before training (a loop's bound)."""
        return self.steps if self.steps is not None else max(self.min_steps, MAX_WINDOW_STEPS)

    @property
    def calibrates(self) -> bool:
        """This repeat chooses the count, at the end of its warm-up."""
        return self.steps is None

    def calibrate(self, warmup_step_s: Sequence[float], agree_min: Callable[[float], float]
                  ) -> None:
        """Choose the count from the warm-up's step times. ``agree_min`` (a collective:
        every rank calls it at the same step) gives the smallest estimate of any rank,
        so every rank chooses the same count."""
        estimate = agree_min(step_time_estimate(warmup_step_s))
        self.choice = WindowChoice(window_steps(self.min_steps, self.min_window_s, estimate),
                                   self.repeat, estimate)

    def to_record(self) -> dict[str, Any]:
        """The record's ``raw.window``: how the step count was chosen."""
        timed = self.rule == "time"
        return {"rule": self.rule, "min_steps": self.min_steps,
                "min_window_s": self.min_window_s if timed else None,
                "max_steps": MAX_WINDOW_STEPS if timed else None, "steps": self.steps,
                "chosen_in_repeat": self.choice.chosen_in_repeat if self.choice else None,
                "step_s_estimate": self.choice.step_s_estimate if self.choice else None}
