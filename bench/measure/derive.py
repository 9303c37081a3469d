"""The stored metrics of a record, derived from its raw values (bench.metrics
declares each one)."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.metrics import PHASES, busbw_factor
from bench.record import RankRaw, Raw


def _percentile_ms(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q) * 1000) if values else None


def _window_at_median_step(rank: RankRaw) -> float:
    """What the rank's window would be if every step took the median step time."""
    return len(rank.step_s) * float(np.median(rank.step_s)) if rank.step_s else 0.0


def phase_metrics(rank: RankRaw) -> dict[str, float | None]:
    """Mean milliseconds per measured step in each phase (bench.measure.clock.PHASES)."""
    phases = rank.phase_s or {}
    return {f"step_{name}_ms": (1000 * sum(phases[name]) / len(phases[name])
                                if phases.get(name) else None) for name in PHASES}


def model_state_metrics(ranks: list[RankRaw]) -> dict[str, float | None]:
    """The largest rank's model state in MB, per kind; None where a kind was not measured."""
    held = [r.model_state_bytes for r in ranks]
    if not held or any(h is None for h in held):
        return dict.fromkeys(("params_mb", "grads_mb", "optimizer_state_mb"))

    def largest(*kinds: str) -> float | None:
        values = [[h.get(kind) for kind in kinds] for h in held if h is not None]
        if any(v is None for row in values for v in row):
            return None
        return max(sum(row) for row in values) / 2**20  # type: ignore[arg-type]

    return {"params_mb": largest("params"), "grads_mb": largest("grads"),
            "optimizer_state_mb": largest("optimizer_state", "master_params")}


def energy_metrics(ranks: list[RankRaw], window_s: float, samples: int) -> dict[str, Any]:
    """The window's energy summed over the ranks that read a counter, None where any
    rank that should have read one could not (bench.measure.energy)."""
    readings = [r.energy for r in ranks if r.energy is not None]
    counted = [e for e in readings if e.get("joules") is not None]
    missing = [e for e in readings if e.get("joules") is None and not e.get("shared")]
    if not counted or missing or len(readings) < len(ranks):
        return dict.fromkeys(("energy_j", "joules_per_sample", "avg_watts", "energy_source"))
    joules = float(sum(e["joules"] for e in counted))
    return {"energy_j": joules, "joules_per_sample": joules / samples if samples else None,
            "avg_watts": joules / window_s if window_s > 0 else None,
            "energy_source": "+".join(sorted({str(e["source"]) for e in counted}))}


def comm_metrics(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """A comm cell's all_reduce of the model's gradients (label "grads"): its median
    time, algbw and nccl-tests' busbw (bench.metrics)."""
    grads = [r for r in rows if r["op"] == "all_reduce" and r["label"] == "grads"]
    if not grads or not grads[0]["time_s"]:
        return dict.fromkeys(("allreduce_ms", "allreduce_algbw_gbps", "allreduce_busbw_gbps"))
    row = grads[0]
    time_s = float(np.median(row["time_s"]))
    algbw = row["bytes"] / time_s / 1e9 if time_s > 0 else None
    return {"allreduce_ms": 1000 * time_s, "allreduce_algbw_gbps": algbw,
            "allreduce_busbw_gbps": (algbw * busbw_factor("all_reduce", row["world_size"])
                                     if algbw is not None else None)}


def derive_metrics(raw: Raw, world_size: int, wall_s: float | None = None) -> dict[str, Any]:
    """Every throughput, MFU and memory metric, computed from the raw per-rank values.

    Global samples/s = samples summed over ranks / the slowest rank's window, so
    DDP is neither double-counted nor flattered by a fast rank."""
    ranks = raw.ranks
    metrics: dict[str, Any] = {}
    if ranks:
        window = max(r.window_s for r in ranks)
        samples = sum(r.samples for r in ranks)
        per_s = samples / window if window > 0 else None
        steps = [s for r in ranks for s in r.step_s]
        waits = [sum(r.data_wait_s) / r.window_s for r in ranks if r.window_s > 0]
        slowest = max(ranks, key=lambda r: r.window_s)
        host_steps = [s for r in ranks for s in (r.host_step_s or r.step_s)]
        metrics |= phase_metrics(slowest) | energy_metrics(ranks, window, samples)
        by_median = max(map(_window_at_median_step, ranks))
        slowest_by_median = _window_at_median_step(slowest)
        steadiness = [r.warmup_steady for r in ranks]
        metrics |= {
            "window_steps": max(len(r.step_s) for r in ranks),  # the same on every rank
            "window_s": window,
            "warmup_steps_taken": max(len(r.warmup_step_s) for r in ranks),
            "warmup_steady": None if None in steadiness else all(steadiness),
            "samples_per_s_median": samples / by_median if by_median > 0 else None,
            "window_median_ratio": (slowest.window_s / slowest_by_median
                                    if slowest_by_median > 0 else None),
            "host_step_ms_p50": _percentile_ms(host_steps, 50),
            "samples_per_s": per_s,
            "samples_per_s_per_device": per_s / world_size if per_s else None,
            "step_ms_p50": _percentile_ms(steps, 50),
            "step_ms_p90": _percentile_ms(steps, 90),
            "step_ms_p99": _percentile_ms(steps, 99),
            "data_wait_frac": max(waits) if waits else None,
        }
        for key in ("peak_mem_alloc_mb", "peak_mem_reserved_mb", "peak_rss_mb"):
            values = [getattr(r, key) for r in ranks if getattr(r, key) is not None]
            metrics[key] = max(values) if values else None
        metrics |= model_state_metrics(ranks)
        flops = raw.flops_per_sample
        metrics["flops_per_sample"] = flops
        achieved = per_s * flops / 1e12 if per_s and flops else None
        metrics["achieved_tflops"] = achieved
        peaks = [r.peak_tflops for r in ranks]
        peak = sum(peaks) if peaks and all(p is not None for p in peaks) else None
        metrics["peak_tflops"] = peak  # summed over every device in the window
        metrics["peak_source"] = raw.peak_source
        metrics["mfu"] = achieved / peak if achieved and peak else None
    for key in ("val_acc", "best_val_acc", "val_loss", "val_images", "test_acc", "test_loss",
                "time_to_target_s", "steps_to_target", "checkpoint_s", "compile_s",
                "compile_val_s"):
        metrics[key] = getattr(raw, key)
    metrics |= comm_metrics(raw.comm or [])  # None but in comm cells
    metrics["wall_s"] = wall_s
    return metrics
