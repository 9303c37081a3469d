"""A communication cell: no training, the collectives DDP, FSDP and ZeRO send, timed in
the process group the strategies use (gloo on CPU, NCCL on CUDA: bench.execute.launch),
at this model's sizes and over a sweep (bench.measure.collectives). Its ranks are
started as an engine cell's are; its record's ``raw.comm`` holds one row per (op, size).

``cell.steps`` timed iterations per (op, size) after ``cell.warmup_steps`` untimed
ones, the same at every size: gloo takes about a second per 150 MB all_reduce on a
small CPU, so a comm preset keeps both small."""

from __future__ import annotations

from typing import Any

import torch

from bench.execute.launch import Ranks, start_ranks
from bench.execute.workload import LoopResult, Workload
from bench.measure import ledger
from bench.measure.collectives import comm_row, comm_sizes, time_collective


def buffer_dtype(precision: str) -> torch.dtype:
    """The buffers' dtype: 32-true -> fp32, *bf16* -> bf16, *16* -> fp16, the dtype the
    gradients are reduced in where the weights are in it (bf16-true; FSDP's and
    DeepSpeed's reduce dtype). Lightning's DDP under bf16-mixed keeps fp32 weights and
    reduces fp32 gradients: its traffic is the 32-true cell's."""
    if "bf16" in precision:
        return torch.bfloat16
    return torch.float16 if "16" in precision else torch.float32


def run(workload: Workload) -> LoopResult:
    ranks = start_ranks(workload.cell)
    try:
        backend = str(torch.distributed.get_backend())
        rows = _time_every_size(workload, ranks)
    except BaseException:
        ranks.close(failed=True)
        raise
    ranks.close()
    return LoopResult(ranks=[], peak_source="none: a comm cell computes nothing",
                      precision=workload.cell.precision, world_size=ranks.world_size,
                      strategy=f"collectives ({backend})",
                      optimizer=None, grad_scaler=False, outcome={"comm": rows},
                      extra_effective={"comm_backend": backend})


def _time_every_size(workload: Workload, ranks: Ranks) -> list[dict[str, Any]]:
    cell = workload.cell
    dtype = buffer_dtype(cell.precision)
    params = sum(p.numel() for p in workload.model.net.parameters())
    element = torch.empty((), dtype=dtype).element_size()
    rows = []
    ledger.mark("training_start")
    for size in comm_sizes(params, element, ranks.world_size):
        times = time_collective(size, dtype, ranks.device, cell.steps, cell.warmup_steps)
        rows.append(comm_row(size, dtype, times, ranks.world_size, cell.num_nodes))
    ledger.mark("training_end")
    return rows
