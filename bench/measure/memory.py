"""Peak memory of one rank: the device allocator's peaks and the process's RSS.

Both peaks are reset where a cell starts training (``reset_memory_peaks``), so that
a process that runs many cells (a torchrun walk) does not report an earlier cell's
peak. The RSS peak is Linux's VmHWM, which ``/proc/self/clear_refs`` resets to the
current RSS; ``ru_maxrss`` cannot be reset and is the fallback elsewhere."""

from __future__ import annotations

import resource
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK_RSS = "5"  # see proc(5), /proc/pid/clear_refs


def peak_rss_mb() -> float:
    """The process's peak resident set since the last reset, in MB."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def reset_peak_rss() -> bool:
    """Set the RSS peak to the current RSS; False where the system cannot."""
    try:
        CLEAR_REFS.write_text(RESET_PEAK_RSS)
    except OSError:
        return False
    return True


def memory_peaks(device: torch.device) -> dict[str, float | None]:
    """Peak device memory (None off CUDA) and peak RSS (MB), since the last reset."""
    if device.type != "cuda":
        return {"peak_mem_alloc_mb": None, "peak_mem_reserved_mb": None,
                "peak_rss_mb": peak_rss_mb()}
    return {
        "peak_mem_alloc_mb": torch.cuda.max_memory_allocated(device) / 2**20,
        "peak_mem_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20,
        "peak_rss_mb": peak_rss_mb(),
    }


def reset_memory_peaks(device: torch.device) -> None:
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
