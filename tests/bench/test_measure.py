"""bench.measure: FLOPs, the step clock (warm-up and validation kept out of the
measured window) and the metrics derived from raw per-rank values."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from bench.measure import MeasureCallback, StepClock, derive_metrics, flops_per_training_sample
from mnist_core.data import MnistDataModule
from mnist_core.model import MnistModel, MnistNet

CPU = torch.device("cpu")


def test_flops_per_training_sample_is_the_published_figure() -> None:
    flops = flops_per_training_sample(MnistNet)
    assert flops == pytest.approx(264.9e6, rel=0.01)
    # per sample: the batch size it is counted at does not matter
    assert flops_per_training_sample(MnistNet, batch_size=2) == pytest.approx(flops, rel=1e-6)


# -- the clock, driven by hand with controlled sleeps ---------------------------------------

def drive(clock: StepClock, n: int, wait_s: float, compute_s: float, batch: int,
          first_extra_s: float = 0.0) -> None:
    """``n`` steps: ``wait_s`` for the batch, ``compute_s`` of work; the first step
    takes ``first_extra_s`` more (a slow warm-up, as a compile or a cold cache)."""
    for i in range(n):
        time.sleep(wait_s)
        clock.batch_ready()
        time.sleep(compute_s + (first_extra_s if i == 0 else 0.0))
        clock.step_done(torch.tensor(float(i)), batch)


def test_slow_warmup_step_is_kept_out_of_the_steady_state() -> None:
    slow, wait, compute, batch = 0.6, 0.01, 0.04, 32
    clock = StepClock(warmup_steps=1, device=CPU)
    clock.start()
    drive(clock, 5, wait, compute, batch, first_extra_s=slow)
    clock.finish()
    rank = clock.rank_record(0)

    assert len(rank["warmup_step_s"]) == 1 and rank["warmup_step_s"][0] >= slow + compute
    assert len(rank["step_s"]) == len(rank["data_wait_s"]) == 4
    assert rank["samples"] == 4 * batch  # warm-up samples are not counted
    assert rank["window_s"] == pytest.approx(sum(rank["step_s"]))
    assert all(s >= wait + compute for s in rank["step_s"])
    assert rank["window_s"] < slow  # the slow step is nowhere in the window
    assert rank["loss"] == [0.0, 1.0, 2.0, 3.0, 4.0]  # warm-up first, then measured

    metrics = derive_metrics({"ranks": [rank]}, world_size=1)
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
        clock = StepClock(warmup_steps=2, device=CPU)
        clock.start()
        drive(clock, 6, 0.0, 0.05, 16, first_extra_s=extra)
        clock.finish()
        rates[extra] = derive_metrics({"ranks": [clock.rank_record(0)]}, 1)["samples_per_s"]
    # Each is about 16 / 0.05 = 320/s; a counted 0.5 s step would have halved it.
    assert rates[0.5] == pytest.approx(rates[0.0], rel=0.25)


def test_paused_time_is_not_counted() -> None:
    clock = StepClock(warmup_steps=0, device=CPU)
    clock.start()
    drive(clock, 2, 0.0, 0.03, 8)
    clock.pause()  # validation runs here
    time.sleep(0.5)
    clock.resume()
    drive(clock, 2, 0.01, 0.03, 8)
    clock.finish()
    rank = clock.rank_record(0)
    assert len(rank["step_s"]) == 4 and rank["samples"] == 32
    assert max(rank["step_s"]) < 0.3
    assert max(rank["data_wait_s"]) < 0.3  # the batch after validation did not wait 0.5 s
    assert rank["window_s"] < 0.5


def test_a_second_pause_keeps_the_first_one() -> None:
    clock = StepClock(warmup_steps=0, device=CPU)
    clock.start()
    drive(clock, 1, 0.0, 0.01, 4)
    clock.pause()
    time.sleep(0.4)
    clock.pause()  # e.g. a second validation hook before training goes on
    clock.resume()
    drive(clock, 1, 0.0, 0.01, 4)
    clock.finish()
    assert max(clock.rank_record(0)["data_wait_s"]) < 0.3


def test_resume_without_pause_changes_nothing() -> None:
    clock = StepClock(warmup_steps=0, device=CPU)
    clock.start()
    clock.resume()
    drive(clock, 1, 0.0, 0.01, 4)
    clock.finish()
    assert clock.rank_record(0)["samples"] == 4


def test_empty_clock_records_nothing() -> None:
    clock = StepClock(warmup_steps=3, device=CPU)
    clock.start()
    clock.finish()
    rank = clock.rank_record(0)
    assert rank["step_s"] == [] and rank["samples"] == 0 and rank["window_s"] == 0.0
    assert derive_metrics({"ranks": [rank]}, 1)["samples_per_s"] is None


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
def test_lightning_run_excludes_slow_first_step_and_validation(data_dir: Path,
                                                               tmp_path: Path) -> None:
    slow, val_sleep, batch, steps = 2.5, 4.0, 8, 4
    L.seed_everything(0, verbose=False)
    model = MnistModel(optimizer="sgd")
    data = MnistDataModule(data_dir, batch, "tensor", eval_batch_size=8)
    measure, sleeps = MeasureCallback(warmup_steps=1), Sleeps(slow, val_sleep)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=1 + steps, max_epochs=-1,
        callbacks=[measure, sleeps], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=None, val_check_interval=2, limit_val_batches=1,
        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)

    assert sleeps.validations == 2  # validation ran inside fit (after steps 2 and 4)
    [rank] = measure.ranks
    assert rank["warmup_step_s"][0] >= slow
    assert len(rank["step_s"]) == steps and rank["samples"] == steps * batch
    assert len(rank["loss"]) == 1 + steps
    # Neither the slow first step nor the validation sleeps are in any measured step.
    assert max(rank["step_s"]) < val_sleep, rank["step_s"]
    assert max(rank["data_wait_s"]) < val_sleep, rank["data_wait_s"]
    metrics = derive_metrics({"ranks": measure.ranks}, 1)
    assert metrics["samples_per_s"] == pytest.approx(steps * batch / rank["window_s"])


# -- derive_metrics on hand-made raw values -------------------------------------------------

def rank_raw(rank: int, step_s: list[float], wait_s: list[float], batch: int,
             peak: float | None = 1.0, **extra: Any) -> dict[str, Any]:
    return {"rank": rank, "warmup_step_s": [9.0], "warmup_data_wait_s": [9.0],
            "step_s": step_s, "data_wait_s": wait_s, "samples": batch * len(step_s),
            "window_s": sum(step_s), "loss": [], "peak_mem_alloc_mb": None,
            "peak_mem_reserved_mb": None, "peak_rss_mb": 100.0 + rank, "peak_tflops": peak,
            **extra}


def two_ranks(peak1: float | None = 1.5) -> dict[str, Any]:
    # rank 0: steps of 1..5 ms, rank 1: 6..10 ms; rank 1 is the slower one
    r0 = rank_raw(0, [0.001, 0.002, 0.003, 0.004, 0.005], [0.0001] * 5, 10, peak=1.0)
    r1 = rank_raw(1, [0.006, 0.007, 0.008, 0.009, 0.010], [0.004] * 5, 10, peak=peak1)
    return {"ranks": [r0, r1], "flops_per_sample": 2e9, "peak_source": "calibrated"}


def test_throughput_is_global_samples_over_slowest_window() -> None:
    metrics = derive_metrics(two_ranks(), world_size=2)
    assert metrics["samples_per_s"] == pytest.approx(100 / 0.040)
    assert metrics["samples_per_s_per_device"] == pytest.approx(100 / 0.040 / 2)


def test_step_percentiles_pool_every_rank() -> None:
    metrics = derive_metrics(two_ranks(), world_size=2)
    # 1..10 ms pooled, linear interpolation
    assert metrics["step_ms_p50"] == pytest.approx(5.5)
    assert metrics["step_ms_p90"] == pytest.approx(9.1)
    assert metrics["step_ms_p99"] == pytest.approx(9.91)
    steps = [0.001 * i for i in range(1, 11)]
    assert metrics["step_ms_p90"] == pytest.approx(np.percentile(steps, 90) * 1000)


def test_data_wait_frac_is_the_worst_rank() -> None:
    metrics = derive_metrics(two_ranks(), world_size=2)
    assert metrics["data_wait_frac"] == pytest.approx(0.020 / 0.040)  # rank 1, not the mean


def test_mfu_is_achieved_over_summed_peaks() -> None:
    metrics = derive_metrics(two_ranks(peak1=1.5), world_size=2)
    achieved = (100 / 0.040) * 2e9 / 1e12
    assert metrics["flops_per_sample"] == 2e9
    assert metrics["achieved_tflops"] == pytest.approx(achieved)
    assert metrics["peak_tflops"] == pytest.approx(2.5)
    assert metrics["mfu"] == pytest.approx(achieved / 2.5)
    assert metrics["peak_source"] == "calibrated"


def test_mfu_is_null_when_a_peak_is_unknown() -> None:
    raw = two_ranks(peak1=None)
    raw["peak_source"] = "unknown GPU 'X': no datasheet peak, MFU not computed"
    metrics = derive_metrics(raw, world_size=2)
    assert metrics["achieved_tflops"] is not None
    assert metrics["peak_tflops"] is None and metrics["mfu"] is None
    assert "MFU not computed" in metrics["peak_source"]


def test_mfu_is_null_without_flops() -> None:
    raw = two_ranks()
    raw["flops_per_sample"] = None
    metrics = derive_metrics(raw, world_size=2)
    assert metrics["achieved_tflops"] is None and metrics["mfu"] is None


def test_memory_peaks_are_the_max_over_ranks() -> None:
    metrics = derive_metrics(two_ranks(), world_size=2)
    assert metrics["peak_rss_mb"] == 101.0
    assert metrics["peak_mem_alloc_mb"] is None and metrics["peak_mem_reserved_mb"] is None
    raw = two_ranks()
    raw["ranks"][0]["peak_mem_alloc_mb"] = 50.0
    assert derive_metrics(raw, 2)["peak_mem_alloc_mb"] == 50.0


def test_warmup_values_are_ignored() -> None:
    raw = two_ranks()
    raw["ranks"][0]["warmup_step_s"] = [1000.0]
    assert derive_metrics(raw, 2) == derive_metrics(two_ranks(), 2)


def test_accuracy_values_pass_through_and_no_ranks_gives_no_throughput() -> None:
    raw = {"ranks": [], "val_acc": 0.97, "test_acc": 0.96, "time_to_target_s": 12.5,
           "steps_to_target": 300}
    metrics = derive_metrics(raw, world_size=1)
    assert "samples_per_s" not in metrics and "mfu" not in metrics
    assert metrics["val_acc"] == 0.97 and metrics["test_acc"] == 0.96
    assert metrics["time_to_target_s"] == 12.5 and metrics["steps_to_target"] == 300
    assert metrics["val_loss"] is None and metrics["compile_s"] is None


# -- what the measuring costs (run on request: BENCH_HARNESS_COST=1) ------------------------

class WindowEdges(L.Callback):
    """Wall time from the end of the warm-up to the end of training: the only thing
    the plain run carries, so both runs are timed the same way."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.start = self.end = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.warmup_steps:
            self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.perf_counter()


