"""Communication cells' records -> the collectives' time, algbw and busbw per (cell, op,
size) (``comm_table``, the frame a scaling projection fits a link to), and the report's
table of it (op x size x world)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.analyze.load import latest
from bench.analyze.tables import fmt
from bench.metrics import COMM_OPS, busbw_factor

COMM_COLUMNS = ("cell_id", "op", "label", "dtype", "bytes", "world_size", "nodes", "time_s",
                "algbw_gbps", "busbw_gbps")

COMM_LEGEND = (
    "each collective on the strategies' process group (gloo on CPU, NCCL on CUDA), timed "
    "as nccl-tests times it: a barrier before each iteration, the slowest rank's time; "
    "ms: the median iteration",
    "size: nccl-tests' size, the all_reduce buffer, the all_gather output, the "
    "reduce_scatter input; grads: every parameter in the dtype; bucket: DDP's 25 MiB; "
    "zero-partition: grads / ranks; sweep: powers of 4 from 4 KiB",
    "algbw = size / time; busbw = algbw x 2(n-1)/n (all_reduce), x (n-1)/n (all_gather, "
    "reduce_scatter): what each rank's link carried per second, comparable across ranks; "
    "0 at one rank, where nothing is sent",
)


def comm_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell_id, op, bytes) of the comm cells' ok records (a frame from
    bench.analyze.load.load_records; mode "comm" only: an alternate DDP cell's own
    all_reduces belong to its check, bench.analyze.ddp_check): COMM_COLUMNS, time_s
    the median of every timed iteration of every ok repeat, algbw_gbps = bytes / time_s
    / 1e9, busbw_gbps = algbw_gbps x nccl-tests' factor (bench.metrics.busbw_factor)."""
    if not len(records) or "raw" not in records:
        return pd.DataFrame(columns=list(COMM_COLUMNS))
    ok = latest(records)
    ok = ok[ok["status"] == "ok"]
    if "mode" in ok:
        ok = ok[ok["mode"] == "comm"]
    times: dict[tuple[Any, ...], list[float]] = {}
    for cell_id, raw in zip(ok["cell_id"], ok["raw"], strict=True):
        for row in (raw or {}).get("comm") or []:
            key = (cell_id, row["op"], row["label"], row["dtype"], int(row["bytes"]),
                   int(row["world_size"]), int(row["nodes"]))
            times.setdefault(key, []).extend(row["time_s"])
    rows = []
    for (cell_id, op, label, dtype, nbytes, world, nodes), values in times.items():
        time_s = float(np.median(values)) if values else float("nan")
        algbw = nbytes / time_s / 1e9 if time_s > 0 else float("nan")
        rows.append({"cell_id": cell_id, "op": op, "label": label, "dtype": dtype,
                     "bytes": nbytes, "world_size": world, "nodes": nodes, "time_s": time_s,
                     "algbw_gbps": algbw, "busbw_gbps": algbw * busbw_factor(op, world)})
    return pd.DataFrame(rows, columns=list(COMM_COLUMNS))


def size_text(nbytes: int) -> str:
    """Bytes as KiB, MiB or GiB, as nccl-tests' sizes are read."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{fmt(nbytes / scale)} {unit}"
    return f"{nbytes} B"


def comm_display(table: pd.DataFrame) -> pd.DataFrame:
    """The report's table: one row per (dtype, op, size), per world (ranks x nodes) its
    median ms and busbw GB/s."""
    if not len(table):
        return pd.DataFrame()
    worlds = sorted({(int(w), int(n)) for w, n in zip(table["world_size"], table["nodes"],
                                                      strict=True)})
    order = {op: index for index, op in enumerate(COMM_OPS)}
    rows = []
    keys = table[["dtype", "op", "bytes"]].drop_duplicates().to_dict("records")
    for key in sorted(keys, key=lambda k: (k["dtype"], order[k["op"]], k["bytes"])):
        here = table[(table["dtype"] == key["dtype"]) & (table["op"] == key["op"])
                     & (table["bytes"] == key["bytes"])]
        row = {"dtype": key["dtype"], "op": key["op"], "size": size_text(key["bytes"]),
               "label": "/".join(sorted(set(here["label"])))}
        for world, nodes in worlds:
            name = f"{world} ranks" + (f" {nodes} nodes" if nodes > 1 else "")
            found = here[(here["world_size"] == world) & (here["nodes"] == nodes)]
            row[f"{name} ms"] = fmt(1000 * found["time_s"].median()) if len(found) else "-"
            if world > 1:
                row[f"{name} busbw GB/s"] = (fmt(found["busbw_gbps"].median()) if len(found)
                                             else "-")
        rows.append(row)
    return pd.DataFrame(rows)
