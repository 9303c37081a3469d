"""bench.analyze.clock_check: the GPU check's clock checks pass a record whose clock
agrees with its own readings and fail one that lost or added time."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bench.analyze.clock_check import main, record_problems


def cuda_record() -> dict[str, Any]:
    """Two measured steps of 10 ms (data 1 ms, forward 4, backward 4, optimizer 1) whose
    own event pairs span them within a microsecond, in a window the host's monotonic
    clock timed at 20.5 ms (the loop's end after the last step)."""
    rank = {"rank": 0, "step_s": [0.010, 0.010], "host_step_s": [0.004, 0.016],
            "phase_s": {"data": [0.001, 0.001], "forward": [0.004, 0.004],
                        "backward": [0.004, 0.004], "optimizer": [0.001, 0.001],
                        "rest": [0.0, 0.0]},
            "step_pair_s": [0.010001, 0.009999], "window_wall_s": 0.0205}
    return {"cell_id": "cuda-1x-single-32-true-bs256-device", "repeat": 0, "status": "ok",
            "cell": {"accelerator": "cuda"}, "raw": {"ranks": [rank]}}


def test_a_clock_that_agrees_with_its_own_readings_passes() -> None:
    assert record_problems(cuda_record()) == []


def test_phases_that_miss_part_of_a_step_fail_the_step_pair() -> None:
    record = cuda_record()
    record["raw"]["ranks"][0]["phase_s"]["backward"][1] = 0.003  # 1 ms of step 1 lost
    assert record_problems(record) == [
        "STEP PAIR  cuda-1x-single-32-true-bs256-device (repeat 0) rank 0 step 1: phases add "
        "up to 0.009000 s, its own events span 0.009999 s"]


def test_a_device_window_short_of_the_host_s_fails_the_window() -> None:
    record = cuda_record()
    rank = record["raw"]["ranks"][0]
    rank["window_wall_s"] = 0.040  # the host saw twice the time: the events missed work
    assert record_problems(record) == [
        "WINDOW  cuda-1x-single-32-true-bs256-device (repeat 0) rank 0: device 0.0200 s, "
        "host's monotonic clock 0.0400 s over the same synchronised window"]


@pytest.mark.parametrize("missing, problem", [
    ("step_pair_s", "NO STEP PAIRS"), ("window_wall_s", "NO WINDOW WALL"),
    ("host_step_s", "NO EVENTS")])
def test_a_reading_that_is_missing_is_a_problem(missing: str, problem: str) -> None:
    record = cuda_record()
    del record["raw"]["ranks"][0][missing]
    [found] = record_problems(record)
    assert found.startswith(problem)


def test_cpu_records_and_records_that_are_not_ok_are_not_checked() -> None:
    cpu, failed = cuda_record(), cuda_record()
    cpu["cell"]["accelerator"] = "cpu"
    failed["status"] = "failed"
    for record in (cpu, failed):
        record["raw"]["ranks"][0]["window_wall_s"] = 1.0
        assert record_problems(record) == []


def test_main_reads_records_jsonl_and_exits_1_on_a_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = cuda_record(), copy.deepcopy(cuda_record())
    bad["raw"]["ranks"][0]["step_pair_s"] = [0.010]
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(good) + "\n")
    assert main([str(path)]) == 0
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "STEP PAIR  cuda-1x-single-32-true-bs256-device (repeat 0) rank 0: 1 pairs for " \
           "2 steps" in out
    assert out.rstrip().endswith("1 clock problem(s)")
