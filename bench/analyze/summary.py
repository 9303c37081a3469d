"""Statistics over records, computed on read: one row per cell with medians and
spread over its ok repeats, speed-up against the baseline cell and scaling
efficiency against the same workload on one device."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.analyze.load import RECORD_COLUMNS, latest
from bench.metrics import (
    METRICS,
    NUMERIC_NAMES,
    UNSTABLE_REPEAT_CV,
    UNSTABLE_WINDOW_MEDIAN_RATIO,
)

# Two cells run "the same workload" when these match; only the device count and strategy differ.
WORKLOAD_FIELDS = ("accelerator", "precision", "batch_size", "loader", "compile", "optimizer",
                   "optimizer_impl", "mode", "malloc")
BASELINE_PREFER = ("loader", "compile", "optimizer", "optimizer_impl", "mode")
# Natural reading order (cheapest first) rather than alphabetical: single before ddp.
ORDER = {
    "accelerator": ("cpu", "cuda"),
    # Each engine control right after the Lightning strategy it stands beside.
    "strategy": tuple(name for lightning in (
        "single", "raw", "ddp", "fsdp", "deepspeed_stage_1", "deepspeed_stage_2",
        "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload")
        for name in ((lightning,) if lightning in ("single", "raw")
                     else (lightning, f"engine-{lightning}")
                     + (("engine-ddp_one_bucket", "engine-ddp_no_sync", "engine-ddp_alternate")
                        if lightning == "ddp" else ()))),
    "precision": ("32-true", "16-mixed", "bf16-mixed", "bf16-true"),
}


def cell_fields(df: pd.DataFrame) -> list[str]:
    skip = {*RECORD_COLUMNS, *(m.name for m in METRICS), "raw", "ledger", "schema"}
    return [c for c in df.columns
            if c not in skip and not c.startswith(("env_", "effective_", "machine_"))]


def per_record_metrics(df: pd.DataFrame) -> list[str]:
    """The numeric metrics a records frame holds (stored, or derived per record on load)."""
    return [name for name in NUMERIC_NAMES if name in df]


def sort_key(row: dict[str, Any]) -> tuple:
    key: list[Any] = []
    for field in ("accelerator", "strategy", "precision"):
        value, order = row.get(field), ORDER[field]
        key += [order.index(value) if value in order else len(order), str(value)]
    batch = row.get("batch_size")
    return (*key, row.get("total_devices") or 0, batch if isinstance(batch, int | float) else 0,
            str(row.get("cell_id")))


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell_id: medians over its ok repeats, spread, speed-up, scaling efficiency.

    Every cell appears (status ok / partial / skipped / failed ...); metrics are
    NaN for cells without an ok repeat.
    """
    df = latest(df)
    fields = cell_fields(df)
    rows = []
    for cell_id, group in df.groupby("cell_id", sort=False):
        ok = group[group["status"] == "ok"]
        statuses = group["status"]
        row: dict[str, Any] = {"cell_id": cell_id, **group.iloc[-1][fields].to_dict()}
        row["status"] = ("ok" if len(ok) == len(group) else "partial" if len(ok)
                         else statuses.mode().iloc[0])
        row["n"], row["n_total"] = len(ok), len(group)
        row["world_size"] = (ok if len(ok) else group)["world_size"].max()
        row["total_devices"] = _count(row.get("devices")) * _count(row.get("num_nodes"))
        for name in per_record_metrics(df):
            row[name] = ok[name].median() if len(ok) else float("nan")
        row["samples_per_s_min"] = ok["samples_per_s"].min() if len(ok) else float("nan")
        row["samples_per_s_max"] = ok["samples_per_s"].max() if len(ok) else float("nan")
        row |= stability(ok)
        sources = ok["peak_source"].dropna()
        row["peak_source"] = sources.mode().iloc[0] if len(sources) else None
        rows.append(row)
    rows.sort(key=sort_key)
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    summary[["baseline_cell_id", "speedup"]] = summary.apply(
        lambda r: _relative(summary, r, _baseline(summary, r), 1), axis=1, result_type="expand")
    summary[["scaling_ref_cell_id", "scaling_eff"]] = summary.apply(
        lambda r: _relative(summary, r, _scaling_ref(summary, r), r["total_devices"])
        if r["total_devices"] > 1 else (None, float("nan")), axis=1, result_type="expand")
    return summary


