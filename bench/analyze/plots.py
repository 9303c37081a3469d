"""PNG plots of one run: throughput, scaling, MFU per cell and training curves.

Every function takes the tables of :mod:`bench.analyze.summary` and an output folder and
returns the saved path, or None when there is nothing to plot (no empty plots).
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

from bench.analyze.summary import ORDER  # noqa: E402
from bench.metrics import PHASES  # noqa: E402

# Fixed colours so that a precision looks the same in every plot and every run.
PRECISION_COLORS = {"32-true": "#1f77b4", "16-mixed": "#ff7f0e", "bf16-mixed": "#2ca02c",
                    "bf16-true": "#d62728"}
EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def precision_color(precision: Any) -> str:
    if precision in PRECISION_COLORS:
        return PRECISION_COLORS[precision]
    return EXTRA_COLORS[sum(map(ord, str(precision))) % len(EXTRA_COLORS)]


def save_figure(fig: plt.Figure, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps legends placed outside the axes
    plt.close(fig)
    return path


def _cell_bars(summary: pd.DataFrame, column: str, scale: float, xlabel: str, title: str,
               fmt: str, spread: bool = False, suffix: str = "",
               panel_note: tuple[str, str] | None = None) -> plt.Figure | None:
    """Horizontal bars, one per cell, grouped by strategy (bold headers), coloured by
    precision; a panel per accelerator, because CPU bars vanish next to GPU bars."""
    data = summary[summary[column].notna()] if len(summary) else summary
    if data.empty:
        return None
    groups = [group for _, group in data.groupby("accelerator", sort=False)]
    rows = [len(g) + 1.4 * g["strategy"].nunique() for g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 1.2 + 0.3 * sum(rows) + len(groups)),
                             height_ratios=rows, squeeze=False, layout="constrained")
    for ax, group in zip(axes[:, 0], groups, strict=True):
        _bars(ax, group, column, scale, fmt, spread, suffix)
        ax.set_xlabel(xlabel)
        note = ""
        if panel_note:  # e.g. which peak the MFU of this accelerator is measured against
            note_column, label = panel_note
            note = f" ({label}: {', '.join(map(str, group[note_column].dropna().unique()))})"
        ax.set_title(f"accelerator: {group['accelerator'].iloc[0]}{note}", fontsize=10)
    present = sorted(set(data["precision"]), key=lambda p: (
        ORDER["precision"].index(p) if p in ORDER["precision"] else 99, str(p)))
    axes[0, 0].legend(handles=[Patch(color=precision_color(p), label=p) for p in present],
                      title="precision", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.suptitle(title)
    return fig


def _bars(ax: plt.Axes, data: pd.DataFrame, column: str, scale: float, fmt: str, spread: bool,
          suffix: str) -> None:
    # Stable sort keeps the report's order (precision, devices) inside a strategy.
    data = data.sort_values("strategy", kind="stable",
                            key=lambda s: s.map(_strategy_rank)).reset_index(drop=True)
    positions, labels, headers, y = [], [], [], 0.0
    for strategy, group in data.groupby("strategy", sort=False):
        headers.append((y, str(strategy)))
        y += 1
        for idx in group.index:
            positions.append((idx, y))
            labels.append(data.at[idx, "cell_id"])
            y += 1
        y += 0.4
    idxs, ys = [i for i, _ in positions], [p for _, p in positions]
    values = data.loc[idxs, column].to_numpy(float) * scale
    colors = [precision_color(p) for p in data.loc[idxs, "precision"]]
    xerr, ends = None, values
    if spread:  # repeat min-max; zero-length for single repeats
        lo = values - data.loc[idxs, f"{column}_min"].fillna(data.loc[idxs, column]) * scale
        hi = data.loc[idxs, f"{column}_max"].fillna(data.loc[idxs, column]) * scale - values
        xerr = np.vstack([lo.to_numpy(float), hi.to_numpy(float)])
        ends = values + xerr[1]
    ax.barh(ys, values, color=colors, xerr=xerr, capsize=3, height=0.7)
    for yy, value, end in zip(ys, values, ends, strict=True):  # number right of the error bar
        ax.annotate(format(value, fmt) + suffix, (end, yy), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(ys + [h for h, _ in headers], labels + [f"{name}:" for _, name in headers])
    for tick in ax.get_yticklabels()[len(ys):]:
        tick.set_fontweight("bold")
    ax.set_ylim(max(ys) + 0.6, -0.6)  # top to bottom in report order
    ax.set_xlim(0, max(ends.max() * 1.15, 1e-9))
    ax.grid(axis="x", alpha=0.3)


def _strategy_rank(strategy: Any) -> int:
    order = ORDER["strategy"]
    return order.index(strategy) if strategy in order else len(order)


def throughput_figure(summary: pd.DataFrame) -> plt.Figure | None:
    """The throughput bars, not yet saved (what a test reads the panels of)."""
    return _cell_bars(summary, "samples_per_s", 1.0, "samples / s (global, all devices)",
                      "Training throughput per cell (median; error bar = min-max over repeats)",
                      ",.0f", spread=True)


def plot_throughput(summary: pd.DataFrame, out_dir: Path) -> Path | None:
    fig = throughput_figure(summary)
    return save_figure(fig, out_dir, "throughput.png") if fig else None


def mfu_figure(summary: pd.DataFrame) -> plt.Figure | None:
    """The MFU bars, each panel naming the peaks its accelerator is divided by."""
    if not len(summary):
        return None
    return _cell_bars(summary, "mfu", 100.0, "MFU (% of peak dense TFLOPS)",
                      "Model FLOPs utilisation per cell (achieved / peak TFLOPS)", ".2f",
                      suffix="%", panel_note=("peak_source", "peak"))


def plot_mfu(summary: pd.DataFrame, out_dir: Path) -> Path | None:
    fig = mfu_figure(summary)
    return save_figure(fig, out_dir, "mfu.png") if fig else None


def plot_scaling(summary: pd.DataFrame, out_dir: Path) -> Path | None:
    """Samples/s against total devices: a panel per (accelerator, precision), a line per
    strategy, its ideal linear scaling from the 1-device cell dashed in the same colour."""
    if not len(summary) or "scaling_ref_cell_id" not in summary:
        return None
    multi = summary[(summary["total_devices"] > 1) & summary["scaling_eff"].notna()]
    if multi.empty:
        return None
    by_id = summary.set_index("cell_id")
    panels: dict[tuple, dict[tuple, list[tuple[int, float, float]]]] = {}
    for r in multi.to_dict("records"):
        ref = by_id.loc[r["scaling_ref_cell_id"]]
        lines = panels.setdefault((r["accelerator"], r["precision"]), {})
        points = lines.setdefault((r["strategy"], r["scaling_ref_cell_id"]),
                                  [(1, ref["samples_per_s"], 1.0)])
        points.append((r["total_devices"], r["samples_per_s"], r["scaling_eff"]))
    strategies = list(dict.fromkeys(key[0] for lines in panels.values() for key in lines))
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(strategies)}
    ncols = min(len(panels), 4)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.8 * nrows + 0.8),
                             squeeze=False)
    for ax, ((accelerator, precision), lines) in zip(axes.flat, panels.items(), strict=False):
        repeated = [s for s, _ in lines if sum(k[0] == s for k in lines) > 1]
        for (strategy, ref_id), points in lines.items():
            n, sps, eff = (np.array(v) for v in zip(*sorted(points), strict=True))
            color = colors[strategy]
            # Same strategy twice in a panel: another workload (loader, batch...), name it.
            label = strategy + (f" (vs {ref_id})" if strategy in repeated else "")
            ax.plot(n, sps, "o-", color=color, label=label)
            ax.plot([1, n.max()], [sps[0], sps[0] * n.max()], "--", color=color, alpha=0.45)
            if len(lines) <= 2:  # more labels than that overlap; the table has them all
                for x, y, e in zip(n[1:], sps[1:], eff[1:], strict=True):
                    ax.annotate(f"{e:.0%}", (x, y), xytext=(5, -12),
                                textcoords="offset points", fontsize=8, color=color)
        ticks = sorted({p[0] for pts in lines.values() for p in pts})
        ax.set_xticks(ticks)
        ax.set_xlim(1 - 0.05 * ticks[-1], ticks[-1] * 1.12)  # room for the % labels
        ax.set(title=f"{accelerator}, {precision}", xlabel="total devices (processes)",
               ylabel="samples / s (global)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Scaling: throughput vs devices (dashed: ideal linear from 1 device; "
                 "% = scaling efficiency)")
    return save_figure(fig, out_dir, "scaling.png")


def _rank0(raw: dict[str, Any]) -> dict[str, Any]:
    ranks = raw.get("ranks") or [{}]
    return next((r for r in ranks if r.get("rank") == 0), ranks[0])


def plot_loss(records: pd.DataFrame, out_dir: Path) -> Path | None:
    """Rank-0 training loss vs step and vs wall time; accuracy cells when any ran."""
    ok = records[records["status"] == "ok"] if len(records) else records
    if "mode" in ok and (ok["mode"] == "accuracy").any():
        ok = ok[ok["mode"] == "accuracy"]
    curves = []
    for cell_id, group in ok.sort_values("repeat").groupby("cell_id", sort=False):
        rank = _rank0(group.iloc[0]["raw"])  # first ok repeat: one line per cell stays readable
        loss = np.asarray([np.nan if v is None else v for v in rank.get("loss") or []], float)
        steps = list(rank.get("warmup_step_s") or []) + list(rank.get("step_s") or [])
        n = min(len(loss), len(steps)) if steps else len(loss)
        if n:
            curves.append((cell_id, loss[:n], np.cumsum(steps[:n]) if steps else None,
                           len(rank.get("warmup_step_s") or [])))
    if not curves:
        return None
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    # Per-step loss is noisy: long curves get a running mean; the raw steps stay faint
    # behind it unless there are so many cells that they are only clutter.
    smoothed = max(len(c[1]) for c in curves) >= 50
    few = len(curves) <= 6
    for i, (cell_id, loss, wall, _) in enumerate(curves):
        # 20 colours x 4 line styles keep up to 80 cells apart in the legend.
        style = {"color": plt.get_cmap("tab20")(i % 20), "ls": ("-", "--", ":", "-.")[i // 20 % 4]}
        window = max(1, len(loss) // 25) if smoothed else 1
        smooth = pd.Series(loss).rolling(window, min_periods=1).mean().to_numpy()
        x = np.arange(1, len(loss) + 1)
        by_step.plot(x, smooth, label=cell_id, **style)
        if wall is not None:
            by_time.plot(wall, smooth, **style)
        if few and smoothed:
            by_step.plot(x, loss, alpha=0.2, lw=0.8, **style)
            if wall is not None:
                by_time.plot(wall, loss, alpha=0.2, lw=0.8, **style)
    warmups = {c[3] for c in curves}
    if len(warmups) == 1 and warmups != {0}:
        by_step.axvline(warmups.pop() + 0.5, color="grey", ls=":", label="end of warm-up")
    by_step.set(xlabel="optimizer step", ylabel="training loss (rank 0)",
                title="Training loss vs step" + ("" if not smoothed else " (running mean)"
                                                 if not few else
                                                 " (faint: per step; solid: running mean)"))
    by_time.set(xlabel="cumulative training-step time (s, warm-up included)",
                title="Training loss vs wall time")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
    handles, labels = by_step.get_legend_handles_labels()
    if few:
        by_step.legend(fontsize=7, loc="upper right")
    else:  # many cells: a legend inside would hide the curves, so it goes below both axes
        fig.legend(handles, labels, fontsize=7, ncol=3, loc="upper center",
                   bbox_to_anchor=(0.5, 0), frameon=False)
    return save_figure(fig, out_dir, "loss.png")


def plot_val_accuracy(records: pd.DataFrame, out_dir: Path) -> Path | None:
    """Validation accuracy vs wall time for cells that recorded a validation curve."""
    ok = records[records["status"] == "ok"] if len(records) else records
    fig, ax = None, None
    for cell_id, group in ok.sort_values("repeat").groupby("cell_id", sort=False):
        curve = pd.DataFrame(group.iloc[0]["raw"].get("val_curve") or [])
        if curve.empty or "val_acc" not in curve:
            continue
        if fig is None:
            fig, ax = plt.subplots(figsize=(8, 5))
        ax.plot(curve["time_s"], curve["val_acc"] * 100, "o-", ms=3, label=cell_id)
    if fig is None:
        return None
    targets = ok["target_acc"].dropna().unique() if "target_acc" in ok else []
    for target in targets:  # stored as a fraction; tolerate a percentage
        pct = target if target > 1 else target * 100
        ax.axhline(pct, color="grey", ls=":", label=f"target {pct:.1f}%")
    ax.set(xlabel="wall time since the first training step (s)", ylabel="validation accuracy (%)",
           title="Validation accuracy vs wall time (first ok repeat)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir, "val_accuracy.png")


PHASE_COLORS = dict(zip(PHASES, ("#ff7f0e", "#1f77b4", "#2ca02c", "#d62728", "#7f7f7f"),
                        strict=True))


def plot_time_breakdown(summary: pd.DataFrame, out_dir: Path) -> Path | None:
    """Where the time goes: one stacked bar per cell, ms per step in each phase."""
    columns = [f"step_{phase}_ms" for phase in PHASES]
    if not len(summary) or not set(columns) <= set(summary.columns):
        return None
    data = summary[summary[columns].notna().all(axis=1)].iloc[::-1]  # first cell on top
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.35 * len(data)))
    left = np.zeros(len(data))
    for phase, column in zip(PHASES, columns, strict=True):
        values = data[column].to_numpy(dtype=float)
        ax.barh(range(len(data)), values, left=left, color=PHASE_COLORS[phase], label=phase)
        left += values
    ax.set_yticks(range(len(data)), data["cell_id"], fontsize=7)
    ax.set_xlabel("ms per measured step (slowest rank, median over repeats)")
    ax.set_title("Where the time goes: the phases of a training step", pad=26)
    ax.legend(ncols=len(PHASES), fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out_dir, "time_breakdown.png")


def make_plots(records: pd.DataFrame, summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Every plot that has something to show; the paths of the PNGs written."""
    for stale in ("throughput", "scaling", "mfu", "time_breakdown", "loss", "val_accuracy"):
        (out_dir / f"{stale}.png").unlink(missing_ok=True)  # a rerun must not keep old plots
    made = [plot_throughput(summary, out_dir), plot_scaling(summary, out_dir),
            plot_mfu(summary, out_dir), plot_time_breakdown(summary, out_dir),
            plot_loss(records, out_dir), plot_val_accuracy(records, out_dir)]
    return [p for p in made if p is not None]
