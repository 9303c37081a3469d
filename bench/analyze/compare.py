"""Line two runs up cell by cell and say faster / slower / same / inconclusive /
broken / fixed, and what the regression gate sees in each cell (bench.analyze.gate).

The throughput verdict comes from the repeats alone (bench.analyze.noise): the
change in the mean of log throughput, Welch's t-interval, the threshold on both
sides. Steps inside a repeat share its process and never decide.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from bench.analyze.gate import cell_alarms
from bench.analyze.identity import NAME_KEYS, VERSION_KEYS
from bench.analyze.load import latest
from bench.analyze.noise import INCONCLUSIVE, decide, repeats_needed
from bench.analyze.summary import sort_key, stability
from bench.analyze.tables import fmt
from bench.metrics import COMPARED_METRICS, FULL_VAL_IMAGES, VALIDATION_METRICS, verdict_metric

# Medians over ok repeats, compared as B / A; throughput (the first) also gets a verdict.
METRICS = COMPARED_METRICS
VERDICT_FIELDS = ("verdict", "change_pct", "ci_low_pct", "ci_high_pct", "p_value",
                  "detectable_pct", "repeats_needed", "basis")


def throughput_verdict(a: Any, b: Any, threshold: float = 5.0,
                       figure: str = "samples_per_s") -> dict[str, Any]:
    """The verdict on samples/s (or another ``figure``, higher is better, that the
    basis then names) of B against A from their repeats' values: the fields of
    VERDICT_FIELDS (percentages of A; NaN where they cannot be computed).
    ``threshold`` in percent."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    found = decide(np.log(a), np.log(b), threshold / 100)
    sigma = float(found.sigma)
    needed = repeats_needed(sigma, threshold / 100)
    row = {"verdict": str(found.verdict), "change_pct": 100 * float(found.change),
           "ci_low_pct": 100 * float(found.low), "ci_high_pct": 100 * float(found.high),
           "p_value": float(found.p_value), "detectable_pct": 100 * float(found.detectable),
           "repeats_needed": needed}
    if min(len(a), len(b)) < 2:
        basis = f"n={len(a)}/{len(b)}: one repeat has no spread to test against"
    else:
        basis = f"p={row['p_value']:.2g}"
    if figure != "samples_per_s":
        basis += f" on {figure}"
    if row["verdict"] == INCONCLUSIVE:
        basis += (f"; ~{needed} repeats a side would decide {threshold:g}%" if needed
                  else "; >= 3 repeats a side would size the noise")
    return row | {"basis": basis}


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


def _column(ok: pd.DataFrame, name: str, dtype: Any = float) -> pd.Series:
    """A side's column, or an empty one where no record has the field."""
    return ok.get(name, pd.Series(index=ok.index, dtype=dtype))


def _differ(a: list[Any], b: list[Any], mixed_differs: bool = True) -> tuple[str, str] | None:
    """Each side's distinct values joined by "/", when the two are not one and the same
    value (``mixed_differs``: a side whose records disagree differs too, e.g. a resumed
    run that straddles a change); None where either side says nothing."""
    if not a or not b or (a == b and (len(a) == 1 or not mixed_differs)):
        return None
    return "/".join(map(str, a)), "/".join(map(str, b))


def validation_sets(ok: pd.DataFrame) -> list[int]:
    """The distinct val_images of a side's ok records that validated; a record without
    the field (written before it existed) validated on all FULL_VAL_IMAGES."""
    acc = pd.to_numeric(_column(ok, "val_acc"), errors="coerce")
    counts = pd.to_numeric(_column(ok, "val_images"), errors="coerce")[acc.notna()]
    return sorted(int(count) for count in counts.fillna(FULL_VAL_IMAGES).unique())


