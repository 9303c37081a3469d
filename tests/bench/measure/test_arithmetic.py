"""bench.measure.arithmetic: what the first training forward computes in, as seen."""

from __future__ import annotations

import torch
from torch import nn

from bench.measure.arithmetic import ArithmeticProbe


def net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(10))


def seen(module: nn.Module, autocast: bool = False) -> dict:
    probe = ArithmeticProbe(module, "cpu")
    images = torch.randn(2, 1, 8, 8, dtype=next(module.parameters()).dtype)
    module.eval()
    module(images)  # a validation pass is not what training computes in
    module.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        module(images)
    assert not module[0]._forward_hooks  # looked once, then gone
    return probe.result(module)


def test_fp32() -> None:
    assert seen(net()) == {"param_dtype": "float32", "param_dtype_in_forward": "float32",
                           "compute_dtype": "float32", "autocast": False}


def test_autocast_over_fp32_weights() -> None:
    assert seen(net(), autocast=True) == {
        "param_dtype": "float32", "param_dtype_in_forward": "float32",
        "compute_dtype": "bfloat16", "autocast": True}


def test_bf16_weights_without_autocast() -> None:
    module = net()
    module(torch.randn(1, 1, 8, 8))  # materialise the lazy layer, then cast
    assert seen(module.to(torch.bfloat16)) == {
        "param_dtype": "bfloat16", "param_dtype_in_forward": "bfloat16",
        "compute_dtype": "bfloat16", "autocast": False}