def timed_fit(data_dir: Path, root: Path, measured: bool, steps: int, warmup: int) -> float:
    """One fit of the harness-cost cell, with the harness's callbacks and logger (as
    bench.cell builds them) or with none; the seconds of its steady window."""
    from lightning.pytorch.loggers import CSVLogger

    from bench.cell import PeakCallback, build_trainer
    from bench.matrix import Cell

    cell = Cell(strategy="single", precision="32-true", batch_size=64, loader="tensor",
                optimizer_impl="fused", steps=steps, warmup_steps=warmup)
    L.seed_everything(0, verbose=False)
    model = MnistModel(optimizer_impl="fused")
    data = MnistDataModule(data_dir, cell.batch_size, cell.loader)
    edges = WindowEdges(warmup)
    callbacks: list[L.Callback] = [edges]
    loggers: list[Any] = []
    if measured:
        callbacks = [MeasureCallback(warmup), PeakCallback(cell.precision), edges]
        loggers = [CSVLogger(str(root), name="", version="metrics")]
    trainer = build_trainer(cell, root, callbacks, loggers, verbose=False)
    trainer.fit(model, datamodule=data)
    return edges.end - edges.start


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BENCH_HARNESS_COST"),
                    reason="a timing, not a check: set BENCH_HARNESS_COST=1 to run it")
