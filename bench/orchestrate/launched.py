"""The matrix under torchrun / SLURM: every rank walks the same cells in process.

The launcher already made the processes, so each rank runs each cell itself,
Lightning reuses the process group, and rank 0 alone writes. A one-device cell
(the scaling reference) is the exception: rank 0 runs it alone, in a child
process outside the launch, while the other ranks wait for its record. Other
cells whose world size differs from the launch are skipped with the reason
(bench.plan / strategies.registry). A cell past --cell-timeout ends the walk with
its record (bench.orchestrate.deadline). A SIGTERM (scancel, a requeue, the job's
time limit, torchrun stopping) records the running cell as interrupted and ends the
walk; ``--resume`` finishes the run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace

import torch
import torch.distributed as dist

from bench.execute.lifecycle import ExecuteOptions, agree_on_failure, execute
from bench.matrix import Cell
from bench.measure import ledger
from bench.measure.env import env_key
from bench.orchestrate.deadline import CellDeadline, group_timeout_s
from bench.orchestrate.isolate import CellOptions, CellProcess, kill_group
from bench.orchestrate.plan import RunPlan
from bench.orchestrate.progress import progress_line
from bench.orchestrate.windows import ChosenWindows
from bench.record import Record, RunDir, Status, append_record, read_records
from strategies.host import slurm_launched

# What tells a process it is one rank of a launch (torchrun's variables, Lightning's
# TorchElasticEnvironment and SLURMEnvironment): hidden from a cell run alone.
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
               "GROUP_WORLD_SIZE", "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR",
               "MASTER_PORT")
LAUNCH_PREFIXES = ("TORCHELASTIC_", "SLURM_")


def init_process_group(timeout_s: float) -> None:
    """Join the launch's process group (env:// rendezvous). Under srun the torchrun
    variables are filled in from SLURM, as Lightning's SLURMEnvironment reads them."""
    if "WORLD_SIZE" not in os.environ and slurm_launched():
        from lightning.fabric.plugins.environments import SLURMEnvironment

        slurm = SLURMEnvironment()
        os.environ.update(MASTER_ADDR=slurm.main_address, MASTER_PORT=str(slurm.main_port),
                          WORLD_SIZE=str(slurm.world_size()), RANK=str(slurm.global_rank()),
                          LOCAL_RANK=str(slurm.local_rank()))
    if not dist.is_initialized():
        # Past every rank's cell deadline, which records the cell; this timeout (and, on
        # NCCL, torch's watchdog at its default error handling) is the backstop.
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                timeout=dt.timedelta(seconds=group_timeout_s(timeout_s)))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def release_memory() -> None:
    """Between cells: drop the last cell's objects and cached device memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Interrupted(BaseException):
    """SIGTERM on this rank: scancel, a requeue, the job's time limit, torchrun stopping.
    A BaseException, so that a cell's own failure handling does not take it for a
    failure of the cell."""


class TermSignal:
    """While installed, SIGTERM raises Interrupted, except inside ``held()``, where it
    is noted and raised when the block ends: a record being appended is never cut."""

    def __init__(self) -> None:
        self.holding = self.pending = False

    def __enter__(self) -> TermSignal:
        self.previous = signal.signal(signal.SIGTERM, self._on_term)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self.previous)

    def _on_term(self, signum: int, frame: object) -> None:
        if self.holding:
            self.pending = True
            return
        raise Interrupted("SIGTERM")

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            raise Interrupted("SIGTERM")


def stop_exceptions() -> tuple[type[BaseException], ...]:
    """What ends the walk as interrupted: SIGTERM through TermSignal, Ctrl-C, and
    Lightning's own exception for a SIGTERM it caught inside training (its handler runs
    before ours, and may be the one that stops the loop)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return Interrupted, KeyboardInterrupt, SIGTERMException


def run_launched(open_run: Callable[[], tuple[RunDir, RunPlan]],
                 finish: Callable[[RunDir, RunPlan], None], data_dir: str | None,
                 verbose: bool, cell_timeout_s: float) -> bool:
    """Walk the matrix on every rank. ``open_run`` (rank 0 only) creates or resumes the
    run directory and gives the plan, which every rank then receives; ``finish`` (rank 0
    only) writes the report. Bad input (a ValueError from ``open_run``: a matrix or run
    directory error) is raised on every rank. False when interrupted (SIGTERM, Ctrl-C):
    rank 0 has recorded the cell it was running as ``interrupted``; ``--resume``
    finishes the run."""
    init_process_group(cell_timeout_s)
    rank = dist.get_rank()
    shared: list[object] = [None]
    if rank == 0:
        try:
            run_dir, plan = open_run()
            # A resume keeps the ok records, and with them the windows their repeats chose.
            shared = [(run_dir, plan, ChosenWindows.from_records(read_records(run_dir.records)))]
        except ValueError as error:
            shared = [error]
    dist.broadcast_object_list(shared, src=0)
    opened = shared[0]
    if isinstance(opened, ValueError):
        raise opened
    assert isinstance(opened, tuple)
    run_dir, plan, windows = opened
    if rank == 0:
        print(f"run {plan.run_id}: {len(plan.pending)} cell run(s) on "
              f"{dist.get_world_size()} processes -> {run_dir.path}", flush=True)
    with TermSignal() as term:
        running: list[Record] = []  # the cell being run, until its record is appended
        try:
            _walk(plan, run_dir, windows, ExecuteOptions(plan.run_id, data_dir,
                                                         plan.wandb_mode, verbose),
                  cell_timeout_s, lambda: finish(run_dir, plan), term, running)
        except stop_exceptions() as stop:
            if rank == 0:
                _record_interrupted(run_dir, plan, running, stop)
            return False
    if rank == 0:
        finish(run_dir, plan)
    dist.barrier()
    return True


