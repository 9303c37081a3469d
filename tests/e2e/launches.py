"""Starting and waiting for `python -m bench.run` launches (torchrun, sbatch) in the
end-to-end tests, and the two-node cell they share."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
               "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "MNIST_BENCH_INJECT_FAULT")
# One cell on 2 nodes x 1 rank, and an fp16 one that is skipped on CPU: exactly these
# steps (fixed warm-up and window), so that two launches of it train the same.
TWO_NODE_CELL = "cpu-1x-2n-ddp-32-true-bs16-tensor"
TWO_NODE_ARGS = ["--matrix", "smoke", "--accelerators", "cpu", "--strategies", "ddp",
                 "--devices", "1", "--num-nodes", "2", "--precisions", "32-true,16-mixed",
                 "--batch-sizes", "16", "--steps", "3", "--warmup-steps", "1",
                 "--warmup", "fixed", "--window", "fixed", "--wandb", "disabled"]
LAUNCH_TIMEOUT_S = 420  # a hang fails the test rather than blocking the suite


def launch_env(data_dir: Path) -> dict[str, str]:
    """Environment for `python -m bench.run` launches: the shared data, no wandb,
    unbuffered output, and no launcher or fault-injection variables leaking in."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    return env | {"MNIST_DATA_DIR": str(data_dir), "WANDB_MODE": "disabled",
                  "PYTHONUNBUFFERED": "1"}


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def finish(process: subprocess.Popen[str], timeout: float) -> str:
    """Wait; on timeout kill the launcher's whole process group (its ranks too) and fail."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{process.args[:4]} did not finish within {timeout} s:\n{output[-5000:]}")
    return output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def the_records(out: Path) -> list[dict[str, Any]]:
    run_dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(run_dirs) == 1, f"one run directory expected, found {run_dirs}"
    text = (run_dirs[0] / "records.jsonl").read_text()
    assert text.endswith("\n")
    assert (run_dirs[0] / "report.md").is_file()
    return [json.loads(line) for line in text.splitlines()]


def check_records(records: list[dict[str, Any]], expected: list[tuple[str, str]],
                  num_nodes: int, world_size: int = 2) -> None:
    assert [(r["cell_id"], r["status"]) for r in records] == expected
    for record in records:
        if record["status"] == "skipped":
            assert "fp16 AMP is not supported on CPU" in record["reason"]
            continue
        if record["status"] == "failed":  # a fault injected into one rank, by the test
            assert "fault injected into" in record["reason"]
            continue
        assert record["effective"]["world_size"] == world_size
        assert record["effective"]["global_batch_size"] == record["cell"]["batch_size"] * \
            world_size
        assert record["effective"]["strategy"] in ("DDPStrategy",) or \
            record["effective"]["strategy"].startswith("engine: ")
        assert record["effective"]["precision"] == record["cell"]["precision"]
        assert record["cell"]["num_nodes"] == num_nodes
        assert record["cell"]["devices"] * record["cell"]["num_nodes"] == world_size
        assert len(record["raw"]["ranks"]) == world_size  # every rank measured, rank 0 wrote
        # every rank measured the window's steps: a time window's count agreed by all
        steps = record["raw"]["window"]["steps"]
        assert [len(rank["step_s"]) for rank in record["raw"]["ranks"]] == [steps] * world_size
        assert record["metrics"]["samples_per_s"] > 0
