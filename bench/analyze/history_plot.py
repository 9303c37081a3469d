"""The history plot: per cell, samples/s per run with its min-max band, the
change points marked and the baseline's level and band (bench.analyze.history
finds them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analyze.history import Run, marker
from bench.analyze.plots import save_figure

UNSAFE = r"[^\w.-]"  # characters kept out of a plot's file name


def plot_history(history: pd.DataFrame, runs: list[Run], out_dir: Path) -> list[Path]:
    """A line per cell, samples/s per run with its min-max band, change points marked;
    one PNG per cell with a measurement (history-<cell>.png)."""
    import matplotlib.pyplot as plt  # after bench.analyze.plots: its Agg backend, no display

    for stale in out_dir.glob("history-*.png"):  # a rerun must not keep old cells' plots
        stale.unlink()
    paths = []
    for cell_id, group in history.groupby("cell_id", sort=False):
        if not (group["n"] > 0).any():
            continue
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(runs) + 2), 3.8))
        ax.fill_between(group["run"], group["min"], group["max"], color="#1f77b4", alpha=0.2,
                        label="min-max over repeats")
        ax.plot(group["run"], group["median"], marker="o", color="#1f77b4", label="median")
        _baseline(ax, group)
        for r in group[group["mark"].notna()].to_dict("records"):
            color = "#d62728" if r["change"] < 0 else "#2ca02c"
            ax.axvline(r["run"], color=color, linestyle="--", linewidth=1)
            ax.plot(r["run"], r["median"], marker="v" if r["change"] < 0 else "^",
                    markersize=12, color=color,
                    markerfacecolor=color if r["mark"] == "confirmed" else "none")
            last = r["run"] == group["run"].max()  # text leftwards, inside the axes
            ax.annotate(marker(r), (r["run"], r["median"]), textcoords="offset points",
                        xytext=(-8 if last else 6, 6), ha="right" if last else "left",
                        fontsize=8, color=color)
        low = ax.get_ylim()[0]
        for r in group[group["n"] == 0].to_dict("records"):  # failed runs: a gap in the line
            ax.text(r["run"], low, r["status"], rotation=90, ha="center", va="bottom",
                    fontsize=8, color="#7f7f7f")
        ax.set_xticks(range(len(runs)), [run.label for run in runs], rotation=30, ha="right",
                      fontsize=8)
        ax.set_ylabel("samples/s")
        ax.set_title(cell_id, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        paths.append(save_figure(fig, out_dir, f"history-{re.sub(UNSAFE, '_', str(cell_id))}.png"))
    return paths


def _baseline(ax: Any, group: pd.DataFrame) -> None:
    """The baseline level (a line from its first run on) and its band (shaded): a run
    outside the band is beyond it, two in a row a confirmed change."""
    base = group[group["in_baseline"]]
    if base.empty:
        return
    level, band = float(base["base_level"].iloc[0]), float(base["base_band"].iloc[0])
    span = [base["run"].min(), group["run"].max()]
    ax.plot(span, [level, level], color="#7f7f7f", linestyle=":", linewidth=1,
            label="baseline (median of its runs) and band")
    ax.fill_between(span, level / (1 + band), level * (1 + band), color="#7f7f7f", alpha=0.1)
