"""DDP's communication measured in training, set against the comm cell's all_reduce of
the same bytes: the check that a comm cell measures what training pays.

In training: an ``engine-ddp`` cell's backward phase (``backward_ms``) less that of
its ``no_sync()`` twin (``engine-ddp_no_sync``: the same cell, threads per rank
included, with no gradient communication). From the comm cell of the same
accelerator, ranks and nodes: the sum, over the buckets DDP made for that cell (its
reducer's buckets after the first step's rebuild, ``effective.ddp_bucket_bytes``), of
the median all_reduce time at each bucket's bytes, interpolated on log-log between
the sizes timed (clamped at the smallest and largest). ``engine-ddp_one_bucket`` puts
every gradient in one bucket, all-reduced once backward is done: no overlap, so the
two should agree; the default buckets overlap backward, and the difference shows what
the overlap hid (or what contention added). The two sides are different cells, run
minutes apart: on a machine whose load changes meanwhile they drift apart with it
(docs/communication.md)."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd

from bench.analyze.comm import comm_table, size_text
from bench.analyze.load import latest
from bench.analyze.tables import fmt
from bench.matrix import Cell

AGREEMENT = 0.20  # the bar: within 20% where nothing overlaps
NO_SYNC = "engine-ddp_no_sync"
CHECKED = {"engine-ddp": "DDP's buckets, reduced during backward",
           "engine-ddp_one_bucket": "none: one bucket, reduced after backward"}

DDP_CHECK_LEGEND = (
    "in training: the cell's backward ms per step less its no_sync() twin's (same cell, "
    "no communication): the slowest rank's median step, the median over repeats",
    "comm cell: the all_reduce time of each bucket DDP made (read from its reducer), "
    "summed; sizes between those timed are interpolated on log-log",
    "DDP's timer: the reducer's own avg_backward_comm_time (its buckets' reduction, from "
    "the first starting to the last done), averaged over the steps it samples (its first "
    "10, warm-up included)",
    f"agree: within {AGREEMENT:.0%}; only the one-bucket row (no overlap) is expected "
    "to: DDP's own buckets overlap backward, hiding part of their time, or contend with "
    "it for the same cores",
)


def backward_ms(records: pd.DataFrame) -> float:
    """A cell's backward phase: per repeat the slowest rank's median over its measured
    steps (a median: on a shared CPU single steps stall for seconds), then the median
    over repeats."""
    per_repeat = []
    for raw in records["raw"]:
        medians = [float(np.median(rank["phase_s"]["backward"]))
                   for rank in (raw or {}).get("ranks") or []
                   if (rank.get("phase_s") or {}).get("backward")]
        if medians:
            per_repeat.append(1000 * max(medians))
    return float(np.median(per_repeat)) if per_repeat else float("nan")


def allreduce_s(table: pd.DataFrame, nbytes: int) -> float:
    """The all_reduce time at ``nbytes`` from a comm cell's rows: the measured median, or
    log-log interpolation between the sizes timed."""
    rows = table[table["op"] == "all_reduce"].sort_values("bytes")
    if not len(rows):
        return float("nan")
    return float(np.exp(np.interp(np.log(nbytes), np.log(rows["bytes"].astype(float)),
                                  np.log(rows["time_s"].astype(float)))))


def ddp_check(records: pd.DataFrame) -> pd.DataFrame:
    """One row per checked DDP cell (CHECKED) that has an ok no_sync twin and a comm
    cell of its accelerator, ranks, nodes and gradient dtype: its buckets, the backward
    of both, the communication in training, the comm cell's figure, and their ratio."""
    if not len(records) or "strategy" not in records:
        return pd.DataFrame()
    df = latest(records)
    ok = df[df["status"] == "ok"]
    comm = comm_table(df)
    same = [f.name for f in fields(Cell) if f.name != "strategy" and f.name in ok]
    rows = []
    for cell_id, cell in ok[ok["strategy"].isin(list(CHECKED))].groupby("cell_id"):
        first = cell.iloc[0]
        twin = ok[(ok["strategy"] == NO_SYNC)
                  & (ok[same].astype(str) == first[same].astype(str)).all(axis=1)]
        dtype = first.get("effective_param_dtype")
        dtype = dtype if isinstance(dtype, str) else "float32"  # the gradients' dtype
        comm_ids = ok[(ok["mode"] == "comm") & (ok["accelerator"] == first["accelerator"])
                      & (ok["devices"] == first["devices"])
                      & (ok["num_nodes"] == first["num_nodes"])]["cell_id"]
        rows_here = comm[comm["cell_id"].isin(set(comm_ids)) & (comm["dtype"] == dtype)]
        buckets = list(first.get("effective_ddp_bucket_bytes") or [])
        if not len(twin) or not len(rows_here) or not buckets:
            continue
        backward, free = backward_ms(cell), backward_ms(twin)
        predicted = 1000 * sum(allreduce_s(rows_here, int(b)) for b in buckets)
        rows.append({"cell_id": cell_id, "overlap": CHECKED[first["strategy"]],
                     "buckets": [int(b) for b in buckets], "backward_ms": backward,
                     "no_sync_backward_ms": free, "training_comm_ms": backward - free,
                     "comm_cell_ms": predicted,
                     "ddp_timer_ms": pd.to_numeric(cell.get(  # records before it: NaN
                         "effective_ddp_timer_comm_ms", pd.Series(dtype=float)),
                         errors="coerce").median(),
                     "ratio": (backward - free) / predicted if predicted > 0 else np.nan})
    return pd.DataFrame(rows)


def ddp_check_display(check: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in check.to_dict("records"):
        sizes = ", ".join(size_text(b) for b in r["buckets"])
        rows.append({"cell": r["cell_id"], "overlap": r["overlap"],
                     "buckets": f"{len(r['buckets'])}: {sizes}",
                     "backward ms": fmt(r["backward_ms"]),
                     "no_sync backward ms": fmt(r["no_sync_backward_ms"]),
                     "in training ms": fmt(r["training_comm_ms"]),
                     "comm cell ms": fmt(r["comm_cell_ms"]),
                     "DDP's timer ms": fmt(r["ddp_timer_ms"]),
                     "training / comm cell": fmt(r["ratio"], "x"),
                     "agree": "yes" if abs(r["ratio"] - 1) <= AGREEMENT else "no"})
    return pd.DataFrame(rows)
