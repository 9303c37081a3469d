"""The matrix under torchrun / SLURM: every rank walks the same cells in process.

The launcher already made the processes, so no child processes are started:
each rank runs each cell itself, Lightning reuses the process group, and rank
0 alone writes. Cells whose world size differs from the launch are skipped
with the reason (bench.plan / strategies.registry).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from bench import record as rec
from bench.cell import base_record, is_out_of_memory, run_cell
from bench.plan import RunPlan
from bench.rundir import RunDirError, create_run_dir, open_resume
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


def run_launched(plan: RunPlan, args: argparse.Namespace) -> int:
    from bench.run import DEFAULT_TIMEOUT_S, finish, progress_line

    init_process_group(args.cell_timeout or DEFAULT_TIMEOUT_S["accuracy"])
    rank = dist.get_rank()
    shared: list[object] = [None]
    if rank == 0:
        try:
            run_dir = open_resume(args.resume, plan) if args.resume else \
                create_run_dir(args.out, plan)
            shared = [(str(run_dir), plan.run_id, plan.cells, plan.repeats, plan.pending)]
        except RunDirError as error:
            shared = [f"error: {error}"]
    dist.broadcast_object_list(shared, src=0)
    if isinstance(shared[0], str):
        print(shared[0], file=sys.stderr)
        return 2
    run_dir_text, plan.run_id, plan.cells, plan.repeats, plan.pending = shared[0]  # type: ignore[misc]
    run_dir = Path(run_dir_text)
    if rank == 0:
        print(f"run {plan.run_id}: {len(plan.pending)} cell run(s) on "
              f"{dist.get_world_size()} processes -> {run_dir}", flush=True)
    total = len(plan.pending)
    for index, (cell, repeat, reason) in enumerate(plan.pending, start=1):
        started = time.perf_counter()
        if reason is not None:
            record = base_record(cell, repeat, plan.run_id, "skipped", reason)
        else:
            try:
                record = run_cell(cell, repeat, run_dir, plan.run_id, args.data_dir,
                                  plan.wandb_mode, args.verbose)
            except Exception as error:
                traceback.print_exc()
                why = "oom" if is_out_of_memory(error) else f"{type(error).__name__}: {error}"
                record = base_record(cell, repeat, plan.run_id, "failed", why)
                record["wall_s"] = time.perf_counter() - started
            release_memory()
            dist.barrier()  # every rank leaves the cell before the next one starts
        if rank == 0 and record is not None:
            rec.append_record(run_dir / "records.jsonl", record)
            print(progress_line(index, total, plan, cell, repeat, record), flush=True)
    if rank == 0:
        finish(run_dir, plan)
    dist.barrier()
    return 0
