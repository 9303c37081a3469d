"""bench.orchestrate.presets and plan: presets, TOML matrices, expansion, skip reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.matrix import MatrixError
from bench.orchestrate.plan import Matrix, make_plan
from bench.orchestrate.presets import PRESETS, apply_overrides, expand, load_matrix
from strategies.registry import Machine

CPU_BOX = Machine(cpu_count=2, cuda_devices=0, cuda_bf16=False, deepspeed=True)
EIGHT_GPUS = Machine(cpu_count=64, cuda_devices=8, cuda_bf16=True, deepspeed=True)


def skip_reasons(cells: list, machine: Machine) -> dict:
    plan = make_plan("test", Matrix(tuple(cells), 1), machine, "disabled")
    return {run.cell: run.skip_reason for run in plan.pending}


def test_smoke_is_precisions_by_single_and_two_process_ddp() -> None:
    cells = expand(load_matrix("smoke"), CPU_BOX)
    assert {(c.strategy, c.devices, c.precision) for c in cells} == {
        ("single", 1, "32-true"), ("single", 1, "bf16-mixed"),
        ("ddp", 2, "32-true"), ("ddp", 2, "bf16-mixed")}
    assert all(reason is None for reason in skip_reasons(cells, CPU_BOX).values())


def test_every_strategy_means_every_one_that_trains() -> None:
    """all-strategies' "auto": DDP's one-bucket variant trains (no overlap); the no-sync
    control never exchanges gradients, so it is asked for by name only (the comm preset)."""
    strategies = {c.strategy for c in expand(load_matrix("all-strategies"), CPU_BOX)}
    assert {"engine-ddp", "engine-ddp_one_bucket"} <= strategies
    assert "engine-ddp_no_sync" not in strategies
    assert "engine-ddp_no_sync" in {c.strategy for c in expand(load_matrix("comm"), CPU_BOX)}


def test_one_device_strategies_never_get_more_devices() -> None:
    cells = expand({"strategy": ["single", "raw", "ddp"], "devices": [1, 2, 4]}, CPU_BOX)
    assert {c.devices for c in cells if c.strategy in ("single", "raw")} == {1}
    assert {c.devices for c in cells if c.strategy == "ddp"} == {1, 2, 4}


def test_auto_devices_scale_by_powers_of_two_on_gpus() -> None:
    cells = expand(load_matrix("multi-gpu"), EIGHT_GPUS)
    assert sorted({c.devices for c in cells}) == [1, 2, 4, 8]


def test_multi_gpu_has_its_one_device_references_inside_a_launch() -> None:
    """The report's speed-up (32-true single) and scaling (bf16-mixed single) references,
    and bench.scale's crowding reference (engine-ddp_no_sync on one device), are in the
    launch, on one node, and run (rank 0 alone), on one node or two."""
    for nodes in (1, 2):
        launch = Machine(cpu_count=64, cuda_devices=8, cuda_bf16=True, deepspeed=True,
                         launched_world_size=8 * nodes, launched_local_world_size=8)
        cells = expand(load_matrix("multi-gpu"), launch)
        alone = [(c.strategy, c.precision, c.devices, c.num_nodes) for c in cells
                 if c.world_size == 1]
        assert alone == [("single", "32-true", 1, 1), ("single", "bf16-mixed", 1, 1),
                         ("engine-ddp_no_sync", "bf16-mixed", 1, 1)]
        assert {(c.devices, c.num_nodes) for c in cells if c.world_size > 1} == {(8, nodes)}
        assert all(reason is None for reason in skip_reasons(cells, launch).values())


def test_no_name_lists_gpu_cells_as_skipped_here() -> None:
    planned = skip_reasons(expand(load_matrix(None), CPU_BOX), CPU_BOX)
    skipped = {cell.id: reason for cell, reason in planned.items() if reason}
    assert any(cell.accelerator == "cpu" for cell, reason in planned.items() if reason is None)
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


def test_a_plan_leaves_out_finished_runs_and_counts_what_is_left() -> None:
    cells = expand(load_matrix("smoke"), CPU_BOX)
    first = cells[0].id
    plan = make_plan("test", Matrix(tuple(cells), 2), CPU_BOX, "disabled",
                     finished=frozenset({(first, 0)}))
    assert len(plan.pending) == 2 * len(cells) - 1
    assert (first, 0) not in {(run.cell.id, run.repeat) for run in plan.pending}
    assert plan.pending.runnable == len(plan.pending)


def test_an_axis_narrows_a_preset_made_of_blocks() -> None:
    """`--matrix speed --accelerators cpu` is the CPU part of speed (14 cells), not its
    CUDA blocks turned into CPU cells (bs 8192, compile)."""
    spec = apply_overrides(load_matrix("speed"), {"accelerator": ["cpu"], "steps": 3})
    cells = expand(spec, EIGHT_GPUS)
    assert len(cells) == 14
    assert {c.accelerator for c in cells} == {"cpu"}
    assert {c.compile for c in cells} == {"none"} and max(c.batch_size for c in cells) == 1024
    assert {c.steps for c in cells} == {3}  # a setting still replaces everywhere
    gpu_only = expand(apply_overrides(load_matrix("speed"), {"compile": ["default"]}),
                      EIGHT_GPUS)
    assert {(c.accelerator, c.compile) for c in gpu_only} == {("cuda", "default")}
    aliased = expand(apply_overrides(load_matrix("speed"), {"accelerator": ["gpu"]}),
                     EIGHT_GPUS)
    assert {c.accelerator for c in aliased} == {"cuda"}


def test_an_axis_no_block_has_is_an_error_naming_what_they_have() -> None:
    with pytest.raises(MatrixError, match=r"no block has .*'tensor'.*\['device', 'torchvision'\]"):
        apply_overrides(load_matrix("gpu-check"), {"loader": ["tensor"]})


def test_an_axis_replaces_in_a_flat_matrix() -> None:
    cells = expand(apply_overrides(load_matrix("smoke"), {"precision": ["bf16-true"]}), CPU_BOX)
    assert {c.precision for c in cells} == {"bf16-true"}
