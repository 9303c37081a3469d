"""What torch.compile cost a cell, as torch reports it: dynamo's own compile timers
and graph count, read before training, when training hands over to its first
validation, and at the end (so a recompile in a later step counts, cost that
uncompiled cells pay too does not, and the validation graph's compile -- inference
mode, another batch size -- is told apart from the training graph's), and a fresh
inductor cache per (cell, repeat), so that a repeat is not faster for its
predecessor's cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# dynamo's timers: one frame's whole compilation at its first call (tracing,
# AOTAutograd, the backend's forward graph), and the backward graph, which
# AOTAutograd compiles lazily at the first backward (torch 2.4 and later).
COMPILE_TIMERS = ("_compile.compile_inner", "backward._backward_impl")


def _totals() -> tuple[float, int]:
    from torch._dynamo.utils import compilation_time_metrics, counters

    seconds = sum(sum(compilation_time_metrics.get(timer, [])) for timer in COMPILE_TIMERS)
    return seconds, int(counters["stats"]["unique_graphs"])


@dataclass
class CompileMeter:
    """``start`` before the first step, ``training_done`` when training first hands
    over to validation (or ends), ``result`` at the end."""

    cache_cold: bool
    _start: tuple[float, int] = (0.0, 0)
    _training: tuple[float, int] | None = None

    @classmethod
    def start(cls, cache_dir: Path) -> CompileMeter:
        """Point inductor (and Triton) at ``cache_dir``, then read the timers. Must run
        before the first compiled call of the process."""
        cold = not (cache_dir.exists() and any(cache_dir.iterdir()))
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
        os.environ["TRITON_CACHE_DIR"] = str(cache_dir / "triton")
        return cls(cache_cold=cold, _start=_totals())

    def training_done(self) -> None:
        """The training graph's compile ends here; only the first call counts."""
        if self._training is None:
            self._training = _totals()

    def result(self) -> dict[str, Any]:
        """compile_s: the training graph, forward and backward (and any recompile
        before the first validation); compile_val_s: everything after, the validation
        graph's compile mostly (0.0 where nothing validated or nothing recompiled)."""
        seconds, graphs = _totals()
        training_s, _ = self._training if self._training is not None else (seconds, graphs)
        return {"compile_s": training_s - self._start[0],
                "compile_val_s": seconds - training_s,
                "graphs_compiled": graphs - self._start[1],
                "inductor_cache_cold": self.cache_cold}
