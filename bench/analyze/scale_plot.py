"""The scaling projection's plot: projected samples/s against devices, one line per
strategy, the cells the run measured on it (with the model's error for each)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only

import matplotlib.pyplot as plt  # noqa: E402

from bench.analyze.plots import save_figure  # noqa: E402
from bench.analyze.scale import Prediction  # noqa: E402
from bench.analyze.scale_check import Check  # noqa: E402
from bench.analyze.scale_verdict import TARGET  # noqa: E402

PLAN_STYLES = {"ddp": ("#1f77b4", "-"), "fsdp": ("#ff7f0e", "-"), "zero-1": ("#2ca02c", "-"),
               "zero-2": ("#d62728", "--"), "zero-3": ("#9467bd", ":")}


def plot_projection(predictions: list[Prediction], checks: list[Check], title: str,
                    out_dir: Path, target: float = TARGET) -> Path | None:
    """Two panels: samples/s (log-log: the whole range) and scaling efficiency (where
    the strategies part), both against devices."""
    if not predictions:
        return None
    fig, (rate, eff) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    for plan, (color, style) in PLAN_STYLES.items():
        line = sorted((p for p in predictions if p.plan == plan), key=lambda p: p.devices)
        for ax, value in ((rate, "samples_per_s"), (eff, "efficiency")):
            ax.plot([p.devices for p in line], [getattr(p, value) for p in line], style,
                    marker="o", markersize=4, color=color, label=f"{plan} (model)")
    # checks at one device count sit close on either panel: their labels go one under
    # the other, highest first, each with a thin line to its star
    checked = [c for c in checks if c.predicted is not None and c.inputs is not None]
    for check in checked:
        same = [c for c in checked if c.predicted.devices == check.predicted.devices]
        rows = [sorted(same, key=key, reverse=True).index(check)
                for key in (lambda c: c.measured_samples_per_s, _efficiency)]
        _measured_point(rate, eff, check, rows, target)
    rate.scatter([], [], marker="*", s=160, color="grey", edgecolors="black",
                 label="measured cell (model's error, call at the target)")
    rate.set_yscale("log")
    # room under the lowest point for the labels stacked under it
    rate.set_ylim(bottom=rate.get_ylim()[0] / 1.6)
    rate.set_ylabel("samples/s (global)")
    eff.set_ylabel("scaling efficiency: per-device samples/s / one device's")
    for ax in (rate, eff):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("devices")
        ax.grid(True, which="both", alpha=0.3)
    rate.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_dir, "scaling-projection.png")


def _efficiency(check: Check) -> float:
    """A measured cell's per-device samples/s against the one-device step the model
    starts from."""
    assert check.predicted is not None and check.inputs is not None
    one_device = check.predicted.devices * check.inputs.batch_size \
        / sum(check.inputs.phases_s.values())
    return check.measured_samples_per_s / one_device


def _measured_point(rate: plt.Axes, eff: plt.Axes, check: Check, rows: list[int],
                    target: float) -> None:
    """A measured cell on both panels; the label is the model's error and the check's
    call, the ``rows``-th (samples/s panel, efficiency panel) of its device count."""
    assert check.predicted is not None
    color = PLAN_STYLES.get(check.plan, ("black", "-"))[0]
    devices = check.predicted.devices
    verdict = check.verdict(target)
    assert verdict is not None
    label = f"{check.plan} {verdict.error * 100:+.0f}% ({verdict.call})"
    for ax, value, row in ((rate, check.measured_samples_per_s, rows[0]),
                           (eff, _efficiency(check), rows[1])):
        ax.scatter([devices], [value], marker="*", s=160, color=color, edgecolors="black",
                   zorder=3)
        ax.annotate(label, (devices, value), textcoords="offset points",
                    xytext=(24, 16 - 11 * row), fontsize=7,
                    arrowprops={"arrowstyle": "-", "color": color, "lw": 0.5})
