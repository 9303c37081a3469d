"""crowd(G) of the scaling model: a rank's compute with all G ranks of its node
computing at once, against one device alone, measured by two cells of the run that
send nothing (bench.analyze.scale's FORMULA; docs/scaling.md, "Crowding")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.analyze.scale_records import ok_repeats, phases_s, threads_per_rank
from bench.analyze.scale_verdict import geomean
from bench.analyze.summary import WORKLOAD_FIELDS

# The cell that measures crowd(G) of the model, on G devices a node and on one: DDP's
# engine with its gradient communication switched off (no_sync() for good). On one
# device DDP's own engine still copies its buckets in and out around a world of one;
# under no_sync() neither side does.
CROWDED = "engine-ddp_no_sync"


@dataclass(frozen=True)
class Crowding:
    """crowd(G) of the model: a rank's compute with all G ranks of its node computing at
    once, against one device alone (shared memory bandwidth, caches, cores, host), the
    ratio of two cells' compute per step (the sum of their step phases; geometric means
    over their repeats) of the same workload and threads per rank."""

    factor: float
    ranks_per_node: int
    crowded: str  # CROWDED's cell on ranks_per_node devices of each node
    alone: str  # and on one device
    crowded_s: float
    alone_s: float

    def words(self) -> str:
        return (f"crowding at {self.ranks_per_node} ranks per node x{self.factor:.3f}: "
                f"{self.crowded} computes {self.crowded_s * 1000:.1f} ms a step, "
                f"{self.alone} {self.alone_s * 1000:.1f} ms")


def compute_per_repeat_s(records: pd.DataFrame, cell_id: str) -> list[float]:
    """A cell's compute per step (its phases summed), one per ok repeat."""
    return [sum(p.values()) for p in map(phases_s, ok_repeats(records, cell_id)) if p]


def node_crowding(summary: pd.DataFrame, records: pd.DataFrame, like: dict[str, Any],
                  threads: int | None, ranks_per_node: int) -> Crowding | str:
    """crowd(ranks_per_node) for cells like ``like`` at ``threads`` per rank, or why the
    runs cannot say."""
    fixed = [f for f in WORKLOAD_FIELDS if f in summary and f in like and f != "strategy"]
    same = summary[summary["n"].gt(0)]
    for f in fixed:
        same = same[same[f] == like[f]]
    counts = threads_per_rank(records)
    same = same[[counts.get(c) == threads for c in same["cell_id"]]]
    crowded = same[(same["strategy"] == CROWDED)
                   & (same["total_devices"] == ranks_per_node * same["num_nodes"])]
    alone = same[(same["strategy"] == CROWDED) & (same["total_devices"] == 1)]
    sides = [compute_per_repeat_s(records, frame["cell_id"].iloc[0]) if len(frame) else []
             for frame in (crowded, alone)]
    if not all(sides):
        return (f"not measured at {ranks_per_node} ranks per node: compute as on one device "
                f"(run {CROWDED} on {ranks_per_node} devices of a node and on one, of the same "
                f"workload and {threads} thread(s) per rank, to measure it)")
    crowded_s, alone_s = (geomean(side) for side in sides)
    return Crowding(crowded_s / alone_s, ranks_per_node, crowded["cell_id"].iloc[0],
                    alone["cell_id"].iloc[0], crowded_s, alone_s)


def crowding_factor(crowding: Crowding | str | None) -> float:
    return crowding.factor if isinstance(crowding, Crowding) else 1.0


def crowding_notes(found: list[Crowding | str]) -> list[str]:
    """The crowding checks' compute was taken at, or why it was not measured (a line per
    crowding and per reason)."""
    notes = [c.words() for c in dict.fromkeys(c for c in found if isinstance(c, Crowding))]
    missing = [c for c in found if isinstance(c, str)]
    notes += [f"{missing.count(why)} check(s): crowding {why}" for why in dict.fromkeys(missing)]
    return notes


def projection_crowding(summary: pd.DataFrame, records: pd.DataFrame, cell_id: str,
                        threads: int | None, devices: list[int], devices_per_node: int
                        ) -> dict[int, Crowding | str]:
    """crowd(G) for each ranks per node G > 1 the projection reaches, from the runs'
    cells of the workload of ``cell_id`` (the projection's input) at ``threads``, or why
    not."""
    row = summary[summary["cell_id"] == cell_id].iloc[0].to_dict()
    return {g: node_crowding(summary, records, row, threads, g)
            for g in sorted({min(n, devices_per_node) for n in devices} - {1})}
