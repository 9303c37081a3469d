"""bench.measure.machine_state: a cell measured while another process loads the CPU
is flagged, in its record and in the report; the cell's own processes are not
"others"."""

from __future__ import annotations

import json
import math
import os
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
from bench.measure.machine_state import Snapshot, cpu_list, machine_state, others

CPU = torch.device("cpu")
SPIN = [sys.executable, "-c", "import time\nend = time.time() + 120\nwhile time.time() < end: pass"]
CORES = len(os.sched_getaffinity(0))  # what machine_state divides by
# A pid no process can have (pid_max is at most 2**22), in a process group of its own:
# an "other" whatever runs the tests.
OTHER = 2**22 + 1


def snapshots(wall_s: float, other_cpu_s: float, steal_jiffies: int = 0
              ) -> tuple[Snapshot, Snapshot]:
    """Before and after ``wall_s`` seconds in which OTHER used ``other_cpu_s`` CPU
    seconds and the hypervisor stole ``steal_jiffies`` of 1000."""
    before = Snapshot(100.0, {OTHER: ("other", 1, OTHER, 5.0)}, (10_000, 40))
    after = Snapshot(100.0 + wall_s, {OTHER: ("other", 1, OTHER, 5.0 + other_cpu_s)},
                     (11_000, 40 + steal_jiffies))
    return before, after


def test_others_under_the_threshold_leave_the_interval_quiet() -> None:
    # 5% of the machine, by hand: 0.05 * CORES CPU seconds over 2 s on CORES CPUs
    state = machine_state(*snapshots(2.0, 0.05 * CORES * 2.0))
    assert state["busy"] is False
    assert state["others_cpu"] == pytest.approx(0.05)
    assert state["steal"] == 0.0 and state["seconds"] == 2.0
    assert state["busiest"] == [f"other (pid {OTHER}): {0.05 * CORES:.0%} of a CPU"]


def test_others_over_the_threshold_flag_the_interval_busy() -> None:
    # 30% of the machine: 0.3 * CORES CPU seconds over 2 s on CORES CPUs
    state = machine_state(*snapshots(2.0, 0.3 * CORES * 2.0))
    assert state["busy"] is True
    assert state["others_cpu"] == pytest.approx(0.3)


def test_steal_over_its_threshold_alone_flags_busy() -> None:
    quiet = machine_state(*snapshots(1.0, 0.0, steal_jiffies=40))  # 4% of 1000 jiffies
    assert quiet["steal"] == pytest.approx(0.04) and quiet["busy"] is False
    assert quiet["others_cpu"] == 0.0 and quiet["busiest"] == []
    stolen = machine_state(*snapshots(1.0, 0.0, steal_jiffies=80))  # 8%
    assert stolen["steal"] == pytest.approx(0.08) and stolen["busy"] is True


@pytest.fixture
def other_process() -> Iterator[subprocess.Popen]:
    """A process outside this one's process group spinning on a CPU, and as many more
    as it takes to load 30% of the usable CPUs, over the busy threshold on any machine
    (on 2 CPUs: that one alone)."""
    spinners = [subprocess.Popen(SPIN, start_new_session=True)
                for _ in range(math.ceil(0.3 * CORES))]
    time.sleep(0.3)  # running before the first snapshot
    yield spinners[0]
    for process in spinners:
        process.kill()
        process.wait()


@pytest.mark.alone  # timings: no other test beside it (tests/scheduling.py)
def test_another_process_spinning_is_named_and_flags_the_interval_busy(
        other_process: subprocess.Popen) -> None:
    before = Snapshot.take(CPU)
    time.sleep(1.0)
    after = Snapshot.take(CPU)
    state = machine_state(before, after)
    assert state["busy"] is True
    spent = {pid: seconds for _, pid, seconds in others(before, after)}
    assert spent[other_process.pid] > 0.5  # of the 1 s: it spins on a whole CPU
    # every other process's CPU seconds over the interval's, on every usable CPU; the
    # record keeps the interval to the millisecond, so the quotient agrees to 0.1%
    assert state["others_cpu"] == pytest.approx(
        sum(spent.values()) / (state["seconds"] * CORES), rel=1e-3, abs=1e-3)
    assert state["before"]["load_1m"] is not None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs")
def test_a_process_pinned_to_other_cpus_is_not_an_other() -> None:
    """A cell pinned to one CPU (taskset -c 0) is not slowed by a process that may only
    run on another: it is left out, and a process allowed on the cell's CPU is not."""
    first, second = sorted(os.sched_getaffinity(0))[:2]
    elsewhere, here = (subprocess.Popen(SPIN, start_new_session=True,
                                        preexec_fn=lambda cpu=cpu: os.sched_setaffinity(0, {cpu}))
                       for cpu in (second, first))
    everywhere = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {first})
        before = Snapshot.take(CPU)
        time.sleep(0.6)
        after = Snapshot.take(CPU)
        spent = {pid: seconds for _, pid, seconds in others(before, after)}
        state = machine_state(before, after)
    finally:
        os.sched_setaffinity(0, everywhere)
        for process in (elsewhere, here):
            process.kill()
            process.wait()
    assert elsewhere.pid not in spent and spent[here.pid] > 0
    assert not any(f"pid {elsewhere.pid}" in line for line in state["busiest"])
    assert state["others_cpu"] == pytest.approx(sum(spent.values()) / state["seconds"],
                                                rel=1e-3, abs=1e-3)  # of one CPU


def test_a_cpu_list_reads_as_the_kernel_writes_it() -> None:
    assert cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert cpu_list("5") == {5} and cpu_list("") == set()


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
