"""Lightning callbacks that feed the measuring code from the Trainer's hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.profilers import Profiler
from lightning.pytorch.trainer.states import TrainerFn

from bench.measure.clock import StepClock
from bench.measure.memory import reset_memory_peaks
from bench.measure.peaks import device_peak_tflops
from bench.measure.warmup import WarmupRule
from bench.measure.window import Window
from bench.record import RankRaw


def validating_inside_fit(trainer: L.Trainer) -> bool:
    """True in a validation that interrupts training. (``trainer.training`` is False
    there: Lightning sets the stage to VALIDATING; the function is still fit.)"""
    return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking


class MeasureCallback(L.Callback):
    """Feeds a :class:`StepClock` from Lightning's hooks; gathers every rank's raw
    values to all ranks at the end of training (``self.ranks``). The clock is paused
    from the start of a validation inside fit to the next training batch, so the
    validation and what follows it (checkpointing, early stopping) are not counted.

    The phases (bench.measure.clock.PHASES) begin at the hooks Lightning calls on
    the way through a step: the batch's fetch and its move to the device (marked by
    :class:`DataPhaseProfiler`), ``on_train_batch_start`` (forward: the whole
    ``training_step``), ``on_before_zero_grad`` (optimizer), ``on_before_backward``,
    ``on_after_backward`` (rest), ``on_before_optimizer_step``, and
    ``on_train_batch_end`` closes the step; once the ``window``'s steps have been
    measured after warm-up, it stops training (None: training stops by itself)."""

    def __init__(self, warmup: WarmupRule, window: Window | None = None) -> None:
        self.warmup, self.window = warmup, window
        self.clock: StepClock | None = None
        self.ranks: list[RankRaw] = []
        self.compile_meter: Any = None  # bench.measure.compile.CompileMeter, if compiling
        self.trace: Any = None  # bench.measure.trace.StepTrace, under --profile

    def mark(self, phase: str) -> None:
        if self.clock is not None:
            self.clock.mark(phase)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clock = StepClock(self.warmup, trainer.strategy.root_device, self.window)
        self.clock.start()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        assert self.clock is not None
        # Resumed here, not at on_validation_end: Lightning calls ModelCheckpoint's
        # on_validation_end (writing a checkpoint) after every other callback's.
        self.clock.resume()
        if self.trace is not None:
            self.trace.at_step(self.clock.measured_steps)
        self.clock.mark("forward")

    def on_before_zero_grad(self, trainer: L.Trainer, pl_module: L.LightningModule,
                            optimizer: Any) -> None:
        self.mark("optimizer")

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           loss: Any) -> None:
        self.mark("backward")

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.mark("rest")

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Any) -> None:
        self.mark("optimizer")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        assert self.clock is not None
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.clock.step_done(loss, len(batch[1]))
        if self.clock.window_done:
            trainer.should_stop = True

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.clock is not None and validating_inside_fit(trainer):
            self.clock.pause()
            if self.compile_meter is not None:  # the validation graph's compile comes next
                self.compile_meter.training_done()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self.clock is not None
        self.clock.finish()
        if self.trace is not None:
            self.trace.stop()
        rank_raw = self.clock.rank_raw(trainer.global_rank)
        if self.compile_meter is not None:
            rank_raw.compile = self.compile_meter.result()
        self.ranks = gather(rank_raw)


class DataPhaseProfiler(Profiler):
    """Lightning's profiler hooks, used to mark the data phase: Lightning wraps the
    fetch of each training batch in the action ``[_TrainingEpochLoop].
    train_dataloader_next`` and its move to the device in ``[Strategy]<name>.
    batch_to_device``. No Callback hook sees either: the gap between two steps also
    holds the logger's work and, with many ranks, a broadcast, which are not data."""

    FETCH = "].train_dataloader_next"
    TRANSFER = ".batch_to_device"

    def __init__(self, measure: MeasureCallback) -> None:
        super().__init__()
        self.measure = measure

    def _is_data(self, action_name: str) -> bool:
        return action_name.endswith((self.FETCH, self.TRANSFER))

    def start(self, action_name: str) -> None:
        if self._is_data(action_name):
            self.measure.mark("data")

    def stop(self, action_name: str) -> None:
        if self._is_data(action_name):
            self.measure.mark("rest")

    def summary(self) -> str:
        return ""


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (just ``[value]`` without a process group)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


class PeakCallback(L.Callback):
    """This rank's peak FLOP/s for the cell's compute dtype, found once every rank is up
    (CPU ranks calibrate together, as they will train: side by side)."""

    def __init__(self, precision: str, peaks_file: Path | None = None) -> None:
        self.precision, self.peaks_file = precision, peaks_file
        self.peak_tflops: float | None = None
        self.source = ""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.peak_tflops, self.source = device_peak_tflops(
            trainer.strategy.root_device, self.precision, self.peaks_file,
            ranks_here=trainer.num_devices, rank=trainer.global_rank,
            barrier=trainer.strategy.barrier)
        reset_memory_peaks(trainer.strategy.root_device)
