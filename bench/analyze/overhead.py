"""Lightning against its controls: each Lightning cell beside the hand-written loop
that trains the same workload with the same engine (``single`` beside ``raw``,
``ddp`` beside ``engine-ddp``, ...). The ratio is Lightning's cost, or gain, over
driving the engine by hand."""

from __future__ import annotations

from dataclasses import fields

import pandas as pd

from bench.analyze.tables import fmt
from bench.matrix import Cell
from strategies.registry import STRATEGIES

# The Lightning strategy -> the control cell's strategy.
CONTROL_OF = {spec.controls: name for name, spec in STRATEGIES.items() if spec.controls}

OVERHEAD_LEGEND = (
    "control: the same workload (every cell field but the strategy) in a hand-written "
    "loop driving the same engine, timed by the same clock",
    "Lightning / control: samples/s ratio; below 1.00x Lightning is slower",
)


def overhead_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per Lightning cell whose control ran in the same run (both ok)."""
    measured = summary[(summary["n"] > 0) & summary["samples_per_s"].notna()] \
        if len(summary) else summary
    if not len(measured):
        return pd.DataFrame()
    same = [f.name for f in fields(Cell) if f.name != "strategy" and f.name in measured]
    workload = [tuple(map(str, values)) for values in measured[same].itertuples(index=False)]
    by_workload = {(w, s): row for w, s, row in zip(
        workload, measured["strategy"], measured.to_dict("records"), strict=True)}
    rows = []
    for w, lightning in zip(workload, measured.to_dict("records"), strict=True):
        control = by_workload.get((w, CONTROL_OF.get(lightning["strategy"])))
        if control is None:
            continue
        rows.append({
            "cell": lightning["cell_id"], "control": control["strategy"],
            "Lightning samples/s": fmt(lightning["samples_per_s"]),
            "control samples/s": fmt(control["samples_per_s"]),
            "Lightning / control": fmt(lightning["samples_per_s"] / control["samples_per_s"],
                                       "x"),
            "step p50 ms": f"{fmt(lightning['step_ms_p50'])} / {fmt(control['step_ms_p50'])}",
        })
    return pd.DataFrame(rows)
