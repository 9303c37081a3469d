"""A cell's whole life, top to bottom, in one function: ``execute``.

Both ways of running a matrix call it: the child process of ``python -m
bench.cell`` (one cell per process) and every rank of a torchrun launch (all
cells in process). Under Lightning's own DDP launcher the other ranks re-run
the child's command line and so arrive here too.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.execute import wandb_sink
from bench.execute.faults import inject as inject_fault
from bench.execute.workload import Workload, build_effective, build_raw, prepare
from bench.matrix import Cell
from bench.measure.derive import derive_metrics
from bench.measure.env import env_key
from bench.record import OOM_REASON, Record, RunDir, Status
from strategies.registry import strategy_spec


@dataclass(frozen=True)
class ExecuteOptions:
    run_id: str
    data_dir: str | None = None
    wandb_mode: str = "disabled"
    verbose: bool = False
    save_weights: Path | None = None  # rank 0 saves the final state_dict here (for checks)


def current_rank() -> int:
    """This process's global rank (Lightning sets it once the Trainer exists)."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def execute(cell: Cell, repeat: int, run_dir: RunDir, options: ExecuteOptions) -> Record:
    """Run one (cell, repeat) in this process and return its record (every rank gets
    one; rank 0's is the one written). A failure is a ``failed`` record (reason ``oom``
    for out-of-memory), never an exception."""
    started = time.perf_counter()
    record = Record.new(cell, repeat, options.run_id, Status.OK, env_key(cell.accelerator))
    try:
        _train_and_measure(cell, repeat, run_dir, options, record, started)
    except Exception as error:  # the record says how it failed; the matrix goes on
        traceback.print_exc()
        record.status = Status.FAILED
        record.reason = OOM_REASON if is_out_of_memory(error) else \
            f"{type(error).__name__}: {error}".strip()[:2000]
    if record.wall_s is None:
        record.wall_s = time.perf_counter() - started
    return record


def _train_and_measure(cell: Cell, repeat: int, run_dir: RunDir, options: ExecuteOptions,
                       record: Record, started: float) -> None:
    # 1. A fault asked for by the isolation tests (MNIST_BENCH_INJECT_FAULT), else nothing.
    inject_fault(cell.id)
    cell_dir = run_dir.cell_dir(cell.id)
    cell_dir.mkdir(parents=True, exist_ok=True)
    # 2. Process settings, seed, model and data: the same for every backend.
    workload = prepare(cell, repeat, options.data_dir)
    # 3. The backend's loop: warm-up, measured window, validation.
    logger = None
    if strategy_spec(cell.strategy).lightning:
        from bench.execute.backends import lightning as backend

        logger = wandb_sink.cell_logger(cell, repeat, options.run_id, cell_dir,
                                        options.wandb_mode)
        result = backend.run(workload, cell_dir, [logger] if logger else [], options.verbose)
    else:
        from bench.execute.backends import raw as raw_backend

        result = raw_backend.run(workload)
    # 4. The record: raw values as measured, what actually ran, metrics derived from them.
    record.raw = build_raw(workload, result)
    record.effective = build_effective(workload, result)
    _save_weights(workload, options)
    record.wall_s = time.perf_counter() - started
    record.metrics = derive_metrics(record.raw, result.world_size, record.wall_s)
    # 5. The wandb run gets the record's metrics and is closed.
    if logger is not None:
        wandb_sink.finish_cell(logger, record)


def _save_weights(workload: Workload, options: ExecuteOptions) -> None:
    if options.save_weights is not None and current_rank() == 0:
        state: dict[str, Any] = workload.model.state_dict()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, options.save_weights)
