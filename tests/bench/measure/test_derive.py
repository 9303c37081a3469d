"""bench.measure.derive on hand-made raw values, and its agreement with the
metric declarations in bench.metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.measure.derive import derive_metrics
from bench.metrics import METRICS, STORED_NAMES
from bench.record import Raw

# -- derive_metrics on hand-made raw values -------------------------------------------------

def derive(raw: dict[str, Any], world_size: int) -> dict[str, Any]:
    return derive_metrics(Raw.from_dict(raw), world_size)


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
    metrics = derive(two_ranks(), world_size=2)
    assert metrics["samples_per_s"] == pytest.approx(100 / 0.040)
    assert metrics["samples_per_s_per_device"] == pytest.approx(100 / 0.040 / 2)
    # the window it divides by: the slowest rank's 5 steps (6..10 ms)
    assert metrics["window_steps"] == 5 and metrics["window_s"] == pytest.approx(0.040)


def test_step_percentiles_pool_every_rank() -> None:
    metrics = derive(two_ranks(), world_size=2)
    # 1..10 ms pooled, linear interpolation
    assert metrics["step_ms_p50"] == pytest.approx(5.5)
    assert metrics["step_ms_p90"] == pytest.approx(9.1)
    assert metrics["step_ms_p99"] == pytest.approx(9.91)
    steps = [0.001 * i for i in range(1, 11)]
    assert metrics["step_ms_p90"] == pytest.approx(np.percentile(steps, 90) * 1000)


def test_data_wait_frac_is_the_worst_rank() -> None:
    metrics = derive(two_ranks(), world_size=2)
    assert metrics["data_wait_frac"] == pytest.approx(0.020 / 0.040)  # rank 1, not the mean


def test_mfu_is_achieved_over_summed_peaks() -> None:
    metrics = derive(two_ranks(peak1=1.5), world_size=2)
    achieved = (100 / 0.040) * 2e9 / 1e12
    assert metrics["flops_per_sample"] == 2e9
    assert metrics["achieved_tflops"] == pytest.approx(achieved)
    assert metrics["peak_tflops"] == pytest.approx(2.5)
    assert metrics["mfu"] == pytest.approx(achieved / 2.5)
    assert metrics["peak_source"] == "calibrated"


def test_mfu_is_null_when_a_peak_is_unknown() -> None:
    raw = two_ranks(peak1=None)
    raw["peak_source"] = "unknown GPU 'X': no datasheet peak, MFU not computed"
    metrics = derive(raw, world_size=2)
    assert metrics["achieved_tflops"] is not None
    assert metrics["peak_tflops"] is None and metrics["mfu"] is None
    assert "MFU not computed" in metrics["peak_source"]


def test_mfu_is_null_without_flops() -> None:
    raw = two_ranks()
    raw["flops_per_sample"] = None
    metrics = derive(raw, world_size=2)
    assert metrics["achieved_tflops"] is None and metrics["mfu"] is None


def test_memory_peaks_are_the_max_over_ranks() -> None:
    metrics = derive(two_ranks(), world_size=2)
    assert metrics["peak_rss_mb"] == 101.0
    assert metrics["peak_mem_alloc_mb"] is None and metrics["peak_mem_reserved_mb"] is None
    raw = two_ranks()
    raw["ranks"][0]["peak_mem_alloc_mb"] = 50.0
    assert derive(raw, 2)["peak_mem_alloc_mb"] == 50.0


def test_host_step_p50_reads_the_host_clock_where_it_is_kept() -> None:
    """On CUDA step_s is the device's (CUDA events) and host_step_s the host's: the
    host figure shows a step the host waits on (a sync) that the device does not."""
    raw = two_ranks()  # device steps 1..10 ms over the two ranks
    raw["ranks"][0]["host_step_s"] = [0.020, 0.030, 0.040, 0.050, 0.060]
    raw["ranks"][1]["host_step_s"] = [0.070, 0.080, 0.090, 0.100, 0.110]
    metrics = derive(raw, world_size=2)
    assert metrics["host_step_ms_p50"] == pytest.approx(65.0)  # (60 + 70) / 2, pooled
    assert metrics["step_ms_p50"] == pytest.approx(5.5)  # still the device's


def test_host_step_p50_is_the_step_time_where_there_is_one_clock() -> None:
    assert derive(two_ranks(), world_size=2)["host_step_ms_p50"] == pytest.approx(5.5)


MB = 2**20


def test_model_state_is_each_kinds_largest_rank_in_mb_with_the_fp32_master_copy() -> None:
    """Rank 0 holds the whole model (params, grads, Adam's two moments); rank 1 a ZeRO
    half: its moments and an fp32 master copy of its half, more optimizer state in all."""
    raw = two_ranks()
    raw["ranks"][0]["model_state_bytes"] = {"params": 8 * MB, "grads": 8 * MB,
                                            "optimizer_state": 16 * MB, "master_params": 0}
    raw["ranks"][1]["model_state_bytes"] = {"params": 4 * MB, "grads": 2 * MB,
                                            "optimizer_state": 8 * MB, "master_params": 12 * MB}
    metrics = derive(raw, world_size=2)
    assert metrics["params_mb"] == 8.0 and metrics["grads_mb"] == 8.0
    assert metrics["optimizer_state_mb"] == 20.0  # rank 1: 8 MB of moments + 12 MB master


def test_model_state_unmeasured_is_none() -> None:
    metrics = derive(two_ranks(), world_size=2)  # a Lightning cell: no model_state_bytes
    assert metrics["params_mb"] is None and metrics["optimizer_state_mb"] is None
    raw = two_ranks()
    for rank in raw["ranks"]:
        rank["model_state_bytes"] = {"params": MB, "grads": None, "optimizer_state": MB,
                                     "master_params": 0}
    metrics = derive(raw, world_size=2)
    assert metrics["params_mb"] == 1.0 and metrics["grads_mb"] is None


def test_warmup_values_are_ignored() -> None:
    raw = two_ranks()
    raw["ranks"][0]["warmup_step_s"] = [1000.0]
    assert derive(raw, 2) == derive(two_ranks(), 2)


def test_accuracy_values_pass_through_and_no_ranks_gives_no_throughput() -> None:
    raw = {"ranks": [], "val_acc": 0.97, "test_acc": 0.96, "time_to_target_s": 12.5,
           "steps_to_target": 300}
    metrics = derive(raw, world_size=1)
    assert "samples_per_s" not in metrics and "mfu" not in metrics
    assert metrics["val_acc"] == 0.97 and metrics["test_acc"] == 0.96
    assert metrics["time_to_target_s"] == 12.5 and metrics["steps_to_target"] == 300
    assert metrics["val_loss"] is None and metrics["compile_s"] is None


def test_derive_gives_exactly_the_declared_stored_metrics() -> None:
    """A metric is declared once (bench.metrics); derive fills every stored one and
    nothing else, so a new metric cannot be half added."""
    assert set(derive(two_ranks(), 2)) == set(STORED_NAMES)
    assert len({m.name for m in METRICS}) == len(METRICS)
    assert all(m.label or not m.compare for m in METRICS)  # a compared metric has a label
