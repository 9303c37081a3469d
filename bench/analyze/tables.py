"""Display tables for terminals and markdown: number formats, the main summary
table of a run, and an aligned renderer shared by the report and the comparison."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.metrics import TABLE_METRICS
from strategies.registry import STRATEGIES

LEGEND = ("n: ok repeats (of all repeats); samples/s: global, median [min-max] over repeats",
          "speedup: vs the 1-device 32-true single cell (same accelerator and batch size)",
          "scaling: throughput(N devices) / (N x throughput(1 device)); MFU: achieved / peak",
          "peak MB: allocated on CUDA, process RSS on CPU; '-': not measured",
          "unstable: a repeat's measured window is over 1.10x its steps at the median step "
          "time, samples/s varies over 10% (std/mean) across repeats, or warm-up never "
          "became steady",
          "busy: a repeat ran while other processes used over 10% of the CPUs (or the "
          "hypervisor stole over 5%): its figures include their work")

LEFT_COLUMNS = ("status", "reason", "verdict", "basis", "present", "pick", "accelerator",
                "control", "precision", "weights kept in", "weights in forward", "computes in",
                "autocast", "loss scaling",
                # comparisons across runs and machines (bench.compare, bench.history)
                "machine", "host", "CPU", "CPU id", "CPU peak TFLOP/s", "GPUs", "git", "date",
                "cell", "next machine", "run", "path", "started", "time from", "change",
                "from -> to",
                # where a cell's wall time went (bench.analyze.ledger)
                "largest overhead parts")


def fmt(value: Any, kind: str = "num") -> str:
    """Numbers with about three significant digits; '-' for missing."""
    if value is None or pd.isna(value):
        return "-"
    if kind == "pct":
        pct = value * 100
        if abs(pct) >= 1 or pct == 0:
            return f"{pct:.1f}%"
        return f"{pct:.2f}%" if abs(pct) >= 0.1 else f"{pct:.2g}%"
    if kind == "x":
        return f"{value:.2f}x"
    mag = abs(value)
    digits = 0 if mag >= 100 or mag == 0 else 1 if mag >= 10 else 2 if mag >= 0.1 else 4
    return f"{value:,.{digits}f}"


def main_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The cells that ran, as display strings, one column per table metric
    (bench.metrics); columns nobody measured are dropped."""
    ran = summary[summary["n"] > 0] if len(summary) else summary
    rows = []
    for r in ran.to_dict("records"):
        status = ", ".join([r["status"], *(flag for flag in ("unstable", "busy") if r.get(flag))])
        row = {"cell": r["cell_id"], "status": status,
               "n": str(r["n"]) if r["n"] == r["n_total"] else f"{r['n']}/{r['n_total']}"}
        for metric in TABLE_METRICS:
            row[metric.label or metric.name] = fmt(r.get(metric.name), metric.display)
        if r["n"] > 1 and row["samples/s"] != "-":  # throughput carries its spread
            row["samples/s"] += (f" [{fmt(r['samples_per_s_min'])}-"
                                 f"{fmt(r['samples_per_s_max'])}]")
        rows.append(row)
    table = pd.DataFrame(rows, columns=None if rows else ["cell", "status", "n", "samples/s"])
    keep = ["cell", "status", "n", "samples/s"]
    return table[[c for c in table.columns if c in keep or (table[c] != "-").any()]]


def busy_notes(records: pd.DataFrame) -> list[str]:
    """One line per ok repeat measured on a busy machine: what else was running."""
    if "machine_busy" not in records:
        return []
    busy = records[(records["status"] == "ok") & records["machine_busy"].eq(True)]
    notes = []
    for r in busy.to_dict("records"):
        steal = r.get("machine_steal")
        notes.append(
            f"busy machine: {r['cell_id']} repeat {r['repeat']}: other processes used "
            f"{fmt(r.get('machine_others_cpu'), 'pct')} of the CPUs"
            + (f", steal {fmt(steal, 'pct')}" if steal is not None and steal == steal else "")
            + (f" ({'; '.join(r['machine_busiest'])})"
               if isinstance(r.get("machine_busiest"), list) and r["machine_busiest"] else ""))
    return notes


