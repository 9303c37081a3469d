"""Measuring a training run: per-step clocks, FLOPs, memory, and the metrics
derived from those raw values.

Clocks are host ``perf_counter`` readings at step boundaries. On CUDA the
device is synchronised at the edges of the measured window (end of the last
warm-up step, end of training), so the window's total is exact while the
steps inside it keep their CPU/GPU overlap. Validation time is taken out.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Raw per-step times of one rank. Call ``batch_ready`` when a step's batch
    is in hand, ``step_done`` when its optimizer step has been issued, and
    ``pause``/``resume`` around anything that is not training (validation)."""

    def __init__(self, warmup_steps: int, device: torch.device) -> None:
        self.warmup_steps, self.device = warmup_steps, device
        self.step_s: list[float] = []
        self.data_wait_s: list[float] = []
        self.samples: list[int] = []
        self.losses: list[torch.Tensor] = []
        self.first_step_at: float | None = None
        self._last = 0.0
        self._paused_at: float | None = None

    def start(self) -> None:
        synchronize(self.device)
        self._last = time.perf_counter()

    def batch_ready(self) -> None:
        now = time.perf_counter()
        if self.first_step_at is None:
            self.first_step_at = now
        self.data_wait_s.append(now - self._last)

    def step_done(self, loss: torch.Tensor | None, batch_size: int) -> None:
        if len(self.step_s) + 1 == self.warmup_steps:
            synchronize(self.device)  # the measured window starts exactly here
        now = time.perf_counter()
        self.step_s.append(now - self._last)
        self._last = now
        self.samples.append(batch_size)
        if loss is not None:
            self.losses.append(loss.detach())

    def pause(self) -> None:
        if self._paused_at is None:  # a second pause does not restart the paused interval
            self._paused_at = time.perf_counter()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._last += time.perf_counter() - self._paused_at
            self._paused_at = None

    def finish(self) -> None:
        """Close the window: what the device still had queued belongs to the last step."""
        if not self.step_s:
            return
        synchronize(self.device)
        self.step_s[-1] += time.perf_counter() - self._last
        self._last = time.perf_counter()

    def rank_record(self, rank: int) -> dict[str, Any]:
        """This rank's raw values: warm-up steps apart from the measured window."""
        w = self.warmup_steps
        losses = torch.stack(self.losses).float().cpu().tolist() if self.losses else []
        return {
            "rank": rank,
            "warmup_step_s": self.step_s[:w],
            "warmup_data_wait_s": self.data_wait_s[:w],
            "step_s": self.step_s[w:],
            "data_wait_s": self.data_wait_s[w:],
            "samples": int(sum(self.samples[w:])),
            "window_s": float(sum(self.step_s[w:])),
            "loss": losses,
            **memory_peaks(self.device),
        }


def memory_peaks(device: torch.device) -> dict[str, float | None]:
    """Peak device memory since the last reset (None off CUDA) and peak RSS (MB)."""
    # ru_maxrss is in kilobytes on Linux.
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type != "cuda":
        return {"peak_mem_alloc_mb": None, "peak_mem_reserved_mb": None, "peak_rss_mb": rss_mb}
    return {
        "peak_mem_alloc_mb": torch.cuda.max_memory_allocated(device) / 2**20,
        "peak_mem_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20,
        "peak_rss_mb": rss_mb,
    }


def reset_memory_peaks(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def validating_inside_fit(trainer: L.Trainer) -> bool:
    """True in a validation that interrupts training. (``trainer.training`` is False
    there: Lightning sets the stage to VALIDATING; the function is still fit.)"""
    return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking


class MeasureCallback(L.Callback):
    """Feeds a :class:`StepClock` from Lightning's hooks; gathers every rank's raw
    values to all ranks at the end of training (``self.ranks``). The clock is paused
    from the start of a validation inside fit to the next training batch, so the
    validation and what follows it (checkpointing, early stopping) are not counted."""

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.clock: StepClock | None = None
        self.ranks: list[dict[str, Any]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clock = StepClock(self.warmup_steps, trainer.strategy.root_device)
        self.clock.start()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        assert self.clock is not None
        # Resumed here, not at on_validation_end: Lightning calls ModelCheckpoint's
        # on_validation_end (writing a checkpoint) after every other callback's.
        self.clock.resume()
        self.clock.batch_ready()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        assert self.clock is not None
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.clock.step_done(loss, len(batch[1]))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.clock is not None and validating_inside_fit(trainer):
            self.clock.pause()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self.clock is not None
        self.clock.resume()  # training may stop right after a validation
        self.clock.finish()
        self.ranks = gather(self.clock.rank_record(trainer.global_rank))


def gather(value: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``value``, in rank order (just ``[value]`` without a process group)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def flops_per_training_sample(net_factory: Any, batch_size: int = 8) -> float:
    """Forward + backward FLOPs of one sample, counted by torch's FlopCounterMode on a
    copy of the network on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        net = net_factory()
        images = torch.randn(batch_size, 1, 28, 28)
        labels = torch.randint(0, 10, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(net(images), labels).backward()
    return counter.get_total_flops() / batch_size


def _percentile_ms(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q) * 1000) if values else None


def derive_metrics(raw: dict[str, Any], world_size: int) -> dict[str, Any]:
    """Every throughput, MFU and memory metric, computed from the raw per-rank values.

    Global samples/s = samples summed over ranks / the slowest rank's window, so
    DDP is neither double-counted nor flattered by a fast rank."""
    ranks = raw.get("ranks") or []
    metrics: dict[str, Any] = {}
    if ranks:
        window = max(r["window_s"] for r in ranks)
        samples = sum(r["samples"] for r in ranks)
        per_s = samples / window if window > 0 else None
        steps = [s for r in ranks for s in r["step_s"]]
        waits = [sum(r["data_wait_s"]) / r["window_s"] for r in ranks if r["window_s"] > 0]
        metrics |= {
            "samples_per_s": per_s,
            "samples_per_s_per_device": per_s / world_size if per_s else None,
            "step_ms_p50": _percentile_ms(steps, 50),
            "step_ms_p90": _percentile_ms(steps, 90),
            "step_ms_p99": _percentile_ms(steps, 99),
            "data_wait_frac": max(waits) if waits else None,
        }
        for key in ("peak_mem_alloc_mb", "peak_mem_reserved_mb", "peak_rss_mb"):
            values = [r[key] for r in ranks if r.get(key) is not None]
            metrics[key] = max(values) if values else None
        flops = raw.get("flops_per_sample")
        metrics["flops_per_sample"] = flops
        achieved = per_s * flops / 1e12 if per_s and flops else None
        metrics["achieved_tflops"] = achieved
        peaks = [r.get("peak_tflops") for r in ranks]
        peak = sum(peaks) if peaks and all(p is not None for p in peaks) else None
        metrics["peak_tflops"] = peak  # summed over every device in the window
        metrics["peak_source"] = raw.get("peak_source")
        metrics["mfu"] = achieved / peak if achieved and peak else None
    for key in ("val_acc", "val_loss", "test_acc", "test_loss", "time_to_target_s",
                "steps_to_target", "compile_s"):
        metrics[key] = raw.get(key)
    return metrics