def test_harness_cost(data_dir: Path, tmp_path: Path) -> None:
    steps = int(os.environ.get("BENCH_HARNESS_STEPS", "60"))
    repeats = int(os.environ.get("BENCH_HARNESS_REPEATS", "3"))
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeats):
        for measured in (False, True):  # interleaved, so drifting load hits both
            times[measured].append(
                timed_fit(data_dir, tmp_path / f"{i}-{measured}", measured, steps, 5))
    plain, harness = statistics.median(times[False]), statistics.median(times[True])
    print(f"\nharness cost over {steps} steps, median of {repeats}: plain {plain:.3f} s, "
          f"measured {harness:.3f} s, difference {100 * (harness / plain - 1):+.2f} %"
          f"\n  plain    {[round(t, 3) for t in times[False]]}"
          f"\n  measured {[round(t, 3) for t in times[True]]}"
          f"\n  the clock's own calls: {clock_call_cost_us():.1f} us per step")
    assert plain > 0 and harness > 0


def clock_call_cost_us(n: int = 20_000) -> float:
    """What StepClock's per-step calls cost by themselves (batch_ready + step_done)."""
    loss = torch.tensor(1.0)
    clock = StepClock(warmup_steps=0, device=CPU)
    clock.start()
    start = time.perf_counter()
    for _ in range(n):
        clock.batch_ready()
        clock.step_done(loss, 64)
    return (time.perf_counter() - start) / n * 1e6