def stability(ok: pd.DataFrame) -> dict[str, Any]:
    """The spread over repeats and whether the cell's throughput is steady enough
    (bench.metrics: samples_per_s_cv, unstable)."""
    values = ok["samples_per_s"].dropna() if "samples_per_s" in ok else pd.Series(dtype=float)
    cv = float(values.std(ddof=1) / values.mean()) if len(values) > 1 else float("nan")
    # The worst repeat's: one repeat with a slow window moves the median of two or three.
    ratio = ok["window_median_ratio"].max() if "window_median_ratio" in ok else float("nan")
    never_steady = "warmup_steady" in ok and bool(ok["warmup_steady"].eq(False).any())
    unstable = bool((pd.notna(ratio) and ratio > UNSTABLE_WINDOW_MEDIAN_RATIO)
                    or (pd.notna(cv) and cv > UNSTABLE_REPEAT_CV) or never_steady)
    busy = "machine_busy" in ok and bool(ok["machine_busy"].eq(True).any())
    return {"samples_per_s_cv": cv, "unstable": unstable if len(values) else None,
            "busy": busy if len(values) else None}


def _count(value: Any) -> int:
    return int(value) if value is not None and pd.notna(value) else 1


def _pick(summary: pd.DataFrame, row: pd.Series, fixed: dict[str, Any],
          prefer: tuple[str, ...] = ()) -> pd.Series | None:
    """The measured cell matching ``fixed`` that shares most ``prefer`` fields with ``row``."""
    cand = summary[summary["samples_per_s"].notna()]
    for field, value in fixed.items():
        if field in cand:
            cand = cand[cand[field] == value]
    if cand.empty:
        return None
    score = pd.Series(0, index=cand.index)
    for field in prefer:
        if field in cand:
            score += (cand[field] == row[field]).astype(int)
    return cand.loc[score.idxmax()]  # first best match in report order: deterministic


def _baseline(summary: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    fixed = {"accelerator": row["accelerator"], "batch_size": row.get("batch_size"),
             "devices": 1, "num_nodes": 1, "precision": "32-true", "strategy": "single"}
    return _pick(summary, row, fixed, BASELINE_PREFER)


def _scaling_ref(summary: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    """The same workload on one device: same strategy if it ran on one device, else single."""
    fixed = {f: row[f] for f in WORKLOAD_FIELDS if f in row} | {"total_devices": 1}
    same = _pick(summary, row, fixed | {"strategy": row["strategy"]})
    return same if same is not None else _pick(summary, row, fixed | {"strategy": "single"})


def _relative(summary: pd.DataFrame, row: pd.Series, ref: pd.Series | None,
              devices: int) -> tuple[str | None, float]:
    """(reference cell id, throughput / (devices x reference throughput))."""
    if ref is None or pd.isna(row["samples_per_s"]):
        return None, float("nan")
    return ref["cell_id"], row["samples_per_s"] / (devices * ref["samples_per_s"])


def not_run(df: pd.DataFrame) -> pd.DataFrame:
    """Every (cell, repeat) whose latest record is not ok, with its reason."""
    bad = latest(df)
    bad = bad[bad["status"] != "ok"]
    rows = sorted(({"total_devices": 1, **r} for r in bad.to_dict("records")), key=sort_key)
    columns = ["cell_id", "repeat", "status", "reason"]
    return pd.DataFrame(rows, columns=None if rows else columns)[columns].reset_index(drop=True)


