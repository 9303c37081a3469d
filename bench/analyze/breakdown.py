"""Where the time goes: each cell's measured step split into its phases (data,
forward, backward, optimizer, rest; bench.measure.clock), as milliseconds per
step of the slowest rank and as shares of the step."""

from __future__ import annotations

import pandas as pd

from bench.analyze.tables import fmt
from bench.metrics import PHASES

PHASE_COLUMNS = tuple(f"step_{phase}_ms" for phase in PHASES)

BREAKDOWN_LEGEND = (
    "ms per measured step of the slowest rank (median over repeats), each phase's share "
    "of the step in brackets; the phases add up to the step",
    "data: fetch from the loader + move to the device; forward: the forward pass and "
    "loss (in Lightning the whole training_step); optimizer: zero_grad + step; rest: "
    "everything else (framework, logging, communication not overlapped)",
    "on CUDA the phases are timed by CUDA events (device time), elsewhere by the host clock",
)


def breakdown_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per cell with measured phases."""
    if not len(summary) or not set(PHASE_COLUMNS) <= set(summary.columns):
        return pd.DataFrame()
    measured = summary[summary[list(PHASE_COLUMNS)].notna().all(axis=1)]
    rows = []
    for r in measured.to_dict("records"):
        step = sum(r[column] for column in PHASE_COLUMNS)
        row = {"cell": r["cell_id"], "step ms": fmt(step)}
        for phase, column in zip(PHASES, PHASE_COLUMNS, strict=True):
            share = r[column] / step if step > 0 else None
            row[phase] = f"{fmt(r[column])} ({fmt(share, 'pct')})"
        rows.append(row)
    return pd.DataFrame(rows)
