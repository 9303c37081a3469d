"""Run one cell in a child process group, so that a crash, a hang or an
out-of-memory in it cannot take the matrix down. The child is a new interpreter
(``python -m bench.cell``), or, for a single-process cell when the run has a
preload server, the same command forked from it (bench.orchestrate.preload)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.execute.allocator import allocator_environment
from bench.matrix import Cell
from bench.measure import ledger
from bench.measure.env import env_key
from bench.measure.window import WindowChoice
from bench.orchestrate.preload import PreloadServer, PreloadUnavailable, preloadable
from bench.record import OOM_REASON, Record, RunDir, Status, read_record

LOG_TAIL_LINES = 50
CELL_MODULE = "bench.cell"


class ChildProcess(Protocol):
    """What isolate.py needs of a cell's process: subprocess.Popen, PreloadedProcess."""

    pid: int

    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...


@dataclass(frozen=True)
class CellOptions:
    run_dir: RunDir
    run_id: str
    data_dir: str | None
    wandb: str
    verbose: bool
    timeout_s: float
    _: KW_ONLY
    window_choice: WindowChoice | None = None  # the time window an earlier repeat chose
    preload: PreloadServer | None = None  # the run's server; None: every cell a subprocess


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except OSError:
        return ""


def signal_group(process: ChildProcess, sig: int) -> None:
    """``sig`` to the child's process group; to the child alone in the moment a forked
    child has not yet made its group (os.setsid, its first act)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)


def kill_group(process: ChildProcess, grace_s: float = 5.0) -> None:
    """SIGTERM the child's whole process group (DDP ranks included), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        signal_group(process, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def exit_reason(returncode: int, oom_hint: bool = True) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (the kernel's out-of-memory killer sends this)" \
            if name == "SIGKILL" and oom_hint else ""
        return f"killed by {name}{hint}"
    return f"exited with status {returncode}"


