"""Accuracy-mode cells: train until a target validation accuracy, timed as MLPerf
times it (wall clock from the first training step, validation included)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from bench.matrix import Cell
from bench.measure.hooks import MeasureCallback, validating_inside_fit


class StopAtTarget(L.Callback):
    """Stops training the first time ``val_acc`` reaches the target; keeps the
    validation curve (step, time since the first step, val_acc, val_loss)."""

    def __init__(self, target_acc: float, measure: MeasureCallback) -> None:
        self.target_acc, self.measure = target_acc, measure
        self.curve: list[dict[str, float]] = []
        self.time_to_target_s: float | None = None
        self.steps_to_target: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        clock = self.measure.clock
        if not validating_inside_fit(trainer) or clock is None:
            return
        metrics = trainer.callback_metrics
        val_acc, val_loss = float(metrics["val_acc"]), float(metrics["val_loss"])
        elapsed = time.perf_counter() - (clock.first_step_at or time.perf_counter())
        self.curve.append({"step": trainer.global_step, "time_s": elapsed,
                           "val_acc": val_acc, "val_loss": val_loss})
        if val_acc >= self.target_acc and self.time_to_target_s is None:
            self.time_to_target_s, self.steps_to_target = elapsed, trainer.global_step
            trainer.should_stop = True

    @property
    def best_val_acc(self) -> float | None:
        return max((point["val_acc"] for point in self.curve), default=None)

    @property
    def last_val_loss(self) -> float | None:
        return self.curve[-1]["val_loss"] if self.curve else None

    def result(self) -> dict[str, Any]:
        return {"time_to_target_s": self.time_to_target_s, "steps_to_target": self.steps_to_target,
                "target_acc": self.target_acc, "val_curve": self.curve}


def accuracy_callbacks(cell: Cell, cell_dir: Path, measure: MeasureCallback
                       ) -> tuple[list[L.Callback], StopAtTarget]:
    """The tutorial's callbacks plus the stop at the target."""
    target = StopAtTarget(cell.target_acc, measure)
    return [
        ModelCheckpoint(dirpath=cell_dir / "checkpoints", monitor="val_loss", save_top_k=3,
                        filename="mnist-{epoch:02d}-{val_loss:.2f}", save_weights_only=True),
        EarlyStopping(monitor="val_loss", patience=3),
        LearningRateMonitor(logging_interval="step"),
        target,
    ], target