def _walk(plan: RunPlan, run_dir: RunDir, windows: ChosenWindows, options: ExecuteOptions,
          cell_timeout_s: float, finish: Callable[[], None], term: TermSignal,
          running: list[Record]) -> None:
    rank = dist.get_rank()
    for index, (cell, repeat, reason) in enumerate(plan.pending, start=1):
        if reason is not None:
            record = Record.new(cell, repeat, plan.run_id, Status.SKIPPED,
                                env_key(cell.accelerator), reason)
        else:
            running[:] = [Record.new(cell, repeat, plan.run_id, Status.INTERRUPTED,
                                     env_key(cell.accelerator))]
            options = replace(options, window_choice=windows.for_cell(cell.id))
            deadline = CellDeadline(cell, repeat, plan.run_id, run_dir, rank, cell_timeout_s,
                                    len(plan.pending) - index, finish)
            record = _run_cell(cell, repeat, run_dir, options, deadline)
            # Every rank keeps the same choice: the ranks agreed on it (bench.measure.window).
            windows.note(record)
        with term.held():
            if rank == 0:
                append_record(run_dir.records, record)
                print(progress_line(index, plan, record), flush=True)
            running.clear()


def _run_cell(cell: Cell, repeat: int, run_dir: RunDir, options: ExecuteOptions,
              deadline: CellDeadline) -> Record:
    if cell.world_size == 1 and dist.get_world_size() > 1:
        # Rank 0's child process has the cell timeout of its own; the others only wait.
        with deadline if deadline.rank != 0 else nullcontext():
            return run_alone(cell, repeat, run_dir, options, deadline.timeout_s)
    with deadline:
        return _run_in_process(cell, repeat, run_dir, options)


def _run_in_process(cell: Cell, repeat: int, run_dir: RunDir, options: ExecuteOptions) -> Record:
    asked = time.time()
    record = execute(cell, repeat, run_dir, options)
    release_memory()
    # A collective, so every rank leaves the cell before the next one starts; a cell
    # that failed on any rank is recorded as failed, with that rank's reason.
    agree_on_failure(record)
    record.ledger = ledger.close(record.ledger, record.raw, asked, None, time.time(),
                                 in_process=True)
    return record


def run_alone(cell: Cell, repeat: int, run_dir: RunDir, options: ExecuteOptions,
              timeout_s: float) -> Record:
    """A one-device cell in a launch of several ranks: rank 0 runs it as the local walk
    does, in a child process with ``timeout_s``, outside the launch and on rank 0's
    device, while the other ranks wait for its record (the collective is their wait)."""
    shared: list[object] = [None]
    if dist.get_rank() == 0:
        cell_options = CellOptions(run_dir, options.run_id, options.data_dir,
                                   options.wandb_mode, options.verbose, timeout_s,
                                   window_choice=options.window_choice)
        process = CellProcess(cell, repeat, cell_options)
        with outside_the_launch():
            try:
                shared = [process.run()]
            except BaseException:  # a SIGTERM meanwhile: the child's own group goes too
                if process.process is not None:
                    kill_group(process.process, grace_s=2.0)
                raise
    dist.broadcast_object_list(shared, src=0)
    record = shared[0]
    assert isinstance(record, Record)
    return record


@contextmanager
def outside_the_launch() -> Iterator[None]:
    """This process's environment, for a child started meanwhile, without the launch's
    variables (the child is a world of one) and with this rank's GPU only."""
    saved = dict(os.environ)
    for name in saved:
        if name in LAUNCH_VARS or name.startswith(LAUNCH_PREFIXES):
            del os.environ[name]
    if torch.cuda.is_available():
        local, visible = int(saved.get("LOCAL_RANK", "0")), saved.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[local] if visible else str(local)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _record_interrupted(run_dir: RunDir, plan: RunPlan, running: list[Record],
                        stop: BaseException) -> None:
    """Rank 0, stopped: the cell it was running, recorded as interrupted (the ones before
    are in records.jsonl already). No report: a SIGKILL may follow soon (SLURM's
    KillWait), and the run that resumes this one writes it."""
    sent = "SIGINT" if isinstance(stop, KeyboardInterrupt) else "SIGTERM"
    for record in running:
        record.reason = f"stopped by {sent} while running"
        append_record(run_dir.records, record)
        print(f"{record.cell_id}  interrupted", flush=True)
    print(f"interrupted; finish it with: python -m bench.run --resume {run_dir.path}",
          file=sys.stderr, flush=True)
