"""Deliberate faults for testing the orchestrator's isolation, switched on only by
the environment variable MNIST_BENCH_INJECT_FAULT="<cell-id>[@<rank>]=<kind>[,...]"
(with ``@<rank>``, only that rank of a multi-process cell fails).

kinds: raise (an exception), sigkill (the process kills itself), hang (sleeps
forever), sleep:<s> (sleeps <s> seconds, then goes on: a rank late for the cell's
first collective, which the other ranks enter on time), oom (raises torch's
out-of-memory error), slow-data:<ms> (the training loader waits that long before
each batch, a known data wait to measure). Off by default and cheap: one
environment lookup per cell.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import torch

ENV_VAR = "MNIST_BENCH_INJECT_FAULT"
KINDS = ("raise", "sigkill", "hang", "sleep", "oom", "slow-data")


def requested(cell_id: str, rank: int) -> str | None:
    """The fault asked for this cell and rank, with its argument (``slow-data:20``)."""
    for item in os.environ.get(ENV_VAR, "").split(","):
        target, _, kind = item.strip().partition("=")
        target_cell, _, target_rank = target.partition("@")
        if (target_cell == cell_id and kind.partition(":")[0] in KINDS
                and target_rank in ("", str(rank))):
            return kind
    return None


class SlowBatches:
    """A training loader that takes ``delay_s`` longer to hand out each batch. It works
    the time away, as a decoding loader would, rather than sleeping: a sleeping
    thread wakes late on a busy machine, and the delay would not be the one asked."""

    def __init__(self, loader: Any, delay_s: float) -> None:
        self.loader, self.delay_s = loader, delay_s

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            until = time.perf_counter() + self.delay_s
            while time.perf_counter() < until:
                pass
            yield batch


def slow_down_training_data(cell_id: str, rank: int, datamodule: Any) -> None:
    """With ``slow-data:<ms>`` asked for this cell, its training loader waits <ms>
    before each batch."""
    kind, _, ms = (requested(cell_id, rank) or "").partition(":")
    if kind == "slow-data":
        make_loader = datamodule.train_dataloader
        datamodule.train_dataloader = lambda: SlowBatches(make_loader(), float(ms) / 1000)


def inject(cell_id: str, rank: int) -> None:
    kind, _, argument = (requested(cell_id, rank) or "").partition(":")
    if kind == "raise":
        raise RuntimeError(f"fault injected into {cell_id} ({ENV_VAR})")
    if kind == "oom":
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fault injected into {cell_id})")
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        while True:
            time.sleep(3600)
    if kind == "sleep":
        time.sleep(float(argument))