def unlike_validation(ok_a: pd.DataFrame, ok_b: pd.DataFrame) -> str | None:
    """Why the two sides' validation metrics (bench.metrics.VALIDATION_METRICS) are not
    like with like, or None. A throughput cell validates on a subset, so its val_acc
    before and after that change is not one quantity."""
    if differ := _differ(validation_sets(ok_a), validation_sets(ok_b)):
        return f"val_acc not compared: A validated on {differ[0]} images, B on {differ[1]}"
    return None


def window_counts(ok: pd.DataFrame) -> list[int]:
    """The distinct measured step counts of a side's ok records (metric window_steps;
    a record written before it existed: its first rank's measured steps)."""
    counted = _column(ok, "raw", object).map(
        lambda raw: len((raw.get("ranks") or [{}])[0].get("step_s") or [])
        if isinstance(raw, dict) else None)
    counts = pd.to_numeric(_column(ok, "window_steps"), errors="coerce").fillna(
        pd.to_numeric(counted, errors="coerce")).dropna()
    return sorted(int(count) for count in counts[counts > 0].unique())


def unlike_windows(ok_a: pd.DataFrame, ok_b: pd.DataFrame) -> str | None:
    """A note when the two sides measured windows of different step counts (a time
    window chosen on each side, or another --steps): each figure still holds, but the
    steps averaged over are not the same."""
    if differ := _differ(window_counts(ok_a), window_counts(ok_b)):
        return f"windows differ: A measured {differ[0]} steps, B {differ[1]}"
    return None


def process_starts(ok: pd.DataFrame) -> list[str]:
    """How a side's ok records' processes started (bench.orchestrate.preload); a record
    without the field says nothing."""
    return sorted({"forked from the preload server" if value else "new interpreters"
                   for value in _column(ok, "preloaded", object).dropna()})


def unlike_start(ok_a: pd.DataFrame, ok_b: pd.DataFrame) -> str | None:
    """A note when the two sides' cells started differently: their figures compare,
    but a forked cell's peak RSS counts the server's shared pages it touched."""
    if differ := _differ(process_starts(ok_a), process_starts(ok_b), mixed_differs=False):
        return f"A's cells {differ[0]}, B's {differ[1]}"
    return None


