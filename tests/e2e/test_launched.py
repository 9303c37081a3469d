"""`python -m bench.run` under torchrun: every rank walks the matrix in process and
rank 0 alone writes. Real torchrun, real gloo process groups, on CPU."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from bench.execute.faults import ENV_VAR
from tests.e2e.launches import (
    LAUNCH_TIMEOUT_S,
    TWO_NODE_CELL,
    check_records,
    finish,
    start,
    the_records,
)

FAILING_CELL = "cpu-2x-ddp-32-true-bs16-tensor-adam-fused"  # as tests/e2e/conftest.py sets

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
    ran = [r for r in records if r["cell"]["precision"] == "32-true"][1:]
    check_records(ran, [(r["cell_id"], "ok") for r in ran], num_nodes=1)
    skipped = [r for r in records if r["cell"]["precision"] == "16-mixed"]
    check_records(skipped, [(r["cell_id"], "skipped") for r in skipped], num_nodes=1)
    assert len(ran) == 5 and len(skipped) == 6
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
    env = bench_env | {ENV_VAR: "cpu-3x-ddp-bf16-mixed-bs16-tensor@2=raise"}
    process = start([*TORCHRUN, "--standalone", "--nproc_per_node=3", *CELLS, "--precisions",
                     "bf16-mixed,32-true", "--out", str(out)], env)
    output = finish(process, LAUNCH_TIMEOUT_S)
    assert process.returncode == 1, output[-5000:]  # rank 0 exits 1: a cell failed
    records = the_records(out)
    check_records(records, [("cpu-3x-ddp-bf16-mixed-bs16-tensor", "failed"),
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
