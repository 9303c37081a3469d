"""bench.orchestrate.preload for real: one preload server (real imports, real MNIST),
children forked from it. What a child finds, and that a stop in its first moment
still ends it. The faults of real cells through the server (raise, SIGKILL, OOM, a
hang's timeout, a SIGINT's stop) are in test_orchestrator.py, whose bench.run
preloads by default."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.execute.faults import ENV_VAR
from bench.matrix import Cell
from bench.orchestrate.isolate import CellOptions, CellProcess
from bench.orchestrate.preload import PreloadServer
from bench.record import RunDir, Status

pytestmark = pytest.mark.slow

PROBE = '''
import gc, json, multiprocessing, os, sys
import torch
from bench.execute import preload
from mnist_core import data

print("to the log")
json.dump({
    "own_session": os.getsid(0) == os.getpid() == os.getpgid(0),
    "argv": sys.argv[1:], "orig_argv": sys.orig_argv[1:3],
    "marker": os.environ.get("PRELOAD_TEST_MARKER"),
    "data_var": preload.DATA_VAR in os.environ,
    "start_method": multiprocessing.get_start_method(),
    "parent": multiprocessing.parent_process(),
    "process_name": multiprocessing.current_process().name,
    "imported_before": preload.loaded, "wandb_imported": "wandb" in sys.modules,
    "mnist_splits": sorted(train for _, train in data.PRELOADED),
    "cuda_initialized": torch.cuda._initialized, "cuda_bad_fork": torch.cuda._is_in_bad_fork(),
    "stdin": sys.stdin.read(),
    # the collector is on again, and ignores what the server made (gc.freeze there)
    "gc_enabled": gc.isenabled(), "frozen_by_the_server": gc.get_freeze_count() > 100_000,
}, open(sys.argv[1], "w"))
sys.exit(3)
'''


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[PreloadServer]:
    preload = PreloadServer(str(data_dir), wandb=False)  # as for a run with --wandb disabled
    yield preload
    preload.close()


def test_a_forked_child_is_like_a_new_interpreter_with_everything_loaded(
        server: PreloadServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "preload_probe.py").write_text(textwrap.dedent(PROBE))
    monkeypatch.syspath_prepend(str(tmp_path))  # the child takes the parent's sys.path
    out, log = tmp_path / "probe.json", tmp_path / "log.txt"
    env = dict(os.environ) | {"PRELOAD_TEST_MARKER": "the orchestrator's environment"}
    child = server.fork_cell("preload_probe", [str(out)], str(log), env)
    assert child.wait(timeout=120) == 3  # the module's exit status
    assert child.poll() == child.returncode == 3
    seen: dict[str, Any] = json.loads(out.read_text())
    assert seen == {
        "own_session": True, "argv": [str(out)], "orig_argv": ["-m", "preload_probe"],
        "marker": "the orchestrator's environment", "data_var": False,
        "start_method": "fork", "parent": None, "process_name": "MainProcess",
        "imported_before": {"modules": ["torch", "torchvision", "lightning",
                                        "lightning.pytorch.loggers", "torchmetrics",
                                        "bench.execute.lifecycle",
                                        "bench.execute.backends.lightning",
                                        "bench.execute.backends.raw", "mnist_core.data"],
                            "mnist": True, "error": None},
        "wandb_imported": False,
        "mnist_splits": [False, True],
        "cuda_initialized": False, "cuda_bad_fork": False, "stdin": "",
        "gc_enabled": True, "frozen_by_the_server": True,
    }
    assert log.read_text() == "to the log\n"


def test_a_stop_in_the_first_moment_still_ends_the_cell(
        server: PreloadServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stop() may come before the child has made its process group (os.setsid); it
    must still end the cell, as an interrupted record with the log."""
    cell = Cell(strategy="single", steps=2, warmup_steps=1, loader="tensor", batch_size=16)
    monkeypatch.setenv(ENV_VAR, f"{cell.id}=hang")
    server.start()
    options = CellOptions(RunDir(tmp_path), "run-1", None, "disabled", False, 60.0,
                          preload=server)
    process = CellProcess(cell, 0, options)
    real_start = process._start

    def start_then_stop(*args: Any) -> Any:
        child = real_start(*args)
        process.stop()
        return child

    monkeypatch.setattr(process, "_start", start_then_stop)
    started = time.perf_counter()
    record = process.run()
    assert record.status is Status.INTERRUPTED
    assert record.preloaded is True
    assert time.perf_counter() - started < 4  # not after the 5 s grace, nor the timeout
    assert "(forked from the preload server): " + sys.executable in \
        RunDir(tmp_path).cell_log(cell.id).read_text()
