"""bench.measure.memory: the RSS peak belongs to the cell that made it."""

from __future__ import annotations

import torch

from bench.measure.memory import memory_peaks, peak_rss_mb, reset_memory_peaks

CPU = torch.device("cpu")
BIG_MB = 400


def test_a_reset_forgets_an_earlier_peak() -> None:
    """As in a torchrun walk: an earlier cell's 400 MB, freed, is not the next cell's."""
    big = torch.ones(BIG_MB * 2**20 // 4)  # touched, so resident
    with_big = peak_rss_mb()
    del big
    reset_memory_peaks(CPU)
    after = memory_peaks(CPU)["peak_rss_mb"]
    assert after is not None and after < with_big - BIG_MB / 2
    again = torch.ones(BIG_MB * 2**20 // 4)
    assert memory_peaks(CPU)["peak_rss_mb"] >= after + BIG_MB * 0.9  # the new peak counts
    del again
