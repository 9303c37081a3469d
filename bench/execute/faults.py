"""Deliberate faults for testing the orchestrator's isolation, switched on only by
the environment variable MNIST_BENCH_INJECT_FAULT="<cell-id>[@<rank>]=<kind>[,...]"
(with ``@<rank>``, only that rank of a multi-process cell fails).

kinds: raise (an exception), sigkill (the process kills itself), hang (sleeps
forever), oom (raises torch's out-of-memory error). Off by default and cheap:
one environment lookup per cell.
"""

from __future__ import annotations

import os
import signal
import time

import torch

ENV_VAR = "MNIST_BENCH_INJECT_FAULT"
KINDS = ("raise", "sigkill", "hang", "oom")


def requested(cell_id: str, rank: int) -> str | None:
    for item in os.environ.get(ENV_VAR, "").split(","):
        target, _, kind = item.strip().partition("=")
        target_cell, _, target_rank = target.partition("@")
        if target_cell == cell_id and kind in KINDS and target_rank in ("", str(rank)):
            return kind
    return None


def inject(cell_id: str, rank: int) -> None:
    kind = requested(cell_id, rank)
    if kind == "raise":
        raise RuntimeError(f"fault injected into {cell_id} ({ENV_VAR})")
    if kind == "oom":
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fault injected into {cell_id})")
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        while True:
            time.sleep(3600)
