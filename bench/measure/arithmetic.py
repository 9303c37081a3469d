"""The arithmetic a cell actually ran, seen from inside its first forward pass.

One precision label means different arithmetic per strategy: ``bf16-mixed`` is
autocast over fp32 weights for single and DDP, bf16 weights without autocast for
DeepSpeed, parameters cast by the sharding policy for FSDP. So it is not inferred
from the label: a forward hook on the network's first layer records, once, the
dtype its weight has in the forward pass, the dtype it computes in (its
output's), and whether autocast is on."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ArithmeticProbe:
    """Attach to the network before training; read ``seen`` after it."""

    def __init__(self, net: nn.Module, device_type: str) -> None:
        self.device_type = device_type
        self.seen: dict[str, Any] = {}
        first = next(m for m in net.modules() if getattr(m, "weight", None) is not None
                     and not list(m.children()))
        self._handle = first.register_forward_hook(self._look)

    def _look(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if self.seen or not module.training:  # the first training forward only
            return
        self.seen = {"param_dtype_in_forward": str(module.weight.dtype).removeprefix("torch."),
                     "compute_dtype": str(output.dtype).removeprefix("torch."),
                     "autocast": torch.is_autocast_enabled(self.device_type)}
        self._handle.remove()  # nothing more to see: no cost on later steps

    def result(self, net: nn.Module) -> dict[str, Any]:
        """What was seen, and the dtype the weights are kept in between steps (a
        sharded or partitioned copy counts as kept)."""
        self._handle.remove()
        kept = next(net.parameters()).dtype
        return {"param_dtype": str(kept).removeprefix("torch."), **self.seen}
