"""The matrix under torchrun / SLURM: every rank walks the same cells in process.

The launcher already made the processes, so no child processes are started:
each rank runs each cell itself, Lightning reuses the process group, and rank
0 alone writes. Cells whose world size differs from the launch are skipped
with the reason (bench.plan / strategies.registry).
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
from dataclasses import replace

import torch
import torch.distributed as dist

from bench.execute.lifecycle import ExecuteOptions, agree_on_failure, execute
from bench.measure import ledger
from bench.measure.env import env_key
from bench.orchestrate.plan import RunPlan
from bench.orchestrate.progress import progress_line
from bench.orchestrate.windows import ChosenWindows
from bench.record import Record, RunDir, Status, append_record, read_records
from strategies.registry import slurm_launched


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
        # No child processes to kill here: a collective that waits longer than a
        # cell may take fails instead, and that rank's cell is recorded as failed.
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                timeout=dt.timedelta(seconds=timeout_s))
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
                 verbose: bool, collective_timeout_s: float) -> bool:
    """Walk the matrix on every rank. ``open_run`` (rank 0 only) creates or resumes the
    run directory and gives the plan, which every rank then receives; ``finish`` (rank 0
    only) writes the report. Bad input (a ValueError from ``open_run``: a matrix or run
    directory error) is raised on every rank. False when interrupted (SIGTERM, Ctrl-C):
    rank 0 has recorded the cell it was running as ``interrupted``; ``--resume``
    finishes the run."""
    init_process_group(collective_timeout_s)
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
                  term, running)
        except stop_exceptions() as stop:
            if rank == 0:
                _record_interrupted(run_dir, plan, running, stop)
            return False
    if rank == 0:
        finish(run_dir, plan)
    dist.barrier()
    return True


def _walk(plan: RunPlan, run_dir: RunDir, windows: ChosenWindows, options: ExecuteOptions,
          term: TermSignal, running: list[Record]) -> None:
    rank = dist.get_rank()
    for index, (cell, repeat, reason) in enumerate(plan.pending, start=1):
        if reason is not None:
            record = Record.new(cell, repeat, plan.run_id, Status.SKIPPED,
                                env_key(cell.accelerator), reason)
        else:
            running[:] = [Record.new(cell, repeat, plan.run_id, Status.INTERRUPTED,
                                     env_key(cell.accelerator))]
            asked = time.time()
            record = execute(cell, repeat, run_dir,
                             replace(options, window_choice=windows.for_cell(cell.id)))
            release_memory()
            # A collective, so every rank leaves the cell before the next one starts; a
            # cell that failed on any rank is recorded as failed, with that rank's reason.
            agree_on_failure(record)
            record.ledger = ledger.close(record.ledger, record.raw, asked, None, time.time(),
                                         in_process=True)
            # Every rank keeps the same choice: the ranks agreed on it (bench.measure.window).
            windows.note(record)
        with term.held():
            if rank == 0:
                append_record(run_dir.records, record)
                print(progress_line(index, plan, record), flush=True)
            running.clear()


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
