"""Peak memory of one rank: the device allocator's peaks and the process's RSS."""

from __future__ import annotations

import resource

import torch


def memory_peaks(device: torch.device) -> dict[str, float | None]:
    """Peak device memory since the last reset (None off CUDA) and peak RSS (MB)."""
    # ru_maxrss is in kilobytes on Linux.
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type != "cuda":
        return {"peak_mem_alloc_mb": None, "peak_mem_reserved_mb": None, "peak_rss_mb": rss_mb}
    return {
        "peak_mem_alloc_mb": torch.cuda.max_memory_allocated(device) / 2**20,
        "peak_mem_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20,
        "peak_rss_mb": rss_mb,
    }


def reset_memory_peaks(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
