"""Accuracy-mode cells: train until a target validation accuracy, timed as MLPerf
times it (wall clock from the first training step, validation included), less the
time spent writing checkpoints: that is the disk's, and is recorded apart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from bench.matrix import Cell
from bench.measure.hooks import MeasureCallback, validating_inside_fit


class TimedCheckpoint(ModelCheckpoint):
    """The tutorial's ModelCheckpoint, with the seconds it spends writing and removing
    checkpoint files added up in ``saving_s``."""

    saving_s = 0.0

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        start = time.perf_counter()
        super()._save_checkpoint(trainer, filepath)
        self.saving_s += time.perf_counter() - start

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        start = time.perf_counter()
        super()._remove_checkpoint(trainer, filepath)
        self.saving_s += time.perf_counter() - start


class StopAtTarget(L.Callback):
    """Stops training the first time ``val_acc`` reaches the target; keeps the
    validation curve (step, time since the first step less checkpoint writes,
    val_acc, val_loss)."""

    def __init__(self, target_acc: float, measure: MeasureCallback,
                 checkpoint: TimedCheckpoint) -> None:
        self.target_acc, self.measure, self.checkpoint = target_acc, measure, checkpoint
        self.curve: list[dict[str, float]] = []
        self.time_to_target_s: float | None = None
        self.steps_to_target: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        clock = self.measure.clock
        if not validating_inside_fit(trainer) or clock is None:
            return
        metrics = trainer.callback_metrics
        val_acc, val_loss = float(metrics["val_acc"]), float(metrics["val_loss"])
        # Lightning runs ModelCheckpoint's on_validation_end after every other
        # callback's: the writes counted so far are those of earlier validations.
        elapsed = (time.perf_counter() - (clock.first_step_at or time.perf_counter())
                   - self.checkpoint.saving_s)
        self.curve.append({"step": trainer.global_step, "time_s": elapsed,
                           "val_acc": val_acc, "val_loss": val_loss})
        if val_acc >= self.target_acc and self.time_to_target_s is None:
            self.time_to_target_s, self.steps_to_target = elapsed, trainer.global_step
            trainer.should_stop = True

    def result(self) -> dict[str, Any]:
        """The record's accuracy values: the last validation's val_acc and val_loss (as
        a throughput cell's), the best val_acc apart, and how the target was reached."""
        last = self.curve[-1] if self.curve else {}
        return {"time_to_target_s": self.time_to_target_s, "steps_to_target": self.steps_to_target,
                "target_acc": self.target_acc, "val_curve": self.curve,
                "val_acc": last.get("val_acc"), "val_loss": last.get("val_loss"),
                "best_val_acc": max((p["val_acc"] for p in self.curve), default=None),
                "checkpoint_s": self.checkpoint.saving_s}


def accuracy_callbacks(cell: Cell, cell_dir: Path, measure: MeasureCallback
                       ) -> tuple[list[L.Callback], StopAtTarget]:
    """The tutorial's callbacks plus the stop at the target."""
    checkpoint = TimedCheckpoint(dirpath=cell_dir / "checkpoints", monitor="val_loss",
                                 save_top_k=3, filename="mnist-{epoch:02d}-{val_loss:.2f}",
                                 save_weights_only=True)
    target = StopAtTarget(cell.target_acc, measure, checkpoint)
    return [checkpoint, EarlyStopping(monitor="val_loss", patience=3),
            LearningRateMonitor(logging_interval="step"), target], target
