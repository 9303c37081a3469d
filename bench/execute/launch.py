"""The process group of an engine control cell. Its ranks were started by
bench.execute.spawn (as a Lightning cell's are) and join the group here. Under
torchrun the ranks and the process group already exist and are used as they are."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from bench.execute.spawn import RANK_VAR, RankProcess, start_other_ranks
from bench.matrix import Cell


@dataclass
class Ranks:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # False under torchrun: the walk keeps the group for the next cell
    children: list[RankProcess] = field(default_factory=list)

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
    rank = int(os.environ.get(RANK_VAR, "0"))
    # Rank 0 has started the others already when bench.cell began; if not, now.
    # (The spawned ranks find RANK and friends in their environment, as DeepSpeed
    # expects.)
    children = start_other_ranks(cell) if rank == 0 else []
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world,
                            timeout=dt.timedelta(seconds=timeout_s))
    return Ranks(rank, world, _device(cuda, rank), True, children)


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _device(cuda: bool, local_rank: int) -> torch.device:
    if not cuda:
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)
