"""A cell's time limit in a walk under torchrun / SLURM, where no process can be killed
from outside: a timer thread on every rank that, when the cell runs past
--cell-timeout, leaves the cell's record and ends this rank's process.

Why a thread of our own rather than the process group's collective timeout (read in
torch's ProcessGroupNCCL source and its NCCL environment-variable page; not yet seen
on a GPU, and the device's torch 2.11 was not read apart from this machine's 2.14's
headers): a rank stuck in a collective waits in C++
(gloo's recv, or the host waiting on a stream behind NCCL's kernel), where no Python
exception reaches it before the collective's own timeout; on NCCL that timeout is
handled by torch's watchdog thread, which by default
(TORCH_NCCL_ASYNC_ERROR_HANDLING=3) tears the process down with no chance to record
anything. TORCH_NCCL_BLOCKING_WAIT=1 would raise in the thread that calls
``work.wait()`` instead, but it starts no watchdog at all, makes every wait block the
host (polling every 10 ms: FSDP's and DeepSpeed's waits would change what their cells
measure), and never fires where nothing waits on a work: DDP's all-reduces are
waited on through futures completed at launch, and a synchronous collective queues
its kernel on the current stream without a work. So the error handling is left at
torch's default, as the backstop, the process group's timeout is set past this
deadline (``group_timeout_s``), and this thread, which runs while the main thread
waits (collectives and CUDA synchronisation release the GIL), records the cell.

After a timeout the process group cannot be trusted (a late rank still owes the
collectives it missed, and NCCL aborts its communicator), so the walk ends there:
rank 0 appends a failed record naming the timeout and writes the report; the cells
after it are not run and have no record, and ``--resume RUN_DIR`` runs them (with
the timed-out one). The other ranks give rank 0 ``GRACE_S`` longer to do that; a
rank that gives up first leaves its note beside the cell (as a failed rank does)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

from bench.execute.lifecycle import note_rank_failure
from bench.matrix import Cell
from bench.measure.env import env_key
from bench.record import Record, RunDir, Status, append_record

GRACE_S = 30.0  # how much longer the other ranks give rank 0 to write the record


def group_timeout_s(cell_timeout_s: float) -> float:
    """The process group's collective timeout: past every rank's deadline, so that
    the deadline, which can record, always comes first."""
    return cell_timeout_s + 2 * GRACE_S


def timeout_reason(timeout_s: float, rank: int, not_run: int) -> str:
    return (f"timed out: no result after {timeout_s:g} s (--cell-timeout) on rank {rank} "
            "(a cell that slow, or a collective waiting for a late or stuck rank); the "
            "process group cannot be trusted after that, so the walk ended here: "
            f"{not_run} later cell run(s) not run (--resume RUN_DIR runs them)")


class CellDeadline:
    """``with CellDeadline(...)`` around a cell's work on one rank: past ``timeout_s``
    (``+ GRACE_S`` on ranks other than 0), the record is left and the process exits 1,
    which makes torchrun stop the other ranks. ``finish`` (rank 0) writes the report
    once the record is in."""

    def __init__(self, cell: Cell, repeat: int, run_id: str, run_dir: RunDir, rank: int,
                 timeout_s: float, not_run: int,
                 finish: Callable[[], None] = lambda: None) -> None:
        self.cell, self.repeat, self.run_id, self.run_dir = cell, repeat, run_id, run_dir
        self.rank, self.timeout_s, self.not_run, self.finish = rank, timeout_s, not_run, finish
        self._lock = threading.Lock()  # the cell ending in time and the deadline exclude
        self._done = False
        wait = timeout_s if rank == 0 else timeout_s + GRACE_S
        self._timer = threading.Timer(wait, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> CellDeadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def record(self) -> Record:
        return Record.new(self.cell, self.repeat, self.run_id, Status.FAILED,
                          env_key(self.cell.accelerator),
                          timeout_reason(self.timeout_s, self.rank, self.not_run))

    def _expire(self) -> None:
        with self._lock:
            if self._done:  # the cell ended in time after all
                return
            record = self.record()
            print(f"error: {self.cell.id} (repeat {self.repeat}) {record.reason}",
                  file=sys.stderr, flush=True)
            if self.rank == 0:
                append_record(self.run_dir.records, record)
                try:  # the record is in; a report is a bonus
                    self.finish()
                except Exception as error:  # noqa: BLE001 - the exit below must happen
                    print(f"the report could not be written: {error}", file=sys.stderr)
            else:
                note_rank_failure(self.run_dir, record, self.rank)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)  # the main thread is stuck in C++: no clean way out of it
