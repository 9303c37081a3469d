"""bench.measure.clock: the step clock keeps warm-up and paused time out of the
measured window."""

from __future__ import annotations

import time
from dataclasses import asdict

import pytest
import torch

from bench.measure.clock import StepClock
from bench.measure.derive import derive_metrics
from bench.measure.warmup import WarmupRule
from bench.metrics import PHASES
from bench.record import RankRaw, Raw

CPU = torch.device("cpu")


# -- the clock, driven by hand with controlled sleeps ---------------------------------------

def drive(clock: StepClock, n: int, wait_s: float, compute_s: float, batch: int,
          first_extra_s: float = 0.0) -> None:
    """``n`` steps: ``wait_s`` for the batch, ``compute_s`` of work; the first step
    takes ``first_extra_s`` more (a slow warm-up, as a compile or a cold cache)."""
    for i in range(n):
        clock.mark("data")
        time.sleep(wait_s)
        clock.mark("forward")
        time.sleep(compute_s + (first_extra_s if i == 0 else 0.0))
        clock.step_done(torch.tensor(float(i)), batch)


def test_slow_warmup_step_is_kept_out_of_the_steady_state() -> None:
    slow, wait, compute, batch = 0.6, 0.01, 0.04, 32
    clock = StepClock(WarmupRule.fixed(1), CPU)
    clock.start()
    drive(clock, 5, wait, compute, batch, first_extra_s=slow)
    clock.finish()
    rank = asdict(clock.rank_raw(0))

    assert len(rank["warmup_step_s"]) == 1 and rank["warmup_step_s"][0] >= slow + compute
    assert len(rank["step_s"]) == len(rank["data_wait_s"]) == 4
    assert rank["samples"] == 4 * batch  # warm-up samples are not counted
    assert rank["window_s"] == pytest.approx(sum(rank["step_s"]))
    assert all(s >= wait + compute for s in rank["step_s"])
    assert rank["window_s"] < slow  # the slow step is nowhere in the window
    assert rank["loss"] == [0.0, 1.0, 2.0, 3.0, 4.0]  # warm-up first, then measured

    metrics = derive_metrics(Raw(ranks=[RankRaw(**rank)]), world_size=1)
    assert metrics["samples_per_s"] == pytest.approx(rank["samples"] / rank["window_s"])
    # steady state: about batch / (wait + compute) = 640/s, sleep overshoot aside
    assert metrics["samples_per_s"] <= batch / (wait + compute)
    assert metrics["samples_per_s"] > 0.5 * batch / (wait + compute)
    assert metrics["data_wait_frac"] == pytest.approx(
        sum(rank["data_wait_s"]) / rank["window_s"])
    assert 0.05 < metrics["data_wait_frac"] < 0.5  # about 0.01 / 0.05


def test_same_steady_state_with_and_without_a_slow_first_step() -> None:
    rates = {}
    for extra in (0.0, 0.5):
        clock = StepClock(WarmupRule.fixed(2), CPU)
        clock.start()
        drive(clock, 6, 0.0, 0.05, 16, first_extra_s=extra)
        clock.finish()
        rates[extra] = derive_metrics(Raw(ranks=[clock.rank_raw(0)]), 1)["samples_per_s"]
    # Each is about 16 / 0.05 = 320/s; a counted 0.5 s step would have halved it.
    assert rates[0.5] == pytest.approx(rates[0.0], rel=0.25)


def test_paused_time_is_not_counted() -> None:
    clock = StepClock(WarmupRule.fixed(0), CPU)
    clock.start()
    drive(clock, 2, 0.0, 0.03, 8)
    clock.pause()  # validation runs here
    time.sleep(0.5)
    clock.resume()
    drive(clock, 2, 0.01, 0.03, 8)
    clock.finish()
    rank = asdict(clock.rank_raw(0))
    assert len(rank["step_s"]) == 4 and rank["samples"] == 32
    assert max(rank["step_s"]) < 0.3
    assert max(rank["data_wait_s"]) < 0.3  # the batch after validation did not wait 0.5 s
    assert rank["window_s"] < 0.5


def test_a_second_pause_keeps_the_first_one() -> None:
    clock = StepClock(WarmupRule.fixed(0), CPU)
    clock.start()
    drive(clock, 1, 0.0, 0.01, 4)
    clock.pause()
    time.sleep(0.4)
    clock.pause()  # e.g. a second validation hook before training goes on
    clock.resume()
    drive(clock, 1, 0.0, 0.01, 4)
    clock.finish()
    assert max(asdict(clock.rank_raw(0))["data_wait_s"]) < 0.3


def test_resume_without_pause_changes_nothing() -> None:
    clock = StepClock(WarmupRule.fixed(0), CPU)
    clock.start()
    clock.resume()
    drive(clock, 1, 0.0, 0.01, 4)
    clock.finish()
    assert asdict(clock.rank_raw(0))["samples"] == 4


