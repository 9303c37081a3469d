"""The control backend: the prepared workload in a hand-written PyTorch loop, no
Lightning, timed by the same clock. Its row in the report is what Lightning's
overhead is measured against."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bench.execute.workload import LoopResult, Workload, compiled
from bench.measure.clock import StepClock
from bench.measure.dtypes import dtypes
from bench.measure.memory import reset_memory_peaks
from bench.measure.peaks import device_peak_tflops
from mnist_core.model import build_optimizer


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    dtype = dtypes(precision).autocast
    return torch.autocast(device.type, dtype=dtype) if dtype is not None \
        else contextlib.nullcontext()


def batches(loader: Any, total: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``total`` training batches, going round the loader's epochs as needed."""
    produced = 0
    while True:
        for batch in loader:
            yield batch
            produced += 1
            if produced == total:
                return


@torch.no_grad()
def evaluate(net: nn.Module, loader: Any, device: torch.device, precision: str) -> dict[str, float]:
    net.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device, dtypes(precision).param), labels.to(device)
        with autocast_for(precision, device):
            logits = net(images)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
        count += len(labels)
    net.train()
    return {"val_loss": loss_sum / count, "val_acc": correct / count}


def run(workload: Workload) -> LoopResult:
    cell = workload.cell
    if cell.mode != "throughput":
        raise ValueError("the raw PyTorch loop measures throughput only; use strategy single "
                         "for accuracy cells")
    device = torch.device("cuda", 0) if cell.accelerator == "cuda" else torch.device("cpu")
    param_dtype = dtypes(cell.precision).param
    net = workload.model.net.to(device, param_dtype)
    optimizer = build_optimizer(net.parameters(), cell.optimizer, cell.lr, cell.optimizer_impl)
    scaler = torch.amp.GradScaler(device.type, enabled=cell.precision == "16-mixed")
    step_net = compiled(net, cell)

    data = workload.datamodule
    data.device = device if cell.loader == "device" else torch.device("cpu")
    data.prepare_data()
    data.setup("fit")

    peak, peak_source = device_peak_tflops(device, cell.precision)
    reset_memory_peaks(device)
    clock = StepClock(cell.warmup_steps, device)
    clock.start()
    for images, labels in batches(data.train_dataloader(), cell.warmup_steps + cell.steps):
        images = images.to(device, param_dtype, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        clock.batch_ready()
        with autocast_for(cell.precision, device):
            loss = nn.functional.cross_entropy(step_net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        clock.step_done(loss, len(labels))
    clock.finish()

    rank_raw = clock.rank_raw(0)
    rank_raw.peak_tflops = peak
    return LoopResult(
        ranks=[rank_raw], peak_source=peak_source, precision=cell.precision, world_size=1,
        strategy="raw PyTorch loop", optimizer=optimizer, grad_scaler=scaler.is_enabled(),
        outcome=evaluate(net, data.val_dataloader(), device, cell.precision))
