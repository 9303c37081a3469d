"""Runs made on different machines, lined up cell by cell (``bench.compare --across``).

A different machine is not a regression, so there is no verdict here and nothing is
refused: the machines' hardware and library versions are listed beside the numbers
so that a reader sees what differs. Each machine is named by a label (see
:func:`load_machines`) and, in the wide per-cell table, by a one-letter key (A, B, ...)
that the machines table spells out, so that the table stays narrow enough for a terminal.
"""

from __future__ import annotations

import math
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from bench.analyze.identity import cpu_identity, peaks_summary
from bench.analyze.load import latest, load_records, read_env, records_path
from bench.analyze.summary import ORDER, sort_key, summarize
from bench.analyze.tables import fmt
from bench.metrics import METRICS
from bench.record import OOM_REASON

# (label, records frame from load_records, env.json as a dict: empty when the run has none)
Machine = tuple[str, pd.DataFrame, dict[str, Any]]

# The per-machine metrics of the across table, after samples/s; a group nobody measured
# (time to target outside accuracy cells) is dropped.
SIDE_METRICS = ("mfu", "peak_mem_mb", "time_to_target_s")
_METRIC = {metric.name: metric for metric in METRICS}

LEGEND = [
    "A, B, ...: the machines, as keyed in the machines table; each run was made on its "
    "own machine, so differences mix hardware and software (no verdict)",
    "samples/s: global, median over the cell's ok repeats on that machine; its status "
    "(failed, oom, timeout, skipped ...) when no repeat was ok; (k/n): k of n repeats ok",
    "samples/s X/R: that machine's samples/s over the reference machine R's; '-': the "
    "cell is missing or did not run on one of the two",
    "MFU: against each machine's own peak (calibrated on CPU, datasheet on GPU), so it "
    "says how well a machine is used, not which is faster",
    "peak MB: allocated on CUDA, process RSS on CPU; to target s: wall time to the target "
    "accuracy (accuracy cells); '-': not measured",
]


def machine_keys(count: int) -> list[str]:
    """A, B, ... Z, then M27, M28 ... (the CLI stops at 26, the functions do not)."""
    letters = string.ascii_uppercase
    return [letters[i] if i < len(letters) else f"M{i + 1}" for i in range(count)]


def _env_values(df: pd.DataFrame, key: str, accelerator: str | None = None) -> list[str]:
    """The distinct env_<key> values of a run's records (of one accelerator if given)."""
    column = f"env_{key}"
    if column not in df or not len(df) or (accelerator and "accelerator" not in df):
        return []
    rows = df if accelerator is None else df[df["accelerator"] == accelerator]
    return [str(v) for v in rows[column].dropna().unique()]


def _device(env: dict[str, Any], df: pd.DataFrame) -> str | None:
    """What the machine computes on: its GPU when it has one, else its CPU model."""
    gpus = env.get("gpus") or []
    if gpus:
        return str(gpus[0].get("name") or "GPU")
    if env.get("cpu_model"):
        return str(env["cpu_model"])
    # No env.json: the records' device; a GPU machine also runs CPU cells, the GPU names it.
    found = _env_values(df, "device", "cuda") or _env_values(df, "device")
    return found[0] if found else None


def machine_label(path: str | Path, df: pd.DataFrame, env: dict[str, Any]) -> str:
    """A committed reference run (results/reference/<machine>/) is already named after
    its machine; any other run is named "<hostname> <device>"."""
    run_dir = records_path(path).parent.resolve()
    if run_dir.parent.name == "reference":
        return run_dir.name
    host = env.get("hostname") or next(iter(_env_values(df, "hostname")), None)
    parts = [str(p) for p in (host, _device(env, df)) if p]
    return " ".join(parts) or run_dir.name


def unique_labels(labels: list[str]) -> list[str]:
    """Two runs from one machine keep apart: the second "label-2", the third "label-3"."""
    seen: Counter[str] = Counter()
    out = []
    for label in labels:
        seen[label] += 1
        out.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return out


def load_machines(paths: list[str | Path]) -> list[Machine]:
    """(label, records, env) per run directory or records.jsonl, in the given order."""
    loaded = []
    for path in paths:
        df = load_records(path)
        env = read_env(records_path(path).parent)
        loaded.append((machine_label(path, df, env), df, env))
    labels = unique_labels([label for label, _, _ in loaded])
    return [(label, df, env) for label, (_, df, env) in zip(labels, loaded, strict=True)]


