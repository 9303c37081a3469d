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
from tests.cpu_bf16 import needs_cpu_bf16

BATCH = 64


def make_step(precision: str, impl: str) -> tuple[Callable[[], torch.Tensor], Plain]:
    """The raw control's engine (bench.execute.backends.engines), not a copy of it: its
    model, optimizer and autocast, stepped by ``train_step`` (the same zero_grad,
    backward and step the raw loop calls, without the clock's marks between them)."""
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

    return step, engine


@pytest.mark.parametrize("impl", ["default", "foreach", "fused"])
@pytest.mark.parametrize("precision", ["32-true", pytest.param("bf16-mixed", marks=needs_cpu_bf16),
                                       pytest.param("bf16-true", marks=needs_cpu_bf16)])
def test_training_step(benchmark: pytest.FixtureRequest, precision: str, impl: str) -> None:
    step, engine = make_step(precision, impl)
    step()  # warm-up: first-call allocations and kernel selection
    before = [p.detach().clone() for p in engine.module.parameters()]
    benchmark.extra_info["samples_per_step"] = BATCH
    loss = benchmark(step)
    assert torch.isfinite(loss)
    # A step that timed nothing would be fast: every parameter must have moved (Adam
    # moves each by about lr, whatever its gradient's scale).
    after = list(engine.module.parameters())
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
