"""Model-state memory of one rank, counted from the tensors it holds: parameters,
gradients, optimizer state and (DeepSpeed) fp32 master partitions. Sharded tensors
count their local shard only: an FSDP2 DTensor its ``to_local()``, a ZeRO-3
parameter its ``ds_tensor`` partition. This is the classic ZeRO memory table,
measured rather than quoted."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def _tensors(values: Iterable[Any]) -> Iterable[torch.Tensor]:
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, dict):
            yield from _tensors(value.values())
        elif isinstance(value, list | tuple):
            yield from _tensors(value)


def parameter_bytes(module: torch.nn.Module) -> int:
    """This rank's share of the parameters (a ZeRO-3 partition, an FSDP shard)."""
    return sum(local_bytes(getattr(p, "ds_tensor", p)) for p in module.parameters())


def gradient_bytes(module: torch.nn.Module) -> int:
    """The gradients the parameters hold right after backward (None-gradients count 0)."""
    return sum(local_bytes(p.grad) for p in module.parameters() if p.grad is not None)


def optimizer_state_bytes(optimizer: Any) -> int:
    """Adam's moments and step counters, of the torch optimizer inside any wrapper
    (DeepSpeed's ZeRO optimizers keep it as ``.optimizer``, over their partition)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return sum(local_bytes(t) for t in _tensors(getattr(inner, "state", {}).values()))


def master_parameter_bytes(optimizer: Any) -> int:
    """DeepSpeed's fp32 copy of this rank's partition (0 for torch optimizers)."""
    groups = (getattr(optimizer, "single_partition_of_fp32_groups", None)  # ZeRO-1/2
              or getattr(optimizer, "fp32_partitioned_groups_flat", None) or [])  # ZeRO-3
    return sum(local_bytes(t) for t in groups)
