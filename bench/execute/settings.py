"""Per-process choices derived from a cell that change speed: threads per rank,
TF32, the host allocator, DataLoader workers. Set by both the Lightning cell and the
raw loop, and recorded in the record's ``effective`` block."""

from __future__ import annotations

import os
from typing import Any

import torch

from bench.execute.allocator import apply_malloc
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


def loader_workers(cell: Cell) -> int:
    """DataLoader workers for the torchvision loader: on CUDA, 4 per rank so the GPU
    is fed while Python transforms run; on CPU none, since workers would take cores
    from the training threads. The other loaders do not use workers."""
    return 4 if cell.accelerator == "cuda" and cell.loader == "torchvision" else 0
