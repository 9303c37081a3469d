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
(docs/communication.md).

``engine-ddp_alternate`` holds both sides in one process: one bucket, its steps
alternately synced and under ``no_sync()`` (``effective.ddp_step_synced``), and after
its window the bucket's bytes all-reduced in the same process group, bare and through
DDP's round trip (``raw.comm``). Its row sets the synced steps' backward less the
others' against both: the same machine state on both sides, interleaved step by
step."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd

from bench.analyze.comm import comm_table, size_text
from bench.analyze.load import latest
from bench.analyze.tables import fmt
from bench.matrix import Cell

AGREEMENT = 0.20  # the bar: within 20% where nothing overlaps
NO_SYNC = "engine-ddp_no_sync"
ALTERNATE = "engine-ddp_alternate"
CHECKED = {"engine-ddp": "DDP's buckets, reduced during backward",
           "engine-ddp_one_bucket": "none: one bucket, reduced after backward"}
IN_ONE_PROCESS = "none: one bucket; synced and no_sync() steps alternate in one process"

DDP_CHECK_LEGEND = (
    "in training: the cell's backward ms per step less its no_sync() twin's (same cell, "
    "no communication): the slowest rank's median step, the median over repeats; for "
    f"{ALTERNATE}, its synced steps' backward less its no_sync() steps'",
    "all_reduce: from the comm cell, the all_reduce time of each bucket DDP made (read "
    "from its reducer), summed, sizes between those timed interpolated on log-log; for "
    f"{ALTERNATE}, its one bucket all-reduced bare in the same process after its window",
    f"round trip ({ALTERNATE} only): what DDP's reducer does with that bucket, timed in "
    "the same process after the window: the gradients copied in, divided by the world "
    "size, all-reduced, copied back out; set against the last rank in training: per "
    "synced step the rank that reached the all_reduce last (the shortest backward: it "
    "waited for no one), less the same at the no_sync steps; the rest of 'in training' "
    "is the other ranks waiting for it",
    "DDP's timer: the reducer's own avg_backward_comm_time (its buckets' reduction, from "
    "the first starting to the last done), averaged over the steps it samples (its first "
    "10, warm-up included)",
    f"agree: within {AGREEMENT:.0%}; only the rows without overlap are expected "
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


def alternate_backward_ms(records: pd.DataFrame) -> dict[str, float]:
    """An alternate cell's backward, step by step over its ranks: ``slowest`` (the
    rank whose backward took longest: it waited at the all_reduce for the others) and
    ``last`` (the rank whose backward was shortest: the last to reach the all_reduce,
    it waited for no one), each ``synced`` and ``no_sync``; per repeat the median over
    the window's steps of that kind, the median over repeats."""
    found: dict[str, list[float]] = {}
    for raw, flags in zip(records["raw"], records["effective_ddp_step_synced"], strict=True):
        ranks = (raw or {}).get("ranks") or []
        if not isinstance(flags, list) or not ranks:
            continue
        per_rank = [(rank.get("phase_s") or {}).get("backward") or [] for rank in ranks]
        steps = min(len(b) for b in per_rank)
        window = flags[len(ranks[0].get("warmup_step_s") or []):][:steps]
        for kind, name in ((True, "synced"), (False, "no_sync")):
            chosen = [i for i, synced in enumerate(window) if synced == kind]
            if not chosen:
                continue
            for pick, which in ((max, "slowest"), (min, "last")):
                found.setdefault(f"{which}_{name}", []).append(1000 * float(np.median(
                    [pick(b[i] for b in per_rank) for i in chosen])))
    keys = ("slowest_synced", "slowest_no_sync", "last_synced", "last_no_sync")
    return {k: float(np.median(found[k])) if found.get(k) else float("nan") for k in keys}


def in_process_ms(records: pd.DataFrame, label: str) -> float:
    """The median of every iteration an alternate cell timed after its windows under
    ``label``: ``bucket`` (the bare all_reduce) or ``bucket-round-trip`` (DDP's copy
    in, divide, all_reduce, copy out)."""
    times = [t for raw in records["raw"] for row in (raw or {}).get("comm") or []
             if row["label"] == label for t in row["time_s"]]
    return 1000 * float(np.median(times)) if times else float("nan")


def allreduce_s(table: pd.DataFrame, nbytes: int) -> float:
    """The all_reduce time at ``nbytes`` from a comm cell's rows: the measured median, or
    log-log interpolation between the sizes timed."""
    rows = table[table["op"] == "all_reduce"].sort_values("bytes")
    if not len(rows):
        return float("nan")
    return float(np.exp(np.interp(np.log(nbytes), np.log(rows["bytes"].astype(float)),
                                  np.log(rows["time_s"].astype(float)))))


def ddp_check(records: pd.DataFrame) -> pd.DataFrame:
    """One row per alternate cell (ALTERNATE) with its in-process all_reduce, and one
    per checked DDP cell (CHECKED) that has an ok no_sync twin and a comm cell of its
    accelerator, ranks, nodes and gradient dtype: its buckets, the backward of both
    sides, the communication in training, the all_reduce figure, and their ratio."""
    if not len(records) or "strategy" not in records:
        return pd.DataFrame()
    df = latest(records)
    ok = df[df["status"] == "ok"]
    comm = comm_table(df)
    same = [f.name for f in fields(Cell) if f.name != "strategy" and f.name in ok]
    rows = [alternate_row(cell_id, cell)
            for cell_id, cell in ok[ok["strategy"] == ALTERNATE].groupby("cell_id")]
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
        predicted = 1000 * sum(allreduce_s(rows_here, int(b)) for b in buckets)
        rows.append(check_row(cell_id, CHECKED[first["strategy"]], cell, backward_ms(cell),
                              backward_ms(twin), predicted, "comm cell"))
    return pd.DataFrame([r for r in rows if r is not None])


def alternate_row(cell_id: str, cell: pd.DataFrame) -> dict[str, Any] | None:
    backward = alternate_backward_ms(cell)
    allreduce = in_process_ms(cell, "bucket")
    if np.isnan(backward["slowest_synced"]) or np.isnan(allreduce):
        return None
    return check_row(cell_id, IN_ONE_PROCESS, cell, backward["slowest_synced"],
                     backward["slowest_no_sync"], allreduce, "this cell, after its window",
                     in_process_ms(cell, "bucket-round-trip"),
                     backward["last_synced"] - backward["last_no_sync"])


def check_row(cell_id: str, overlap: str, cell: pd.DataFrame, backward: float, free: float,
              allreduce: float, source: str, round_trip: float = float("nan"),
              last_rank: float = float("nan")) -> dict[str, Any]:
    buckets = cell.iloc[0].get("effective_ddp_bucket_bytes")
    comm = backward - free
    return {"cell_id": cell_id, "overlap": overlap,
            "buckets": [int(b) for b in buckets] if isinstance(buckets, list) else [],
            "backward_ms": backward, "no_sync_backward_ms": free,
            "training_comm_ms": comm, "allreduce_ms": allreduce,
            "allreduce_from": source, "round_trip_ms": round_trip,
            "last_rank_comm_ms": last_rank,
            "ddp_timer_ms": pd.to_numeric(cell.get(  # records before it: NaN
                "effective_ddp_timer_comm_ms", pd.Series(dtype=float)),
                errors="coerce").median(),
            "ratio": comm / allreduce if allreduce > 0 else np.nan,
            "round_trip_ratio": last_rank / round_trip if round_trip > 0 else np.nan}


def ddp_check_display(check: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in check.to_dict("records"):
        sizes = ", ".join(size_text(b) for b in r["buckets"])
        rows.append({"cell": r["cell_id"], "overlap": r["overlap"],
                     "buckets": f"{len(r['buckets'])}: {sizes}",
                     "backward ms": fmt(r["backward_ms"]),
                     "no_sync backward ms": fmt(r["no_sync_backward_ms"]),
                     "in training ms": fmt(r["training_comm_ms"]),
                     "all_reduce ms": fmt(r["allreduce_ms"]),
                     "all_reduce from": r["allreduce_from"],
                     "DDP's timer ms": fmt(r["ddp_timer_ms"]),
                     "training / all_reduce": fmt(r["ratio"], "x"),
                     "agree": agree(r["ratio"]),
                     "round trip ms": fmt(r["round_trip_ms"]),
                     "last rank in training ms": fmt(r["last_rank_comm_ms"]),
                     "last rank / round trip": fmt(r["round_trip_ratio"], "x"),
                     "agrees with round trip": agree(r["round_trip_ratio"])})
    return pd.DataFrame(rows)


def agree(ratio: float) -> str:
    if np.isnan(ratio):
        return "-"
    return "yes" if abs(ratio - 1) <= AGREEMENT else "no"
