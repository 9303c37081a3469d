"""The links a scaling projection sends its collectives over: named links from their
datasheets (per-direction bandwidth) with NCCL's own latency figures, or a link fitted
from the run's communication cells (bench.analyze.comm's frame).

A ring collective over ``n`` ranks takes ``steps`` latency-bound steps and moves
``share`` of the message through every rank's link, one direction at a time:
all_reduce 2(n-1) steps and 2(n-1)/n of the buffer, all_gather and reduce_scatter
(n-1) steps and (n-1)/n of the whole tensor (nccl-tests' bus-bandwidth factors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

OPS = ("all_reduce", "all_gather", "reduce_scatter")
GB = 1e9  # bandwidths are in GB/s of 1e9 bytes, as nccl-tests prints them


class LinkError(ValueError):
    """A link that cannot be named or fitted; the message says why."""


@dataclass(frozen=True)
class Link:
    name: str
    gbps: float  # per direction, GB/s
    latency_s: float  # one ring step
    source: str


# NCCL's ring latency per step, Simple protocol (src/graph/tuning.cc, hwLat[...][Ring]
# [Simple]): NVLink 3.4 us, PCI 5.7 us, network 9.6 us. NCCL's model uses one network
# figure for InfiniBand and sockets alike; TCP's latency is higher in practice.
NCCL_TUNING = "NCCL src/graph/tuning.cc hwLat, Ring/Simple"
LINKS: dict[str, Link] = {link.name: link for link in (
    Link("nvlink4", 450.0, 3.4e-6,
         "NVIDIA H100 Tensor Core GPU datasheet: NVLink 900 GB/s per GPU, both directions "
         f"-> 450 per direction; latency {NCCL_TUNING}, NVLink 3.4 us"),
    Link("pcie5", 64.0, 5.7e-6,
         "NVIDIA H100 PCIe datasheet: PCIe Gen5 128 GB/s (x16, both directions) -> 64 per "
         f"direction; latency {NCCL_TUNING}, PCI 5.7 us"),
    Link("ib-ndr400", 50.0, 9.6e-6,
         "NVIDIA ConnectX-7 datasheet: InfiniBand NDR 400 Gb/s per port -> 50 GB/s per "
         f"direction; latency {NCCL_TUNING}, NET 9.6 us"),
    Link("eth100", 12.5, 9.6e-6,
         "IEEE 802.3 100GBASE Ethernet: 100 Gb/s -> 12.5 GB/s per direction; latency "
         f"{NCCL_TUNING}, NET 9.6 us (sockets are slower in practice)"),
)}


def named_link(name: str) -> Link:
    if name not in LINKS:
        raise LinkError(f"unknown link {name!r}; valid: {', '.join(LINKS)}, measured")
    return LINKS[name]


def ring_factors(op: str, n: int) -> tuple[int, float]:
    """(latency steps, share of the message each rank's link carries) of a ring ``op``."""
    if op not in OPS:
        raise LinkError(f"unknown collective {op!r}; valid: {', '.join(OPS)}")
    if n <= 1:
        return 0, 0.0
    steps = 2 * (n - 1) if op == "all_reduce" else n - 1
    return steps, steps / n


def alpha_beta(steps: np.ndarray, moved: np.ndarray, time_s: np.ndarray) -> tuple[float, float]:
    """(alpha, 1 / bandwidth) by least squares of time_s = steps x alpha + moved / bandwidth.
    One size cannot tell the two apart, and a negative latency fits noise: either way,
    through the origin (alpha 0)."""
    alpha, inverse_bw = 0.0, float(moved @ time_s / (moved @ moved))
    if len(set(moved)) > 1:
        (fitted, slope), *_ = np.linalg.lstsq(np.column_stack([steps, moved]), time_s, rcond=None)
        if fitted >= 0:
            alpha, inverse_bw = float(fitted), float(slope)
    return alpha, inverse_bw


def fit_link(frame: pd.DataFrame, op: str, scope: str) -> Link:
    """Latency and bandwidth of ``op`` from a comm frame's rows (time_s against bytes,
    over every size and world measured): least squares of time_s = steps x alpha +
    share x bytes / bandwidth. One size cannot tell the two apart: alpha is then 0."""
    rows = frame[frame["op"] == op]
    if rows.empty:
        raise LinkError(f"the comm cells measured no {op} {scope}")
    factors = [ring_factors(op, int(n)) for n in rows["world_size"]]
    steps = np.array([s for s, _ in factors], dtype=float)
    moved = np.array([share for _, share in factors]) * rows["bytes"].to_numpy(dtype=float)
    alpha, inverse_bw = alpha_beta(steps, moved, rows["time_s"].to_numpy(dtype=float))
    if inverse_bw <= 0:
        raise LinkError(f"the comm cells' {op} {scope} times do not grow with bytes: no fit")
    cells = ", ".join(sorted(set(rows["cell_id"])))
    return Link(f"measured {op} {scope}", 1 / inverse_bw / GB, float(alpha),
                f"fitted from {len(rows)} sizes {int(rows['bytes'].min())}-"
                f"{int(rows['bytes'].max())} B of {cells}")


def measured_links(frame: pd.DataFrame, across_nodes: bool) -> dict[str, Link]:
    """One fitted link per collective: within a node from worlds on one node, across
    nodes from worlds of one rank per node (so that no intra-node hop is in them). An
    op the cells did not measure takes all_reduce's fit."""
    world = frame["world_size"].astype(int)
    nodes = frame["nodes"].astype(int)
    rows = frame[(nodes > 1) & (world == nodes)] if across_nodes \
        else frame[(nodes == 1) & (world > 1)]
    scope = "across nodes (one rank per node)" if across_nodes else "within a node"
    if rows.empty:
        hint = ("; name the link between nodes instead, e.g. --link ib-ndr400 --intra-link "
                "measured" if across_nodes else "")
        raise LinkError(f"--link measured: the run's comm cells measured no world {scope}"
                        f"{hint}")
    fitted = {op: fit_link(rows, op, scope) for op in OPS if (rows["op"] == op).any()}
    if "all_reduce" not in fitted:
        raise LinkError(f"the comm cells measured no all_reduce {scope}")
    return {op: fitted.get(op, fitted["all_reduce"]) for op in OPS}


def one_rank_costs(frame: pd.DataFrame | None) -> dict[str, Link]:
    """What each collective costs on a world of one rank, where nothing is sent but the
    backend still copies the buffer: time_s = alpha + bytes / bandwidth, fitted from the
    comm cells of one rank (the comm preset runs them). Empty without such cells. A
    strategy that calls a collective even on one rank (DeepSpeed's ZeRO-3 its
    reduce_scatter) has that cost in its one-device cell's phases already."""
    if frame is None:
        return {}
    rows = frame[frame["world_size"].astype(int) == 1]
    costs = {}
    for op in OPS:
        mine = rows[rows["op"] == op]
        if mine["bytes"].nunique() < 2:
            continue
        nbytes = mine["bytes"].to_numpy(dtype=float)
        # one "step" of latency and the whole buffer copied: the ring with n = 1 moves none
        alpha, inverse_bw = alpha_beta(np.ones_like(nbytes), nbytes,
                                       mine["time_s"].to_numpy(dtype=float))
        if inverse_bw <= 0:
            continue
        cells = ", ".join(sorted(set(mine["cell_id"])))
        costs[op] = Link(f"measured {op} on one rank", 1 / inverse_bw / GB, alpha,
                         f"fitted from {len(mine)} sizes {int(nbytes.min())}-"
                         f"{int(nbytes.max())} B of {cells}")
    return costs


def one_rank_time_s(link: Link, nbytes: float) -> float:
    """One call of a collective on a world of one: a copy of ``nbytes``."""
    return link.latency_s + nbytes / (link.gbps * GB)