def test_phases_add_up_to_each_step_and_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step: a gap before the fetch (rest), the fetch (data), forward, a zero_grad
    (optimizer), backward, a gap (rest), the optimizer step. On a host clock that
    moves only when told, each phase holds exactly its time, and they sum to the step."""
    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    spent = {"data": 0.012, "forward": 0.006, "backward": 0.010}
    clock = StepClock(WarmupRule.fixed(1), CPU)
    clock.start()
    for _ in range(4):
        now[0] += 0.002  # rest, before the fetch
        for phase in ("data", "forward", "optimizer", "backward", "rest", "optimizer"):
            clock.mark(phase)
            now[0] += spent.get(phase, 0.004)  # optimizer: 4 ms twice; rest: 4 ms
        clock.mark("rest")
        now[0] += 0.001
        clock.step_done(torch.tensor(0.0), 8)
    clock.finish()
    rank = clock.rank_raw(0)
    expected = {"data": 0.012, "forward": 0.006, "backward": 0.010, "optimizer": 0.008,
                "rest": 0.007}
    assert rank.phase_s == {phase: pytest.approx([expected[phase]] * 3) for phase in PHASES}
    assert rank.step_s == pytest.approx([0.043] * 3)
    assert rank.data_wait_s == rank.phase_s["data"]
    assert rank.host_step_s is None  # one clock on CPU
    metrics = derive_metrics(Raw(ranks=[rank]), world_size=1)
    assert {p: metrics[f"step_{p}_ms"] for p in PHASES} == pytest.approx(
        {p: 1000 * expected[p] for p in PHASES})
    assert metrics["data_wait_frac"] == pytest.approx(0.012 / 0.043)


class StandInEvent:
    """A CUDA event on a made-up device timeline: the device runs ``lag_s`` behind
    the host, and each step's device work takes ``device_step_s``."""

    device_now = 0.0

    def __init__(self) -> None:
        self.at = StandInEvent.device_now

    def elapsed_time(self, end: StandInEvent) -> float:
        return (end.at - self.at) * 1000  # milliseconds, as torch.cuda.Event


def test_on_cuda_steps_are_timed_by_device_events_and_the_host_kept_apart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The device's clock comes from events recorded at the same marks (read after the
    window); the host's intervals stay as host_step_s. The device is synchronised at
    a pause (queued training work is not run inside the validation) and at the edges
    of the window, never per step."""
    syncs: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append("sync"))
    monkeypatch.setattr("bench.measure.clock.memory_peaks", lambda device: {})
    clock = StepClock(WarmupRule.fixed(1), torch.device("cuda", 0),
                      device_event=StandInEvent)
    clock.start()
    for _ in range(3):
        clock.mark("data")
        StandInEvent.device_now += 0.001
        clock.mark("forward")
        StandInEvent.device_now += 0.050  # the device works 50 ms; the host returns at once
        clock.step_done(torch.tensor(0.0), 4)
    starts = len(syncs)
    clock.pause()
    assert len(syncs) == starts + 1
    StandInEvent.device_now += 1.0  # validation: not counted
    clock.resume()
    clock.finish()
    rank = clock.rank_raw(0)
    assert rank.step_s == pytest.approx([0.051, 0.051])
    assert rank.phase_s is not None and rank.phase_s["forward"] == pytest.approx([0.05, 0.05])
    assert rank.host_step_s is not None and max(rank.host_step_s) < 0.05
    assert len(syncs) == 4  # start, the window's first edge, the pause, finish


def test_empty_clock_records_nothing() -> None:
    clock = StepClock(WarmupRule.fixed(3), CPU)
    clock.start()
    clock.finish()
    rank = asdict(clock.rank_raw(0))
    assert rank["step_s"] == [] and rank["samples"] == 0 and rank["window_s"] == 0.0
    assert derive_metrics(Raw(ranks=[RankRaw(**rank)]), 1)["samples_per_s"] is None


def test_each_step_has_an_event_pair_of_its_own_and_the_window_an_outside_wall(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Readings apart from the marks, for bench.analyze.clock_check: a step's own pair of
    events spans the step (the pause before the last one left out, as its phases leave
    it out), and the window on time.monotonic holds the measured steps' host time
    without the pause."""
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr("bench.measure.clock.memory_peaks", lambda device: {})
    clock = StepClock(WarmupRule.fixed(1), torch.device("cuda", 0), device_event=StandInEvent)
    clock.start()
    for i in range(3):
        if i == 2:  # a validation inside the window
            clock.pause()
            StandInEvent.device_now += 1.0
            time.sleep(0.2)
            clock.resume()
        clock.mark("data")
        StandInEvent.device_now += 0.001
        clock.mark("forward")
        StandInEvent.device_now += 0.050
        time.sleep(0.02)
        clock.step_done(torch.tensor(0.0), 4)
    clock.finish()
    rank = clock.rank_raw(0)
    assert rank.step_s == pytest.approx([0.051, 0.051])
    assert rank.step_pair_s == pytest.approx([0.051, 0.051])
    assert rank.window_wall_s is not None and 0.04 <= rank.window_wall_s < 0.2


def test_on_cpu_there_are_no_pairs_and_the_window_wall_is_the_host_s() -> None:
    clock = StepClock(WarmupRule.fixed(1), CPU)
    clock.start()
    drive(clock, 3, wait_s=0.0, compute_s=0.01, batch=4)
    clock.finish()
    rank = clock.rank_raw(0)
    assert rank.step_pair_s is None
    assert rank.window_wall_s == pytest.approx(sum(rank.step_s), abs=0.005)
