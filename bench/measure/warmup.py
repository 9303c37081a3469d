"""When warm-up ends: the rule every loop (Lightning and hand-written) follows.

A cell's ``warmup_steps`` is the least number of steps kept out of the measured
window. Under ``warmup="steady"`` (the default for throughput cells) warm-up goes on
after that until the step time is steady: the last ``STEADY_STEPS`` warm-up steps
each lie within ``STEADY_TOLERANCE`` of their median. It is bounded: after
``MAX_FACTOR x warmup_steps`` steps measuring starts anyway, and the record says the
warm-up never became steady (``warmup_steady: false``). Every rank must start
measuring at the same step, so the ranks agree on "steady" (each warm-up step, one
small all-reduce: all of them steady, or warm-up goes on); warm-up steps are
synchronised with the device, so a warm-up step's host time is its device time.

``warmup="fixed"``, accuracy cells and ``warmup_steps=0`` take exactly
``warmup_steps`` steps.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

# torch is imported where a collective runs, not here: bench.cell reads this module
# (through bench.measure.window) before it starts an engine cell's other ranks, and
# those start before this rank has paid for importing torch.
if TYPE_CHECKING:
    import torch

STEADY_STEPS = 3
STEADY_TOLERANCE = 0.10
MAX_FACTOR = 4


def steady(step_s: Sequence[float]) -> bool:
    """The last STEADY_STEPS step times each within STEADY_TOLERANCE of their median."""
    last = list(step_s[-STEADY_STEPS:])
    if len(last) < STEADY_STEPS:
        return False
    middle = statistics.median(last)
    return all(abs(step - middle) <= STEADY_TOLERANCE * middle for step in last)


@dataclass(frozen=True)
class WarmupRule:
    min_steps: int
    max_steps: int

    @classmethod
    def fixed(cls, steps: int) -> WarmupRule:
        return cls(steps, steps)

    @classmethod
    def for_cell(cls, warmup_steps: int, warmup: str, mode: str) -> WarmupRule:
        if warmup == "fixed" or mode == "accuracy" or warmup_steps == 0:
            return cls.fixed(warmup_steps)
        return cls(warmup_steps, MAX_FACTOR * warmup_steps)

    @property
    def adaptive(self) -> bool:
        return self.max_steps > self.min_steps

    def over(self, step_s: Sequence[float], agree: Callable[[bool], bool]) -> bool:
        """Whether warm-up ends with the last of ``step_s`` (the warm-up steps so far).
        Every rank calls this at every warm-up step with as many steps, so ``agree``
        (a collective) is called alike on every rank."""
        taken = len(step_s)
        if taken < self.min_steps:
            return False
        if taken >= self.max_steps:
            return True
        return agree(steady(step_s))


def all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on every rank (``flag`` itself without a process
    group). The tensor lives on ``device``: NCCL reduces CUDA tensors only."""
    import torch

    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    verdict = torch.tensor([int(flag)], device=device)
    dist.all_reduce(verdict, op=dist.ReduceOp.MIN)
    return bool(verdict.item())


def all_ranks_min(value: float, device: torch.device) -> float:
    """The smallest ``value`` of any rank (``value`` itself without a process group)."""
    import torch

    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    least = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(least, op=dist.ReduceOp.MIN)
    return float(least.item())
