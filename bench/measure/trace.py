"""``--profile N``: a torch.profiler trace of N training steps per cell, to see
inside a step (which kernels, which collectives, where the host waits). Viewable in
Perfetto (ui.perfetto.dev) or TensorBoard.

The trace covers the first N measured steps, so the figures of a profiled cell carry
the profiler's overhead: the record says it was profiled (``effective.profiled_steps``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Set by ``bench.run --profile N``; the cells (and every rank) inherit it.
PROFILE_VAR = "MNIST_BENCH_PROFILE_STEPS"


def profile_steps() -> int:
    value = os.environ.get(PROFILE_VAR, "0") or "0"
    steps = int(value)
    if steps < 0:
        raise ValueError(f"{PROFILE_VAR} must be a step count, got {value!r}")
    return steps


class StepTrace:
    """Call ``at_step(index)`` as each step begins (the index among the measured steps,
    0-based; None during warm-up) and ``stop`` after the last."""

    def __init__(self, steps: int, path: Path, device: torch.device) -> None:
        import torch  # here: bench.run reads PROFILE_VAR from this module without torch

        self.steps, self.path = steps, path
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._profiler: Any = torch.profiler.profile(activities=activities, record_shapes=True)
        self._running = False

    @classmethod
    def maybe(cls, path: Path, device: torch.device) -> StepTrace | None:
        steps = profile_steps()
        return cls(steps, path, device) if steps else None

    def at_step(self, index: int | None) -> None:
        """Start as the measured steps begin; stop and write after ``steps`` of them."""
        if index == 0 and not self._running:
            self._profiler.start()
            self._running = True
        elif self._running and index == self.steps:
            self.stop()

    def stop(self) -> None:
        """Write the trace (of fewer steps when training ended first)."""
        if self._running:
            self._profiler.stop()
            self._running = False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._profiler.export_chrome_trace(str(self.path))
