"""bench.measure.hooks through a real Lightning Trainer: the slow first step and
validation stay out of the window; what the measuring costs (on request)."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from bench.measure.clock import StepClock
from bench.measure.derive import derive_metrics
from bench.measure.hooks import DataPhaseProfiler, MeasureCallback, PeakCallback
from bench.measure.warmup import WarmupRule
from bench.record import Raw
from mnist_core.data import MnistDataModule
from mnist_core.model import MnistModel

CPU = torch.device("cpu")


# -- the same, through a real Lightning Trainer --------------------------------------------

class Sleeps(L.Callback):
    """Sleeps inside the first training step, inside the first validation, and at the
    end of the second validation after the measuring callback has seen it (where
    Lightning's ModelCheckpoint writes its checkpoint)."""

    def __init__(self, first_step_s: float, validation_s: float) -> None:
        self.first_step_s, self.validation_s = first_step_s, validation_s
        self.validations = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 0:
            time.sleep(self.first_step_s)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule
                                  ) -> None:
        self.validations += 1
        if self.validations == 1:
            time.sleep(self.validation_s)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.validations == 2:
            time.sleep(self.validation_s)


@pytest.mark.slow
@pytest.mark.alone  # timings: no other test beside it (tests/scheduling.py)
def test_lightning_run_excludes_slow_first_step_and_validation(data_dir: Path,
                                                               tmp_path: Path) -> None:
    slow, val_sleep, batch, steps = 1.0, 1.5, 8, 4  # each over 10x a step of 8 images
    L.seed_everything(0, verbose=False)
    model = MnistModel(optimizer="sgd")
    data = MnistDataModule(data_dir, batch, "tensor", eval_batch_size=8)
    measure, sleeps = MeasureCallback(WarmupRule.fixed(1)), Sleeps(slow, val_sleep)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=1 + steps, max_epochs=-1,
        callbacks=[measure, sleeps], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=None, val_check_interval=2, limit_val_batches=1,
        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)

    assert sleeps.validations == 2  # validation ran inside fit (after steps 2 and 4)
    [rank] = [asdict(r) for r in measure.ranks]
    assert rank["warmup_step_s"][0] >= slow
    assert len(rank["step_s"]) == steps and rank["samples"] == steps * batch
    assert len(rank["loss"]) == 1 + steps
    # Neither the slow first step nor the validation sleeps are in any measured step.
    assert max(rank["step_s"]) < val_sleep, rank["step_s"]
    assert max(rank["data_wait_s"]) < val_sleep, rank["data_wait_s"]
    metrics = derive_metrics(Raw(ranks=measure.ranks), 1)
    assert metrics["samples_per_s"] == pytest.approx(steps * batch / rank["window_s"])


# -- what the measuring costs (run on request: BENCH_HARNESS_COST=1) ------------------------

class WindowEdges(L.Callback):
    """Wall time from the end of the warm-up to the end of the last step: the only
    thing the plain run carries, so both runs are timed the same way; in the measured
    run, a clock outside the harness's."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.start = self.end = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.warmup_steps:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def timed_fit(data_dir: Path, root: Path, measured: bool, steps: int, warmup: int
              ) -> tuple[float, float | None]:
    """One fit of the harness-cost cell, with the harness's callbacks and logger (as
    the Lightning backend builds them) or with none: the seconds of its steady window
    by an outside callback, and by the harness (None unmeasured)."""
    from lightning.pytorch.loggers import CSVLogger

    from bench.execute.backends.lightning import build_trainer
    from bench.matrix import Cell

    cell = Cell(strategy="single", precision="32-true", batch_size=64, loader="tensor",
                optimizer_impl="fused", steps=steps, warmup_steps=warmup, warmup="fixed",
                window="fixed")
    L.seed_everything(0, verbose=False)
    model = MnistModel(optimizer_impl="fused")
    data = MnistDataModule(data_dir, cell.batch_size, cell.loader)
    edges = WindowEdges(warmup)
    callbacks: list[L.Callback] = [edges]
    loggers: list[Any] = []
    measure = MeasureCallback(WarmupRule.fixed(warmup))
    if measured:
        callbacks = [measure, PeakCallback(cell.precision), edges]
        loggers = [CSVLogger(str(root), name="", version="metrics")]
    trainer = build_trainer(cell, root, callbacks, loggers, verbose=False,
                            profiler=DataPhaseProfiler(measure) if measured else None)
    trainer.fit(model, datamodule=data)
    return edges.end - edges.start, measure.ranks[0].window_s if measured else None


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BENCH_HARNESS_COST"),
                    reason="a timing, not a check: set BENCH_HARNESS_COST=1 to run it")
@pytest.mark.alone  # timings: no other test beside it (tests/scheduling.py)
def test_harness_cost(data_dir: Path, tmp_path: Path) -> None:
    steps = int(os.environ.get("BENCH_HARNESS_STEPS", "60"))
    repeats = int(os.environ.get("BENCH_HARNESS_REPEATS", "3"))
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    times: dict[bool, list[float]] = {True: [], False: []}
    claimed: list[tuple[float, float]] = []
    for i in range(repeats):
        for measured in (False, True):  # interleaved, so drifting load hits both
            outside, window = timed_fit(data_dir, tmp_path / f"{i}-{measured}", measured,
                                        steps, 5)
            times[measured].append(outside)
            if window is not None:
                claimed.append((window, outside))
    plain, harness = statistics.median(times[False]), statistics.median(times[True])
    print(f"\nharness cost over {steps} steps, median of {repeats}: plain {plain:.3f} s, "
          f"measured {harness:.3f} s, difference {100 * (harness / plain - 1):+.2f} %"
          f"\n  plain    {[round(t, 3) for t in times[False]]}"
          f"\n  measured {[round(t, 3) for t in times[True]]}"
          f"\n  the clock's own calls: {clock_call_cost_us():.1f} us per step")
    # The harness's own window, against the outside callback's clock over the same steps.
    for window, outside in claimed:
        assert window == pytest.approx(outside, rel=0.03)


def clock_call_cost_us(n: int = 20_000) -> float:
    """What StepClock's per-step calls cost by themselves (seven marks + step_done)."""
    loss = torch.tensor(1.0)
    clock = StepClock(WarmupRule.fixed(0), CPU)
    clock.start()
    start = time.perf_counter()
    for _ in range(n):
        for phase in ("data", "rest", "forward", "optimizer", "backward", "rest", "optimizer"):
            clock.mark(phase)
        clock.step_done(loss, 64)
    return (time.perf_counter() - start) / n * 1e6
