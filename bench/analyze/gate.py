"""What fails ``bench.compare --fail-on-regression``: a slower cell is one way for a
change to be worse, not the only one.

Per cell (``cell_alarms``, shown in the compare table):
- partly broken: B has a failed, timed-out or interrupted repeat (an out-of-memory
  is a failed one) where A had none, though some of B's repeats finished;
- accuracy collapse: on any cell, B's median val_acc below COLLAPSE_FRACTION of A's
  (the model stopped learning: a throughput cell's sanity validation shows it);
- accuracy drop: on accuracy cells, B's median val_acc or test_acc more than the
  accuracy threshold (percentage points) below A's.

Per pair (``failures``): those alarms; a ``slower`` or ``broken`` verdict; a cell
of A missing from B (unless allowed); with ``strict``, an inconclusive change
below -threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

COLLAPSE_FRACTION = 0.5
MISSING = "missing"
BAD_STATUSES = ("failed", "timeout", "interrupted")
ACCURACY_METRICS = ("val_acc", "test_acc")


def _median(ok: pd.DataFrame, column: str) -> float:
    values = pd.to_numeric(ok.get(column, pd.Series(dtype=float)), errors="coerce").dropna()
    return float(values.median()) if len(values) else float("nan")


def cell_alarms(a: pd.DataFrame, b: pd.DataFrame, accuracy_points: float) -> list[str]:
    """The alarms of one cell present in both runs (its latest records per repeat)."""
    found = []
    a, b = (side[[c for c in ("status", "reason", "mode", *ACCURACY_METRICS) if c in side]]
            for side in (a, b))
    bad_a, bad_b = (side[side["status"].isin(BAD_STATUSES)] for side in (a, b))
    ok_a, ok_b = (side[side["status"] == "ok"] for side in (a, b))
    if len(bad_b) and not len(bad_a) and len(ok_b):
        reasons = bad_b["reason"].dropna().astype(str)
        why = f": {reasons.iloc[-1].splitlines()[0][:80]}" if len(reasons) else ""
        found.append(f"partly broken: {len(bad_b)} of {len(b)} repeats "
                     f"{'/'.join(bad_b['status'].unique())}{why}")
    accuracy_cell = "mode" in b and (b["mode"] == "accuracy").any()
    for metric in ACCURACY_METRICS:
        before, after = _median(ok_a, metric), _median(ok_b, metric)
        if before != before or after != after:
            continue
        if after < COLLAPSE_FRACTION * before:
            found.append(f"{metric} collapsed: {before:.3f} -> {after:.3f}")
        elif accuracy_cell and 100 * (before - after) > accuracy_points:
            found.append(f"{metric} {100 * (after - before):+.1f} points "
                         f"(beyond {accuracy_points:g})")
    return found


@dataclass(frozen=True)
class GateOptions:
    threshold: float = 5.0  # percent
    allow_missing: bool = False
    strict: bool = False


def failures(result: pd.DataFrame, options: GateOptions) -> list[tuple[str, str]]:
    """(cell, why) for every cell of a compare_runs result that fails the gate."""
    found = []
    for row in result.to_dict("records"):
        cell, verdict = row["cell_id"], row["verdict"]
        if row["present"] == "A only" and not options.allow_missing:
            found.append((cell, MISSING))
        if verdict in ("slower", "broken"):
            found.append((cell, verdict + (f" {row['change_pct']:+.1f}%"
                                           if verdict == "slower" else "")))
        if (options.strict and verdict == "inconclusive"
                and row["change_pct"] < -options.threshold):
            found.append((cell, f"inconclusive {row['change_pct']:+.1f}% (--strict)"))
        found += [(cell, alarm) for alarm in str(row.get("alarms") or "").split("; ") if alarm]
    return found
