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

from bench.execute.backends.raw import autocast_for
from mnist_core.model import MnistNet, build_optimizer

BATCH = 64


def make_step(precision: str, impl: str) -> Callable[[], torch.Tensor]:
    torch.manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    net = MnistNet().to(dtype)
    optimizer = build_optimizer(net.parameters(), "adam", 1e-3, impl)
    images = torch.randn(BATCH, 1, 28, 28, dtype=dtype)
    labels = torch.randint(0, 10, (BATCH,))
    device = torch.device("cpu")

    def step() -> torch.Tensor:
        with autocast_for(precision, device):
            loss = torch.nn.functional.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
