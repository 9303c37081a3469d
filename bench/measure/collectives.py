"""Timing collectives the way nccl-tests does, at the sizes this model's training sends.

Sizes (``comm_sizes``), in bytes of the op's whole tensor (nccl-tests' "size": the
all_reduce buffer, the all_gather output, the reduce_scatter input):

- ``grads``: every parameter in the cell's dtype, what one step of DDP all-reduces
  (150 MiB in fp32, 75 MiB in bf16), what ZeRO/FSDP reduce-scatter and all-gather;
- ``bucket``: one DDP bucket at its default cap (bucket_cap_mb=25, MiB), all_reduce;
- ``zero-partition``: the grads / world size, the part one rank owns under ZeRO;
- ``sweep``: powers of 4 from 4 KiB up to the grads, for a latency/bandwidth fit.

Each iteration (``time_collective``) starts after a barrier (on CUDA, with the device
synchronised), ends when the op has finished on this rank (on CUDA, synchronised
before the clock is read), and counts as the slowest rank's time: an all_reduce (MAX)
of the ranks' elapsed seconds, the figure nccl-tests reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from bench.metrics import COMM_OPS

BUCKET_BYTES = 25 * 2**20  # torch DDP's default bucket_cap_mb = 25 (MiB)
SWEEP_FIRST_BYTES = 4 * 2**10
SWEEP_FACTOR = 4
# When two labels give an op the same size, it is timed once, under the first of these.
LABELS = ("grads", "bucket", "zero-partition", "sweep")


@dataclass(frozen=True)
class CommSize:
    op: str  # bench.metrics.COMM_OPS
    bytes: int  # nccl-tests' size: the op's whole tensor
    label: str  # LABELS (an alternate DDP cell adds "bucket-round-trip")


def comm_sizes(param_count: int, element_size: int, world_size: int) -> list[CommSize]:
    """What a comm cell times, op by op, smallest first; each (op, bytes) once. The
    all_gather and reduce_scatter sizes are rounded down to whole elements per rank."""
    grads = param_count * element_size
    sweep = []
    size = SWEEP_FIRST_BYTES
    while size <= grads:
        sweep.append(size)
        size *= SWEEP_FACTOR
    labelled = {"grads": [grads], "bucket": [min(BUCKET_BYTES, grads)],  # no bucket > grads
                "zero-partition": [grads // world_size], "sweep": sweep}
    found: list[CommSize] = []
    for op in COMM_OPS:
        chunk = element_size * (1 if op == "all_reduce" else world_size)
        by_bytes: dict[int, str] = {}
        for label in LABELS:
            if label == "bucket" and op != "all_reduce":
                continue  # DDP's bucket is all-reduced; ZeRO's and FSDP's are not buckets
            for raw in labelled[label]:
                nbytes = raw // chunk * chunk
                if nbytes > 0:
                    by_bytes.setdefault(nbytes, label)
        found += [CommSize(op, nbytes, by_bytes[nbytes]) for nbytes in sorted(by_bytes)]
    return found


def comm_row(size: CommSize, dtype: torch.dtype, times: list[float], world_size: int,
             nodes: int) -> dict[str, Any]:
    """One entry of a record's ``raw.comm``: the op at its size, and its timed seconds."""
    return {"op": size.op, "bytes": size.bytes, "label": size.label,
            "dtype": str(dtype).removeprefix("torch."), "time_s": times,
            "world_size": world_size, "nodes": nodes}


def buffers(size: CommSize, dtype: torch.dtype, world_size: int, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, output) of the op at its size; all_reduce works in place."""
    elements = size.bytes // torch.empty((), dtype=dtype).element_size()
    whole = torch.ones(elements, dtype=dtype, device=device)
    if size.op == "all_reduce":
        return whole, whole
    part = torch.ones(elements // world_size, dtype=dtype, device=device)
    return (part, whole) if size.op == "all_gather" else (whole, part)


def run_op(op: str, source: torch.Tensor, target: torch.Tensor) -> None:
    """The op on one flat tensor, as FSDP and ZeRO call it (newer torch renamed
    all_gather_into_tensor and reduce_scatter_tensor to *_single)."""
    if op == "all_reduce":
        dist.all_reduce(source)
    elif op == "all_gather":
        getattr(dist, "all_gather_single", dist.all_gather_into_tensor)(target, source)
    else:
        getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)(target, source)


def time_collective(size: CommSize, dtype: torch.dtype, device: torch.device,
                    iterations: int, warmup: int) -> list[float]:
    """Seconds of each of ``iterations`` timed runs of the op (after ``warmup`` untimed
    ones), each the slowest rank's. A collective: every rank calls it alike."""
    source, target = buffers(size, dtype, dist.get_world_size(), device)
    return time_calls(lambda: run_op(size.op, source, target), device, iterations, warmup)


def time_bucket_round_trip(nbytes: int, dtype: torch.dtype, device: torch.device,
                           iterations: int, warmup: int) -> list[float]:
    """What DDP's reducer does with a bucket of ``nbytes``, timed as a collective: the
    gradients copied into the bucket, divided by the world size, all-reduced, copied
    back out to the gradients."""
    elements = nbytes // torch.empty((), dtype=dtype).element_size()
    gradients = torch.ones(elements, dtype=dtype, device=device)
    bucket = torch.empty_like(gradients)
    world = dist.get_world_size()

    def round_trip() -> None:
        bucket.copy_(gradients)
        bucket.div_(world)
        dist.all_reduce(bucket)
        gradients.copy_(bucket)

    return time_calls(round_trip, device, iterations, warmup)


def time_calls(call: Callable[[], None], device: torch.device, iterations: int,
               warmup: int) -> list[float]:
    """Seconds of each of ``iterations`` timed calls (after ``warmup`` untimed ones),
    each the slowest rank's; every rank calls it alike."""
    slowest = torch.zeros(1, dtype=torch.float64, device=device)
    times = []
    for index in range(warmup + iterations):
        dist.barrier()
        _synchronize(device)
        started = time.perf_counter()
        call()
        _synchronize(device)
        slowest.fill_(time.perf_counter() - started)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        if index >= warmup:
            times.append(float(slowest.item()))
    return times


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