class CellProcess:
    """One running cell; ``stop()`` may be called from a signal handler."""

    def __init__(self, cell: Cell, repeat: int, options: CellOptions) -> None:
        self.cell, self.repeat, self.options = cell, repeat, options
        self.process: ChildProcess | None = None
        self.stopped = False
        self._stop_requested_at: float | None = None

    @property
    def preloaded(self) -> bool:
        """Forked from the run's preload server rather than a new interpreter."""
        server = self.options.preload
        return server is not None and not server.broken and preloadable(self.cell)

    def arguments(self) -> list[str]:
        """bench.cell's command-line arguments for this (cell, repeat)."""
        o = self.options
        arguments = ["--cell", json.dumps(self.cell.to_dict()), "--repeat", str(self.repeat),
                     "--run-dir", str(o.run_dir.path), "--run-id", o.run_id, "--wandb", o.wandb]
        if o.data_dir:
            arguments += ["--data-dir", o.data_dir]
        if o.verbose:
            arguments.append("--verbose")
        if o.window_choice is not None:
            arguments += ["--window-choice", o.window_choice.to_json()]
        return arguments

    def command(self) -> list[str]:
        return [sys.executable, "-m", CELL_MODULE, *self.arguments()]

    def _start(self, log: Path, handle: Any, asked: float) -> ChildProcess:
        """The cell's process, in a session and process group of its own, its output
        appended to ``log`` (open as ``handle``), stdin /dev/null, unbuffered; it learns
        when it was asked for (bench.measure.ledger)."""
        env = (os.environ | {"PYTHONUNBUFFERED": "1", ledger.ASKED_AT_VAR: repr(asked)}
               | allocator_environment(self.cell.malloc))
        if self.preloaded:
            assert self.options.preload is not None
            try:
                return self.options.preload.fork_cell(CELL_MODULE, self.arguments(), str(log),
                                                      env)
            except PreloadUnavailable as error:
                handle.write(f"{error}; this cell is a new interpreter\n")
                handle.flush()
        return subprocess.Popen(self.command(), stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)

    def run(self) -> Record:
        """Run to the end, the timeout or ``stop()``; always return a record."""
        o, cell_id = self.options, self.cell.id
        o.run_dir.cell_dir(cell_id).mkdir(parents=True, exist_ok=True)
        log, out = o.run_dir.cell_log(cell_id), o.run_dir.cell_record(cell_id, self.repeat)
        for stale in (out, *o.run_dir.rank_failures(cell_id, self.repeat)):
            stale.unlink(missing_ok=True)
        started = time.perf_counter()
        asked = time.time()  # the cell's ledger starts here (bench.measure.ledger)
        with open(log, "a") as handle:
            how = " (forked from the preload server)" if self.preloaded else ""
            handle.write(f"=== repeat {self.repeat}{how}: {' '.join(self.command())}\n")
            handle.flush()
            self.process = self._start(log, handle, asked)
            if self.stopped:  # stop() came while the process was being started
                signal_group(self.process, signal.SIGTERM)
            returncode, timed_out = self._wait(started)
            exited = time.time()
            # The launcher is gone; a rank it started may not be (stuck in a collective).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        wall = time.perf_counter() - started
        if self.stopped:
            record = self._record(Status.INTERRUPTED, "stopped by SIGINT/SIGTERM while running")
        elif timed_out:
            record = self._record(Status.TIMEOUT, f"no result after {o.timeout_s:g} s "
                                  "(--cell-timeout); its process group was killed")
        elif out.exists():
            record = read_record(out)
            if record.status is Status.FAILED and record.reason != OOM_REASON:
                record.reason = f"{record.reason}\n--- last lines of the log ---\n{log_tail(log)}"
        else:
            record = self._record(Status.FAILED, self._first_failure(returncode, log))
        record.wall_s = record.wall_s or wall
        record.ledger = ledger.close(record.ledger, record.raw, asked, exited, time.time())
        record.preloaded = self.preloaded
        return record

    def _first_failure(self, returncode: int, log: Path) -> str:
        """Why a cell that wrote no record failed: the first rank's own note when one
        left it (rank 0 then stopped itself), else how the process ended."""
        notes = [json.loads(path.read_text())
                 for path in self.options.run_dir.rank_failures(self.cell.id, self.repeat)]
        tail = f"\n--- last lines of the log ---\n{log_tail(log)}"
        if not notes:
            return f"{exit_reason(returncode)} before writing its record{tail}"
        first = min(notes, key=lambda note: note["at"])
        if first["reason"] == OOM_REASON:
            return OOM_REASON
        return (f"{first['reason']} (rank {first['rank']}, the first of {len(notes)} failed "
                f"rank(s); rank 0 then {exit_reason(returncode, oom_hint=False)}, as it stops "
                f"every rank when one fails){tail}")

    def _record(self, status: Status, reason: str) -> Record:
        return Record.new(self.cell, self.repeat, self.options.run_id, status,
                          env_key(self.cell.accelerator), reason)

    def _wait(self, started: float) -> tuple[int, bool]:
        """Poll rather than block, so that a stop request is acted on promptly."""
        assert self.process is not None
        stop_grace_s = 5.0
        while (returncode := self.process.poll()) is None:
            now = time.perf_counter()
            if now - started > self.options.timeout_s:
                kill_group(self.process)
                return self.process.returncode, True
            if self._stop_requested_at is not None and now - self._stop_requested_at > stop_grace_s:
                kill_group(self.process, grace_s=0.5)
            time.sleep(0.1)
        return returncode, False

    def stop(self) -> None:
        """Ask the running cell to stop (SIGTERM to its group); safe in a signal handler.
        A cell that has not gone after a few seconds is killed by ``_wait``."""
        self.stopped = True
        self._stop_requested_at = time.perf_counter()
        if self.process is not None and self.process.poll() is None:
            signal_group(self.process, signal.SIGTERM)
