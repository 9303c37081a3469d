from __future__ import annotations

from pathlib import Path

import pytest

from bench.matrix import PRESETS, Cell, MatrixError, expand, load_matrix, plan
from strategies.registry import Machine

CPU_BOX = Machine(cpu_count=2, cuda_devices=0, cuda_bf16=False, deepspeed=True)
EIGHT_GPUS = Machine(cpu_count=64, cuda_devices=8, cuda_bf16=True, deepspeed=True)


def test_cell_id_is_a_stable_readable_slug() -> None:
    cell = Cell(accelerator="cpu", devices=2, strategy="ddp", precision="bf16-mixed",
                batch_size=64, loader="tensor")
    assert cell.id == "cpu-2x-ddp-bf16-mixed-bs64-tensor"
    assert Cell(accelerator="gpu").id == "cuda-1x-single-32-true-bs64-tensor"
    assert Cell(compile="default", optimizer_impl="fused", mode="accuracy",
                target_acc=0.98).id == \
        "cpu-1x-single-32-true-bs64-tensor-compile-default-adam-fused-acc0.98"
    assert Cell(devices=1, num_nodes=2, strategy="ddp").id == "cpu-1x-2n-ddp-32-true-bs64-tensor"


def test_cell_round_trips_through_a_dict() -> None:
    cell = Cell(strategy="ddp", devices=2, steps=7)
    assert Cell.from_dict(cell.to_dict()) == cell
    with pytest.raises(MatrixError, match="unknown cell field"):
        Cell.from_dict({"strategy": "ddp", "speed": "max"})


@pytest.mark.parametrize("kwargs,message", [
    ({"steps": 0}, "steps must be a positive integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
    ({"strategy": "horovod"}, "unknown strategy"),
    ({"loader": "fast"}, "unknown loader"),
    ({"target_acc": 1.5}, "target_acc"),
])
def test_bad_cells_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(MatrixError, match=message):
        Cell(**kwargs)


def test_smoke_is_precisions_by_single_and_two_process_ddp() -> None:
    cells = expand(load_matrix("smoke"), CPU_BOX)
    assert {(c.strategy, c.devices, c.precision) for c in cells} == {
        ("single", 1, "32-true"), ("single", 1, "bf16-mixed"),
        ("ddp", 2, "32-true"), ("ddp", 2, "bf16-mixed")}
    assert all(reason is None for _, reason in plan(cells, CPU_BOX))


def test_one_device_strategies_never_get_more_devices() -> None:
    cells = expand({"strategy": ["single", "raw", "ddp"], "devices": [1, 2, 4]}, CPU_BOX)
    assert {c.devices for c in cells if c.strategy in ("single", "raw")} == {1}
    assert {c.devices for c in cells if c.strategy == "ddp"} == {1, 2, 4}


def test_auto_devices_scale_by_powers_of_two_on_gpus() -> None:
    cells = expand(load_matrix("multi-gpu"), EIGHT_GPUS)
    assert sorted({c.devices for c in cells}) == [2, 4, 8]


def test_no_name_lists_gpu_cells_as_skipped_here() -> None:
    planned = plan(expand(load_matrix(None), CPU_BOX), CPU_BOX)
    skipped = {cell.id: reason for cell, reason in planned if reason}
    assert any(cell.accelerator == "cpu" for cell, reason in planned if reason is None)
    assert skipped["cuda-1x-single-bf16-mixed-bs64-tensor"] == "no CUDA device on this machine"


def test_every_preset_expands() -> None:
    for name in PRESETS:
        assert expand(load_matrix(name), EIGHT_GPUS)


def test_toml_matrix(tmp_path: Path) -> None:
    good = tmp_path / "m.toml"
    good.write_text('strategy = ["single"]\nprecision = ["32-true", "bf16-true"]\nsteps = 3\n')
    cells = expand(load_matrix(str(good)), CPU_BOX)
    assert [c.precision for c in cells] == ["32-true", "bf16-true"] and cells[0].steps == 3
    bad = tmp_path / "bad.toml"
    bad.write_text("strategy = [single\n")
    with pytest.raises(MatrixError, match="not valid TOML"):
        load_matrix(str(bad))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("speed = 3\n")
    with pytest.raises(MatrixError, match="unknown key"):
        load_matrix(str(unknown))
    with pytest.raises(MatrixError, match="unknown preset 'nope'"):
        load_matrix("nope")
