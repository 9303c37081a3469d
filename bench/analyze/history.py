"""Throughput over many runs: every run under some directories, in the order they
ran, one column per run, with the runs where a cell's throughput changed marked.

Change-point rule (per cell; runs where the cell has no ok repeat are left out of
the walk and show their status instead):

- Walk the runs in order keeping a *segment*: the runs since the last change
  point, starting with the first run.
- For run i: baseline = median of the segment's per-run medians; noise =
  max(threshold, 3 x the robust CV of the segment's repeat values), robust CV =
  1.4826 x MAD / median (threshold default 5%).
- Run i is a change point when |median_i / baseline - 1| > noise AND the next run
  is also beyond the noise band in the same direction against the same baseline
  (a change that persists). A last run beyond the band cannot be confirmed: it is
  marked "unconfirmed". One run beyond the band that the next run does not follow
  is an outlier: not marked.
- After a change point the segment restarts at run i; any other run joins it.

Medians and MAD (not mean and std) so that one bad repeat or one outlier run
neither moves the baseline nor widens the noise band much.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.analyze.load import latest, load_records, read_env
from bench.analyze.summary import sort_key
from bench.analyze.tables import fmt

DEFAULT_THRESHOLD = 0.05
MAD_TO_SIGMA = 1.4826  # MAD x this estimates the standard deviation of normal noise
NOISE_SIGMAS = 3.0
LEGEND = (
    "each run: median samples/s [min-max] over the cell's ok repeats in that run; "
    "'(2/3 ok)': some repeats did not finish ok; a status: no ok repeat; '-': not in that run",
    "change point: |median / baseline - 1| > noise, baseline = median of the per-run medians "
    "since the last change point, noise = max(threshold, 3 x robust CV (1.4826 x MAD / "
    "median) of their repeats)",
    "DROP / RISE: a change point the next run confirms (beyond the band, same direction); "
    "DROP? / RISE?: the last run, beyond the band but not confirmed yet",
)
HISTORY_COLUMNS = ("cell_id", "run", "median", "min", "max", "values", "n", "n_total", "status",
                   "change", "baseline", "mark")


class HistoryError(ValueError):
    """Bad input: nothing to read, or something that cannot be read."""


@dataclass
class Run:
    path: Path
    records: pd.DataFrame  # the latest record per (cell, repeat)
    env: dict[str, Any]
    started: datetime
    time_source: str  # where ``started`` comes from: env.json, records, run id, directory mtime
    label: str = ""


@dataclass(frozen=True)
class Change:
    position: int  # in the series given to find_changes
    change: float  # median / baseline - 1
    baseline: float
    confirmed: bool


def find_run_dirs(roots: list[str | Path]) -> list[Path]:
    """Every folder holding a records.jsonl under ``roots`` (each root included)."""
    found: dict[Path, Path] = {}
    for root in map(Path, roots):
        if root.is_file() and root.name == "records.jsonl":
            root = root.parent
        if not root.is_dir():
            raise HistoryError(f"no such directory: {root}")
        if not os.access(root, os.R_OK | os.X_OK):
            raise HistoryError(f"cannot read directory: {root}")
        for path in sorted(root.rglob("records.jsonl")):
            found.setdefault(path.parent.resolve(), path.parent)
    if not found:
        raise HistoryError(f"no records.jsonl under {', '.join(map(str, roots))}")
    return list(found.values())


def load_runs(roots: list[str | Path]) -> list[Run]:
    """The runs under ``roots``, oldest first, labelled 'date sha'."""
    runs = []
    for path in find_run_dirs(roots):
        try:
            records = latest(load_records(path))
        except (OSError, ValueError) as error:
            raise HistoryError(f"cannot read {path / 'records.jsonl'}: {error}") from error
        env = read_env(path)
        started, source = _start_time(path, env, records)
        runs.append(Run(path, records, env, started, source))
    runs.sort(key=lambda run: (run.started, str(run.path)))
    _label(runs)
    return runs


def _parse_time(text: Any) -> datetime | None:
    """An ISO time as an aware datetime (naive ones taken as UTC); None if unreadable."""
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _start_time(path: Path, env: dict[str, Any], records: pd.DataFrame) -> tuple[datetime, str]:
    """When the run started, and from where: a directory can be renamed or copied
    (its name and mtime then lie), env.json's time cannot."""
    if when := _parse_time(env.get("started_at")):
        return when, "env.json"
    times = [t for t in map(_parse_time, records["started_at"].dropna()) if t]
    if times:
        return min(times), "records"
    for run_id in sorted(records["run_id"].dropna().astype(str)):  # 20261127-104553-host-xxxx
        try:
            return datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").replace(
                tzinfo=timezone.utc), "run id"
        except ValueError:
            continue
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc), "directory mtime"


def _label(runs: list[Run]) -> None:
    """'2026-11-27 7f3637a(+dirty)'; the time of day, then '#k', only where labels clash."""
    def sha(run: Run) -> str:
        return str(run.env.get("git_sha") or "?")[:7] + ("+dirty" if run.env.get("git_dirty")
                                                          else "")

    labels = [f"{run.started:%Y-%m-%d} {sha(run)}" for run in runs]
    counts = Counter(labels)
    labels = [f"{run.started:%Y-%m-%d %H:%M} {sha(run)}" if counts[label] > 1 else label
              for run, label in zip(runs, labels, strict=True)]
    seen: Counter[str] = Counter()
    counts = Counter(labels)
    for run, label in zip(runs, labels, strict=True):
        seen[label] += 1
        run.label = f"{label} #{seen[label]}" if counts[label] > 1 else label


