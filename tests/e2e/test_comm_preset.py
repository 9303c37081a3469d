"""The comm preset for real: `python -m bench.run --matrix comm` on 1 and 2 gloo ranks,
each comm cell forked and its ranks spawned as any cell's, its collectives timed, its
records and report written; and the DDP cells of the check beside them, at a few
steps, with the buckets their reducers made. One run shared by every test here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import record as rec
from bench.execute.backends.engines import BARE_ALLREDUCES
from bench.metrics import COMM_OPS

pytestmark = pytest.mark.slow

GRADS = 157_629_512  # the model's fp32 gradients, bytes
COMM_CELLS = ("cpu-1x-ddp-32-true-comm", "cpu-2x-ddp-32-true-comm")
DDP_CELLS = ("cpu-2x-engine-ddp-32-true-bs64-tensor",
             "cpu-2x-engine-ddp_one_bucket-32-true-bs64-tensor",
             "cpu-2x-engine-ddp_no_sync-32-true-bs64-tensor",
             "cpu-2x-engine-ddp_alternate-32-true-bs64-tensor")


@pytest.fixture(scope="module")
def comm_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """fp32 only: 2 timed iterations per (op, size) after 1; the DDP cells (the preset's
    batch 64: a batch size given here would narrow the comm cells away) 1 warm-up step
    and 2 measured (DDP rebuilds its buckets at the second; the alternate cell measures
    one step of each kind)."""
    out = tmp_path_factory.mktemp("results")
    command = [sys.executable, "-m", "bench.run", "--matrix", "comm", "--precisions",
               "32-true", "--steps", "2", "--warmup-steps", "1",
               "--warmup", "fixed", "--window", "fixed", "--wandb", "disabled",
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = out.iterdir()
    return {"dir": run_dir, "stdout": done.stdout,
            "records": {r["cell_id"]: r for r in rec.read_records(run_dir / "records.jsonl")}}


def test_the_run_has_exactly_its_comm_and_ddp_cells_all_ok(comm_run: dict) -> None:
    records = comm_run["records"]
    assert set(records) == {*COMM_CELLS, *DDP_CELLS}
    for record in records.values():
        rec.validate(record)
        assert record["status"] == "ok", record["reason"]


@pytest.mark.parametrize(("cell_id", "world"), [(COMM_CELLS[0], 1), (COMM_CELLS[1], 2)])
def test_a_comm_cell_times_every_op_at_the_models_sizes(comm_run: dict, cell_id: str,
                                                        world: int) -> None:
    record = comm_run["records"][cell_id]
    rows = record["raw"]["comm"]
    assert record["effective"]["comm_backend"] == "gloo"
    assert record["effective"]["world_size"] == world
    assert {r["op"] for r in rows} == set(COMM_OPS)
    assert len(rows) == (28 if world == 1 else 31)  # tests/bench/measure/test_collectives
    for row in rows:
        assert (row["world_size"], row["nodes"], row["dtype"]) == (world, 1, "float32")
        assert len(row["time_s"]) == 2 and min(row["time_s"]) > 0
    grads = {r["op"]: r for r in rows if r["label"] == "grads"}
    assert {op: r["bytes"] for op, r in grads.items()} == dict.fromkeys(COMM_OPS, GRADS)
    metrics = record["metrics"]
    assert metrics["allreduce_ms"] > 0 and metrics["allreduce_algbw_gbps"] > 0
    # busbw: 0 at one rank; 2(n-1)/n = 1 x algbw at two
    assert metrics["allreduce_busbw_gbps"] == (
        0.0 if world == 1 else pytest.approx(metrics["allreduce_algbw_gbps"]))


def test_the_ddp_cells_log_their_buckets(comm_run: dict) -> None:
    """One bucket holds every gradient; DDP's default rebuilds into several, of all the
    gradients' bytes together."""
    records = comm_run["records"]
    one = records["cpu-2x-engine-ddp_one_bucket-32-true-bs64-tensor"]["effective"]
    assert (one["ddp_comm"], one["ddp_bucket_bytes"]) == ("one-bucket", [GRADS])
    default = records["cpu-2x-engine-ddp-32-true-bs64-tensor"]["effective"]
    assert default["ddp_comm"] == "buckets" and len(default["ddp_bucket_bytes"]) > 1
    assert sum(default["ddp_bucket_bytes"]) == GRADS
    no_sync = records["cpu-2x-engine-ddp_no_sync-32-true-bs64-tensor"]["effective"]
    assert no_sync["ddp_comm"] == "none"


def test_the_alternate_cell_syncs_every_other_step_and_times_its_bucket(
        comm_run: dict) -> None:
    """Synced, then no_sync(), from the first warm-up step; after the window its one
    bucket all-reduced in the same ranks, bare and through DDP's round trip, each
    iteration's slowest rank."""
    record = comm_run["records"]["cpu-2x-engine-ddp_alternate-32-true-bs64-tensor"]
    effective = record["effective"]
    assert (effective["ddp_comm"], effective["ddp_bucket_bytes"]) == ("alternate", [GRADS])
    assert effective["ddp_step_synced"] == [True, False, True]
    rows = record["raw"]["comm"]
    assert [r["label"] for r in rows] == ["bucket", "bucket-round-trip"]
    for timed in rows:
        assert (timed["op"], timed["bytes"], timed["world_size"]) == ("all_reduce", GRADS, 2)
        assert len(timed["time_s"]) == BARE_ALLREDUCES and min(timed["time_s"]) > 0


def test_the_report_has_the_communication_table_and_the_ddp_check(comm_run: dict) -> None:
    report = (comm_run["dir"] / "report.md").read_text()
    assert "## Communication" in report
    assert "## DDP communication: measured in training vs all_reduce" in report
    assert "2 ranks busbw GB/s" in report
    check = report.split("## DDP communication")[1]
    assert "engine-ddp_one_bucket" in check
    assert "this cell, after its window" in check  # the alternate cell's row
    assert "Communication:" in comm_run["stdout"]  # bench.run prints it too
