"""Facts about the host this process runs on, read at run time: its usable cores,
whether ``srun`` started it, and what its CPU's kernels can do as torch sees it
(strategies.registry.Machine gathers them)."""

from __future__ import annotations

import os

# Why a CPU bf16 cell is skipped here (strategies.registry), and a bf16 test too.
NO_BF16_KERNELS = ("this CPU has no bf16 kernels in torch's oneDNN backend (x86 needs "
                   "AVX-512 or AMX)")


def cpu_has_bf16_kernels() -> bool:
    """Whether torch's oneDNN backend runs bf16 on this CPU (on x86 it needs AVX-512 or
    AMX). Without it torch falls back to generic code: on an AVX2-only x86 CPU a
    64x4096 by 4096x4096 bf16 matmul took 7.5 s against fp32's 34 ms, so one bf16 step
    of this model takes tens of seconds. Where torch cannot say, assume it can."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or an older torch
        return True


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1


def slurm_launched() -> bool:
    """True in a process started by ``srun`` (as Lightning's SLURMEnvironment decides).
    Lightning is imported only under SLURM: the orchestrating process never imports it
    (7 s of a core)."""
    if "SLURM_NTASKS" not in os.environ:
        return False
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()
