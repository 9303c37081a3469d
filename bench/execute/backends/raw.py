"""The hand-written loops: the prepared workload without Lightning, timed by the same
clock. ``raw`` trains the bare network on one device; the ``engine-*`` controls drive
the engine under a Lightning strategy (bench.execute.backends.engines) on every rank
of the cell. Their rows are what Lightning's overhead is measured against."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bench.execute.backends.engines import make_engine
from bench.execute.launch import Ranks, start_ranks
from bench.execute.workload import (
    LOG_EVERY_N_STEPS,
    LoopResult,
    Workload,
    arithmetic_probe,
    compile_network,
    step_trace,
    warmup_rule,
)
from bench.measure import ledger
from bench.measure.clock import StepClock
from bench.measure.hooks import gather
from bench.measure.memory import reset_memory_peaks
from bench.measure.model_state import (
    gradient_bytes,
    master_parameter_bytes,
    optimizer_state_bytes,
    parameter_bytes,
)
from bench.measure.peaks import device_peak_tflops
from bench.measure.trace import StepTrace
from strategies.registry import strategy_spec


def autocast_for(dtype: torch.dtype | None, device: torch.device
                 ) -> contextlib.AbstractContextManager[Any]:
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
def evaluate(module: Any, loader: Any, device: torch.device, input_dtype: torch.dtype,
             autocast: torch.dtype | None) -> dict[str, float]:
    """Loss and accuracy over every rank's shard of the validation images."""
    module.eval()
    sums = torch.zeros(3, dtype=torch.float64)  # loss, correct, count
    for images, labels in loader:
        images, labels = images.to(device, input_dtype), labels.to(device)
        with autocast_for(autocast, device):
            logits = module(images)
        sums += torch.tensor([
            float(nn.functional.cross_entropy(logits.float(), labels, reduction="sum")),
            int((logits.argmax(1) == labels).sum()), len(labels)], dtype=torch.float64)
    module.train()
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        sums = sums.to(device)
        torch.distributed.all_reduce(sums)
        sums = sums.cpu()
    loss, correct, count = sums.tolist()
    return {"val_loss": loss / count, "val_acc": correct / count}


def after_backward(engine: Any) -> dict[str, int | None]:
    """What the last step holds between its backward and its optimizer step."""
    module = getattr(engine.module, "module", engine.module)  # inside a DDP/DeepSpeed wrapper
    return {"params": parameter_bytes(module), "grads": gradient_bytes(module, engine.optimizer)}


def run(workload: Workload) -> LoopResult:
    cell = workload.cell
    engine_cell = strategy_spec(cell.strategy).engine is not None
    if engine_cell:
        ranks = start_ranks(cell)
    else:
        device = torch.device("cuda", 0) if cell.accelerator == "cuda" else torch.device("cpu")
        ranks = Ranks(0, 1, device, owns_group=False)
    try:
        result = _train(workload, ranks)
    except BaseException:
        ranks.close(failed=True)
        raise
    ranks.close()
    return result


def _train_steps(engine: Any, loader: Any, clock: StepClock, trace: StepTrace | None,
                 device: torch.device) -> dict[str, int | None]:
    """Warm-up, then the clock's window of measured training steps (going round the
    loader's epochs as needed), each phase marked on the clock as Lightning's hooks
    mark them (bench.measure.hooks); what the last step held after its backward."""
    assert clock.window is not None, "the hand-written loops measure throughput only"
    held: dict[str, int | None] = {}
    batch_iterator = batches(loader, clock.warmup.max_steps + clock.window.most_steps)
    clock.start()
    index = 0
    while not clock.window_done:
        last = clock.last_window_step_next
        if trace is not None:
            trace.at_step(clock.measured_steps)
        clock.mark("data")
        images, labels = next(batch_iterator)
        images = images.to(device, engine.input_dtype, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        clock.mark("forward")
        with autocast_for(engine.autocast, device):
            loss = nn.functional.cross_entropy(engine.module(images), labels)
        clock.mark("optimizer")
        engine.zero_grad()
        clock.mark("backward")
        engine.backward(loss)
        clock.mark("rest")
        if last:  # gradients exist only between backward and step
            held = after_backward(engine)
        clock.mark("optimizer")
        engine.step()
        clock.mark("rest")
        index += 1
        if index % LOG_EVERY_N_STEPS == 0:
            loss.item()  # Lightning's logger reads the loss to the host at this cadence
        clock.step_done(loss, len(labels))
    clock.finish()
    if trace is not None:
        trace.stop()
    return held


def _train(workload: Workload, ranks: Ranks) -> LoopResult:
    cell, device = workload.cell, ranks.device
    probe = arithmetic_probe(workload)
    compile_meter = compile_network(workload, ranks.rank)
    engine = make_engine(cell, workload.model.net.to(device), device)
    data = workload.datamodule
    data.rank, data.world_size = ranks.rank, ranks.world_size
    data.device = device if cell.loader == "device" else torch.device("cpu")
    data.prepare_data()
    data.setup("fit")

    peak, peak_source = device_peak_tflops(
        device, cell.precision, workload.peaks_file,
        ranks_here=int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world_size)), rank=ranks.rank,
        barrier=torch.distributed.barrier if ranks.world_size > 1 else lambda: None)
    reset_memory_peaks(device)
    clock = StepClock(warmup_rule(cell), device, workload.window)
    trace = step_trace(workload, ranks.rank, device)
    held = _train_steps(engine, data.train_dataloader(), clock, trace, device)

    rank_raw = clock.rank_raw(ranks.rank)
    rank_raw.peak_tflops = peak
    rank_raw.model_state_bytes = held | {
        "optimizer_state": optimizer_state_bytes(engine.optimizer),
        "master_params": master_parameter_bytes(engine.optimizer)}
    if compile_meter:
        compile_meter.training_done()
    comm = engine.after_window()  # off the clock; the ledger counts it as teardown
    ledger.mark("eval_start")  # after the window, off the clock: the ledger times it
    outcome = evaluate(engine.module, data.val_dataloader(), device, engine.input_dtype,
                       engine.autocast) | ({"comm": comm} if comm else {})
    ledger.mark("eval_end")
    rank_raw.compile = compile_meter.result() if compile_meter else None
    return LoopResult(
        ranks=gather(rank_raw), peak_source=peak_source, precision=cell.precision,
        world_size=ranks.world_size, strategy=engine.name,
        # DeepSpeed's ZeRO optimizer wraps the torch one as .optimizer; report that one.
        optimizer=getattr(engine.optimizer, "optimizer", engine.optimizer),
        grad_scaler=engine.grad_scaler, outcome=outcome, extra_effective=engine.effective(),
        arithmetic=probe.result(workload.model.net) if probe else {}, window=workload.window)
