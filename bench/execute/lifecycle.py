"""A cell's whole life, top to bottom, in one function: ``execute``.

Both ways of running a matrix call it: the child process of ``python -m
bench.cell`` (one cell per process) and every rank of a torchrun launch (all
cells in process). A cell's other ranks (bench.execute.spawn: forks of the child,
or new interpreters on its command line) arrive here too.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from bench.execute import wandb_sink
from bench.execute.faults import inject as inject_fault
from bench.execute.faults import slow_down_training_data
from bench.execute.workload import Workload, build_effective, build_raw, prepare
from bench.matrix import Cell
from bench.measure import ledger
from bench.measure.derive import derive_metrics
from bench.measure.env import env_key
from bench.measure.machine_state import Snapshot, machine_state
from bench.measure.window import WindowChoice
from bench.record import OOM_REASON, Raw, Record, RunDir, Status, write_json_atomic
from strategies.registry import strategy_spec

T = TypeVar("T")


@dataclass(frozen=True)
class ExecuteOptions:
    run_id: str
    data_dir: str | None = None
    wandb_mode: str = "disabled"
    verbose: bool = False
    save_weights: Path | None = None  # rank 0 saves the final state_dict here (for checks)
    window_choice: WindowChoice | None = None  # the time window an earlier repeat chose


def current_rank() -> int:
    """This process's global rank. Lightning reads it from the launcher's variables on
    import (RANK, set by torchrun or bench.execute.spawn; a forked rank is told it) and
    sets it again once the Trainer exists."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def execute(cell: Cell, repeat: int, run_dir: RunDir, options: ExecuteOptions) -> Record:
    """Run one (cell, repeat) in this process and return its record (every rank gets
    one; rank 0's is the one written). A failure is a ``failed`` record (reason ``oom``
    for out-of-memory), never an exception."""
    started = time.perf_counter()
    ledger.begin_cell()
    record = Record.new(cell, repeat, options.run_id, Status.OK, env_key(cell.accelerator))
    # 1. A fault asked for by the isolation tests, then settings, seed, model and data:
    #    the same for every backend.
    workload = _guarded(record, run_dir, lambda: _prepare(cell, repeat, run_dir, options))
    # 2. Under torchrun every rank learns whether another failed to prepare, so that no
    #    rank enters training (and its collectives) alone.
    agree_on_failure(record)
    if workload is not None and record.ok:
        _guarded(record, run_dir, lambda: _train_and_measure(workload, run_dir, options,
                                                             record, started))
    if record.wall_s is None:  # it failed before its record was built
        record.wall_s = time.perf_counter() - started
    if "record_built" not in ledger.marks():  # a failure: it ends where the cell stopped
        ledger.mark("record_built")
    # Without the orchestrator's marks (asked, read) yet: bench.cell and the callers
    # of execute close it (bench.measure.ledger).
    record.ledger = ledger.build(ledger.marks(), record.raw)
    return record


def _guarded(record: Record, run_dir: RunDir, step: Callable[[], T]) -> T | None:
    """``step()``, or None with the record marked failed when it raises."""
    try:
        return step()
    except Exception as error:  # the record says how it failed; the matrix goes on
        traceback.print_exc()
        record.status = Status.FAILED
        record.reason = OOM_REASON if is_out_of_memory(error) else \
            f"{type(error).__name__}: {error}".strip()[:2000]
        note_rank_failure(run_dir, record, current_rank())
        return None


def _prepare(cell: Cell, repeat: int, run_dir: RunDir, options: ExecuteOptions) -> Workload:
    inject_fault(cell.id, current_rank())  # MNIST_BENCH_INJECT_FAULT, else nothing
    run_dir.cell_dir(cell.id).mkdir(parents=True, exist_ok=True)
    workload = prepare(cell, repeat, options.data_dir, run_dir.peaks, run_dir.cell_dir(cell.id),
                       options.window_choice)
    ledger.mark("prepared")
    slow_down_training_data(cell.id, current_rank(), workload.datamodule)
    return workload


def _train_and_measure(workload: Workload, run_dir: RunDir, options: ExecuteOptions,
                       record: Record, started: float) -> None:
    cell, repeat, cell_dir = workload.cell, workload.repeat, run_dir.cell_dir(workload.cell.id)
    # 3. The backend's loop: warm-up, measured window, validation; the machine's state
    #    around it (was anything else running?).
    device = torch.device(cell.accelerator)
    before = Snapshot.take(device)
    logger = None
    if cell.mode == "comm":  # collectives only: no training (bench.execute.backends.comm)
        from bench.execute.backends import comm as comm_backend

        result = comm_backend.run(workload)
    elif strategy_spec(cell.strategy).lightning:
        from bench.execute.backends import lightning as backend

        logger = wandb_sink.cell_logger(cell, repeat, options.run_id, cell_dir,
                                        options.wandb_mode)
        result = backend.run(workload, cell_dir, [logger] if logger else [], options.verbose)
    else:
        from bench.execute.backends import raw as raw_backend

        result = raw_backend.run(workload)
    record.machine = machine_state(before, Snapshot.take(device))
    # 4. The record: raw values as measured, what actually ran, metrics derived from them.
    record.raw = build_raw(workload, result)
    record.effective = build_effective(workload, result)
    _save_weights(workload, options)
    record.wall_s = time.perf_counter() - started
    record.metrics = derive_metrics(record.raw, result.world_size, record.wall_s)
    ledger.mark("record_built")
    # 5. The wandb run gets the record's metrics and is closed.
    if logger is not None:
        wandb_sink.finish_cell(logger, record)
    ledger.mark("wandb_done")


def agree_on_failure(record: Record) -> None:
    """Where a process group already exists (a torchrun walk), fail this rank's record
    too when another rank's failed, naming the first failed rank. A collective: every
    rank calls it. (In a cell's own processes the group is made later, by Lightning.)"""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    outcomes: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(outcomes, None if record.ok else record.reason)
    failed = [(rank, reason) for rank, reason in enumerate(outcomes) if reason is not None]
    if failed and record.ok:
        rank, reason = failed[0]
        record.status, record.reason = Status.FAILED, f"rank {rank} failed: {reason}"
        record.raw, record.effective, record.metrics = Raw(), {}, {}


def note_rank_failure(run_dir: RunDir, record: Record, rank: int) -> None:
    """Leave this rank's failure where the orchestrator looks when rank 0 wrote no
    record (it stops itself when another rank exits non-zero: bench.execute.spawn)."""
    path = run_dir.rank_failure(record.cell_id, record.repeat, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"rank": rank, "reason": record.reason, "at": time.time()})


def _save_weights(workload: Workload, options: ExecuteOptions) -> None:
    if options.save_weights is not None and current_rank() == 0:
        state: dict[str, Any] = workload.model.state_dict()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, options.save_weights)
