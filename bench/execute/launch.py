"""The ranks of an engine control cell. Lightning starts the ranks of its own cells;
a hand-written loop has to start them itself, the same way: rank 0 is the cell's
process, and it runs its own command line again for ranks 1..N-1 with the rank in
the environment. Under torchrun the ranks and the process group already exist and
are used as they are."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from bench.matrix import Cell

# Set by rank 0 for the ranks it starts, so that they know they are not rank 0.
RANK_VAR = "MNIST_BENCH_ENGINE_RANK"


@dataclass
class Ranks:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # False under torchrun: the walk keeps the group for the next cell
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def close(self, failed: bool = False) -> None:
        """Leave the group this cell made. Rank 0 waits for the ranks it started, or,
        when it failed itself, stops them (they would wait for it in a collective)."""
        for child in self.children:
            if failed:
                child.kill()
            child.wait()
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def start_ranks(cell: Cell, timeout_s: float = 600.0) -> Ranks:
    """This process's rank in the cell's process group, starting the group (and, on
    rank 0, the other ranks' processes) unless a launcher already has."""
    cuda = cell.accelerator == "cuda"
    if dist.is_initialized():  # torchrun / SLURM: the walk's group
        rank = dist.get_rank()
        return Ranks(rank, dist.get_world_size(), _device(cuda, _local_rank()), False)
    world = cell.world_size
    if RANK_VAR in os.environ:
        rank = int(os.environ[RANK_VAR])
    else:
        rank = 0
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    # What engines read to place themselves (DeepSpeed looks for RANK and friends).
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    children = [] if rank else [_start_rank(r, world) for r in range(1, world)]
    if children:
        _watch(children)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                            timeout=dt.timedelta(seconds=timeout_s))
    return Ranks(rank, world, _device(cuda, rank), True, children)


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


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _device(cuda: bool, local_rank: int) -> torch.device:
    if not cuda:
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
