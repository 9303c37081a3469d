"""bench.matrix: the Cell, its validation and its id."""

from __future__ import annotations

import pytest

from bench.matrix import Cell, MatrixError


def test_cell_id_is_a_stable_readable_slug() -> None:
    cell = Cell(accelerator="cpu", devices=2, strategy="ddp", precision="bf16-mixed",
                batch_size=64, loader="tensor")
    assert cell.id == "cpu-2x-ddp-bf16-mixed-bs64-tensor"
    assert Cell(accelerator="gpu").id == "cuda-1x-single-32-true-bs64-tensor"
    assert Cell(compile="default", optimizer_impl="fused", mode="accuracy",
                target_acc=0.98).id == \
        "cpu-1x-single-32-true-bs64-tensor-compile-default-adam-fused-acc0.98"
    assert Cell(devices=1, num_nodes=2, strategy="ddp").id == "cpu-1x-2n-ddp-32-true-bs64-tensor"
    assert Cell(malloc="retain").id == "cpu-1x-single-32-true-bs64-tensor-malloc-retain"
    # a comm cell's id: only what it reads, its allocator among them (gloo's temporaries)
    assert Cell(mode="comm", strategy="ddp", batch_size=8).id == "cpu-1x-ddp-32-true-comm"
    assert Cell(mode="comm", strategy="ddp", malloc="jemalloc").id == \
        "cpu-1x-ddp-32-true-comm-malloc-jemalloc"


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
    ({"window": "steps"}, "unknown window 'steps'; valid: time, fixed"),
    ({"malloc": "tcmalloc"}, "unknown malloc 'tcmalloc'; valid: system, retain, jemalloc"),
    ({"min_window_s": 0.0}, "min_window_s must be positive, got 0.0"),
    # a time window is sized on the warm-up's steps: none to time
    ({"warmup_steps": 0}, "window time chooses the step count from the warm-up's step time"),
])
def test_bad_cells_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(MatrixError, match=message):
        Cell(**kwargs)


def test_a_fixed_window_or_an_accuracy_cell_needs_no_warm_up() -> None:
    assert Cell(warmup_steps=0, window="fixed").warmup_steps == 0
    assert Cell(warmup_steps=0, mode="accuracy").window == "time"  # trains to its target


def test_a_comm_cell_is_its_world_dtype_and_iterations_alone() -> None:
    """A comm cell reads only its accelerator, world, strategy, precision and
    iterations: a batch size or loader in the matrix makes neither another cell nor
    another id, and it survives the record's round trip."""
    plain = Cell(mode="comm", strategy="ddp", devices=2, steps=3, warmup_steps=1)
    other = Cell(mode="comm", strategy="ddp", devices=2, steps=3, warmup_steps=1,
                 batch_size=16, loader="device", compile="default", optimizer_impl="fused",
                 min_window_s=9.0, window="time", warmup="steady")
    assert plain == other and hash(plain) == hash(other)
    assert plain.id == "cpu-2x-ddp-32-true-comm"
    assert Cell(mode="comm", strategy="ddp", num_nodes=2, precision="bf16-true").id == \
        "cpu-1x-2n-ddp-bf16-true-comm"
    assert (plain.batch_size, plain.loader, plain.window, plain.warmup) == \
        (64, "tensor", "fixed", "fixed")
    assert (plain.steps, plain.warmup_steps) == (3, 1)  # timed and warm-up iterations
    assert Cell.from_dict(plain.to_dict()) == plain
    assert Cell(mode="comm", strategy="ddp", steps=3, warmup_steps=1) != plain  # 1 rank


def test_a_comm_cell_measures_the_ddp_process_group_only() -> None:
    with pytest.raises(MatrixError, match="strategy must be ddp, got 'fsdp'"):
        Cell(mode="comm", strategy="fsdp", accelerator="cuda")
