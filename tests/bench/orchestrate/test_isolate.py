"""bench.orchestrate.isolate: how a child's end is described, and the command line
that describes exactly one cell."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from bench.matrix import Cell
from bench.orchestrate.isolate import CellOptions, CellProcess, exit_reason, log_tail
from bench.orchestrate.preload import PreloadServer, PreloadUnavailable
from bench.record import RunDir


def test_exit_reasons() -> None:
    assert exit_reason(3) == "exited with status 3"
    assert exit_reason(-signal.SIGKILL).startswith("killed by SIGKILL (the kernel's out-of-mem")
    assert exit_reason(-signal.SIGKILL, oom_hint=False) == "killed by SIGKILL"
    assert exit_reason(-signal.SIGSEGV) == "killed by SIGSEGV"


def test_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, 3) == "line 97\nline 98\nline 99\n"
    assert log_tail(tmp_path / "missing.txt") == ""


def test_the_command_line_carries_the_whole_cell(tmp_path: Path) -> None:
    cell = Cell(strategy="ddp", devices=2, precision="bf16-mixed", steps=7)
    options = CellOptions(RunDir(tmp_path), "run-1", "/data", "offline", True, 60.0)
    command = CellProcess(cell, 2, options).command()
    assert command[1:3] == ["-m", "bench.cell"]
    assert Cell.from_dict(json.loads(command[command.index("--cell") + 1])) == cell
    for flag, value in (("--repeat", "2"), ("--run-dir", str(tmp_path)), ("--run-id", "run-1"),
                        ("--data-dir", "/data"), ("--wandb", "offline")):
        assert command[command.index(flag) + 1] == value
    assert "--verbose" in command


def test_every_cell_of_this_machine_is_forked_from_the_preload_server(tmp_path: Path) -> None:
    server = PreloadServer(None)  # never started: nothing here forks
    with_server = CellOptions(RunDir(tmp_path), "run-1", None, "disabled", False, 60.0,
                              preload=server)
    without = CellOptions(RunDir(tmp_path), "run-1", None, "disabled", False, 60.0)
    single, engine = Cell(strategy="single"), Cell(strategy="raw")
    ddp, engine_ddp = Cell(strategy="ddp", devices=2), Cell(strategy="engine-ddp", devices=2)
    two_nodes = Cell(strategy="ddp", num_nodes=2)  # run only under a launcher, never forked
    # jemalloc is preloaded as a process starts: never a fork of the server's glibc
    jemalloc = Cell(strategy="engine-ddp", devices=2, malloc="jemalloc")
    cells = (single, engine, ddp, engine_ddp, two_nodes, jemalloc)
    assert [CellProcess(c, 0, with_server).preloaded for c in cells] \
        == [True, True, True, True, False, False]
    assert not CellProcess(single, 0, without).preloaded
    assert not server.started
    # A forked cell runs the same arguments as the subprocess would.
    process = CellProcess(single, 1, with_server)
    assert process.command() == [sys.executable, "-m", "bench.cell", *process.arguments()]


def test_a_broken_preload_server_forks_nothing_and_its_cells_start_as_before(
        tmp_path: Path) -> None:
    server = PreloadServer(None)
    server.broken = "the preload server is gone (EOFError)"
    options = CellOptions(RunDir(tmp_path), "run-1", None, "disabled", False, 60.0,
                              preload=server)
    assert not CellProcess(Cell(strategy="single"), 0, options).preloaded
    with pytest.raises(PreloadUnavailable, match="the preload server is gone"):
        server.fork_cell("bench.cell", [], str(tmp_path / "log"), {})
    assert not server.started
