"""The matrix on one machine: each (cell, repeat) in its own child process group
(bench.orchestrate.isolate), records appended as cells finish, Ctrl-C honoured; a
cell's later repeats measure the window its first chose (bench.orchestrate.windows)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from bench.measure.env import env_key
from bench.orchestrate.isolate import CellOptions, CellProcess
from bench.orchestrate.plan import DEFAULT_TIMEOUT_S, RunPlan
from bench.orchestrate.preload import PreloadServer
from bench.orchestrate.progress import eta_text, progress_line, repeat_text
from bench.orchestrate.windows import ChosenWindows
from bench.record import Record, RunDir, Status, append_record, read_records


def run_local(plan: RunPlan, run_dir: RunDir, data_dir: str | None, verbose: bool,
              cell_timeout_s: float | None, server: PreloadServer | None = None,
              after_each: Callable[[], None] | None = None) -> bool:
    """Run every pending (cell, repeat) in a child process (with the run's preload
    ``server``, forked from it; closed at the end); ``after_each()`` once a cell's record
    is appended (``--snapshot``). False when interrupted."""
    try:
        return _walk(plan, run_dir, data_dir, verbose, cell_timeout_s, server, after_each)
    finally:
        if server is not None:
            server.close()


def _walk(plan: RunPlan, run_dir: RunDir, data_dir: str | None, verbose: bool,
          cell_timeout_s: float | None, server: PreloadServer | None,
          after_each: Callable[[], None] | None) -> bool:
    current: dict[str, CellProcess] = {}
    stop_requested = False

    def on_signal(signum: int, frame: Any) -> None:
        # Only flag it (and stop a running cell): raising here could land in the middle
        # of append_record and lose the record of a cell that had just finished.
        nonlocal stop_requested
        stop_requested = True
        if "proc" in current:
            current["proc"].stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    durations: list[float] = []
    # A resume keeps the ok records, and with them the windows their repeats chose.
    windows = ChosenWindows.from_records(read_records(run_dir.records))
    runnable_left = plan.pending.runnable  # counted down: the plan is walked, never indexed
    try:
        for index, (cell, repeat, reason) in enumerate(plan.pending, start=1):
            if stop_requested:
                break
            started = time.perf_counter()
            if reason is not None:
                record = Record.new(cell, repeat, plan.run_id, Status.SKIPPED,
                                    env_key(cell.accelerator), reason)
            else:
                timeout = cell_timeout_s or DEFAULT_TIMEOUT_S[cell.mode]
                options = CellOptions(run_dir, plan.run_id, data_dir, plan.wandb_mode,
                                      verbose, timeout, window_choice=windows.for_cell(cell.id),
                                      preload=server)
                eta = eta_text(durations, runnable_left)
                runnable_left -= 1
                print(f"[{index}/{len(plan.pending)}] {cell.id}{repeat_text(plan, repeat)}  "
                      f"running{eta}", flush=True)
                # Registered for the whole walk, so that a signal stops this cell.
                proc = current["proc"] = CellProcess(cell, repeat, options)
                if stop_requested:  # a signal between the check above and here
                    break
                record = proc.run()
                del current["proc"]
                windows.note(record)
                durations.append(time.perf_counter() - started)
            append_record(run_dir.records, record)
            print(progress_line(index, plan, record), flush=True)
            if after_each is not None and record.status is not Status.SKIPPED:
                after_each()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return not stop_requested
