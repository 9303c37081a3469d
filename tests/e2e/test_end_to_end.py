"""The README's main job, for real: the smoke matrix through `python -m bench.run`,
real MNIST, a real single-device cell and a real 2-process DDP cell, real offline
wandb files."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import record as rec
from bench.measure.window import window_steps
from bench.metrics import LEDGER_PARTS
from tests.cpu_bf16 import CPU_BF16

pytestmark = pytest.mark.slow

# The smoke preset's cells; its bf16 ones are skipped where the CPU has no bf16 kernels.
FP32_CELLS = ("cpu-1x-single-32-true-bs64-tensor", "cpu-2x-ddp-32-true-bs64-tensor")
BF16_CELLS = ("cpu-1x-single-bf16-mixed-bs64-tensor", "cpu-2x-ddp-bf16-mixed-bs64-tensor")
RAN = FP32_CELLS + BF16_CELLS if CPU_BF16 else FP32_CELLS


@pytest.fixture(scope="module")
def smoke_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("results")
    command = [sys.executable, "-m", "bench.run", "--matrix", "smoke", "--steps", "4",
               "--warmup-steps", "1", "--wandb", "offline", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = out.iterdir()
    return {"dir": run_dir, "stdout": done.stdout,
            "records": list(rec.read_records(run_dir / "records.jsonl"))}


def ran(smoke_run: dict) -> list[dict[str, Any]]:
    return [r for r in smoke_run["records"] if r["cell_id"] in RAN]


def test_every_smoke_cell_lands_ok_with_throughput_and_accuracy(smoke_run: dict) -> None:
    records = {r["cell_id"]: r for r in smoke_run["records"]}
    assert set(records) == {*FP32_CELLS, *BF16_CELLS}
    for record in records.values():
        rec.validate(record)
    for cell_id in set(BF16_CELLS) - set(RAN):
        assert records[cell_id]["status"] == "skipped"
        assert "no bf16 kernels" in records[cell_id]["reason"]
    for record in (records[cell_id] for cell_id in RAN):
        assert record["status"] == "ok", record["reason"]
        assert record["metrics"]["samples_per_s"] > 0
        assert 0.0 <= record["metrics"]["val_acc"] <= 1.0
        assert record["metrics"]["mfu"] > 0
        assert record["metrics"]["peak_source"].startswith("calibrated")
        ranks = record["raw"]["ranks"]
        # The default time window: at least the 4 steps, as many as 2.2 s takes at the
        # warm-up's step time, and every rank measured exactly that many.
        window = record["raw"]["window"]
        assert (window["rule"], window["min_steps"], window["chosen_in_repeat"]) == ("time", 4, 0)
        assert window["steps"] == window_steps(4, 2.0, window["step_s_estimate"])
        assert all(len(rank["step_s"]) == window["steps"] for rank in ranks)
        # A steady warm-up of at least 1 step, at most 4; every rank ended it together.
        assert {len(rank["warmup_step_s"]) for rank in ranks} == {
            record["metrics"]["warmup_steps_taken"]}
        assert 1 <= record["metrics"]["warmup_steps_taken"] <= 4
        assert len({len(rank["loss"]) for rank in ranks}) == 1


def test_records_say_what_actually_ran(smoke_run: dict) -> None:
    records = {r["cell_id"]: r for r in smoke_run["records"]}
    ddp = records[RAN[-1]]  # bf16-mixed where this CPU trains in it
    assert ddp["effective"]["world_size"] == 2
    assert ddp["effective"]["global_batch_size"] == 128
    assert ddp["effective"]["precision"] == ddp["cell"]["precision"]
    assert ddp["effective"]["strategy"] == "DDPStrategy"
    assert ddp["effective"]["num_threads"] >= 1
    assert [r["rank"] for r in ddp["raw"]["ranks"]] == [0, 1]
    single = records["cpu-1x-single-32-true-bs64-tensor"]
    assert single["effective"]["world_size"] == 1
    assert single["effective"]["precision"] == "32-true"
    # bench.run's default: every cell forked from the preload server, which read MNIST
    # once; a DDP cell's rank 1 is a fork of its rank 0 (bench.execute.spawn).
    assert {cell: records[cell]["preloaded"] for cell in RAN} == dict.fromkeys(RAN, True)


def test_outputs_and_printed_summary(smoke_run: dict) -> None:
    run_dir = smoke_run["dir"]
    for name in ("env.json", "matrix.json", "summary.csv", "report.md", "report.html"):
        assert (run_dir / name).is_file(), name
    env = json.loads((run_dir / "env.json").read_text())
    assert env["versions"]["torch"] and env["cpu_model"]
    assert "cpu-2x-ddp-bf16-mixed-bs64-tensor" in smoke_run["stdout"]
    assert "[4/4]" in smoke_run["stdout"]
    log = run_dir / "cells" / "cpu-2x-ddp-32-true-bs64-tensor" / "log.txt"
    assert log.is_file()


def test_each_record_says_where_its_wall_time_went(smoke_run: dict) -> None:
    """Every part of a cell in its own process is reached; they add up to the wall, and
    the clock's parts are the record's own figures (rank 0's)."""
    for record in ran(smoke_run):
        ledger, rank0 = record["ledger"], record["raw"]["ranks"][0]
        parts = ledger["parts"]
        assert list(parts) == list(LEDGER_PARTS)
        assert all(value is not None and value >= 0 for part, value in parts.items()
                   if part != "other"), parts
        assert sum(parts.values()) == pytest.approx(ledger["wall_s"], abs=1e-3)
        # The marks leave no gap between parts but the step clock's own: Lightning's
        # bookkeeping between one step's end and the next's start, a few ms a step that
        # a loaded machine stretches (0.126 s in a 16 s warm-up once). A missing part
        # would be seconds (setup, warm-up) or is checked below (validation).
        assert abs(parts["other"]) < max(0.05, 0.005 * ledger["wall_s"]), parts
        assert parts["window"] == round(rank0["window_s"], 4)
        assert parts["warmup"] == round(sum(rank0["warmup_step_s"]), 4)
        assert parts["validation"] == round(rank0["paused_s"], 4) > 0
        assert parts["wandb"] > 0  # an offline run
        if record["preloaded"]:  # forked from the server: torch is imported already
            assert parts["imports"] < 0.5, parts
        else:  # a new interpreter imports torch and Lightning
            assert parts["imports"] > 0.5, parts
        assert ledger["wall_s"] > record["wall_s"]  # execute's wall leaves out the process
        assert ledger["note"] is None
    assert "## Where a cell's wall time goes" in (smoke_run["dir"] / "report.md").read_text()
    assert f"harness: {len(RAN)} cell run(s), run wall " in smoke_run["stdout"]


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline .wandb file (a LevelDB-style log of 32 KiB
    blocks, each record split into FULL/FIRST/MIDDLE/LAST chunks behind a 7-byte
    header), read without network or the wandb service."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, position, pending, out = path.read_bytes(), 32768, 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        position += 7
        if kind == 0 and length == 0:
            position += left - 7
            continue
        payload, position = data[position:position + length], position + length
        if kind in (2, 3):
            pending += payload
            continue
        record = pb.Record()
        record.ParseFromString(pending + payload if kind == 4 else payload)
        pending = b""
        out.append(record)
    return out


def read_offline_run(run_file: Path) -> dict[str, Any]:
    group, name, job, summary = None, None, None, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            group, name, job = record.run.run_group, record.run.display_name, record.run.job_type
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return {"group": group, "name": name, "job_type": job, "summary": summary}


def test_offline_wandb_runs_hold_each_cells_metrics_under_the_run_id(smoke_run: dict) -> None:
    run_dir = smoke_run["dir"]
    runs = [read_offline_run(path) for path in run_dir.glob("**/offline-run-*/*.wandb")]
    by_name = {run["name"]: run for run in runs}
    for record in ran(smoke_run):
        run = by_name[record["cell_id"]]
        assert run["group"] == run_dir.name
        assert run["summary"]["samples_per_s"] == pytest.approx(
            record["metrics"]["samples_per_s"])
        assert run["summary"]["val_acc"] == pytest.approx(record["metrics"]["val_acc"])
    reports = [run for run in runs if run["job_type"] == "report"]
    assert len(reports) == 1 and reports[0]["group"] == run_dir.name