def _gpus(env: dict[str, Any], df: pd.DataFrame) -> str:
    """'8x NVIDIA H100' ; 'none' when env.json says so; the records' devices otherwise."""
    if "gpus" in env:
        names = Counter(str(g.get("name") or "GPU") for g in env["gpus"] or [])
        return ", ".join(f"{n}x {name}" for name, n in names.items()) or "none"
    return "/".join(_env_values(df, "device", "cuda")) or "-"


def _first(env_value: Any, df: pd.DataFrame, key: str) -> str:
    """env.json's value, else the records' env_<key> values."""
    if env_value not in (None, ""):
        return str(env_value)
    return "/".join(_env_values(df, key)) or "-"


def _cores(env: dict[str, Any]) -> str:
    cores, usable = env.get("cpu_cores"), env.get("cpu_cores_usable")
    if cores is None:
        return "-"
    return f"{cores}" + (f" ({usable} usable)" if usable not in (None, cores) else "")


def machines_table(machines: list[Machine]) -> pd.DataFrame:
    """One row per machine: what it is and what it ran with. Every difference is shown."""
    rows = []
    for key, (label, df, env) in zip(machine_keys(len(machines)), machines, strict=True):
        versions = env.get("versions") or {}
        sha = env.get("git_sha")
        git = f"{sha[:10]}{' (dirty)' if env.get('git_dirty') else ''}" if sha else "-"
        started = env.get("started_at") or (df["started_at"].dropna().min()
                                             if "started_at" in df and len(df) else None)
        summary = summarize(df) if len(df) else pd.DataFrame()
        ok = int((summary["n"] > 0).sum()) if len(summary) else 0
        cpu_cells = _env_values(df, "device", "cpu")
        rows.append({"key": key, "machine": label,
                     "host": _first(env.get("hostname"), df, "hostname"),
                     "CPU": str(env.get("cpu_model") or "/".join(cpu_cells) or "-"),
                     "CPU id": cpu_identity(df), "CPU peak TFLOP/s": peaks_summary(df),
                     "cores": _cores(env), "GPUs": _gpus(env, df),
                     "torch": _first(versions.get("torch"), df, "torch"),
                     "lightning": _first(versions.get("lightning"), df, "lightning"),
                     "git": git, "date": str(started)[:10] if started else "-",
                     "cells ok": f"{ok}/{len(summary)}"})
    return pd.DataFrame(rows)


def differences(machines: list[Machine]) -> list[str]:
    """One note per machines-table column whose value is not the same on every machine."""
    table = machines_table(machines)
    notes = []
    for column in ("CPU", "CPU id", "cores", "GPUs", "torch", "lightning"):
        if len(table) and table[column].nunique() > 1:
            values = "; ".join(f"{k} {v}" for k, v in zip(table["key"], table[column],
                                                          strict=True))
            notes.append(f"{column} differs: {values}")
    return notes


def reference_index(machines: list[Machine], reference: str) -> int:
    """The machine named ``reference``, by label or by key (A, B, ...)."""
    labels = [label for label, _, _ in machines]
    keys = machine_keys(len(machines))
    for names in (labels, keys):
        if reference in names:
            return names.index(reference)
    raise ValueError(f"no machine {reference!r}; the machines are: "
                     + ", ".join(f"{k} {label}" for k, label in zip(keys, labels, strict=True)))


def summaries(machines: list[Machine]) -> list[pd.DataFrame]:
    """Each machine's summarize(), indexed by cell_id (empty for a run without records);
    a cell whose every repeat ran out of memory says "oom": on a smaller GPU that is the
    difference between the machines."""
    out = []
    for _, df, _ in machines:
        summary = summarize(df) if len(df) else pd.DataFrame()
        if len(summary):
            oom = latest(df).groupby("cell_id")["reason"].agg(lambda r: (r == OOM_REASON).all())
            summary.loc[(summary["n"] == 0) & summary["cell_id"].map(oom), "status"] = "oom"
        out.append(summary.set_index("cell_id", drop=False) if "cell_id" in summary
                   else pd.DataFrame(columns=["cell_id"]).set_index("cell_id", drop=False))
    return out


def all_cells(tables: list[pd.DataFrame]) -> list[dict[str, Any]]:
    """Every cell of any machine, once, in report order."""
    rows = pd.concat([t for t in tables if len(t)]) if any(len(t) for t in tables) else None
    if rows is None:
        return []
    return sorted(rows.drop_duplicates("cell_id").to_dict("records"), key=sort_key)


