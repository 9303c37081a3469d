"""The step clock: host ``perf_counter`` readings at step boundaries, one rank.

On CUDA the device is synchronised at the edges of the measured window (end of
the last warm-up step, end of training), so the window's total is exact while
the steps inside it keep their CPU/GPU overlap. Paused time (validation) is
taken out.
"""

from __future__ import annotations

import time

import torch

from bench.measure.memory import memory_peaks
from bench.record import RankRaw


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Raw per-step times of one rank. Call ``batch_ready`` when a step's batch
    is in hand, ``step_done`` when its optimizer step has been issued, and
    ``pause``/``resume`` around anything that is not training (validation)."""

    def __init__(self, warmup_steps: int, device: torch.device) -> None:
        self.warmup_steps, self.device = warmup_steps, device
        self.step_s: list[float] = []
        self.data_wait_s: list[float] = []
        self.samples: list[int] = []
        self.losses: list[torch.Tensor] = []
        self.first_step_at: float | None = None
        self._last = 0.0
        self._paused_at: float | None = None

    def start(self) -> None:
        synchronize(self.device)
        self._last = time.perf_counter()

    def batch_ready(self) -> None:
        now = time.perf_counter()
        if self.first_step_at is None:
            self.first_step_at = now
        self.data_wait_s.append(now - self._last)

    def step_done(self, loss: torch.Tensor | None, batch_size: int) -> None:
        if len(self.step_s) + 1 == self.warmup_steps:
            synchronize(self.device)  # the measured window starts exactly here
        now = time.perf_counter()
        self.step_s.append(now - self._last)
        self._last = now
        self.samples.append(batch_size)
        if loss is not None:
            self.losses.append(loss.detach())

    def pause(self) -> None:
        if self._paused_at is None:  # a second pause does not restart the paused interval
            self._paused_at = time.perf_counter()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._last += time.perf_counter() - self._paused_at
            self._paused_at = None

    def finish(self) -> None:
        """Close the window: what the device still had queued belongs to the last step."""
        if not self.step_s:
            return
        synchronize(self.device)
        self.step_s[-1] += time.perf_counter() - self._last
        self._last = time.perf_counter()

    def rank_raw(self, rank: int) -> RankRaw:
        """This rank's raw values: warm-up steps apart from the measured window."""
        w = self.warmup_steps
        losses = torch.stack(self.losses).float().cpu().tolist() if self.losses else []
        return RankRaw(
            rank=rank,
            warmup_step_s=self.step_s[:w],
            warmup_data_wait_s=self.data_wait_s[:w],
            step_s=self.step_s[w:],
            data_wait_s=self.data_wait_s[w:],
            samples=int(sum(self.samples[w:])),
            window_s=float(sum(self.step_s[w:])),
            loss=losses,
            **memory_peaks(self.device),
        )
