"""Where a step's time goes, on real cells: a loader slowed on purpose by a known
20 ms per batch shows up as that data wait, in Lightning and in the hand-written
loop alike; the phases add up to every step; and the claimed window holds against a
clock outside the cell."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bench.execute.faults import ENV_VAR
from bench.matrix import Cell
from bench.metrics import PHASES

DELAY_S = 0.020
STEPS = 10


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["single", "raw"])
@pytest.mark.alone  # timings: no other test beside it (tests/scheduling.py)
def test_a_slowed_loader_is_the_data_wait(execute_cell: Any, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          strategy: str) -> None:
    cell = Cell(strategy=strategy, precision="32-true", batch_size=16, loader="tensor",
                optimizer_impl="fused", steps=STEPS, warmup_steps=2, window="fixed")
    monkeypatch.setenv(ENV_VAR, f"{cell.id}=slow-data:{DELAY_S * 1000:g}")
    outside = time.perf_counter()
    record = execute_cell(cell, tmp_path)
    outside = time.perf_counter() - outside
    assert record["status"] == "ok", record["reason"]
    [rank] = record["raw"]["ranks"]
    metrics = record["metrics"]

    # The data phase holds the 20 ms per batch, within 10%: neither the step's compute
    # nor the logger's work between steps is taken for data.
    waited = sum(rank["data_wait_s"])
    assert STEPS * DELAY_S <= waited < 1.1 * STEPS * DELAY_S, rank["data_wait_s"]
    assert metrics["data_wait_frac"] == pytest.approx(waited / rank["window_s"])
    assert metrics["step_data_ms"] == pytest.approx(1000 * waited / STEPS)

    # Each step is its phases, exactly; the window is its steps.
    for step, seconds in enumerate(rank["step_s"]):
        parts = sum(rank["phase_s"][phase][step] for phase in PHASES)
        assert parts == pytest.approx(seconds, rel=0.02)
    assert rank["window_s"] == pytest.approx(sum(rank["step_s"]))
    # Forward, backward and the optimizer are where a CPU step's compute is.
    compute = sum(metrics[f"step_{p}_ms"] for p in ("forward", "backward", "optimizer"))
    assert compute > 0.9 * (1000 * rank["window_s"] / STEPS - metrics["step_data_ms"])

    # A clock outside the cell: all the steps, and the validation the clock paused
    # for, happened inside the time the cell took, which holds more (set-up).
    inside = sum(rank["warmup_step_s"]) + rank["window_s"] + (rank["paused_s"] or 0.0)
    assert inside < outside
    assert rank["window_s"] >= STEPS * DELAY_S
