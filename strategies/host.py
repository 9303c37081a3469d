"""Facts about the host this process runs on, read at run time: its usable cores,
whether ``srun`` started it, what its CPU's kernels can do as torch sees it, and
where jemalloc is (strategies.registry.Machine gathers them)."""

from __future__ import annotations

import ctypes.util
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


# Where malloc "jemalloc" finds the library, when the loader's search would not.
JEMALLOC_VAR = "MNIST_BENCH_JEMALLOC"
# jemalloc's settings in a malloc "jemalloc" cell: freed pages are never purged
# (returned to the kernel), so that a buffer the size of the last one freed reuses its
# pages instead of faulting in fresh ones (bench.execute.allocator.apply_malloc).
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def jemalloc_library() -> str | None:
    """The jemalloc shared library that a malloc "jemalloc" cell preloads: the path in
    MNIST_BENCH_JEMALLOC (set, but empty: none), else the one the dynamic loader finds
    (Debian and Ubuntu: apt install libjemalloc2). None where there is none."""
    if JEMALLOC_VAR in os.environ:
        path = os.environ[JEMALLOC_VAR]
        return path if path and os.path.exists(path) else None
    return ctypes.util.find_library("jemalloc")


def why_no_allocator(malloc: str, glibc: bool, jemalloc: bool, launched: bool = False
                     ) -> str | None:
    """Why a cell's ``malloc`` cannot be had, or None. ``jemalloc``: a library is here
    or, for a cell a launched walk runs in its own processes (``launched``), those
    processes started with it preloaded (an allocator is chosen as a process starts)."""
    if malloc == "retain" and not glibc:
        return "malloc retain sets glibc's mallopt; this C library is not glibc"
    if malloc == "jemalloc" and not jemalloc:
        if launched:
            return ("malloc jemalloc: a launched cell runs in the launcher's processes, "
                    "whose allocator was chosen when they started; launch with "
                    f"LD_PRELOAD=<libjemalloc.so.2> MALLOC_CONF={JEMALLOC_CONF}")
        return ("malloc jemalloc preloads jemalloc, and this machine has none (apt install "
                f"libjemalloc2, or set {JEMALLOC_VAR} to its path)")
    return None