def _measured(row: pd.Series | None) -> bool:
    return row is not None and row["n"] > 0 and pd.notna(row["samples_per_s"])


def _throughput(row: pd.Series | None) -> str:
    if row is None:
        return "-"
    if not _measured(row):
        return str(row["status"]) if row["n"] == 0 else "-"
    partial = f" ({row['n']}/{row['n_total']})" if row["n"] < row["n_total"] else ""
    return fmt(row["samples_per_s"]) + partial


def across_table(machines: list[Machine], reference: str) -> pd.DataFrame:
    """Per cell on any machine: each machine's samples/s, its ratio to the reference
    machine's, then MFU, peak MB and time to target per machine (groups nobody measured
    are dropped). Columns are keyed A, B, ... as in machines_table."""
    ref = reference_index(machines, reference)
    keys = machine_keys(len(machines))
    tables = summaries(machines)
    others = [i for i in range(len(machines)) if i != ref]
    rows = []
    for cell in all_cells(tables):
        found = [t.loc[cell["cell_id"]] if cell["cell_id"] in t.index else None for t in tables]
        row = {"cell": cell["cell_id"]}
        row |= {f"samples/s {k}": _throughput(r) for k, r in zip(keys, found, strict=True)}
        for i in others:
            both = _measured(found[i]) and _measured(found[ref])
            row[f"samples/s {keys[i]}/{keys[ref]}"] = fmt(
                found[i]["samples_per_s"] / found[ref]["samples_per_s"] if both else math.nan, "x")
        for name in SIDE_METRICS:
            metric = _METRIC[name]
            for key, r in zip(keys, found, strict=True):
                value = r.get(name) if r is not None and r["n"] > 0 else None
                row[f"{metric.label} {key}"] = fmt(value, metric.display)
        rows.append(row)
    columns = ["cell", *(f"samples/s {k}" for k in keys),
               *(f"samples/s {keys[i]}/{keys[ref]}" for i in others),
               *(f"{_METRIC[n].label} {k}" for n in SIDE_METRICS for k in keys)]
    table = pd.DataFrame(rows, columns=columns)
    for name in SIDE_METRICS:  # a whole group or nothing: half a group would read as missing
        group = [f"{_METRIC[name].label} {k}" for k in keys]
        if not (table[group] != "-").any().any():
            table = table.drop(columns=group)
    return table


def _pool(machines: list[Machine]) -> pd.DataFrame:
    """The measured cells of every machine in one frame, with the machine's label."""
    frames = [t[(t["n"] > 0) & t["samples_per_s"].notna()].assign(machine=label)
              for (label, _, _), t in zip(machines, summaries(machines), strict=True) if len(t)]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _rank(field: str, value: Any) -> tuple[int, str]:
    order = ORDER[field]
    return (order.index(value) if value in order else len(order), str(value))


def fastest_across(machines: list[Machine]) -> pd.DataFrame:
    """Per accelerator: the fastest (machine, cell) over all machines, then the fastest
    at each other precision; with how far ahead it is of the best other machine."""
    pool = _pool(machines)
    columns = ["accelerator", "pick", "machine", "cell", "samples/s", "MFU", "next machine",
               "vs next"]
    if pool.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for accelerator in sorted(pool["accelerator"].unique(), key=lambda a: _rank("accelerator", a)):
        cells = pool[pool["accelerator"] == accelerator]
        best = cells.loc[cells["samples_per_s"].idxmax()]
        picks = [("fastest", cells)]
        # The winner's own precision would repeat the first row: only the others are news.
        picks += [(f"fastest {p}", cells[cells["precision"] == p])
                  for p in sorted(cells["precision"].unique(), key=lambda p: _rank("precision", p))
                  if p != best["precision"]]
        for pick, group in picks:
            top = group.loc[group["samples_per_s"].idxmax()]
            others = group[group["machine"] != top["machine"]]
            nxt = others.loc[others["samples_per_s"].idxmax()] if len(others) else None
            rows.append({"accelerator": accelerator, "pick": pick, "machine": top["machine"],
                         "cell": top["cell_id"], "samples/s": fmt(top["samples_per_s"]),
                         "MFU": fmt(top.get("mfu"), "pct"),
                         "next machine": "-" if nxt is None else nxt["machine"],
                         "vs next": "-" if nxt is None else
                         fmt(top["samples_per_s"] / nxt["samples_per_s"], "x")})
    return pd.DataFrame(rows, columns=columns)
