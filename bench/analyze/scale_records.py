"""A run's records as the scaling model reads them: each cell's threads per rank, the
model's gradient bytes, a cell's ok repeats and its step phases per step."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.analyze.load import latest
from bench.metrics import PHASES


def threads_per_rank(records: pd.DataFrame) -> dict[str, int | None]:
    """Each cell's threads per rank, from its ok records' effective block."""
    if "effective_num_threads" not in records:
        return {}
    ok = records[records["status"] == "ok"]
    return {cell: int(values.dropna().median()) if values.notna().any() else None
            for cell, values in ok.groupby("cell_id")["effective_num_threads"]}


def gradient_bytes(records: pd.DataFrame, precision: str, exclude: str | None = None
                   ) -> tuple[float, str] | None:
    """The whole model's gradient bytes in ``precision``: the largest parameter count
    one rank of the run holds (one device, else an unsharded rank), never from
    ``exclude``'s records."""
    found: list[tuple[int, int, str]] = []
    ok = records[(records["status"] == "ok") & (records["precision"] == precision)
                 & (records["cell_id"] != exclude)]
    for row in ok.to_dict("records"):
        for rank in (row["raw"] or {}).get("ranks") or []:
            params = (rank.get("model_state_bytes") or {}).get("params")
            if params:
                found.append((int(row["world_size"] != 1), -params, row["cell_id"]))
    if not found:
        return None
    _, params, cell = min(found)
    return float(-params), f"{cell}'s params"


def ok_repeats(records: pd.DataFrame, cell_id: str) -> list[dict[str, Any]]:
    """A cell's ok records, one per repeat (the latest of a resumed run's)."""
    # the cell's records first, then the latest of each repeat: not the whole frame's
    rows = latest(records[records["cell_id"] == cell_id])
    return rows[rows["status"] == "ok"].to_dict("records")


def phases_s(row: dict[str, Any]) -> dict[str, float] | None:
    values = {phase: row.get(f"step_{phase}_ms") for phase in PHASES}
    if any(v is None or pd.isna(v) for v in values.values()):
        return None
    return {phase: v / 1000 for phase, v in values.items()}
