"""What a preloaded cell process finds ready, and how it starts.

The preload server (bench.orchestrate.preload) imports this module once per run:
torch, Lightning, torchvision, torchmetrics, wandb (when installed) and the cell's
own modules are imported, and MNIST's raw tensors read, before any cell; each
single-process cell is then a process forked from the server, which
``run_forked_cell`` turns into what ``python -m bench.cell ...`` would have been.

Two things the server must never do, because a forked child inherits them broken:
- initialise CUDA (``torch.cuda.is_initialized()`` stays False; any
  ``is_available`` an import makes goes through NVML, which survives a fork);
- run a parallel torch kernel: GNU OpenMP's thread pool does not survive a fork,
  and a child that computes on several threads then hangs. The MNIST files are
  therefore read and normalised with numpy (mnist_core.data.preload_tensors), not torch.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import multiprocessing
import multiprocessing.process
import os
import runpy
import sys
import traceback
from collections.abc import Iterator

# The server's data directory: --data-dir as given to bench.run ("" for none).
DATA_VAR = "MNIST_BENCH_PRELOAD_DATA"
# "0" when the run's cells log nothing to wandb: the server leaves it unimported.
WANDB_VAR = "MNIST_BENCH_PRELOAD_WANDB"
LIBRARIES = ("torch", "torchvision", "lightning", "lightning.pytorch.loggers", "torchmetrics")
OPTIONAL = ("wandb",)
CELL_MODULES = ("bench.execute.lifecycle", "bench.execute.backends.lightning",
                "bench.execute.backends.raw", "mnist_core.data")

# What the server loaded (read by the tests and the cell's record of itself).
loaded: dict[str, object] = {"modules": [], "mnist": False, "error": None}
_forked = False  # this process is a cell forked from the server (run_forked_cell)


def forked_from_preload() -> bool:
    """True in a cell forked from the preload server: its other ranks can be forks of
    it (bench.execute.spawn), as nothing in it has run a thread or a kernel yet."""
    return _forked


def warm(data_dir: str | None, wandb: bool = True) -> None:
    """Import everything a cell imports and read MNIST once, in the server. A failure
    is remembered and printed, never raised: a cell then imports and reads itself."""
    # Python's advice for a process that forks without exec: no collection while the
    # preload allocates (no freed holes in its pages), then every object it made frozen
    # out of the collector, so that a child's collections never write to (and copy) the
    # server's pages; the child turns collection back on (run_forked_cell).
    gc.disable()
    # An is_available() in an import goes through NVML here, which survives a fork.
    with temporary_environment({"PYTORCH_NVML_BASED_CUDA_CHECK": "1"}):
        try:
            for name in LIBRARIES + CELL_MODULES:
                importlib.import_module(name)
                loaded["modules"].append(name)  # type: ignore[union-attr]
            for name in OPTIONAL if wandb else ():
                with contextlib.suppress(ImportError):
                    importlib.import_module(name)
                    loaded["modules"].append(name)  # type: ignore[union-attr]
            from mnist_core.data import preload_tensors

            loaded["mnist"] = preload_tensors(data_dir)
        except Exception as error:  # the server goes on; its cells are just not warm
            loaded["error"] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
    import torch

    if torch.cuda.is_initialized():  # a forked child could not use CUDA: serve no cell
        raise SystemExit("the preload server initialised CUDA; cells run as subprocesses")
    gc.freeze()


@contextlib.contextmanager
def temporary_environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the block, then what was there before."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_forked_cell(module: str, argv: list[str], log: str, env: dict[str, str]) -> None:
    """In a child of the server: become ``python -m <module> <argv>`` with stdout and
    stderr appended to ``log``, in a process group and session of its own. Exits with
    the module's exit status (multiprocessing turns the SystemExit into it)."""
    global _forked
    _forked = True
    os.setsid()  # first: the orchestrator kills the cell's group, as for a subprocess
    gc.enable()  # off in the server while it preloaded (warm)
    _redirect_output(log)
    os.environ.clear()
    os.environ.update(env)  # the orchestrator's, now: not the server's of the start
    _look_like_a_main_process()
    if loaded["error"] or not loaded["modules"]:
        print(f"warning: the preload server did not preload ({loaded['error'] or 'no import'});"
              " this cell imports and reads MNIST itself", file=sys.stderr)
    sys.orig_argv = [sys.executable, "-m", module, *argv]
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends a child with os._exit
        sys.stdout.flush()
        sys.stderr.flush()


def _redirect_output(log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):  # PYTHONUNBUFFERED, as the subprocess has
        stream.reconfigure(line_buffering=True, write_through=True)  # type: ignore[union-attr]


def _look_like_a_main_process() -> None:
    """multiprocessing made this process its child: undo what the cell's code could
    see. The default start method is fork again (multiprocessing forces forkserver
    in its children; DataLoader workers would go through the server), there is no
    parent process, and the process is the main one (a daemonic child may not start
    DataLoader workers)."""
    multiprocessing.set_start_method(None, force=True)  # type: ignore[arg-type]
    multiprocessing.process._parent_process = None  # type: ignore[attr-defined]
    this = multiprocessing.current_process()
    this._name, this._identity, this._parent_pid = "MainProcess", (), None  # type: ignore


if DATA_VAR in os.environ:  # imported by the server as its preload: warm it
    warm(os.environ[DATA_VAR] or None, os.environ.get(WANDB_VAR) != "0")
