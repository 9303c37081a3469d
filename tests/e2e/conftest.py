"""One 2-rank torchrun walk shared by the end-to-end tests (one start-up for all): the
engine controls of tests/e2e/test_validity.py's DDP cell, and, before them, a Lightning
ddp cell whose rank 1 fails on purpose, and fp16 cells that are skipped on CPU; last, a
one-device cell that rank 0 runs alone, the 2-rank cells' scaling reference. And one
two-node torchrun launch on loopback, which tests/e2e/test_launched.py checks and
tests/e2e/test_slurm.py compares its sbatch run with."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.execute.faults import ENV_VAR
from tests.e2e.launches import LAUNCH_TIMEOUT_S, TWO_NODE_ARGS, finish, free_port, launch_env, start

WALK_STRATEGIES = ["ddp", "engine-ddp", "engine-fsdp", "engine-deepspeed_stage_1",
                   "engine-deepspeed_stage_2", "engine-deepspeed_stage_3"]
FAILING_CELL = "cpu-2x-ddp-32-true-bs16-tensor-malloc-retain-adam-fused"  # rank 1 raises
ALONE_CELL = "cpu-1x-single-32-true-bs16-tensor-malloc-retain-adam-fused"
# The smoke preset's cells at batch 16, 2 warm-up steps and exactly 8 measured (as many
# steps as the Lightning ddp cell they match), fused Adam; then the one-device cell. At
# malloc retain, as docs/scaling.md runs sharded engines on a CPU: glibc's default maps
# their big per-step buffers afresh (page faults): 187 CPU-s for the walk against 132
# at retain, the difference none of what these tests check.
WALK_MATRIX = f"""
accelerator = ["cpu"]
batch_size = [16]
loader = ["tensor"]
optimizer_impl = ["fused"]
malloc = ["retain"]
steps = 8
warmup_steps = 2
warmup = "fixed"
window = "fixed"
[[blocks]]
strategy = {WALK_STRATEGIES}
devices = [2]
precision = ["32-true", "16-mixed"]
[[blocks]]
strategy = ["single"]
devices = [1]
precision = ["32-true"]
"""
WALK_TIMEOUT_S = 900
@pytest.fixture(scope="session")
def torchrun_two_nodes(data_dir: Path, tmp_path_factory: pytest.TempPathFactory
                       ) -> dict[str, Any]:
    """Two torchrun launches on this machine playing two nodes of one process each, on
    127.0.0.1: each node's results root, output and exit status."""
    port = free_port()
    base = tmp_path_factory.mktemp("two-nodes")
    outs = [base / f"out-node{rank}" for rank in (0, 1)]
    launches = [start([sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                       "--nproc_per_node=1", f"--node_rank={rank}", "--master_addr=127.0.0.1",
                       f"--master_port={port}", "-m", "bench.run", *TWO_NODE_ARGS,
                       "--out", str(outs[rank])], launch_env(data_dir))
                for rank in (0, 1)]
    try:
        outputs = [finish(launch, LAUNCH_TIMEOUT_S) for launch in launches]
    finally:
        for launch in launches:
            if launch.poll() is None:
                os.killpg(launch.pid, signal.SIGKILL)
                launch.wait()
    return {"outs": outs, "outputs": outputs,
            "returncodes": [launch.returncode for launch in launches]}


@pytest.fixture(scope="session")
def engine_walk(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``torchrun --nproc_per_node=2 -m bench.run``: the records, by cell id and by
    strategy (ok cells only), and what the launch printed."""
    walk = tmp_path_factory.mktemp("walk")
    out, matrix = walk / "out", walk / "walk.toml"
    matrix.write_text(WALK_MATRIX)
    process = start([sys.executable, "-m", "torch.distributed.run", "--standalone",
                     "--nproc_per_node=2", "-m", "bench.run", "--matrix", str(matrix),
                     "--wandb", "disabled", "--out", str(out)],
                    launch_env(data_dir) | {ENV_VAR: f"{FAILING_CELL}@1=raise"})
    output = finish(process, WALK_TIMEOUT_S)
    # FAILING_CELL fails: rank 0 exits 1, and so does torchrun (after the whole walk).
    assert process.returncode == 1, output[-5000:]
    assert "cell run(s) did not finish: 1 failed" in output
    [run_dir] = list(out.iterdir())
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    return {"records": records, "output": output, "run_dir": run_dir,
            "by_strategy": {r["cell"]["strategy"]: r for r in records
                            if r["status"] == "ok" and r["cell"]["devices"] == 2}}
