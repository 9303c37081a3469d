"""The control cell: the same model, data, optimizer and seed in a hand-written
PyTorch loop, no Lightning, timed by the same clock. Its row in the report is
what Lightning's overhead is measured against."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import nn

from bench.matrix import Cell
from bench.measure import StepClock, flops_per_training_sample, reset_memory_peaks
from bench.peaks import device_peak_tflops
from bench.settings import loader_workers
from mnist_core.data import MnistDataModule
from mnist_core.model import MnistNet, build_optimizer, optimizer_kernel


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


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
def evaluate(net: nn.Module, loader: Any, device: torch.device, precision: str,
             input_dtype: torch.dtype) -> dict[str, float]:
    net.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device, input_dtype), labels.to(device)
        with autocast_for(precision, device):
            logits = net(images)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
        count += len(labels)
    net.train()
    return {"val_loss": loss_sum / count, "val_acc": correct / count}


def run_raw(cell: Cell, repeat: int, data_dir: str | None
            ) -> tuple[dict[str, Any], dict[str, Any], nn.Module]:
    if cell.mode != "throughput":
        raise ValueError("the raw PyTorch loop measures throughput only; use strategy single "
                         "for accuracy cells")
    device = torch.device("cuda", 0) if cell.accelerator == "cuda" else torch.device("cpu")
    L.seed_everything(cell.seed + repeat, workers=True, verbose=False)
    net: nn.Module = MnistNet()
    input_dtype = torch.bfloat16 if cell.precision == "bf16-true" else torch.float32
    net = net.to(device, input_dtype)
    if cell.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(net.parameters(), cell.optimizer, cell.lr, cell.optimizer_impl)
    scaler = torch.amp.GradScaler(device.type, enabled=cell.precision == "16-mixed")
    step_net = torch.compile(net, mode=cell.compile) if cell.compile != "none" else net

    data = MnistDataModule(data_dir, cell.batch_size, cell.loader,
                           num_workers=loader_workers(cell), seed=cell.seed + repeat)
    data.device = device if cell.loader == "device" else torch.device("cpu")
    data.prepare_data()
    data.setup("fit")

    peak, peak_source = device_peak_tflops(device, cell.precision)
    reset_memory_peaks(device)
    clock = StepClock(cell.warmup_steps, device)
    clock.start()
    for images, labels in batches(data.train_dataloader(), cell.warmup_steps + cell.steps):
        images = images.to(device, input_dtype, non_blocking=True)
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

    rank_raw = clock.rank_record(0) | {"peak_tflops": peak}
    raw: dict[str, Any] = {"ranks": [rank_raw], "peak_source": peak_source,
                           "flops_per_sample": flops_per_training_sample(MnistNet)}
    raw |= evaluate(net, data.val_dataloader(), device, cell.precision, input_dtype)
    effective = {"accelerator": cell.accelerator, "precision": cell.precision, "world_size": 1,
                 "global_batch_size": cell.batch_size, "strategy": "raw PyTorch loop",
                 "optimizer": type(optimizer).__name__,
                 "optimizer_kernel": optimizer_kernel(optimizer)}
    return raw, effective, net
