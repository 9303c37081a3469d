"""Cells forked from a preloaded server instead of started as new interpreters.

Importing torch, Lightning, torchvision, torchmetrics and wandb costs a cell about
7 s of a busy core, and reading MNIST a little more. ``PreloadServer`` starts one
multiprocessing forkserver per run that does both once (bench.execute.preload);
each cell of this machine is a process forked from it, which becomes
``python -m bench.cell ...`` with the same arguments: its own session and process
group (the orchestrator's timeout and stop kill the group, as for a subprocess),
its output appended to the cell's log, stdin /dev/null, the orchestrator's
environment, and copy-on-write pages of the server's memory, so nothing one cell
changes is seen by another. CUDA is never initialised in the server.

A cell of several ranks is forked as its rank 0, which forks its other ranks
(bench.execute.spawn) before it does anything else: they share its session and
process group, so the group's kill reaches them, and none imports anything.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import subprocess
from pathlib import Path

from bench.execute.preload import DATA_VAR, WANDB_VAR, run_forked_cell, temporary_environment
from bench.matrix import Cell

PRELOAD_MODULES = ["bench.execute.preload"]


def preloadable(cell: Cell) -> bool:
    """A cell whose every rank is on this machine (the walk does not run others), and
    whose allocator is the server's: jemalloc is preloaded when a process starts."""
    return cell.num_nodes == 1 and cell.malloc != "jemalloc"


class PreloadedProcess:
    """A forked cell, with the part of ``subprocess.Popen`` that isolate.py uses."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self.process = process
        assert process.pid is not None  # started
        self.pid: int = process.pid
        self.returncode: int | None = None  # as Popen's: status, or minus the signal

    def poll(self) -> int | None:
        if self.returncode is None and self.process.exitcode is not None:
            self.returncode = self.process.exitcode
            self.process.close()  # its pipe to the server, now rather than at exit
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.poll() is None:
            self.process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(f"preloaded cell {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


class PreloadUnavailable(RuntimeError):
    """The server cannot fork a cell; the cell is to be a new interpreter."""


class PreloadServer:
    """One forkserver per run, preloaded for ``data_dir`` (--data-dir; None: the
    environment's), and wandb unless the run logs nothing to it (``wandb`` False).
    Started on first use; ``close()`` ends it."""

    def __init__(self, data_dir: str | None, wandb: bool = True) -> None:
        self.data_dir = data_dir
        self.wandb = wandb
        self.context = multiprocessing.get_context("forkserver")
        self.started = False
        self.broken: str | None = None  # why the server forks no more cells

    def start(self) -> None:
        """Start the server now (its imports then overlap whatever comes next)."""
        if self.started:
            return
        self.context.set_forkserver_preload(PRELOAD_MODULES)
        # The server learns from its environment, the one place a forkserver's preload
        # can be told anything: its data directory, and where this project is (Python
        # 3.11's forkserver does not pass sys.path on, and would skip the preload it
        # cannot import without a word). The orchestrator's own environment is kept.
        here = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        with temporary_environment({DATA_VAR: self.data_dir or "", "PYTHONPATH": path,
                                    WANDB_VAR: "1" if self.wandb else "0"}):
            multiprocessing.forkserver.ensure_running()
        self.started = True

    def fork_cell(self, module: str, argv: list[str], log: str,
                  env: dict[str, str]) -> PreloadedProcess:
        """``python -m module argv`` as a child of the server, output appended to log.
        Raises PreloadUnavailable, and forks no more, when the server is gone (it
        stops itself when its preload initialised CUDA)."""
        if self.broken:
            raise PreloadUnavailable(self.broken)
        self.start()
        process = self.context.Process(target=run_forked_cell, args=(module, argv, log, env),
                                       name=f"{module} (preloaded)")
        try:
            process.start()
        except (OSError, EOFError) as error:
            self.broken = f"the preload server is gone ({type(error).__name__}: {error})"
            raise PreloadUnavailable(self.broken) from error
        return PreloadedProcess(process)

    def close(self) -> None:
        """End the server now (it would end with the orchestrator anyway), even in the
        middle of its preload: a run that stops at an input error does not wait for it.
        Cells it forked are not its to end (they have their own sessions)."""
        if self.started:
            server = multiprocessing.forkserver._forkserver  # type: ignore[attr-defined]
            with contextlib.suppress(Exception):
                if server._forkserver_pid is not None:
                    os.kill(server._forkserver_pid, signal.SIGKILL)
                server._stop()
            self.started = False
