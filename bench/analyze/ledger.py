"""Where each cell's wall time went, from its ledger (bench.measure.ledger): the run's
harness efficiency, the median part times per kind of cell, the cells with most
overhead, and the line ``bench.run`` prints at the end of a walk."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.analyze.load import latest
from bench.analyze.tables import fmt
from bench.metrics import LEDGER_PARTS
from strategies.registry import STRATEGIES

MOST_OVERHEAD = 5  # cells listed in "most overhead"
MEASURING = ("warmup", "window")  # the parts that are not overhead (bench.metrics overhead_s)

LEDGER_LEGEND = (
    "seconds per part, the median over the kind's cell runs (so the parts' medians need "
    "not add up to the median wall); a cell run's own parts add up to its wall",
    *(f"{name}: {about}" for name, about in LEDGER_PARTS.items()),
    "the ledger is rank 0's (the rank that writes the record); '-': not reached, or not "
    "a part of this kind (torchrun cells have no process start)",
)
MOST_OVERHEAD_LEGEND = (
    "overhead: the cell's wall less its warm-up and measured window; efficiency: the "
    "measured window / the wall",
)


@dataclass(frozen=True)
class Totals:
    """Sums over cell runs with a ledger wall."""

    cells: int = 0
    wall_s: float = 0.0
    window_s: float = 0.0
    warmup_s: float = 0.0

    @property
    def efficiency(self) -> float | None:
        return self.window_s / self.wall_s if self.wall_s > 0 else None

    @classmethod
    def of(cls, ledgers: Iterable[dict[str, Any] | None]) -> Totals:
        closed = [ledger for ledger in ledgers if ledger and ledger.get("wall_s") is not None]

        def total(part: str) -> float:
            return float(sum(ledger["parts"].get(part) or 0.0 for ledger in closed))

        return cls(len(closed), float(sum(ledger["wall_s"] for ledger in closed)),
                   total("window"), total("warmup"))


def cell_kind(row: dict[str, Any]) -> str:
    """E.g. 'cpu 2 devices, Lightning' or 'cuda 1 device, hand-written, compiled'."""
    devices = int(row.get("devices") or 1) * int(row.get("num_nodes") or 1)
    spec = STRATEGIES.get(str(row.get("strategy")))
    words = [f"{row.get('accelerator')} {devices} device{'s' if devices > 1 else ''}",
             "hand-written" if spec is not None and not spec.lightning else "Lightning"]
    if row.get("compile") not in (None, "none") and pd.notna(row.get("compile")):
        words.append("compiled")
    if row.get("mode") == "accuracy":
        words.append("accuracy")
    return ", ".join(words)


def ledger_rows(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, repeat) whose latest record has a closed ledger: its kind, the
    parts (seconds), its wall, overhead and efficiency (bench.analyze.load)."""
    if not len(records) or "ledger" not in records:
        return pd.DataFrame()
    rows = []
    for r in latest(records).to_dict("records"):
        ledger = r["ledger"] if isinstance(r["ledger"], dict) else {}
        if ledger.get("wall_s") is None:
            continue
        rows.append({"kind": cell_kind(r), "cell_id": r["cell_id"], "repeat": r["repeat"],
                     "status": r["status"], "wall_s": ledger["wall_s"],
                     "overhead_s": r["overhead_s"], "efficiency": r["harness_efficiency"],
                     **{part: ledger["parts"].get(part) for part in LEDGER_PARTS}})
    return pd.DataFrame(rows)


def efficiency_note(records: pd.DataFrame) -> str:
    """The run's harness efficiency: its measured windows over its cells' wall time."""
    ledgers = latest(records)["ledger"] if len(records) and "ledger" in records else []
    totals = Totals.of(ledger if isinstance(ledger, dict) else None for ledger in ledgers)
    return (f"harness efficiency: {fmt(totals.efficiency, 'pct')} (measured windows "
            f"{fmt(totals.window_s)} s of {fmt(totals.wall_s)} s of cell wall time over "
            f"{totals.cells} cell run(s)); outside warm-up and window: "
            f"{fmt(totals.wall_s - totals.window_s - totals.warmup_s)} s")


def kinds_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per kind of cell: its cell runs, the medians of wall, efficiency and every part."""
    if not len(rows):
        return pd.DataFrame()
    table = []
    for kind, group in rows.groupby("kind", sort=False):
        row = {"kind": kind, "runs": str(len(group)), "wall s": fmt(group["wall_s"].median()),
               "efficiency": fmt(group["efficiency"].median(), "pct")}
        row |= {part: fmt(group[part].median()) for part in LEDGER_PARTS}
        table.append(row)
    return pd.DataFrame(table)


def most_overhead_table(rows: pd.DataFrame, n: int = MOST_OVERHEAD) -> pd.DataFrame:
    """The ``n`` cell runs with most overhead, each with its three largest overhead parts."""
    if not len(rows):
        return pd.DataFrame()
    overheads = [part for part in LEDGER_PARTS if part not in MEASURING]
    table = []
    for r in rows.sort_values("overhead_s", ascending=False).head(n).to_dict("records"):
        largest = sorted((p for p in overheads if pd.notna(r[p])), key=lambda p: -r[p])[:3]
        table.append({"cell": r["cell_id"], "repeat": str(r["repeat"]), "status": r["status"],
                      "wall s": fmt(r["wall_s"]), "overhead s": fmt(r["overhead_s"]),
                      "efficiency": fmt(r["efficiency"], "pct"),
                      "largest overhead parts": ", ".join(f"{p} {fmt(r[p])} s"
                                                          for p in largest)})
    return pd.DataFrame(table)


def harness_line(ledgers: Iterable[dict[str, Any] | None], run_wall_s: float) -> str:
    """The walk's one line: its efficiency and the harness's own cost, the run's wall
    less the measured windows and warm-ups of the cell runs it made."""
    totals = Totals.of(ledgers)
    cost = run_wall_s - totals.window_s - totals.warmup_s
    return (f"harness: {totals.cells} cell run(s), run wall {fmt(run_wall_s)} s, cell wall "
            f"{fmt(totals.wall_s)} s, measured windows {fmt(totals.window_s)} s (efficiency "
            f"{fmt(totals.efficiency, 'pct')}), warm-ups {fmt(totals.warmup_s)} s; harness "
            f"cost {fmt(cost)} s (run wall less windows and warm-ups)")
