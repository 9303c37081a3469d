"""`python -m bench.run` under torchrun: every rank walks the matrix in process and
rank 0 alone writes. Real torchrun, real gloo process groups, on CPU."""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.execute.faults import ENV_VAR
from tests.e2e.conftest import ALONE_CELL, FAILING_CELL
from tests.e2e.launches import (
    LAUNCH_TIMEOUT_S,
    TWO_NODE_CELL,
    check_records,
    finish,
    start,
    the_records,
)

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# DDP cells that run, and one that is skipped here (fp16 AMP on CPU): every one must
# be recorded exactly once, by rank 0.
CELLS = ["-m", "bench.run", "--matrix", "smoke", "--accelerators", "cpu", "--strategies", "ddp",
         "--batch-sizes", "16", "--steps", "3", "--warmup-steps", "1", "--wandb", "disabled"]


@pytest.mark.slow
def test_torchrun_two_processes_walk_every_cell_in_step(engine_walk: dict[str, Any]) -> None:
    """The shared 2-rank walk (tests/e2e/conftest.py): its first cell fails on rank 1
    only, and every later cell still runs on both ranks in step; rank 0 alone writes."""
    records, output = engine_walk["records"], engine_walk["output"]
    first = records[0]
    assert (first["cell_id"], first["status"]) == (FAILING_CELL, "failed")
    assert first["reason"].startswith("rank 1 failed: RuntimeError: fault injected")
    ran = [r for r in records if r["cell"]["precision"] == "32-true" and
           r["cell"]["devices"] == 2][1:]
    check_records(ran, [(r["cell_id"], "ok") for r in ran], num_nodes=1)
    skipped = [r for r in records if r["cell"]["precision"] == "16-mixed"]
    check_records(skipped, [(r["cell_id"], "skipped") for r in skipped], num_nodes=1)
    assert len(ran) == 5 and len(skipped) == 6 and len(records) == 13
    # rank 0 alone reports: one header, one progress line per cell
    assert output.count("cell run(s) on 2 processes") == 1
    for record in records:
        assert output.count(f"] {record['cell_id']}  {record['status']}") == 1


@pytest.mark.slow
def test_torchrun_three_processes_a_failing_rank_fails_the_cell_on_all(
        tmp_path: Path, bench_env: dict[str, str]) -> None:
    """Rank 2 of 3 fails a cell; every rank records the failure and the next cell runs
    on all three in step (no stray collective pairs with the next cell's)."""
    out = tmp_path / "out"
    env = bench_env | {ENV_VAR: "cpu-3x-ddp-32-true-bs8-tensor@2=raise"}
    process = start([*TORCHRUN, "--standalone", "--nproc_per_node=3", *CELLS, "--precisions",
                     "32-true", "--batch-sizes", "8,16", "--out", str(out)], env)
    output = finish(process, LAUNCH_TIMEOUT_S)
    assert process.returncode == 1, output[-5000:]  # rank 0 exits 1: a cell failed
    records = the_records(out)
    check_records(records, [("cpu-3x-ddp-32-true-bs8-tensor", "failed"),
                            ("cpu-3x-ddp-32-true-bs16-tensor", "ok")], num_nodes=1,
                  world_size=3)
    assert records[0]["reason"].startswith("rank 2 failed: RuntimeError: fault injected")


@pytest.mark.slow
def test_torchrun_two_nodes(torchrun_two_nodes: dict[str, Any]) -> None:
    """Two launches on this machine play two nodes of one process each."""
    outs, outputs = torchrun_two_nodes["outs"], torchrun_two_nodes["outputs"]
    for status, output in zip(torchrun_two_nodes["returncodes"], outputs, strict=True):
        assert status == 0, output[-5000:]
    check_records(the_records(outs[0]), [(TWO_NODE_CELL, "ok"),
                                         ("cpu-1x-2n-ddp-16-mixed-bs16-tensor", "skipped")],
                  num_nodes=2)
    # Node 1 (rank 1) writes nothing of its own: rank 0 made the one run directory.
    assert not outs[1].exists()
    assert "cell run(s) on 2 processes" in outputs[0]
    assert "cell run(s)" not in outputs[1] and "] cpu-1x-2n-ddp" not in outputs[1]


@pytest.mark.slow
def test_torchrun_a_one_device_cell_runs_on_rank_0_alone(engine_walk: dict[str, Any]) -> None:
    """The shared walk's last cell needs one device: rank 0 runs it alone, in a child
    process outside the launch (all the machine's cores, as in a local walk), while rank
    1 waits; it is the 2-rank cells' scaling reference in the report."""
    alone = engine_walk["records"][-1]
    assert (alone["cell_id"], alone["status"]) == (ALONE_CELL, "ok"), alone["reason"]
    assert alone["effective"]["world_size"] == 1 and len(alone["raw"]["ranks"]) == 1
    assert alone["effective"]["num_threads"] == len(os.sched_getaffinity(0))
    assert alone["ledger"]["parts"]["start"] is not None  # a process of its own
    rows = csv.DictReader((engine_walk["run_dir"] / "summary.csv").read_text().splitlines())
    ddp = {row["cell_id"]: row for row in rows}[FAILING_CELL.replace("-ddp-", "-engine-ddp-")]
    assert ddp["scaling_ref_cell_id"] == ALONE_CELL and float(ddp["scaling_eff"]) > 0
    assert engine_walk["output"].count(f"] {ALONE_CELL}  ok") == 1


LATE_CELL = "cpu-2x-ddp-32-true-bs8-tensor"
# Rank 1 of the first cell comes to its first collective late, past --cell-timeout.
LATE_MATRIX = """
accelerator = ["cpu"]
strategy = ["ddp"]
devices = [2]
precision = ["32-true"]
batch_size = [8, 16]
loader = ["tensor"]
steps = 3
warmup_steps = 1
"""
CELL_TIMEOUT_S = 15


@pytest.mark.slow
def test_torchrun_a_collective_timeout_ends_the_walk_with_its_record(
        tmp_path: Path, bench_env: dict[str, str]) -> None:
    """A rank late past --cell-timeout leaves the other waiting in a collective: rank 0
    records the cell as failed, naming the timeout, writes the report and exits 1, and
    torchrun stops rank 1 at once; the cell after it has no record (--resume runs it)."""
    out, matrix = tmp_path / "out", tmp_path / "late.toml"
    matrix.write_text(LATE_MATRIX)
    env = bench_env | {ENV_VAR: f"{LATE_CELL}@1=sleep:600"}
    started = time.perf_counter()
    process = start([*TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "bench.run",
                     "--matrix", str(matrix), "--wandb", "disabled", "--out", str(out),
                     "--cell-timeout", str(CELL_TIMEOUT_S)], env)
    output = finish(process, LAUNCH_TIMEOUT_S)
    took = time.perf_counter() - started
    assert process.returncode == 1, output[-5000:]
    assert took < 200, f"the walk took {took:.0f} s: rank 1's sleep was waited out"
    [record] = the_records(out)  # and a report
    assert (record["cell_id"], record["status"]) == (LATE_CELL, "failed")
    assert record["reason"] == (
        f"timed out: no result after {CELL_TIMEOUT_S} s (--cell-timeout) on rank 0 (a cell "
        "that slow, or a collective waiting for a late or stuck rank); the process group "
        "cannot be trusted after that, so the walk ended here: 1 later cell run(s) not run "
        "(--resume RUN_DIR runs them)")
    assert f"error: {LATE_CELL} (repeat 0) timed out" in output
