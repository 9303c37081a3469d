"""Line two runs up cell by cell and say faster / slower / within noise /
inconclusive / broken / fixed.

A throughput change counts only when it is larger than ``--threshold`` percent
AND it stands out of the noise: by Welch's t-test over the repeats (p < 0.05), or,
where the repeats are too few to tell, by a block bootstrap over the per-step
values (bench.analyze.noise). A significant but tiny change is not worth a CI
failure; a big change the data cannot separate from noise is "inconclusive", with
the number of repeats that would decide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.analyze.identity import NAME_KEYS, VERSION_KEYS
from bench.analyze.load import latest
from bench.analyze.noise import ALPHA, repeats_needed, step_interval
from bench.analyze.summary import sort_key, stability
from bench.analyze.tables import fmt
from bench.metrics import COMPARED_METRICS

# Medians over ok repeats, compared as B / A; throughput (the first) also gets a verdict.
METRICS = COMPARED_METRICS


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Welch t-test p-value; identical repeats give 0 or 1 instead of NaN."""
    if a.var() == 0 and b.var() == 0:  # scipy returns NaN here; the answer is plain
        return 0.0 if a.mean() != b.mean() else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def throughput_verdict(a: Any, b: Any, threshold: float = 5.0, raws_a: Sequence[Any] = (),
                       raws_b: Sequence[Any] = ()) -> tuple[str, float, float, str]:
    """(verdict, change % of the median B vs A, p-value or NaN, how it was decided).

    A change within the threshold is "within noise". Beyond it, the repeats decide
    when they can: Welch's p < ALPHA with >= 2 repeats a side, or p >= ALPHA with as
    many repeats as a change of this size needs (bench.analyze.noise). When they
    cannot, the per-step values (``raws_*``: the records' raw blocks) decide by their
    block-bootstrap interval: an interval that excludes no change calls it; else the
    verdict is "inconclusive", with the repeats that would decide."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    change = (np.median(b) / np.median(a) - 1) * 100
    direction = "faster" if change > 0 else "slower"
    p, needed = math.nan, None
    if len(a) >= 2 and len(b) >= 2:
        p = welch_p(a, b)
        if abs(change) > threshold and p < ALPHA:
            return direction, change, p, f"p={p:.2g}"
        needed = repeats_needed(a, b, change / 100)
        if abs(change) <= threshold or (needed is not None and needed <= min(len(a), len(b))):
            return "within noise", change, p, f"p={p:.2g}"
    elif abs(change) <= threshold:
        return "within noise", change, p, "n=1: threshold only"
    interval = step_interval(raws_a, raws_b)
    if interval is not None:
        low, high = (100 * bound for bound in interval)
        basis = f"steps: 95% CI {low:+.1f}%..{high:+.1f}%"
        if low > 0 or high < 0:
            return direction, change, p, basis
        return INCONCLUSIVE, change, p, basis + _needing(needed)
    return INCONCLUSIVE, change, p, (f"p={p:.2g}" if p == p else "n=1") + _needing(needed)


def _needing(needed: int | None) -> str:
    return f"; needs ~{needed} repeats a side" if needed else "; needs >= 3 repeats a side"


# A cell measured in A whose B records are all failed, timeout, oom or interrupted: a
# regression, as much as a slower one. The reverse is a fix.
BROKEN, FIXED = "broken", "fixed"
# Beyond the threshold, but neither the repeats nor the steps can tell it from noise.
INCONCLUSIVE = "inconclusive"


def status_verdict(present: str, ok_a: int, ok_b: int) -> str:
    """The verdict of a cell without a throughput on both sides."""
    if present != "both":
        return present
    if ok_a and not ok_b:
        return BROKEN
    if ok_b and not ok_a:
        return FIXED
    return "not comparable"


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, threshold: float = 5.0) -> pd.DataFrame:
    """One row per cell in either run (frames from load_records): medians, B/A ratios, verdict.

    ``present`` is "both", "A only" or "B only"; a cell present in both runs
    without an ok repeat on one side gets the verdict "not comparable".
    """
    a, b = latest(a), latest(b)
    cells = pd.concat([b, a]).drop_duplicates("cell_id")
    cells = cells.assign(total_devices=cells.get("devices", 1) * cells.get("num_nodes", 1))
    rows = []
    for cell in sorted(cells.to_dict("records"), key=sort_key):
        cell_id = cell["cell_id"]
        side = {name: run[run["cell_id"] == cell_id] for name, run in (("a", a), ("b", b))}
        ok = {name: recs[recs["status"] == "ok"] for name, recs in side.items()}
        present = ("both" if len(side["a"]) and len(side["b"])
                   else "A only" if len(side["a"]) else "B only")
        row: dict[str, Any] = {"cell_id": cell_id, "present": present,
                               "n_a": len(ok["a"]), "n_b": len(ok["b"])}
        for column in (metric.name for metric in METRICS):
            med_a, med_b = (ok[name][column].median() for name in ("a", "b"))
            row[f"{column}_a"], row[f"{column}_b"] = med_a, med_b
            row[f"{column}_ratio"] = med_b / med_a if med_a else math.nan
        sps = {name: ok[name]["samples_per_s"].dropna() for name in ("a", "b")}
        if present == "both" and len(sps["a"]) and len(sps["b"]):
            row["verdict"], row["change_pct"], row["p_value"], row["basis"] = (
                throughput_verdict(sps["a"], sps["b"], threshold,
                                   list(ok["a"]["raw"]), list(ok["b"]["raw"])))
        else:
            statuses = {n: "/".join(side[n]["status"].unique()) for n in ("a", "b")}
            row.update(verdict=status_verdict(present, len(sps["a"]), len(sps["b"])),
                       change_pct=math.nan, p_value=math.nan,
                       basis=f"A: {statuses['a'] or '-'}, B: {statuses['b'] or '-'}")
            if row["verdict"] == BROKEN:  # why B did not measure: its last reason
                reasons = side["b"]["reason"].dropna()
                row["reason"] = str(reasons.iloc[-1]) if len(reasons) else None
        # bench.metrics "unstable" and "busy": a side not to act on, shown with the verdict
        row["caveats"] = ", ".join(
            f"{name.upper()} {flag}" for name in ("a", "b") if len(ok[name])
            for flag, on in stability(ok[name]).items() if flag in ("unstable", "busy") and on)
        rows.append(row)
    return pd.DataFrame(rows)


def describe(df: pd.DataFrame) -> str:
    """'host, device, torch x, lightning y' of a run, from its records' env keys."""
    parts = []
    for key in (*NAME_KEYS, *VERSION_KEYS):
        found = df.get(f"env_{key}", pd.Series(dtype=str)).dropna().astype(str).unique()
        prefix = f"{key} " if key in VERSION_KEYS else ""
        parts.append(prefix + ("/".join(found) or "?"))
    return ", ".join(parts)


