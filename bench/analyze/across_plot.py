"""The across-machines plot: samples/s per cell, one bar per machine in each cell's group.

Kept apart from bench.analyze.plots (one run's plots) and bench.analyze.across (the
tables) so that each module stays small; it draws in the same style (plots.save_figure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on CI machines or GPU nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import StrMethodFormatter  # noqa: E402

from bench.analyze.across import Machine, all_cells, machine_keys, summaries  # noqa: E402
from bench.analyze.plots import save_figure  # noqa: E402

NAME = "across-machines.png"
BAR = 0.8  # height of one bar; a cell's group is one bar per machine plus a gap
GAP = 0.7


def machine_colors(count: int) -> list[Any]:
    # tab10 keeps ten machines apart; more than that repeat, the legend still names them.
    return [plt.get_cmap("tab10")(i % 10) for i in range(count)]


def _panel(ax: plt.Axes, cells: list[dict[str, Any]], tables: list[pd.DataFrame],
           colors: list[Any]) -> None:
    """One accelerator: a group of bars per cell (top to bottom in report order), a bar per
    machine; a machine without a measurement gets its status written where the bar would be."""
    n = len(tables)
    centers, ends = [], [1e-9]
    for c, cell in enumerate(cells):
        top = c * (n * BAR + GAP)
        centers.append(top + (n - 1) * BAR / 2)
        for m, table in enumerate(tables):
            y = top + m * BAR
            row = table.loc[cell["cell_id"]] if cell["cell_id"] in table.index else None
            if row is None or row["n"] == 0 or pd.isna(row["samples_per_s"]):
                text = "not run here" if row is None else str(row["status"])
                ax.annotate(text, (0, y), xytext=(4, 0), textcoords="offset points",
                            va="center", fontsize=7, color="grey", style="italic")
                continue
            value = row["samples_per_s"]
            low = row.get("samples_per_s_min", value)
            high = row.get("samples_per_s_max", value)
            low, high = (value if pd.isna(v) else v for v in (low, high))
            ax.barh(y, value, height=BAR * 0.9, color=colors[m],
                    xerr=np.array([[value - low], [high - value]]), capsize=2,
                    error_kw={"elinewidth": 0.8, "alpha": 0.7})
            ax.annotate(f"{value:,.0f}", (high, y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7)
            ends.append(high)
    ax.set_yticks(centers, [cell["cell_id"] for cell in cells], fontsize=8)
    ax.set_ylim(len(cells) * (n * BAR + GAP) - GAP - BAR / 2 + 0.2, -BAR / 2 - 0.2)
    ax.set_xlim(0, max(ends) * 1.15)  # room for the numbers right of the bars
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("samples / s (global, median; error bar = min-max over repeats)")


def plot_across(machines: list[Machine], out_dir: Path) -> Path | None:
    """Grouped horizontal bars saved as across-machines.png; a panel per accelerator (CPU
    bars vanish next to GPU bars). None when no machine measured any cell."""
    tables = summaries(machines)
    cells = all_cells(tables)
    measured = [t for t in tables if len(t) and ((t["n"] > 0) & t["samples_per_s"].notna()).any()]
    if not measured:
        return None
    by_accelerator: dict[Any, list[dict[str, Any]]] = {}
    for cell in cells:
        by_accelerator.setdefault(cell.get("accelerator"), []).append(cell)
    heights = [len(group) * (len(tables) * BAR + GAP) for group in by_accelerator.values()]
    fig, axes = plt.subplots(len(heights), 1, squeeze=False, height_ratios=heights,
                             figsize=(10, 1.6 + 0.3 * sum(heights) + 0.4 * len(heights)),
                             layout="constrained")
    colors = machine_colors(len(machines))
    for ax, (accelerator, group) in zip(axes[:, 0], by_accelerator.items(), strict=True):
        _panel(ax, group, tables, colors)
        ax.set_title(f"accelerator: {accelerator}", fontsize=10)
    # The key too: it names the machine's columns in the across table.
    handles = [Patch(color=color, label=f"{key}: {label}") for color, key, (label, _, _)
               in zip(colors, machine_keys(len(machines)), machines, strict=True)]
    axes[0, 0].legend(handles=handles, title="machine", loc="upper left",
                      bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.suptitle("Training throughput per cell, machine by machine")
    return save_figure(fig, out_dir, NAME)
