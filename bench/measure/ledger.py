"""The ledger of one (cell, repeat): where its wall time went, from the moment its
process was asked for to the moment the orchestrator read its record.

The code notes wall-clock marks (``time.time()``, so that two processes can compare
them) on the way through a cell, and the ledger turns them into parts that add up
to the cell's wall (bench.metrics.LEDGER_PARTS). The marks, in order:

    asked           the orchestrator is about to start the cell's process (it passes
                    the time in ASKED_AT_VAR); under torchrun: the walk reaches the cell
    interpreter     the first line of bench.cell: Python has started
    imported        bench.cell has imported torch, Lightning and the harness
    execute         bench.execute.lifecycle.execute begins
    prepared        the workload is prepared (settings, seed, model, datamodule)
    training_start  the step clock starts: the first warm-up step begins
    training_end    the step clock closes the window (and the validation inside fit)
    eval_start/end  a validation or test after training, off the clock (the hand-written
                    loops' validation, an accuracy cell's test)
    record_built    the record's raw values and metrics are built (its wall_s is taken)
    wandb_done      the cell's wandb run is finished
    written         bench.cell writes the record
    exited          the orchestrator sees the process gone (it polls every 0.1 s)
    read            the orchestrator has read the record

The warm-up, the window and the validation inside fit are the step clock's own
figures (rank 0's raw values: warmup_step_s, the window, paused_s), not the marks
around them, so that no part is measured twice differently; what the training span
holds beyond them is ``other``. The ledger is rank 0's timeline: rank 0 writes the
record. A cell that fails keeps the parts it reached; a part it was in when it
failed runs to the next mark it reached.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.record import RankRaw, Raw

# The orchestrator passes the epoch time it asked for the cell's process in this variable.
ASKED_AT_VAR = "MNIST_BENCH_ASKED_AT"
# Marks of the process itself (bench.cell notes them before its one cell), kept by
# ``begin_cell``.
PROCESS_MARKS = ("asked", "interpreter", "imported")
IN_PROCESS_NOTE = ("in process (torchrun): no process start; the imports are paid once "
                   "per walk, not per cell")
DIGITS = 4  # seconds are stored to 0.1 ms

_marks: dict[str, float] = {}


def mark(name: str, at: float | None = None) -> None:
    """Note that this process reached ``name`` now (or at the epoch time ``at``)."""
    _marks[name] = time.time() if at is None else at


def begin_cell() -> None:
    """Forget the previous cell's marks (a torchrun walk runs many cells in a process)
    and mark the start of this one's execute."""
    for name in [n for n in _marks if n not in PROCESS_MARKS]:
        del _marks[name]
    mark("execute")


def marks() -> dict[str, float]:
    """The marks this process has noted for its current cell."""
    return dict(_marks)


def asked_at(environ: dict[str, str]) -> float | None:
    """When the orchestrator asked for this process (None when it did not say)."""
    try:
        return float(environ[ASKED_AT_VAR])
    except (KeyError, ValueError):
        return None


def process_started_at() -> float | None:
    """The epoch time this process started, from Linux's /proc (to about 10 ms); None
    where there is no /proc."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, after boot
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime_s - started_s)


def _span(at: dict[str, float], begin: str, *ends: str) -> float | None:
    """From mark ``begin`` to the first of ``ends`` that was reached; None when either
    was not."""
    end = next((at[name] for name in ends if name in at), None)
    return end - at[begin] if begin in at and end is not None else None


def _window(rank: RankRaw) -> float:
    """Rank 0's measured window on the host's clock (on CUDA ``window_s`` is the
    device's; the ledger is wall time)."""
    return float(sum(rank.host_step_s)) if rank.host_step_s else rank.window_s


def parts(at: dict[str, float], rank: RankRaw | None) -> dict[str, float | None]:
    """Seconds per named part (every LEDGER_PARTS but ``other``); None: not reached."""
    evaluation = _span(at, "eval_start", "eval_end")
    teardown = _span(at, "training_end", "record_built")
    if teardown is not None:
        teardown += _span(at, "wandb_done", "written") or 0.0
        teardown -= evaluation or 0.0
    inside_fit = (rank.paused_s or 0.0) if rank is not None else None
    validation = None if inside_fit is None and evaluation is None \
        else (inside_fit or 0.0) + (evaluation or 0.0)
    begun = "imported" if "imported" in at else "execute"
    handed = "exited" if "exited" in at else "wandb_done"  # under torchrun: no process
    return {
        "start": _span(at, "asked", "interpreter"),
        "imports": _span(at, "interpreter", "imported"),
        "setup": _span(at, begun, "training_start", "record_built"),
        "warmup": float(sum(rank.warmup_step_s)) if rank is not None else None,
        "window": _window(rank) if rank is not None else None,
        "validation": validation,
        "teardown": teardown,
        "wandb": _span(at, "record_built", "wandb_done"),
        "exit": _span(at, "written", "exited"),
        "handoff": _span(at, handed, "read"),
    }


def build(at: dict[str, float], raw: Raw, in_process: bool = False) -> dict[str, Any]:
    """The record's ``ledger`` block: ``wall_s`` (asked -> read; None before the
    orchestrator has read the record), ``parts`` (bench.metrics.LEDGER_PARTS: seconds,
    None where not reached; ``other`` is the wall less the named parts), the ``marks``
    it was built from, and a ``note``."""
    named = parts(at, raw.ranks[0] if raw.ranks else None)
    rounded = {k: round(v, DIGITS) if v is not None else None for k, v in named.items()}
    wall = _span(at, "asked", "read")
    wall = round(wall, DIGITS) if wall is not None else None
    other = (round(wall - sum(v for v in rounded.values() if v is not None), DIGITS)
             if wall is not None else None)
    return {"wall_s": wall, "parts": rounded | {"other": other},
            "marks": {name: at[name] for name in sorted(at, key=at.__getitem__)},
            "note": IN_PROCESS_NOTE if in_process else None}


def close(ledger: dict[str, Any] | None, raw: Raw, asked: float, exited: float | None,
          read: float, in_process: bool = False) -> dict[str, Any]:
    """The ledger once the orchestrator has read the record: the cell's own marks (none
    when it wrote no record) and the orchestrator's."""
    at = dict((ledger or {}).get("marks") or {}) | {"asked": asked, "read": read}
    if exited is not None:
        at["exited"] = exited
    return build(at, raw, in_process)
