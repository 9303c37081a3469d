"""Line two runs up cell by cell and say faster / slower / within noise.

A throughput change counts only when it is larger than ``--threshold`` percent
AND, with at least two repeats on each side, Welch's t-test gives p < 0.05:
a big change in noisy repeats is noise, a significant but tiny one is not worth
a CI failure. With a single repeat on either side only the threshold decides.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.analyze.load import latest
from bench.analyze.summary import sort_key, stability
from bench.analyze.tables import fmt
from bench.metrics import COMPARED_METRICS

ALPHA = 0.05
# Medians over ok repeats, compared as B / A; throughput (the first) also gets a verdict.
METRICS = COMPARED_METRICS
HARDWARE_KEYS, VERSION_KEYS = ("hostname", "device"), ("torch", "lightning")


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Welch t-test p-value; identical repeats give 0 or 1 instead of NaN."""
    if a.var() == 0 and b.var() == 0:  # scipy returns NaN here; the answer is plain
        return 0.0 if a.mean() != b.mean() else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def throughput_verdict(a: Any, b: Any, threshold: float = 5.0) -> tuple[str, float, float, str]:
    """(verdict, change % of the median B vs A, p-value or NaN, how it was decided)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    change = (np.median(b) / np.median(a) - 1) * 100
    if len(a) >= 2 and len(b) >= 2:
        p = welch_p(a, b)
        significant, basis = p < ALPHA, f"p={p:.2g}"
    else:
        p, significant, basis = math.nan, True, "n=1: threshold only"
    if abs(change) > threshold and significant:
        return ("faster" if change > 0 else "slower"), change, p, basis
    return "within noise", change, p, basis


# A cell measured in A whose B records are all failed, timeout, oom or interrupted: a
# regression, as much as a slower one. The reverse is a fix.
BROKEN, FIXED = "broken", "fixed"


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
                throughput_verdict(sps["a"], sps["b"], threshold))
        else:
            statuses = {n: "/".join(side[n]["status"].unique()) for n in ("a", "b")}
            row.update(verdict=status_verdict(present, len(sps["a"]), len(sps["b"])),
                       change_pct=math.nan, p_value=math.nan,
                       basis=f"A: {statuses['a'] or '-'}, B: {statuses['b'] or '-'}")
            if row["verdict"] == BROKEN:  # why B did not measure: its last reason
                reasons = side["b"]["reason"].dropna()
                row["reason"] = str(reasons.iloc[-1]) if len(reasons) else None
        # bench.metrics "unstable": a side not steady enough to act on, shown with the verdict
        row["unstable"] = " and ".join(name.upper() for name in ("a", "b")
                                       if len(ok[name]) and stability(ok[name])["unstable"])
        rows.append(row)
    return pd.DataFrame(rows)


def env_mismatch(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(hardware differences, library version differences) between the runs' env keys."""
    def values(df: pd.DataFrame, key: str) -> set[str]:
        ok = df[df["status"] == "ok"]
        column = f"env_{key}"
        return set((ok if len(ok) else df).get(column, pd.Series(dtype=str)).dropna().astype(str))

    found: dict[str, list[str]] = {"hw": [], "ver": []}
    for kind, keys in (("hw", HARDWARE_KEYS), ("ver", VERSION_KEYS)):
        for key in keys:
            in_a, in_b = values(a, key), values(b, key)
            if in_a != in_b:
                found[kind].append(f"{key}: A {', '.join(sorted(in_a)) or '?'} "
                                   f"vs B {', '.join(sorted(in_b)) or '?'}")
    return found["hw"], found["ver"]


def describe(df: pd.DataFrame) -> str:
    """'host, device, torch x, lightning y' of a run, from its records' env keys."""
    parts = []
    for key in (*HARDWARE_KEYS, *VERSION_KEYS):
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
               "verdict": r["verdict"] + (f" ({r['unstable']} unstable)"
                                          if r.get("unstable") else ""),
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
