"""bench.measure.machine_state: a cell measured while another process loads the CPU
is flagged, in its record and in the report; the cell's own processes are not
"others"."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.analyze.report import write_report
from bench.matrix import Cell
from bench.measure.machine_state import Snapshot, machine_state, others

CPU = torch.device("cpu")
SPIN = [sys.executable, "-c", "import time\nend = time.time() + 120\nwhile time.time() < end: pass"]


@pytest.fixture
def other_process() -> Iterator[subprocess.Popen]:
    """A process outside this one's process group spinning on a CPU."""
    process = subprocess.Popen(SPIN, start_new_session=True)
    time.sleep(0.3)  # running before the first snapshot
    yield process
    process.kill()
    process.wait()


def test_another_process_spinning_is_named_and_flags_the_interval_busy(
        other_process: subprocess.Popen) -> None:
    before = Snapshot.take(CPU)
    time.sleep(1.0)
    after = Snapshot.take(CPU)
    state = machine_state(before, after)
    assert state["busy"] is True
    assert state["others_cpu"] > 0.3  # one spinning process of 2 CPUs: about 0.5
    spent = {pid: seconds for _, pid, seconds in others(before, after)}
    assert spent[other_process.pid] > 0.5  # of the 1 s: it spins on a whole CPU
    assert state["before"]["load_1m"] is not None


def test_the_cells_own_processes_are_not_others() -> None:
    """A child in this process group (as a cell's ranks and loader workers are)."""
    child = subprocess.Popen(SPIN)
    try:
        before = Snapshot.take(CPU)
        time.sleep(0.6)
        after = Snapshot.take(CPU)
    finally:
        child.kill()
        child.wait()
    assert child.pid not in {pid for _, pid, _ in others(before, after)}


@pytest.mark.slow
def test_a_cell_measured_beside_a_busy_process_is_flagged_in_record_and_report(
        execute_cell: Any, tmp_path: Path, other_process: subprocess.Popen) -> None:
    cell = Cell(strategy="raw", batch_size=16, loader="tensor", optimizer_impl="fused",
                steps=2, warmup_steps=1, warmup="fixed")
    record = execute_cell(cell, tmp_path)
    assert record["status"] == "ok", record["reason"]
    machine = record["machine"]
    assert machine["busy"] is True and machine["others_cpu"] > 0.2, machine
    assert any(f"pid {other_process.pid}" in line for line in machine["busiest"])

    (tmp_path / "records.jsonl").write_text(json.dumps(record, default=str) + "\n")
    terminal = write_report(tmp_path)
    assert ", busy" in terminal  # the status column: "ok, busy" (or "ok, unstable, busy")
    assert f"WARNING busy machine: {cell.id} repeat 0" in terminal
    assert f"busy machine: {cell.id} repeat 0" in (tmp_path / "report.md").read_text()