def noise_band(medians: list[float], values: list[float],
               threshold: float = DEFAULT_THRESHOLD) -> tuple[float, float]:
    """(baseline, noise) of a segment: see the module docstring."""
    baseline = float(np.median(medians))
    pooled = np.asarray(values, dtype=float)
    centre = float(np.median(pooled)) if len(pooled) else 0.0
    cv = MAD_TO_SIGMA * float(np.median(np.abs(pooled - centre))) / centre if centre > 0 else 0.0
    return baseline, max(threshold, NOISE_SIGMAS * cv)


def find_changes(medians: list[float], repeats: list[list[float]],
                 threshold: float = DEFAULT_THRESHOLD) -> list[Change]:
    """The change points of one cell's series (per-run medians and repeat values, in
    run order), by the rule of the module docstring."""
    found: list[Change] = []
    segment = [0]
    for i in range(1, len(medians)):
        baseline, noise = noise_band([medians[j] for j in segment],
                                     [v for j in segment for v in repeats[j]], threshold)
        change = medians[i] / baseline - 1 if baseline > 0 else 0.0
        if abs(change) <= noise:
            segment.append(i)
            continue
        if i + 1 == len(medians):  # nothing after it to confirm the change yet
            found.append(Change(i, change, baseline, confirmed=False))
            break
        follow = medians[i + 1] / baseline - 1
        if abs(follow) > noise and (follow > 0) == (change > 0):
            found.append(Change(i, change, baseline, confirmed=True))
            segment = [i]
        else:  # a one-run outlier: the medians keep it from moving the baseline
            segment.append(i)
    return found


def cell_history(runs: list[Run], cells: str | None = None,
                 threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """One row per (cell, run holding it), cells in report order, runs in time order:
    median/min/max over the ok repeats, status, and the change points (change,
    baseline, mark: 'confirmed' / 'unconfirmed' / None)."""
    rows, keys = [], {}
    for index, run in enumerate(runs):
        df = run.records
        if cells:
            df = df[df["cell_id"].astype(str).str.contains(cells, regex=False)]
        for cell_id, group in df.groupby("cell_id", sort=False):
            ok = group[(group["status"] == "ok") & group["samples_per_s"].notna()]
            values = ok["samples_per_s"].astype(float).tolist()
            status = ("ok" if len(ok) == len(group) else "partial" if len(ok)
                      else str(group["status"].mode().iloc[0]))
            stats = ([float(np.median(values)), min(values), max(values)] if values
                     else [float("nan")] * 3)
            rows.append(dict(zip(HISTORY_COLUMNS, [cell_id, index, *stats, values, len(ok),
                                                   len(group), status, float("nan"),
                                                   float("nan"), None], strict=True)))
            last = group.iloc[-1].to_dict()
            keys[cell_id] = last | {"total_devices": _count(last.get("devices"))
                                    * _count(last.get("num_nodes"))}
    history = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    rank = {cell: i for i, cell in enumerate(sorted(keys, key=lambda c: sort_key(keys[c])))}
    history = history.sort_values(["cell_id", "run"], key=lambda s: s.map(rank)
                                  if s.name == "cell_id" else s, kind="stable")
    history = history.reset_index(drop=True)
    for _, group in history.groupby("cell_id", sort=False):
        measured = group[group["n"] > 0]
        for found in find_changes(measured["median"].tolist(), measured["values"].tolist(),
                                  threshold):
            at = measured.index[found.position]
            history.loc[at, ["change", "baseline"]] = [found.change, found.baseline]
            history.loc[at, "mark"] = "confirmed" if found.confirmed else "unconfirmed"
    return history


def _count(value: Any) -> int:
    return int(value) if value is not None and pd.notna(value) else 1


def marker(row: dict[str, Any]) -> str:
    word = "DROP" if row["change"] < 0 else "RISE"
    return f"{word}{'' if row['mark'] == 'confirmed' else '?'} {row['change'] * 100:+.1f}%"


def _cell_text(row: dict[str, Any]) -> str:
    """'1,000 [990-1,010] DROP -15.0%', or the status where no repeat finished ok."""
    if row["n"] == 0:
        return row["status"]
    text = fmt(row["median"])
    if row["n"] > 1:
        text += f" [{fmt(row['min'])}-{fmt(row['max'])}]"
    if row["n"] < row["n_total"]:
        text += f" ({row['n']}/{row['n_total']} ok)"
    return f"{text} {marker(row)}" if row["mark"] else text


def trend_table(history: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """Rows: cells; columns: one per run (its label), oldest first."""
    labels = [run.label for run in runs]
    rows = []
    for cell_id, group in history.groupby("cell_id", sort=False):
        row: dict[str, Any] = {"cell": cell_id} | dict.fromkeys(labels)
        for r in group.to_dict("records"):
            row[labels[r["run"]]] = _cell_text(r)
        rows.append(row)
    return pd.DataFrame(rows, columns=["cell", *labels])


def changes_table(history: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """One row per change point: where, how much, from which baseline to what."""
    marked = history[history["mark"].notna()]
    rows = [{"cell": r["cell_id"], "run": runs[r["run"]].label, "change": marker(r),
             "from -> to": f"{fmt(r['baseline'])} -> {fmt(r['median'])}", "status": r["mark"]}
            for r in marked.to_dict("records")]
    return pd.DataFrame(rows, columns=["cell", "run", "change", "from -> to", "status"])
