"""The step clock: where each step's time goes, one rank.

The loop marks the moment each phase of a step begins (``mark("data")`` before
the batch is fetched, ``mark("forward")`` once it is on the device, ...), and
``step_done`` closes the step. Every interval between two consecutive marks
belongs to the phase of the mark that opened it, so a step's phases add up to
the step exactly, and the steps to the measured window.

Two clocks read every mark:
- the host's ``perf_counter``: what the Python process spent;
- on CUDA, a CUDA event recorded at the same point (no synchronisation per
  step; the events are read once, after the window closes): when the device
  reached that point. A step timed by events is a step on the device, without
  the host's dispatch running ahead or the final drain landing in the last step.

On CUDA the stored ``step_s`` and phases are the device's and ``host_step_s``
keeps the host's. Two more readings, taken apart from the marks, let a check
(bench.analyze.clock_check) find a clock that miscounts: per step an event pair of
its own around the whole step (``step_pair_s``, against the sum of the phases), and
the window on ``time.monotonic`` between the synchronised points where it opens and
closes, less its pauses (``window_wall_s``, against the device's window).

Paused time (validation inside fit) is its own phase and is kept out of the steps;
the device is synchronised at a pause, so that training kernels still queued there
are not run inside the excluded validation.

The first steps are warm-up, kept apart from the window; bench.measure.warmup says
when warm-up ends. The window's step count is the cell's (bench.measure.window); a
time window is chosen when warm-up ends, from the warm-up's step times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic  # the outside clock: not the marks' perf_counter
from typing import Any

import torch

from bench.measure import ledger
from bench.measure.energy import EnergyMeter
from bench.measure.memory import memory_peaks
from bench.measure.warmup import WarmupRule, all_ranks_agree, all_ranks_min, steady
from bench.measure.window import Window
from bench.metrics import PHASES
from bench.record import RankRaw

PAUSED = "paused"  # not a phase of a step: time kept out of the steps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_event() -> Any:
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


@dataclass
class _Mark:
    phase: str
    host: float
    event: Any = None  # a recorded CUDA event (or a stand-in with ``elapsed_time``)


@dataclass
class _Step:
    """The marks of one step: the first opens it (the previous step's end), the last
    closes it."""

    marks: list[_Mark]
    batch_size: int

    def phases(self, on_device: bool) -> dict[str, float]:
        spent = dict.fromkeys(PHASES, 0.0)
        for begin, end in zip(self.marks, self.marks[1:], strict=False):
            if begin.phase == PAUSED:
                continue
            seconds = (begin.event.elapsed_time(end.event) / 1000 if on_device
                       else end.host - begin.host)
            spent[begin.phase] += seconds
        return spent


@dataclass
class StepClock:
    """Raw per-step times and phases of one rank. Call ``start`` before the first
    step, ``mark(phase)`` where a phase begins, ``step_done`` when a step's optimizer
    step has been issued, ``pause``/``resume`` around anything that is not training
    (validation), and ``finish`` after the last step."""

    warmup: WarmupRule
    device: torch.device
    # How many steps to measure; None: the loop decides when to stop.
    window: Window | None = None
    # How a mark reads the device clock; None: no device clock (CPU). Tests stand in
    # for CUDA events here.
    device_event: Callable[[], Any] | None = None
    # How the ranks agree that warm-up is over (default: an all-reduce over them).
    agree: Callable[[bool], bool] | None = None
    # How the ranks agree on a step time to size a time window by (default: the least).
    agree_min: Callable[[float], float] | None = None
    # The steps warm-up took; None while it goes on.
    warmup_steps: int | None = None
    warmup_steady: bool | None = None
    _warmup_host_s: list[float] = field(default_factory=list)
    losses: list[torch.Tensor] = field(default_factory=list)
    first_step_at: float | None = None
    _steps: list[_Step] = field(default_factory=list)
    _open: list[_Mark] = field(default_factory=list)
    _paused: bool = False
    paused_s: float = 0.0  # host seconds paused (validation inside fit), in total
    # The window's energy (bench.measure.energy); None: the device's own counters.
    energy: EnergyMeter | None = None
    # Per step, device events of its own at its opening and its close (on CUDA).
    _pairs: list[tuple[Any, Any]] = field(default_factory=list)
    _pair_open: Any = None
    # The window on an outside host clock: where it opened, its pauses so far.
    _wall_open: float | None = None
    _wall_paused_s: float = 0.0
    _wall_pause_at: float | None = None
    window_wall_s: float | None = None

    def __post_init__(self) -> None:
        if self.device_event is None and self.device.type == "cuda":
            self.device_event = cuda_event
        if self.energy is None:
            self.energy = EnergyMeter.for_device(self.device)
        if self.agree is None:
            self.agree = lambda flag: all_ranks_agree(flag, self.device)
        if self.agree_min is None:
            self.agree_min = lambda value: all_ranks_min(value, self.device)
        if self.warmup.max_steps == 0:
            if self.window is not None and self.window.calibrates:
                raise ValueError("a time window is sized on the warm-up: it needs a warm-up step")
            self.warmup_steps = 0

    def _record(self, phase: str) -> _Mark:
        mark = _Mark(phase, time.perf_counter(),
                     self.device_event() if self.device_event else None)
        self._open.append(mark)
        return mark

    @property
    def steps_done(self) -> int:
        return len(self._steps)

    @property
    def measured_steps(self) -> int | None:
        """Steps done since warm-up ended; None while it goes on."""
        return None if self.warmup_steps is None else len(self._steps) - self.warmup_steps

    @property
    def window_done(self) -> bool:
        """The window holds its steps (never, without a window: the loop decides)."""
        target = self.window.steps if self.window is not None else None
        return target is not None and self.measured_steps == target

    @property
    def last_window_step_next(self) -> bool:
        """The next step is the window's last."""
        target = self.window.steps if self.window is not None else None
        return target is not None and self.measured_steps == target - 1

    def start(self) -> None:
        ledger.mark("training_start")  # before the clock's first mark: the ledger holds it
        synchronize(self.device)
        self._record("rest")
        self._open_pair()
        if self.warmup_steps == 0:  # no warm-up: the window opens with the first step
            self._open_window()

    def _open_pair(self) -> None:
        self._pair_open = self.device_event() if self.device_event else None

    def _open_window(self) -> None:
        """Drained (and, after warm-up, agreed): the window opens here."""
        assert self.energy is not None
        self.energy.start()
        self._wall_open = monotonic()

    def mark(self, phase: str) -> None:
        """The current step enters ``phase`` (one of PHASES). Ignored while paused."""
        if not self._paused:
            mark = self._record(phase)
            if self.first_step_at is None and phase != "rest":
                self.first_step_at = mark.host

    def step_done(self, loss: torch.Tensor | None, batch_size: int) -> None:
        if self.warmup_steps is None:
            self._end_warmup_if_steady(batch_size)
        closing = self._record("rest")
        self._steps.append(_Step(self._open, batch_size))
        self._open = [closing]  # the next step opens where this one closed
        if self._pair_open is not None:
            assert self.device_event is not None
            end = self.device_event()
            self._pairs.append((self._pair_open, end))
            self._pair_open = end
        if loss is not None:
            self.losses.append(loss.detach())

    def _end_warmup_if_steady(self, batch_size: int) -> None:
        """A warm-up step ends drained (its host time is then its device time, and
        the window starts with nothing queued); the collective in ``over`` is timed
        into this warm-up step, and the ranks leave it together into the window."""
        synchronize(self.device)
        now = _Mark("rest", time.perf_counter())
        self._warmup_host_s.append(sum(_Step([*self._open, now], batch_size)
                                       .phases(False).values()))
        assert self.agree is not None
        if self.warmup.over(self._warmup_host_s, self.agree):
            self.warmup_steps = len(self._steps) + 1
            if self.warmup.adaptive:  # ended before its bound: the ranks agreed it was
                self.warmup_steady = (self.warmup_steps < self.warmup.max_steps
                                      or steady(self._warmup_host_s))
            if self.window is not None and self.window.calibrates:
                assert self.agree_min is not None
                self.window.calibrate(self._warmup_host_s, self.agree_min)
            self._open_window()

    def pause(self) -> None:
        if not self._paused:  # a second pause does not restart the paused interval
            synchronize(self.device)  # queued training work belongs to training
            self._record(PAUSED)
            self._paused = True
            self._wall_pause_at = monotonic()
            assert self.energy is not None
            self.energy.pause()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            pause = next(m for m in reversed(self._open) if m.phase == PAUSED)
            self.paused_s += self._record("rest").host - pause.host
            if self._wall_open is not None and self._wall_pause_at is not None:
                self._wall_paused_s += monotonic() - self._wall_pause_at
            self._open_pair()  # the step's own pair leaves the pause out, as its phases do
            assert self.energy is not None
            self.energy.resume()

    def finish(self) -> None:
        """Close the window. On the host clock, what the device still had queued
        belongs to the last step: it ends when the device is done (or at the pause
        that followed it, which synchronised). The device clock knows when it ran."""
        synchronize(self.device)
        now = time.perf_counter()
        assert self.energy is not None
        self.energy.close()  # the window ends at the last step, or at the pause after it
        if self._wall_open is not None:
            end = self._wall_pause_at if self._paused else monotonic()
            assert end is not None
            self.window_wall_s = end - self._wall_open - self._wall_paused_s
        self.resume()
        ledger.mark("training_end")  # after the clock's last mark: the ledger holds it
        if not self._steps:
            return
        paused = [mark.host for mark in self._open if mark.phase == PAUSED]
        self._steps[-1].marks[-1].host = paused[0] if paused else now
        self._open = []

    def rank_raw(self, rank: int) -> RankRaw:
        """This rank's raw values: warm-up steps apart from the measured window."""
        w = len(self._steps) if self.warmup_steps is None else self.warmup_steps
        on_device = self.device_event is not None
        phases = [step.phases(on_device) for step in self._steps]
        step_s = [sum(p.values()) for p in phases]
        host_step_s = [sum(step.phases(False).values()) for step in self._steps]
        losses = torch.stack(self.losses).float().cpu().tolist() if self.losses else []
        return RankRaw(
            rank=rank,
            warmup_step_s=step_s[:w],
            warmup_data_wait_s=[p["data"] for p in phases[:w]],
            warmup_steady=self.warmup_steady,
            step_s=step_s[w:],
            data_wait_s=[p["data"] for p in phases[w:]],
            phase_s={name: [p[name] for p in phases[w:]] for name in PHASES},
            host_step_s=host_step_s[w:] if on_device else None,
            step_pair_s=[begin.elapsed_time(end) / 1000 for begin, end in self._pairs[w:]]
            if on_device else None,
            window_wall_s=self.window_wall_s,
            samples=int(sum(step.batch_size for step in self._steps[w:])),
            window_s=float(sum(step_s[w:])),
            paused_s=self.paused_s,
            energy=self.energy.result() if self.energy is not None else None,
            loss=losses,
            **memory_peaks(self.device),
        )
