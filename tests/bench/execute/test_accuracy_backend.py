"""An accuracy-mode cell, end to end on CPU with real MNIST: it trains until the
target validation accuracy, stops there, and records how long that took, the
validation curve and the test accuracy; the checkpoints stay bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from bench import record as rec
from bench.matrix import Cell
from tests.cpu_bf16 import CPU_BF16

TARGET = 0.85
BATCH = 64
VAL_EVERY = 25


SLOW_DISK_S = 1.0  # each checkpoint write made this much slower, on purpose


@pytest.mark.slow
def test_accuracy_cell_reaches_the_target(execute_cell: Any, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A slow disk: every checkpoint write takes SLOW_DISK_S longer. It must not move
    # time_to_target_s, which leaves checkpoint writes out.
    from bench.execute.backends.accuracy import TimedCheckpoint

    write = ModelCheckpoint._save_checkpoint

    def slow_write(self: ModelCheckpoint, trainer: Any, filepath: str) -> None:
        time.sleep(SLOW_DISK_S)
        write(self, trainer, filepath)

    monkeypatch.setattr(ModelCheckpoint, "_save_checkpoint", slow_write)
    assert issubclass(TimedCheckpoint, ModelCheckpoint)
    # bf16-mixed as in the accuracy preset: on a CPU with bf16 kernels it is about twice
    # as fast as 32-true and reaches the target in the same number of steps.
    precision = "bf16-mixed" if CPU_BF16 else "32-true"
    cell = Cell(strategy="single", mode="accuracy", precision=precision, batch_size=BATCH,
                loader="tensor", optimizer_impl="fused", target_acc=TARGET,
                val_every_steps=VAL_EVERY, max_epochs=1, seed=0)
    record = execute_cell(cell, tmp_path)
    rec.validate(record)
    assert record["status"] == "ok", record["reason"]
    metrics, raw = record["metrics"], record["raw"]

    # the target was reached, and the test split agrees; val_acc is the last validation's
    assert metrics["val_acc"] == raw["val_curve"][-1]["val_acc"] >= TARGET
    assert metrics["best_val_acc"] == max(p["val_acc"] for p in raw["val_curve"])
    assert metrics["test_acc"] >= TARGET
    assert metrics["val_loss"] is not None and metrics["test_loss"] is not None
    assert raw["target_acc"] == TARGET

    # the validation curve: one point per validation, stopped the first time at the target
    curve = raw["val_curve"]
    assert curve, "no validation point was recorded"
    assert [p["step"] for p in curve] == [VAL_EVERY * (i + 1) for i in range(len(curve))]
    times = [p["time_s"] for p in curve]
    assert times == sorted(times) and times[0] > 0
    assert curve[-1]["val_acc"] >= TARGET
    assert all(p["val_acc"] < TARGET for p in curve[:-1])
    assert all(0.0 <= p["val_acc"] <= 1.0 and p["val_loss"] > 0 for p in curve)

    # time and steps to the target are the curve's last point
    assert metrics["steps_to_target"] == curve[-1]["step"]
    assert metrics["time_to_target_s"] == pytest.approx(curve[-1]["time_s"])
    assert 0 < metrics["time_to_target_s"] < record["wall_s"]
    one_epoch = 55_000 // BATCH
    assert metrics["steps_to_target"] < one_epoch  # it stopped at the target, not the limit

    # training stopped right there: every step taken is in the clock
    [rank] = raw["ranks"]
    assert len(rank["warmup_step_s"]) + len(rank["step_s"]) == metrics["steps_to_target"]
    assert rank["samples"] == len(rank["step_s"]) * BATCH
    # The time to the target is every training step and every validation up to it, by
    # the step clock's own accounting (steps, and paused for validation and checkpoint
    # writing), less every validation's checkpoint write (one each, all paused). Were
    # the writes counted, it would be at least (validations - 1) x SLOW_DISK_S more.
    training_s = sum(rank["warmup_step_s"]) + rank["window_s"]
    assert metrics["checkpoint_s"] >= SLOW_DISK_S * len(curve)
    assert training_s < metrics["time_to_target_s"]
    assert metrics["time_to_target_s"] < training_s + rank["paused_s"] - SLOW_DISK_S * len(curve)

    # ModelCheckpoint keeps the best 3 at most
    checkpoints = list((tmp_path / "cells" / cell.id / "checkpoints").iterdir())
    assert 1 <= len(checkpoints) <= 3, checkpoints
