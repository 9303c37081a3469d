"""bench.orchestrate.rundir: a run directory is never reused, and a resume keeps the
ok records, sets the others aside and plans only what is left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.matrix import Cell
from bench.orchestrate.plan import Matrix, make_plan
from bench.orchestrate.rundir import RunDirError, create_run_dir, open_resume
from bench.record import Record, Status, append_record
from strategies.registry import Machine

BOX = Machine(cpu_count=2, cuda_devices=0, cuda_bf16=False, deepspeed=True)
MATRIX = Matrix((Cell(), Cell(precision="bf16-mixed")), repeats=2)
ENV_KEY = {"hostname": "h", "device": "d", "torch": "t", "lightning": "l"}


def test_a_run_directory_is_created_once(tmp_path: Path) -> None:
    plan = make_plan("run-1", MATRIX, BOX, "disabled")
    run_dir = create_run_dir(tmp_path, plan)
    assert sorted(p.name for p in run_dir.path.iterdir()) == ["env.json", "matrix.json",
                                                              "records.jsonl"]
    assert json.loads(run_dir.matrix.read_text()) == MATRIX.to_json()
    with pytest.raises(RunDirError, match="already exists"):
        create_run_dir(tmp_path, plan)


def test_resume_keeps_ok_records_and_plans_the_rest(tmp_path: Path) -> None:
    run_dir = create_run_dir(tmp_path, make_plan("run-1", MATRIX, BOX, "disabled"))
    first, second = MATRIX.cells
    append_record(run_dir.records, Record.new(first, 0, "run-1", Status.OK, ENV_KEY))
    append_record(run_dir.records, Record.new(first, 1, "run-1", Status.FAILED, ENV_KEY, "x"))
    resumed, plan = open_resume(run_dir.path, None, BOX, "disabled")
    assert resumed == run_dir and plan.run_id == "run-1" and plan.matrix == MATRIX
    # repeats interleaved: every cell's repeat 0, then every cell's repeat 1
    assert [(run.cell, run.repeat) for run in plan.pending] == [
        (second, 0), (first, 1), (second, 1)]
    kept = [json.loads(line) for line in run_dir.records.read_text().splitlines()]
    assert [(r["cell_id"], r["repeat"], r["status"]) for r in kept] == [(first.id, 0, "ok")]
    aside = [json.loads(line) for line in run_dir.superseded.read_text().splitlines()]
    assert [r["status"] for r in aside] == ["failed"]


def test_a_run_from_before_the_window_resumes_with_exactly_its_steps(tmp_path: Path) -> None:
    """Its matrix.json has no window: its cells measured exactly their steps, and its
    remaining repeats do too, so that they stay comparable with the finished ones."""
    run_dir = create_run_dir(tmp_path, make_plan("run-1", MATRIX, BOX, "disabled"))
    stored = MATRIX.to_json()
    for cell in stored["cells"]:
        del cell["window"], cell["min_window_s"]
    run_dir.matrix.write_text(json.dumps(stored))
    _, plan = open_resume(run_dir.path, None, BOX, "disabled")
    assert [cell.window for cell in plan.matrix.cells] == ["fixed", "fixed"]
    with pytest.raises(RunDirError, match="changed settings in"):
        open_resume(run_dir.path, MATRIX, BOX, "disabled")  # asked: the time window
