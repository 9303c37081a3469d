"""bench.orchestrate.plan: the run order. Repeats interleave; each control cell runs
right beside its Lightning cell, after it and before it in alternate rounds."""

from __future__ import annotations

from bench.matrix import Cell
from bench.orchestrate.plan import Matrix, make_plan
from strategies.registry import Machine

BOX = Machine(cpu_count=2, cuda_devices=0, cuda_bf16=False, deepspeed=True)


def test_each_control_runs_beside_its_lightning_cell_in_alternating_order() -> None:
    single, single_bf16 = Cell(strategy="single"), Cell(strategy="single", precision="bf16-true")
    raw, raw_bf16 = Cell(strategy="raw"), Cell(strategy="raw", precision="bf16-true")
    lonely = Cell(strategy="raw", batch_size=8)  # no Lightning cell beside it
    ddp = Cell(strategy="ddp", devices=2)
    # As a preset expands them: every single cell, then every raw cell.
    matrix = Matrix((single, single_bf16, ddp, raw, raw_bf16, lonely), repeats=3)
    plan = make_plan("run", matrix, BOX, "disabled")
    rounds = [[run.cell for run in plan.pending if run.repeat == r] for r in range(3)]
    assert rounds[0] == [single, raw, single_bf16, raw_bf16, ddp, lonely]
    assert rounds[1] == [raw, single, raw_bf16, single_bf16, ddp, lonely]
    assert rounds[2] == rounds[0]
    assert [run.repeat for run in plan.pending] == [0] * 6 + [1] * 6 + [2] * 6
