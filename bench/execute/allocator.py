"""The host allocator a cell's processes use (its ``malloc``): set where a process can
still choose it (glibc's mallopt), asked for in the environment of the processes it
is chosen in as they start (jemalloc). Without torch: the orchestrating process
starts cells with allocator_environment."""

from __future__ import annotations

import ctypes
import os

from strategies.host import JEMALLOC_CONF, jemalloc_library

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
RETAIN_TRIM_BYTES = 2**31 - 1  # mallopt takes a C int: keep up to 2 GiB free at the top


def apply_malloc(mode: str) -> None:
    """``retain``: from here on glibc serves every allocation from its one heap (one
    arena, no mmap of its own) and never trims the heap's top, so that what a step
    frees, the next step can reuse. By default glibc maps each allocation over its mmap
    threshold (at most 32 MiB) fresh and unmaps it when freed; this model's two 79 MB
    weights then cost every CPU step their gradients and the optimizer's temporaries as
    new pages, each a page fault that the kernel zeroes. glibc still grows its heap for
    a large buffer that a freed one of the same size does not fit (torch allocates
    64-byte aligned, and an aligned request needs more than the exact size): gloo's
    temporaries in all_gather and the default Adam's then fault in fresh pages anyway.
    ``jemalloc``: the process was started with jemalloc preloaded and never purging
    (allocator_environment); checked here, as nothing else would notice its absence.
    ``system``: glibc as the process started. Allocations made before stay as
    they were. (GPU tensors use CUDA's caching allocator.) A cell is skipped where
    its allocator cannot be had (strategies.registry)."""
    if mode == "jemalloc":
        if not jemalloc_loaded():
            raise RuntimeError("malloc jemalloc: this process did not start with jemalloc "
                               "preloaded; start it with " + " ".join(
                                   f"{k}={v}" for k, v in allocator_environment(mode).items()))
        return
    if mode == "system":
        return
    mallopt = ctypes.CDLL(None).mallopt  # the process's C library
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # One arena: a thread that finds the main arena busy would otherwise take another,
    # whose heaps (64 MiB at most) cannot hold a large tensor, which glibc then maps.
    if not (mallopt(M_ARENA_MAX, 1) and mallopt(M_MMAP_MAX, 0)
            and mallopt(M_TRIM_THRESHOLD, RETAIN_TRIM_BYTES)):
        raise RuntimeError("glibc's mallopt refused malloc retain's settings")


def allocator_environment(mode: str) -> dict[str, str]:
    """What a cell's process needs in its environment when it starts, for ``mode``: for
    jemalloc, the library preloaded (ahead of any preload already asked for) and its
    settings (JEMALLOC_CONF). The cell's other ranks inherit it (bench.execute.spawn)."""
    if mode != "jemalloc":
        return {}
    library = jemalloc_library() or "libjemalloc.so.2"
    preload = " ".join(filter(None, (library, os.environ.get("LD_PRELOAD", ""))))
    return {"LD_PRELOAD": preload, "MALLOC_CONF": JEMALLOC_CONF}


def jemalloc_loaded() -> bool:
    """jemalloc is mapped into this process (Linux: /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("jemalloc" in line for line in maps)
    except OSError:
        return False
