"""What torch.compile cost a cell, as torch reports it: dynamo's own compile timers
and graph count, read before and after training (so a recompile in a later step
counts, and cost that uncompiled cells pay too does not), and a fresh inductor
cache per (cell, repeat), so that a repeat is not faster for its predecessor's
cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# dynamo's timer around one frame's whole compilation: tracing, AOTAutograd and the
# backend (inductor), forward and backward.
COMPILE_TIMER = "_compile.compile_inner"


def _totals() -> tuple[float, int]:
    from torch._dynamo.utils import compilation_time_metrics, counters

    seconds = sum(compilation_time_metrics.get(COMPILE_TIMER, []))
    return seconds, int(counters["stats"]["unique_graphs"])


@dataclass
class CompileMeter:
    """Start before the first step, ``result`` after the last."""

    cache_cold: bool
    _start: tuple[float, int] = (0.0, 0)

    @classmethod
    def start(cls, cache_dir: Path) -> CompileMeter:
        """Point inductor (and Triton) at ``cache_dir``, then read the timers. Must run
        before the first compiled call of the process."""
        cold = not (cache_dir.exists() and any(cache_dir.iterdir()))
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
        os.environ["TRITON_CACHE_DIR"] = str(cache_dir / "triton")
        return cls(cache_cold=cold, _start=_totals())

    def result(self) -> dict[str, Any]:
        seconds, graphs = _totals()
        return {"compile_s": seconds - self._start[0],
                "graphs_compiled": graphs - self._start[1],
                "inductor_cache_cold": self.cache_cold}
