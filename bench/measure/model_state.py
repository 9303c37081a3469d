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


# Where DeepSpeed's ZeRO optimizers keep the reduced gradients of this rank's partition
# between backward and step (they free the parameters' .grad as they reduce): ZeRO-1/2
# ``averaged_gradients`` (views into ``grads_in_partition`` when contiguous), ZeRO-3
# ``grad_partitions_flat_buffer``; ``ipg_buffer`` is the bucket being reduced.
DEEPSPEED_GRADIENT_BUFFERS = ("averaged_gradients", "grads_in_partition",
                              "grad_partitions_flat_buffer", "ipg_buffer")


def gradient_bytes(module: torch.nn.Module, optimizer: Any = None) -> int:
    """The gradient memory this rank holds right after backward: the parameters'
    ``.grad`` (an FSDP shard counts its local part) and, under DeepSpeed, the ZeRO
    optimizer's gradient buffers. Views share their storage, so each storage counts
    once, whole: a flat buffer is held in full even where only parts are in use."""
    tensors = [p.grad for p in module.parameters() if p.grad is not None]
    for name in DEEPSPEED_GRADIENT_BUFFERS:
        tensors += _tensors([getattr(optimizer, name, None)])
    # With offload, ZeRO copies the reduced partition to its fp32 master's .grad.
    tensors += [t.grad for t in _master_partitions(optimizer) if t.grad is not None]
    storages: dict[int, int] = {}
    for tensor in tensors:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        storage = local.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def optimizer_state_bytes(optimizer: Any) -> int:
    """Adam's moments and step counters, of the torch optimizer inside any wrapper
    (DeepSpeed's ZeRO optimizers keep it as ``.optimizer``, over their partition)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return sum(local_bytes(t) for t in _tensors(getattr(inner, "state", {}).values()))


def master_parameter_bytes(optimizer: Any) -> int:
    """DeepSpeed's fp32 copy of this rank's partition (0 for torch optimizers)."""
    return sum(local_bytes(t) for t in _master_partitions(optimizer))


def _master_partitions(optimizer: Any) -> list[torch.Tensor]:
    return list(getattr(optimizer, "single_partition_of_fp32_groups", None)  # ZeRO-1/2
                or getattr(optimizer, "fp32_partitioned_groups_flat", None) or [])  # ZeRO-3