def display_table(result: pd.DataFrame) -> pd.DataFrame:
    """Cells in both runs as display strings; metrics nobody measured are dropped."""
    both = result[result["present"] == "both"]
    rows = []
    for r in both.to_dict("records"):
        row = {"cell": r["cell_id"], "n A/B": f"{r['n_a']}/{r['n_b']}",
               "samples/s A": fmt(r["samples_per_s_a"]), "samples/s B": fmt(r["samples_per_s_b"]),
               "change": "-" if pd.isna(r["change_pct"]) else f"{r['change_pct']:+.1f}%",
               "verdict": r["verdict"] + (f" ({r['caveats']})" if r.get("caveats") else ""),
               "basis": r["basis"]}
        for metric in METRICS[1:]:
            row[f"{metric.label} B/A"] = fmt(r[f"{metric.name}_ratio"], "x")
        rows.append(row)
    table = pd.DataFrame(rows, columns=None if rows else ["cell", "verdict"])
    return table[[c for c in table.columns if (table[c] != "-").any() or c == "cell"]]


def side_by_side(runs: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Many runs, one table: per cell, each run's samples/s (median [min-max] over its
    ok repeats, or its status) and the change of each against the first run."""
    latest_runs = [(name, latest(df)) for name, df in runs]
    cells = pd.concat([df for _, df in latest_runs]).drop_duplicates("cell_id")
    cells = cells.assign(total_devices=cells.get("devices", 1) * cells.get("num_nodes", 1))
    rows = []
    for cell in sorted(cells.to_dict("records"), key=sort_key):
        row: dict[str, Any] = {"cell": cell["cell_id"]}
        reference = math.nan
        for index, (name, df) in enumerate(latest_runs):
            records = df[df["cell_id"] == cell["cell_id"]]
            values = records.loc[records["status"] == "ok", "samples_per_s"].dropna()
            if not len(records):
                row[name] = "-"
            elif not len(values):
                row[name] = "/".join(records["status"].unique())
            else:
                median = values.median()
                row[name] = fmt(median) + (f" [{fmt(values.min())}-{fmt(values.max())}]"
                                           if len(values) > 1 else "")
                reference = median if index == 0 else reference
                if index:
                    row[f"{name} vs A"] = (f"{100 * (median / reference - 1):+.1f}%"
                                           if reference == reference else "-")
        rows.append(row)
    columns = ["cell", *(name for name, _ in runs),
               *(f"{name} vs A" for name, _ in runs[1:])]
    return pd.DataFrame(rows).reindex(columns=columns).fillna("-")
