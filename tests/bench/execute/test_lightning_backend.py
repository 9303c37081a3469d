"""The Lightning backend with a real Trainer on real MNIST."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest

from bench.matrix import Cell
from bench.metrics import SANITY_VAL_IMAGES


@pytest.mark.slow
def test_a_throughput_cell_validates_inside_fit_and_never_after(
        execute_cell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``trainer.validate`` after fit breaks ZeRO-3 and multi-GPU FSDP (the module is
    torn down to the CPU / not rewrapped), so a throughput cell never calls it: it
    validates once, inside fit, after its last step, with the clock paused."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("trainer.validate called after fit")

    monkeypatch.setattr(L.Trainer, "validate", refuse)
    monkeypatch.setattr(L.Trainer, "test", refuse)
    cell = Cell(strategy="single", batch_size=32, loader="tensor", optimizer_impl="fused",
                steps=3, warmup_steps=1)
    record = execute_cell(cell, tmp_path)
    assert record["status"] == "ok", record["reason"]
    metrics, [rank] = record["metrics"], record["raw"]["ranks"]
    assert 0.0 <= metrics["val_acc"] <= 1.0 and metrics["val_loss"] > 0
    # a sanity check on the fixed subset, not the whole split (bench.metrics)
    assert metrics["val_images"] == record["raw"]["val_images"] == SANITY_VAL_IMAGES
    # Steady warm-up (at least 1 step, at most 4), then exactly 3 measured steps.
    assert len(rank["step_s"]) == 3 and 1 <= len(rank["warmup_step_s"]) <= 4
    assert len(rank["loss"]) == len(rank["warmup_step_s"]) + 3
    # Validating the subset takes about a second here, a step of 32 images about 0.1 s:
    # the last step (after which validation ran) holds none of it.
    assert rank["step_s"][-1] < 1.0, rank["step_s"]