def compare_runs(a: pd.DataFrame, b: pd.DataFrame, threshold: float = 5.0,
                 accuracy_points: float = 1.0) -> pd.DataFrame:
    """One row per cell in either run (frames from load_records): medians, B/A ratios,
    the verdict and the gate's alarms (bench.analyze.gate; ``accuracy_points``: the
    largest accuracy drop of an accuracy cell, in percentage points).

    ``present`` is "both", "A only" or "B only"; a cell present in both runs
    without an ok repeat on one side gets the verdict "not comparable".
    """
    a, b = latest(a), latest(b)
    cells = pd.concat([b, a]).drop_duplicates("cell_id")
    cells = cells.assign(total_devices=cells.get("devices", 1) * cells.get("num_nodes", 1))
    rows = []
    groups = {name: dict(tuple(run.groupby("cell_id", sort=False)))
              for name, run in (("a", a), ("b", b))}
    empty = a.iloc[:0]
    for cell in sorted(cells.to_dict("records"), key=sort_key):
        cell_id = cell["cell_id"]
        side = {name: groups[name].get(cell_id, empty) for name in ("a", "b")}
        ok = {name: recs[recs["status"] == "ok"] for name, recs in side.items()}
        present = ("both" if len(side["a"]) and len(side["b"])
                   else "A only" if len(side["a"]) else "B only")
        row: dict[str, Any] = {"cell_id": cell_id, "present": present,
                               "n_a": len(ok["a"]), "n_b": len(ok["b"])}
        for column in (metric.name for metric in METRICS):
            med_a, med_b = (ok[name][column].median() for name in ("a", "b"))
            row[f"{column}_a"], row[f"{column}_b"] = med_a, med_b
            row[f"{column}_ratio"] = med_b / med_a if med_a else math.nan
        headline = verdict_metric(cell.get("mode"))  # samples/s; a comm cell's algbw
        sps = {name: _column(ok[name], headline).dropna() for name in ("a", "b")}
        if present == "both" and len(sps["a"]) and len(sps["b"]):
            row.update(throughput_verdict(sps["a"], sps["b"], threshold, headline))
        else:
            statuses = {n: "/".join(side[n]["status"].unique()) for n in ("a", "b")}
            row.update(dict.fromkeys(VERDICT_FIELDS, math.nan),
                       verdict=status_verdict(present, len(sps["a"]), len(sps["b"])),
                       repeats_needed=None,
                       basis=f"A: {statuses['a'] or '-'}, B: {statuses['b'] or '-'}")
            if row["verdict"] == BROKEN:  # why B did not measure: its last reason
                reasons = side["b"]["reason"].dropna()
                row["reason"] = str(reasons.iloc[-1]) if len(reasons) else None
        if present == "both" and (different := unlike_windows(ok["a"], ok["b"])):
            row["basis"] += f"; {different}"
        if unlike := unlike_validation(ok["a"], ok["b"]):
            # No ratio, and no accuracy alarm from the gate, across validation sets.
            row |= {f"{name}_ratio": math.nan for name in VALIDATION_METRICS
                    if f"{name}_ratio" in row}
            row["basis"] += f"; {unlike}"
            side = {name: recs.drop(columns=list(VALIDATION_METRICS), errors="ignore")
                    for name, recs in side.items()}
        if started := unlike_start(ok["a"], ok["b"]):
            row["basis"] += f"; {started}"
        # bench.metrics "unstable" and "busy": a side not to act on, shown with the verdict
        row["caveats"] = ", ".join(
            f"{name.upper()} {flag}" for name in ("a", "b") if len(ok[name])
            for flag, on in stability(ok[name]).items() if flag in ("unstable", "busy") and on)
        row["alarms"] = "; ".join(cell_alarms(side["a"], side["b"], accuracy_points)
                                  if present == "both" else [])
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


def _percent(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:+.1f}%"


def display_table(result: pd.DataFrame) -> pd.DataFrame:
    """Cells in both runs as display strings; metrics nobody measured are dropped."""
    both = result[result["present"] == "both"]
    rows = []
    for r in both.to_dict("records"):
        interval = ("-" if pd.isna(r["ci_low_pct"])
                    else f"{r['ci_low_pct']:+.1f}..{r['ci_high_pct']:+.1f}%")
        row = {"cell": r["cell_id"], "n A/B": f"{r['n_a']}/{r['n_b']}",
               "samples/s A": fmt(r["samples_per_s_a"]), "samples/s B": fmt(r["samples_per_s_b"]),
               "change": _percent(r["change_pct"]), "95% CI": interval,
               "verdict": r["verdict"] + (f" ({r['caveats']})" if r.get("caveats") else ""),
               "detectable": ("-" if pd.isna(r["detectable_pct"])
                              else f"+-{r['detectable_pct']:.1f}%"),
               "basis": r["basis"], "alarms": r.get("alarms") or "-"}
        for metric in METRICS[1:]:
            row[f"{metric.label} B/A"] = fmt(r[f"{metric.name}_ratio"], "x")
        rows.append(row)
    table = pd.DataFrame(rows, columns=None if rows else ["cell", "verdict"])
    return table[[c for c in table.columns if (table[c] != "-").any() or c == "cell"]]


LEGEND = (
    "change: B against A, the ratio of the geometric means of the repeats' samples/s; "
    "95% CI: Welch's t-interval of that change (log scale), from the repeats only",
    "faster / slower: Welch's test p < 0.05 and the change beyond the threshold; same: the "
    "90% interval (TOST at 0.05) inside +-threshold; inconclusive: neither",
    "detectable: the smallest change this pair could find in 80% of comparisons at its "
    "noise; basis: the p-value, and for inconclusive the repeats a side that would decide",
)


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
