"""Per-process choices derived from a cell that change speed: threads per rank,
TF32, the host allocator, DataLoader workers. Set by both the Lightning cell and the
raw loop, and recorded in the record's ``effective`` block."""

from __future__ import annotations

import ctypes
import os
from typing import Any

import torch

from bench.matrix import Cell


def threads_per_rank(cell: Cell) -> int:
    """The ranks on this machine split its cores, so that they do not oversubscribe them:
    CPU ranks train on them, GPU ranks feed their device and, with DeepSpeed's offload,
    run the optimizer on them (cpu_adam). The ranks here: the launcher's
    LOCAL_WORLD_SIZE (torchrun, SLURM through bench.orchestrate.launched), else the
    cell's devices (per node, as Lightning counts them). torchrun's OMP_NUM_THREADS=1
    is replaced by this share."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local = int(os.environ.get("LOCAL_WORLD_SIZE") or cell.devices)
    return max(1, (cores or 1) // max(1, local))


def apply_process_settings(cell: Cell) -> dict[str, Any]:
    """Per-process choices that change speed, set here and recorded in the record."""
    threads = threads_per_rank(cell)
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(cell.matmul_precision)
    # cuDNN convolutions follow the same choice as matmuls.
    torch.backends.cudnn.allow_tf32 = cell.matmul_precision != "highest"
    apply_malloc(cell.malloc)
    return {"num_threads": threads, "matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "channels_last": cell.channels_last, "malloc": cell.malloc,
            "loader_workers": loader_workers(cell)}


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
RETAIN_TRIM_BYTES = 2**31 - 1  # mallopt takes a C int: keep up to 2 GiB free at the top


def apply_malloc(mode: str) -> None:
    """``retain``: from here on glibc serves every allocation from its one heap (one
    arena, no mmap of its own) and never trims the heap's top, so what a step frees, the next step
    reuses. By default glibc maps each allocation over its mmap threshold (at most 32
    MiB) fresh and unmaps it when freed; this model's two 79 MB weights then cost
    every CPU step their gradients and the optimizer's temporaries as new pages, each
    a page fault that the kernel zeroes. (GPU tensors use CUDA's caching allocator.)
    ``system``: glibc as the process started. Allocations made before stay as
    they were. A cell with ``retain`` is skipped where the C library is not glibc
    (strategies.registry)."""
    if mode == "system":
        return
    mallopt = ctypes.CDLL(None).mallopt  # the process's C library
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # One arena: a thread that finds the main arena busy would otherwise take another,
    # whose heaps (64 MiB at most) cannot hold a large tensor, which glibc then maps.
    if not (mallopt(M_ARENA_MAX, 1) and mallopt(M_MMAP_MAX, 0)
            and mallopt(M_TRIM_THRESHOLD, RETAIN_TRIM_BYTES)):
        raise RuntimeError("glibc's mallopt refused malloc retain's settings")


def loader_workers(cell: Cell) -> int:
    """DataLoader workers for the torchvision loader: on CUDA, 4 per rank so the GPU
    is fed while Python transforms run; on CPU none, since workers would take cores
    from the training threads. The other loaders do not use workers."""
    return 4 if cell.accelerator == "cuda" and cell.loader == "torchvision" else 0
