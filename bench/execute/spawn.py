"""Starting the other ranks of an engine control cell, without torch.

Rank 0 is the cell's process; it runs its own command line again for ranks
1..N-1, with the rank in the environment, as Lightning's launcher does for its
cells. ``bench.cell`` does this first thing, before it imports torch and
Lightning, so that the ranks import side by side instead of one after the other
(the imports take longer than many a cell's training)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from bench.matrix import Cell
from strategies.registry import strategy_spec

# Set by rank 0 for the ranks it starts, so that they know they are not rank 0.
RANK_VAR = "MNIST_BENCH_ENGINE_RANK"

_started: list[subprocess.Popen[bytes]] = []


def needs_own_ranks(cell: Cell) -> bool:
    """An engine cell of several ranks, not under a launcher that made them already."""
    launched = "TORCHELASTIC_RUN_ID" in os.environ or "SLURM_PROCID" in os.environ
    return (strategy_spec(cell.strategy).engine is not None and cell.world_size > 1
            and not launched)


def start_other_ranks(cell: Cell) -> list[subprocess.Popen[bytes]]:
    """On rank 0 (once per process): start ranks 1..N-1 of ``cell`` and a thread that
    stops this process when one of them fails. Returns the started ranks; on the
    other ranks, nothing."""
    if _started or RANK_VAR in os.environ:
        return list(_started)
    world = cell.world_size
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE=str(world))
    _started.extend(_start_rank(rank, world) for rank in range(1, world))
    _watch(_started)
    return list(_started)


def _start_rank(rank: int, world: int) -> subprocess.Popen[bytes]:
    env = os.environ | {RANK_VAR: str(rank), "RANK": str(rank), "LOCAL_RANK": str(rank),
                        "WORLD_SIZE": str(world)}  # set before Lightning is imported there
    # The same command line (one cell), in the same process group as rank 0, so that
    # the orchestrator's kill of the group reaches every rank.
    return subprocess.Popen([sys.executable, *sys.orig_argv[1:]], env=env,
                            stdin=subprocess.DEVNULL)


def _watch(children: list[subprocess.Popen[bytes]]) -> None:
    """When a started rank fails, stop rank 0 too (it would wait in a collective for
    the group's timeout), as Lightning's launcher does; the failed rank has left its
    failure note, which the orchestrator reports."""
    def watch() -> None:
        while True:
            codes = [child.poll() for child in children]
            if any(code not in (None, 0) for code in codes):
                for child in children:
                    if child.poll() is None:
                        child.kill()
                os.kill(os.getpid(), signal.SIGKILL)
            if all(code == 0 for code in codes):
                return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True, name="engine-rank-watch").start()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
