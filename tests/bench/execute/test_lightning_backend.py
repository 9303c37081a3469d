"""The Lightning backend with a real Trainer on real MNIST."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from bench.execute.backends.lightning import WalksOwnSigterm
from bench.matrix import Cell
from bench.measure.window import MAX_WINDOW_STEPS, step_time_estimate, window_steps
from bench.metrics import SANITY_VAL_IMAGES


@pytest.mark.slow
@pytest.mark.alone  # timings: no other test beside it (tests/scheduling.py)
def test_a_throughput_cell_validates_inside_fit_and_never_after(
        execute_cell: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``trainer.validate`` after fit breaks ZeRO-3 and multi-GPU FSDP (the module is
    torn down to the CPU / not rewrapped), so a throughput cell never calls it: it
    validates once, inside fit, after its last step, with the clock paused: also when
    the Trainer's bound is the longest time window and the callback ends the window."""
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
    # Steady warm-up (at least 1 step, at most 4), then the time window: at least the
    # 3 steps, as many as 2.2 s takes at the warm-up's step time, and exactly that many
    # (more than 3 when a step is under 0.73 s; tests/bench/execute/test_window_backends.py
    # grows one on a fake clock).
    window, warmup_step_s = record["raw"]["window"], rank["warmup_step_s"]
    assert 1 <= len(warmup_step_s) <= 4
    estimate = window["step_s_estimate"]  # the warm-up's steps, timed before their ends
    assert estimate == pytest.approx(step_time_estimate(warmup_step_s), rel=0.01)
    assert window == {"rule": "time", "min_steps": 3, "min_window_s": 2.0,
                      "max_steps": MAX_WINDOW_STEPS, "steps": window_steps(3, 2.0, estimate),
                      "chosen_in_repeat": 0, "step_s_estimate": estimate}
    assert len(rank["step_s"]) == metrics["window_steps"] == window["steps"]
    assert len(rank["loss"]) == len(warmup_step_s) + window["steps"]
    # Validating the subset takes 0.3-0.5 s here (the clock's paused time), a step of 32
    # images about 0.1 s: the last step (after which validation ran) holds none of it.
    paused = rank["paused_s"]
    assert paused > 0.1
    assert rank["step_s"][-1] < min(rank["step_s"]) + paused / 2, (rank["step_s"], paused)


class TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class HandlerSeen(L.Callback):
    def on_train_batch_start(self, *args: Any) -> None:
        self.seen = signal.getsignal(signal.SIGTERM)


@pytest.mark.parametrize("keep", [True, False])
def test_training_keeps_the_walks_sigterm_handler(tmp_path: Path, keep: bool) -> None:
    """Fit puts Lightning's SIGTERM handler (which broadcasts from inside the handler)
    in front of the walk's; WalksOwnSigterm puts the walk's back before the first step,
    and fit's end restores it either way."""
    def walks(signum: int, frame: object) -> None:
        raise AssertionError("not called here")

    previous = signal.signal(signal.SIGTERM, walks)
    try:
        seen = HandlerSeen()
        callbacks = [WalksOwnSigterm(), seen] if keep else [seen]
        trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, callbacks=callbacks,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path)
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 4)))
        trainer.fit(TinyModule(), train_dataloaders=data)
        assert (seen.seen is walks) is keep
        assert signal.getsignal(signal.SIGTERM) is walks
    finally:
        signal.signal(signal.SIGTERM, previous)
