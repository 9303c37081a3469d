"""Comm cells read back (bench.analyze.comm), DDP's communication in training beside
them (bench.analyze.ddp_check), and two runs of comm cells compared (bench.compare),
from hand-made records with exact figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench import compare
from bench.analyze.comm import comm_display, comm_table
from bench.analyze.compare import compare_runs
from bench.analyze.ddp_check import ddp_check, ddp_check_display
from bench.analyze.load import load_records
from bench.matrix import Cell
from bench.measure.derive import derive_metrics
from bench.record import RankRaw, Raw, Record, Status
from tests.bench.analyze.test_compare import CPU_PRINT

GRADS = 157_629_512  # the model's fp32 gradients, bytes
ENV = {"hostname": "box", "device": "Test CPU", "torch": "2.5.1", "lightning": "2.4.0",
       "hardware": {"cpu": CPU_PRINT}}


def row(op: str, nbytes: int, times: list[float], world: int, label: str = "sweep",
        dtype: str = "float32") -> dict[str, Any]:
    return {"op": op, "bytes": nbytes, "label": label, "dtype": dtype, "time_s": times,
            "world_size": world, "nodes": 1}


def comm_record(devices: int, rows: list[dict[str, Any]], repeat: int = 0) -> dict[str, Any]:
    cell = Cell(mode="comm", strategy="ddp", devices=devices, steps=3, warmup_steps=1)
    record = Record.new(cell, repeat, "r", Status.OK, ENV)
    record.raw = Raw(comm=rows)
    record.metrics = derive_metrics(record.raw, devices, 1.0)
    record.effective, record.wall_s = {"world_size": devices}, 1.0
    return record.to_dict()


def ddp_record(strategy: str, backward_ms: float, buckets: list[int]) -> dict[str, Any]:
    """Two ranks whose median backward is ``backward_ms`` on rank 1 and 10 ms less on
    rank 0, with one step of each stalled for seconds."""
    cell = Cell(strategy=strategy, devices=2)
    record = Record.new(cell, 0, "r", Status.OK, ENV)
    ranks = [RankRaw(rank, [9.0] * 3, [0.0] * 3, 192, 27.0, phase_s={
        "backward": [(backward_ms - 10 * (1 - rank)) / 1000] * 2 + [8.0]}) for rank in (0, 1)]
    record.raw = Raw(ranks=ranks)
    record.metrics = {"samples_per_s": 100.0, "step_backward_ms": 3000.0}
    record.effective = {"world_size": 2, "param_dtype": "float32", "ddp_bucket_bytes": buckets,
                        "ddp_timer_comm_ms": 1.5 * backward_ms}
    record.wall_s = 1.0
    return record.to_dict()


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.mkdir(parents=True)
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_comm_table_gives_median_time_algbw_and_nccl_tests_busbw(tmp_path: Path) -> None:
    run = write(tmp_path / "run", [
        comm_record(2, [row("all_reduce", GRADS, [0.2, 0.1, 0.3], 2, "grads"),
                        row("all_gather", GRADS, [0.4], 2, "grads")]),
        comm_record(1, [row("all_reduce", GRADS, [0.01], 1, "grads")])])
    table = comm_table(load_records(run)).set_index(["cell_id", "op"])
    two = table.loc[("cpu-2x-ddp-32-true-comm", "all_reduce")]
    assert (two["time_s"], two["label"], two["bytes"]) == (0.2, "grads", GRADS)
    assert two["algbw_gbps"] == pytest.approx(0.78814756)
    assert two["busbw_gbps"] == pytest.approx(0.78814756)  # x 2(n-1)/n = 1 at n = 2
    gather = table.loc[("cpu-2x-ddp-32-true-comm", "all_gather")]
    assert gather["busbw_gbps"] == pytest.approx(0.39407378 / 2)  # x (n-1)/n
    one = table.loc[("cpu-1x-ddp-32-true-comm", "all_reduce")]
    assert one["algbw_gbps"] == pytest.approx(15.7629512) and one["busbw_gbps"] == 0.0
    assert list(comm_table(load_records(run)).columns) == [
        "cell_id", "op", "label", "dtype", "bytes", "world_size", "nodes", "time_s",
        "algbw_gbps", "busbw_gbps"]
    shown = comm_display(comm_table(load_records(run)))
    assert shown.to_dict("records") == [
        {"dtype": "float32", "op": "all_reduce", "size": "150 MiB", "label": "grads",
         "1 ranks ms": "10.0", "2 ranks ms": "200", "2 ranks busbw GB/s": "0.79"},
        {"dtype": "float32", "op": "all_gather", "size": "150 MiB", "label": "grads",
         "1 ranks ms": "-", "2 ranks ms": "400", "2 ranks busbw GB/s": "0.20"}]


def test_ddp_communication_in_training_is_set_against_the_comm_cell(tmp_path: Path) -> None:
    """One bucket of all the gradients: 400 - 250 ms of backward against the comm cell's
    150 MiB all_reduce (0.15 s); DDP's own two buckets of 10 MB: each interpolated on
    log-log between 1 MB (1 ms) and 100 MB (100 ms), 10 ms each."""
    run = write(tmp_path / "run", [
        comm_record(2, [row("all_reduce", 10**6, [0.001], 2),
                        row("all_reduce", 10**8, [0.1], 2),
                        row("all_reduce", GRADS, [0.15], 2, "grads")]),
        ddp_record("engine-ddp_one_bucket", 400.0, [GRADS]),
        ddp_record("engine-ddp", 290.0, [10**7, 10**7]),
        ddp_record("engine-ddp_no_sync", 250.0, [GRADS])])
    check = ddp_check(load_records(run)).set_index("cell_id")
    one = check.loc["cpu-2x-engine-ddp_one_bucket-32-true-bs64-tensor"]
    assert (one["training_comm_ms"], one["no_sync_backward_ms"]) == (150.0, 250.0)
    assert one["allreduce_ms"] == pytest.approx(150.0) and one["ratio"] == pytest.approx(1.0)
    assert one["ddp_timer_ms"] == 600.0  # DDP's own timer, as its record has it
    default = check.loc["cpu-2x-engine-ddp-32-true-bs64-tensor"]
    assert default["training_comm_ms"] == 40.0
    assert default["allreduce_ms"] == pytest.approx(20.0)
    assert default["ratio"] == pytest.approx(2.0)
    shown = ddp_check_display(ddp_check(load_records(run)))
    assert shown["agree"].tolist() == ["no", "yes"]  # engine-ddp first, as recorded
    assert shown["buckets"].tolist() == ["2: 9.54 MiB, 9.54 MiB", "1: 150 MiB"]


def test_the_alternate_cell_checks_itself_in_one_process(tmp_path: Path) -> None:
    """3 warm-up steps, then 7 measured: the flags start at the first warm-up step, so
    the window's steps alternate no_sync, synced, ...; a stalled synced step does not
    move the median. Synced 410 ms on the slower rank against 250 ms: 160 ms, set
    against the same cell's bare all_reduce (0.16 s): 1.0x; rank 0, the last to reach
    the all_reduce, 150 ms against the round trip (0.08 s). No comm cell is needed,
    and the cell's own all_reduces stay out of the comm table."""
    cell = Cell(strategy="engine-ddp_alternate", devices=2)
    record = Record.new(cell, 0, "r", Status.OK, ENV)
    flags = [True, False] * 5
    ranks = [RankRaw(rank, [0.5] * 7, [0.0] * 7, 448, 3.5, warmup_step_s=[0.5] * 3,
                     phase_s={"backward": [0.25, synced, 0.25, 9.0, 0.25, synced, 0.25]})
             for rank, synced in ((0, 0.40), (1, 0.41))]
    record.raw = Raw(ranks=ranks, comm=[
        row("all_reduce", GRADS, [0.2, 0.16, 0.15], 2, "bucket"),
        row("all_reduce", GRADS, [0.08, 0.09, 0.07], 2, "bucket-round-trip")])
    record.metrics = {"samples_per_s": 100.0}
    record.effective = {"world_size": 2, "param_dtype": "float32", "ddp_bucket_bytes": [GRADS],
                        "ddp_step_synced": flags}
    record.wall_s = 1.0
    run = write(tmp_path / "run", [record.to_dict()])
    [check] = ddp_check(load_records(run)).to_dict("records")
    assert (check["backward_ms"], check["no_sync_backward_ms"]) == (pytest.approx(410.0), 250.0)
    assert check["allreduce_ms"] == pytest.approx(160.0)
    assert check["ratio"] == pytest.approx(1.0)
    assert check["allreduce_from"] == "this cell, after its window"
    assert check["round_trip_ms"] == pytest.approx(80.0)
    assert check["last_rank_comm_ms"] == pytest.approx(150.0)  # rank 0: 400 - 250 ms
    assert check["round_trip_ratio"] == pytest.approx(150.0 / 80.0)
    [shown] = ddp_check_display(pd.DataFrame([check])).to_dict("records")
    assert (shown["agree"], shown["agrees with round trip"]) == ("yes", "no")
    assert comm_table(load_records(run)).empty


