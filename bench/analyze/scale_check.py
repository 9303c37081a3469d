"""A run's records -> the scaling projection's inputs, the projection, and the model
checked against the multi-device cells the run measured (out of sample: a checked
cell's own record is never an input, not even for its byte count).

A checked cell's inputs are the one-device cell of the same workload (accelerator,
precision, batch size per rank, loader, compile, optimizer, mode) at the same threads
per rank (the records' effective block): the same strategy on one device where it ran
(a sharded engine's own copies, flat buffers and master weights are then in its
phases, on one rank), else its control (raw for an engine-* cell, single for a
Lightning one), else the other."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from bench.analyze.links import Link, LinkError
from bench.analyze.load import latest
from bench.analyze.scale import (
    PLAN_STRATEGIES,
    Network,
    Plan,
    Prediction,
    plan_of,
    plans,
    predict,
    strategy_of,
    without_one_rank_collectives,
)
from bench.analyze.scale_crowding import Crowding, crowding_factor, node_crowding
from bench.analyze.scale_records import gradient_bytes, ok_repeats, phases_s, threads_per_rank
from bench.analyze.scale_verdict import TARGET, Verdict, geomean, judge
from bench.analyze.summary import WORKLOAD_FIELDS
from bench.analyze.tables import fmt

GLIBC_MODES = ("system", "retain")  # the malloc modes that leave glibc in charge


@dataclass(frozen=True)
class Links:
    """The links chosen for each level; None with the reason where none is known."""

    intra: dict[str, Link] | None
    inter: dict[str, Link] | None
    missing: dict[str, str] = field(default_factory=dict)  # "intra" | "inter" -> why
    one_rank: dict[str, Link] = field(default_factory=dict)  # op -> its cost on one rank

    def network(self, devices_per_node: int, nodes: int) -> Network:
        if self.intra is None and devices_per_node > 1:
            raise LinkError(self.missing["intra"])
        if self.inter is None and nodes > 1:
            raise LinkError(self.missing["inter"])
        return Network(self.intra or {}, self.inter or {}, devices_per_node)


@dataclass(frozen=True)
class Inputs:
    cell_id: str  # the one-device cell whose phases these are
    strategy: str  # its strategy: single, raw, or the checked cell's own on one device
    accelerator: str
    phases_s: dict[str, float]  # per step
    batch_size: int
    threads: int | None
    gradient_bytes: float
    bytes_from: str
    repeat_phases_s: tuple[dict[str, float], ...] = ()  # each ok repeat's, per step


def one_device_inputs(summary: pd.DataFrame, records: pd.DataFrame, like: dict[str, Any],
                      threads: int | None, exclude: str | None = None) -> Inputs | str:
    """The inputs for a cell like ``like`` at ``threads`` per rank, or why there are none."""
    fixed = [f for f in WORKLOAD_FIELDS if f in summary and f in like]
    own = str(like.get("strategy", ""))
    candidates = list(dict.fromkeys((own, "single", "raw")))  # own may be single or raw
    same = summary[(summary["total_devices"] == 1) & summary["n"].gt(0)
                   & summary["strategy"].isin(candidates)]
    for f in fixed:
        same = same[same[f] == like[f]]
    if same.empty:
        return (f"no one-device {', '.join(candidates)} cell of the same workload "
                f"({like.get('precision')}, "
                f"batch {like.get('batch_size')} per rank, loader {like.get('loader')})")
    counts = threads_per_rank(records)
    at_threads = same[[counts.get(c) == threads for c in same["cell_id"]]]
    if at_threads.empty:
        seen = ", ".join(f"{c} {counts.get(c)}" for c in same["cell_id"])
        return (f"threads per rank differ: this cell {threads}, the one-device cells {seen} "
                f"(run them at {threads}, e.g. under taskset -c 0)")
    control = "raw" if own.startswith("engine-") else "single"
    ordered = sorted(at_threads.to_dict("records"),
                     key=lambda r: (r["strategy"] != own, r["strategy"] != control))
    for row in ordered:
        phases = phases_s(row)
        grads = gradient_bytes(records, row["precision"], exclude)
        if phases and grads:
            repeats = tuple(filter(None, map(phases_s, ok_repeats(records, row["cell_id"]))))
            return Inputs(row["cell_id"], row["strategy"], row["accelerator"], phases,
                          int(row["batch_size"]), threads, *grads, repeats)
    return "the one-device cells lack step phases, or no record counted the model's bytes"


def start_phases(plan: Plan, inputs: Inputs, links: Links) -> tuple[dict[str, float], float]:
    """The phases ``plan`` is predicted from, and the time taken out of them: a one-device
    cell of the plan's own strategy less the collectives it called on its world of one
    (costed where the runs hold comm cells of one rank); any other input as it is."""
    if plan_of(inputs.strategy) != plan.name:
        return inputs.phases_s, 0.0
    return without_one_rank_collectives(plan, inputs.phases_s, links.one_rank)


@dataclass(frozen=True)
class Check:
    cell_id: str
    plan: str
    inputs: Inputs | None
    predicted: Prediction | None  # from the input cell's median phases
    measured_samples_per_s: float
    measured_step_s: float
    why_not: str | None = None
    predicted_repeats: tuple[float, ...] = ()  # samples/s, one per input repeat
    measured_repeats: tuple[float, ...] = ()  # samples/s of the checked cell's repeats
    crowding: Crowding | str | None = None  # its node's, or why not measured; None: 1 rank

    def verdict(self, target: float = TARGET) -> Verdict | None:
        if self.predicted is None:
            return None
        return judge(self.predicted_repeats or (self.predicted.samples_per_s,),
                     self.measured_repeats or (self.measured_samples_per_s,), target)


def check_cells(summary: pd.DataFrame, records: pd.DataFrame, links: Links,
                overlap: dict[str, float]) -> list[Check]:
    """Every measured multi-device cell with a modelled strategy, predicted from the
    one-device cell paired with it (once from its median phases, and once from each of
    its repeats), or why it cannot be checked. ``overlap`` is by accelerator."""
    counts = threads_per_rank(records)
    checks = []
    measured = summary[(summary["total_devices"] > 1) & summary["samples_per_s"].notna()]
    for row in measured.to_dict("records"):
        plan = plan_of(row["strategy"])
        if plan is None or row.get("mode", "throughput") != "throughput":
            continue
        check = Check(row["cell_id"], plan, None, None, row["samples_per_s"],
                      row["step_ms_p50"] / 1000)
        inputs = one_device_inputs(summary, records, row, counts.get(row["cell_id"]),
                                   exclude=row["cell_id"])
        if isinstance(inputs, str):
            checks.append(replace(check, why_not=inputs))
            continue
        nodes, devices = int(row["num_nodes"]), int(row["total_devices"])
        try:
            net = links.network(devices // nodes, nodes)
        except LinkError as error:
            checks.append(replace(check, why_not=str(error)))
            continue
        model = plans(inputs.gradient_bytes)[plan]
        per_node = devices // nodes
        crowding = node_crowding(summary, records, row, counts.get(row["cell_id"]),
                                 per_node) if per_node > 1 else None
        over = overlap[row["accelerator"]]
        found = [predict(model, start_phases(model, replace(inputs, phases_s=p), links)[0],
                         inputs.batch_size, devices, net, over, crowding_factor(crowding))
                 for p in (inputs.phases_s, *inputs.repeat_phases_s)]
        measured_repeats = tuple(r["samples_per_s"] for r in ok_repeats(records, row["cell_id"])
                                 if pd.notna(r.get("samples_per_s")))
        checks.append(replace(check, inputs=inputs, predicted=found[0],
                              predicted_repeats=tuple(f.samples_per_s for f in found[1:]),
                              measured_repeats=measured_repeats, crowding=crowding))
    return checks


def check_notes(summary: pd.DataFrame, records: pd.DataFrame, checks: list[Check]
                ) -> list[str]:
    """Words under the checks where the cells ran as the model cannot follow: CPU cells
    or comm cells at glibc's allocator (their collectives' temporaries pay page faults
    on some calls and not others), ZeRO cells on a CPU at the default
    Adam (its temporaries the size of a partition can pay them on one device even at
    retain), and repeats that ran beside other work (the model has no stragglers)."""
    done = [c for c in checks if c.predicted and c.inputs]
    cells = {c.cell_id for c in done} | {c.inputs.cell_id for c in done if c.inputs}
    rows = summary[summary["cell_id"].isin(cells) & (summary["accelerator"] == "cpu")]
    notes = []
    comm = latest(records)
    comm = comm[(comm["mode"] == "comm") & (comm["accelerator"] == "cpu")
                & (comm["status"] == "ok")] if "mode" in comm else comm.iloc[:0]
    if any("malloc" in frame and frame["malloc"].isin(GLIBC_MODES).any()
           for frame in (rows, comm)):
        notes.append("CPU cells at glibc's allocator (malloc system or retain) among the checked "
                     "cells, their inputs or the comm cells: gloo allocates a temporary the size "
                     "of a collective's output on every call, which glibc gives fresh pages "
                     "(page faults) on some calls, or all; such calls took several times a "
                     "clean one's time. Check with malloc = [\"jemalloc\"] on every side "
                     "(docs/scaling.md)")
    zero = rows[rows["strategy"].map(lambda s: str(plan_of(s)).startswith("zero"))]
    if "optimizer_impl" in zero and (zero["optimizer_impl"] == "default").any():
        notes.append("ZeRO cells on a CPU at the default Adam: its temporaries the size of a "
                     "partition can pay page faults on one device even at malloc retain; check "
                     "with optimizer_impl = [\"fused\"] (docs/scaling.md)")
    repeats = latest(records)
    repeats = repeats[repeats["cell_id"].isin(cells) & (repeats["status"] == "ok")]
    busy = int(repeats["machine_busy"].eq(True).sum()) if "machine_busy" in repeats else 0
    if busy:
        notes.append(f"the busy flag fired on {busy} of {len(repeats)} repeats of the checked "
                     "cells and their inputs: other work slowed some of them, and a rank held "
                     "up makes the others wait in their collectives (the model has no "
                     "stragglers)")
    return notes


def checks_table(checks: list[Check], target: float = TARGET) -> pd.DataFrame:
    """One row per check: samples/s as geometric means over the repeats (the error is
    their ratio), its 95% interval and the call at ``target``."""
    rows = []
    for c in checks:
        p, v = c.predicted, c.verdict(target)
        rows.append({"cell": c.cell_id, "model": c.plan,
                     "inputs": c.inputs.cell_id if c.inputs else "-",
                     "predicted samples/s": fmt(geomean(c.predicted_repeats) or p.samples_per_s)
                     if p else "-",
                     "measured samples/s": fmt(geomean(c.measured_repeats)
                                               or c.measured_samples_per_s),
                     "error": f"{v.error * 100:+.1f}%" if v else "-",
                     "95% interval": (f"{v.low * 100:+.0f}% to {v.high * 100:+.0f}%"
                                      if v and not np.isnan(v.low) else "-"),
                     "repeats": (f"{len(c.predicted_repeats)}/{len(c.measured_repeats)}"
                                 if p else "-"),
                     f"within {target * 100:g}%?": (v.call + (f" (~{v.repeats_needed} repeats a "
                                                         "side would tell)"
                                                         if v.repeats_needed else ""))
                     if v else "-",
                     "predicted step ms": fmt(p.step_s * 1000) if p else "-",
                     "measured step p50 ms": fmt(c.measured_step_s * 1000),
                     "comm ms (exposed)": f"{fmt(p.comm_s * 1000)} ({fmt(p.exposed_s * 1000)})"
                     if p else "-",
                     "crowding": f"x{p.crowding:.2f}" if p else "-",
                     "not checked because": c.why_not or ""})
    return pd.DataFrame(rows)


def own_inputs(summary: pd.DataFrame, records: pd.DataFrame, inputs: Inputs
               ) -> dict[str, Inputs]:
    """Each plan's own strategy on one device, of the workload and threads of
    ``inputs``, where the runs hold one: the engine control when ``inputs`` is raw and
    Lightning's strategy when it is single, else the other (Lightning's FSDP and
    DeepSpeed do not run on CPU, their engines do)."""
    row = summary[summary["cell_id"] == inputs.cell_id].iloc[0].to_dict()
    found = {}
    for plan in PLAN_STRATEGIES:
        for engine in (inputs.strategy == "raw", inputs.strategy != "raw"):
            like = row | {"strategy": strategy_of(plan, engine)}
            own = one_device_inputs(summary, records, like, inputs.threads)
            if isinstance(own, Inputs) and own.strategy == like["strategy"]:
                found[plan] = own
                break
    return found


def projection(inputs: Inputs, devices: list[int], links: Links, devices_per_node: int,
               overlap: float, own: dict[str, Inputs] | None = None,
               crowding: dict[int, float] | None = None) -> list[Prediction]:
    """Every modelled strategy at every device count (plans' order, then devices), each
    from its own one-device cell where ``own`` has one, else from ``inputs``; compute at
    ``crowding``'s factor for the ranks per node where it has one."""
    predictions = []
    for plan in plans(inputs.gradient_bytes).values():
        start = (own or {}).get(plan.name, inputs)
        for n in devices:
            per_node = min(n, devices_per_node)
            net = links.network(per_node, n // per_node)
            predictions.append(predict(plan, start_phases(plan, start, links)[0],
                                       start.batch_size, n, net, overlap,
                                       (crowding or {}).get(per_node, 1.0)))
    return predictions


def projection_table(predictions: list[Prediction]) -> pd.DataFrame:
    return pd.DataFrame([{"model": p.plan, "devices": p.devices, "nodes": p.nodes,
                          "step ms": fmt(p.step_s * 1000), "comm ms": fmt(p.comm_s * 1000),
                          "exposed ms": fmt(p.exposed_s * 1000),
                          "samples/s": fmt(p.samples_per_s),
                          "scaling efficiency": fmt(p.efficiency, "pct")}
                         for p in predictions])
