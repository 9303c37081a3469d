"""One training step of the shared model (forward, backward, optimizer) on CPU, per
precision and optimizer implementation. In the default test run these execute once
as tests (`--benchmark-disable`); to time them and compare after an upgrade:

    pytest tests/benchmarks --benchmark-enable --benchmark-autosave
    pytest tests/benchmarks --benchmark-enable --benchmark-compare
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from bench.execute.backends.engines import Plain
from bench.execute.backends.raw import autocast_for
from bench.matrix import Cell
from mnist_core.model import MnistNet

BATCH = 64


def make_step(precision: str, impl: str) -> Callable[[], torch.Tensor]:
    """The raw control's own step (bench.execute.backends), not a copy of it."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    engine = Plain(Cell(precision=precision, optimizer_impl=impl), MnistNet(), device)
    images = torch.randn(BATCH, 1, 28, 28, dtype=engine.input_dtype)
    labels = torch.randint(0, 10, (BATCH,))

    def step() -> torch.Tensor:
        with autocast_for(engine.autocast, device):
            loss = torch.nn.functional.cross_entropy(engine.module(images), labels)
        engine.train_step(loss)
        return loss.detach()

    return step


@pytest.mark.parametrize("impl", ["default", "foreach", "fused"])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16-true"])
def test_training_step(benchmark: pytest.FixtureRequest, precision: str, impl: str) -> None:
    step = make_step(precision, impl)
    step()  # warm-up: first-call allocations and kernel selection
    benchmark.extra_info["samples_per_step"] = BATCH
    loss = benchmark(step)
    assert torch.isfinite(loss)
