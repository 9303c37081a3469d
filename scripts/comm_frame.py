"""Time all_reduce, all_gather and reduce_scatter on this world's process group and
write the comm frame ``python -m bench.scale --comm-csv`` reads (the columns of
bench.analyze.comm.comm_table): for a world the run's communication cells did not
measure, or a build without them.

    python scripts/comm_frame.py --out comm.csv                  # 2 local CPU ranks (gloo)
    torchrun --nnodes=2 --nproc_per_node=1 ... scripts/comm_frame.py --out comm.csv --nodes 2

Each size is timed ``--iters`` times after ``--warmup`` calls, every call between two
barriers, as the slowest rank saw it; the row keeps the median. CPU ranks run one
thread each (as a 2-rank cell on 2 cores does); CUDA ranks use NCCL.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# 1 MiB up to the model's fp32 gradients (39.4 M parameters), through DDP's 25 MiB bucket
# and one of the three FSDP/ZeRO-3 units
SIZES = (2**20, 8 * 2**20, 25 * 2**20, 52_563_784, 157_691_352)
OPS = ("all_reduce", "all_gather", "reduce_scatter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the CSV to write (rank 0)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes the world spans (a label)")
    parser.add_argument("--iters", type=int, default=5, help="timed calls per size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="bytes, comma-separated")
    return parser


def call(op: str, nbytes: int, world: int, device: torch.device) -> Callable[[], None]:
    """One call of ``op`` on fp32 buffers; ``nbytes`` is nccl-tests' size (all_gather
    its output, reduce_scatter its input)."""
    count = nbytes // 4 // world * world
    whole = torch.ones(count, device=device)
    part = torch.ones(count // world, device=device)
    if op == "all_reduce":
        return lambda: dist.all_reduce(whole)
    if op == "all_gather":
        return lambda: dist.all_gather_into_tensor(whole, part)
    return lambda: dist.reduce_scatter_tensor(part, whole)


def slowest_s(run: Callable[[], None], device: torch.device) -> float:
    dist.barrier()
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return float(elapsed.item())


def measure(args: argparse.Namespace, device: torch.device) -> list[dict[str, object]]:
    world = dist.get_world_size()
    rows: list[dict[str, object]] = []
    for nbytes in (int(size) for size in args.sizes.split(",")):
        for op in OPS:
            run = call(op, nbytes, world, device)
            times = [slowest_s(run, device) for _ in range(args.warmup + args.iters)]
            median = statistics.median(times[args.warmup:])
            factor = 2 * (world - 1) / world if op == "all_reduce" else (world - 1) / world
            rows.append({"cell_id": f"comm-frame-{world}r-{args.nodes}n", "op": op,
                         "label": "sweep", "dtype": "float32", "bytes": nbytes,
                         "world_size": world, "nodes": args.nodes, "time_s": median,
                         "algbw_gbps": nbytes / median / 1e9,
                         "busbw_gbps": nbytes / median / 1e9 * factor})
    return rows


def worker(rank: int, world: int, args: argparse.Namespace) -> None:
    if "RANK" not in os.environ:  # started here, not by torchrun
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get(
            "MASTER_PORT", "29533"), RANK=str(rank), WORLD_SIZE=str(world))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank))) if cuda \
        else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.set_num_threads(1)
    dist.init_process_group("nccl" if cuda else "gloo")
    rows = measure(args, device)
    if dist.get_rank() == 0:
        with open(args.out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        for row in rows:
            print(f"{row['op']:>14} {row['bytes']:>11} B  {float(row['time_s']) * 1e3:8.2f} ms  "
                  f"busbw {float(row['busbw_gbps']):6.2f} GB/s")
    dist.destroy_process_group()


if __name__ == "__main__":
    arguments = build_parser().parse_args()
    if "RANK" in os.environ:
        worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), arguments)
    else:
        mp.spawn(worker, args=(2, arguments), nprocs=2)