def short_reason(reason: Any, width: int = 120) -> str:
    """First non-empty line (tracebacks end with the useful one), cut to ``width``."""
    lines = [line.strip() for line in str(reason or "").splitlines() if line.strip()]
    text = (lines[-1] if lines and lines[0].startswith("Traceback") else lines[0]) if lines else ""
    return text if len(text) <= width else text[: width - 3] + "..."


def render(table: pd.DataFrame, markdown: bool = False) -> str:
    """A plain aligned table for terminals, or a GitHub markdown table."""
    cells = [[str(c) for c in table.columns]] + [
        ["-" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in row]
        for row in table.itertuples(index=False)]
    if markdown:
        cells = [[c.replace("|", "\\|") for c in row] for row in cells]
    if len(cells) == 1:
        return "(no rows)"
    # Markdown needs at least three dashes per column rule.
    widths = [max(3 * markdown, *(len(row[i]) for row in cells)) for i in range(len(cells[0]))]
    # Words read best left-aligned, numbers right-aligned so that digits line up.
    left = [i == 0 or table.columns[i] in LEFT_COLUMNS for i in range(len(widths))]
    lines = [[c.ljust(w) if lf else c.rjust(w) for c, w, lf in zip(row, widths, left, strict=True)]
             for row in cells]
    if markdown:
        rule = ["-" * w if lf else "-" * (w - 1) + ":" for w, lf in zip(widths, left, strict=True)]
        return "\n".join("| " + " | ".join(r) + " |" for r in [lines[0], rule, *lines[1:]])
    rule = ["-" * w for w in widths]
    return "\n".join("  ".join(r).rstrip() for r in [lines[0], rule, *lines[1:]])


FASTEST_LEGEND = (
    "roofline: samples/s at the peak FLOP/s (peak / FLOPs per sample); MFU is the fraction",
    "vs tutorial: against the tutorial's defaults (1 device, single, 32-true, bs 64, "
    "torchvision loader, default Adam) on the same accelerator, when the run has that cell",
)
TUTORIAL_DEFAULTS = {"devices": 1, "num_nodes": 1, "strategy": "single", "precision": "32-true",
                     "batch_size": 64, "loader": "torchvision", "optimizer": "adam",
                     "optimizer_impl": "default", "compile": "none", "mode": "throughput"}


def fastest_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per accelerator: the fastest cell, and the fastest 32-true cell, against the
    roofline and against the tutorial's defaults."""
    ran = summary[(summary["n"] > 0) & summary["samples_per_s"].notna()] if len(summary) \
        else summary
    if len(ran):  # a control that skips the gradients' exchange is no candidate
        ran = ran[[STRATEGIES[s].trains if s in STRATEGIES else True for s in ran["strategy"]]]
    rows = []
    for accelerator, cells in ran.groupby("accelerator", sort=False):
        tutorial = cells
        for field, value in TUTORIAL_DEFAULTS.items():
            tutorial = tutorial[tutorial[field] == value] if field in tutorial else tutorial[:0]
        reference = tutorial["samples_per_s"].max() if len(tutorial) else None
        picks = {"fastest": cells, "fastest 32-true": cells[cells["precision"] == "32-true"]}
        for label, pool in picks.items():
            if not len(pool):
                continue
            best = pool.loc[pool["samples_per_s"].idxmax()]
            flops, peak = best.get("flops_per_sample"), best.get("peak_tflops")
            roofline = peak * 1e12 / flops if flops and peak and flops == flops else None
            rows.append({"accelerator": accelerator, "pick": label, "cell": best["cell_id"],
                         "samples/s": fmt(best["samples_per_s"]), "MFU": fmt(best["mfu"], "pct"),
                         "roofline samples/s": fmt(roofline),
                         "vs tutorial": fmt(best["samples_per_s"] / reference, "x")
                         if reference else "-"})
    return pd.DataFrame(rows)