def test_a_record_from_before_ddps_timer_shows_none(tmp_path: Path) -> None:
    records = [ddp_record("engine-ddp_one_bucket", 400.0, [GRADS]),
               ddp_record("engine-ddp_no_sync", 250.0, [GRADS])]
    for record in records:
        del record["effective"]["ddp_timer_comm_ms"]
    run = write(tmp_path / "run", [
        comm_record(2, [row("all_reduce", GRADS, [0.15], 2, "grads")]), *records])
    check = ddp_check(load_records(run))
    assert check["ratio"].tolist() == [pytest.approx(1.0)]
    assert ddp_check_display(check)["DDP's timer ms"].tolist() == ["-"]


def test_no_check_without_the_no_sync_twin(tmp_path: Path) -> None:
    run = write(tmp_path / "run", [
        comm_record(2, [row("all_reduce", GRADS, [0.15], 2, "grads")]),
        ddp_record("engine-ddp_one_bucket", 400.0, [GRADS])])
    assert ddp_check(load_records(run)).empty


def comm_run(path: Path, scale: float) -> Path:
    """Three repeats of a 2-rank and a 1-rank comm cell, each time x ``scale``."""
    return write(path, [
        *(comm_record(2, [row("all_reduce", GRADS, [scale * t], 2, "grads")], repeat)
          for repeat, t in enumerate((0.200, 0.201, 0.199))),
        *(comm_record(1, [row("all_reduce", GRADS, [scale * t], 1, "grads")], repeat)
          for repeat, t in enumerate((0.010, 0.0101, 0.0099)))])


def test_a_slower_network_is_a_regression_at_every_world_size(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The verdict is on the grads all_reduce's algbw (busbw is 0 at one rank): 25% more
    time is 20% less bandwidth, "slower", and the gate fails."""
    a, b = comm_run(tmp_path / "a", 1.0), comm_run(tmp_path / "b", 1.25)
    result = compare_runs(load_records(a), load_records(b)).set_index("cell_id")
    for cell in ("cpu-1x-ddp-32-true-comm", "cpu-2x-ddp-32-true-comm"):
        assert result.loc[cell, "verdict"] == "slower"
        assert result.loc[cell, "change_pct"] == pytest.approx(-20.0, abs=0.1)
        assert " on allreduce_algbw_gbps" in result.loc[cell, "basis"]
    assert result.loc["cpu-2x-ddp-32-true-comm", "allreduce_busbw_gbps_ratio"] == \
        pytest.approx(0.8)
    assert compare.main([str(a), str(b), "--fail-on-regression"]) == 1
    assert "cpu-2x-ddp-32-true-comm: slower -20.0%" in capsys.readouterr().err
    assert compare.main([str(a), str(comm_run(tmp_path / "same", 1.0)),
                         "--fail-on-regression"]) == 0


def test_the_results_table_shows_a_comm_cells_busbw_and_no_throughput(tmp_path: Path) -> None:
    from bench.analyze.summary import summarize
    from bench.analyze.tables import main_table

    table = main_table(summarize(load_records(comm_run(tmp_path / "a", 1.0))))
    row = table.set_index("cell").loc["cpu-2x-ddp-32-true-comm"]
    assert (row["n"], row["samples/s"], row["busbw GB/s"]) == ("3", "-", "0.79")
