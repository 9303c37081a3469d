"""Throughput over many runs: every run under some directories, in the order they
ran, one column per run, with the runs where a cell's throughput changed marked and
each cell's runs compared with a baseline. The rule and its error rates:
bench.analyze.series (per cell, on the runs where it has an ok repeat; the others
show their status and are left out of it).
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
from bench.analyze.series import (
    BASELINE_RUNS,
    CONFIRMED,
    DEFAULT_THRESHOLD,
    UNCONFIRMED,
    assess,
    pad,
)
from bench.analyze.series import Change as Change  # re-exported: its old home
from bench.analyze.series import find_changes as find_changes
from bench.analyze.summary import sort_key
from bench.analyze.tables import fmt

LEGEND = (
    "each run: median samples/s [min-max] over the cell's ok repeats in that run; "
    "'(2/3 ok)': some repeats did not finish ok; a status: no ok repeat; '-': not in that run",
    "change point: once 3 runs follow the last one, a run beyond the band around their median "
    "AND the next run beyond it the same way; band = max(threshold, q x sigma x "
    "sqrt(1 + pi/2k)), sigma = the noise between runs (robust, from the cell's successive run "
    "medians; at least what its repeats imply), q = Student's t 95% (wider for short series)",
    "DROP / RISE: a confirmed change point; DROP? / RISE?: the last run beyond the band, not "
    "confirmed yet (never fails --fail-on-change); one run beyond that the next does not "
    "follow: an outlier, not marked",
    f"against baseline: each run after the baseline (median of {BASELINE_RUNS} runs from the "
    "baseline run) with the same band; confirmed: two runs in a row beyond it the same way",
    "error rates (simulated, 10 runs of 3 repeats, 3% noise inside a run): a steady series "
    "fails --fail-on-change in 2% (5% or 10% noise between runs) and shows some mark in 7%; "
    "a 15% drop is confirmed at its run or the next in 94%, a 2%-per-run slide against the "
    "baseline in 91% (2% between runs)",
)
HISTORY_COLUMNS = ("cell_id", "run", "median", "min", "max", "values", "n", "n_total", "status",
                   "change", "segment", "mark", "vs_baseline", "vs_mark", "in_baseline",
                   "base_level", "base_band", "fails")
MARKS = {CONFIRMED: "confirmed", UNCONFIRMED: "unconfirmed"}
VS_MARKS = {CONFIRMED: "confirmed", UNCONFIRMED: "beyond"}  # beyond: this run alone
NAN = float("nan")
EMPTY_RULE = {"change": NAN, "segment": NAN, "mark": None, "vs_baseline": NAN, "vs_mark": None,
              "in_baseline": False, "base_level": NAN, "base_band": NAN, "fails": False}


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


def cell_history(runs: list[Run], cells: str | None = None,
                 threshold: float = DEFAULT_THRESHOLD, baseline: int = 0) -> pd.DataFrame:
    """One row per (cell, run holding it), cells in report order, runs in time order:
    median/min/max over the ok repeats, status, the change points (change, segment,
    mark: 'confirmed' / 'unconfirmed' / None), the comparison with the baseline that
    starts at run index ``baseline`` (vs_baseline, vs_mark: 'confirmed' / 'beyond' /
    None, ...), and fails: the rows that fail --fail-on-change."""
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
            rows.append(EMPTY_RULE | dict(zip(HISTORY_COLUMNS[:9], [
                cell_id, index, *stats, values, len(ok), len(group), status], strict=True)))
            last = group.iloc[-1].to_dict()
            keys[cell_id] = last | {"total_devices": _count(last.get("devices"))
                                    * _count(last.get("num_nodes"))}
    history = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    rank = {cell: i for i, cell in enumerate(sorted(keys, key=lambda c: sort_key(keys[c])))}
    history = history.sort_values(["cell_id", "run"], key=lambda s: s.map(rank)
                                  if s.name == "cell_id" else s, kind="stable")
    history = history.reset_index(drop=True)
    for _, group in history.groupby("cell_id", sort=False):
        _judge(history, group[group["n"] > 0], threshold, baseline)
    return history


def _judge(history: pd.DataFrame, measured: pd.DataFrame, threshold: float,
           baseline: int) -> None:
    """Fill one cell's rule columns in ``history`` from its measured rows."""
    if measured.empty:
        return
    start = int(np.searchsorted(measured["run"].to_numpy(), baseline))
    verdict = assess(pad(measured["values"].tolist()), threshold, baseline_at=start)
    at = measured.index
    history.loc[at, "change"] = np.expm1(verdict.change[0])
    history.loc[at, "segment"] = np.exp(verdict.segment[0])
    history.loc[at, "mark"] = [MARKS.get(int(m)) for m in verdict.mark[0]]
    history.loc[at, "vs_baseline"] = np.expm1(verdict.vs_base[0])
    history.loc[at, "vs_mark"] = [VS_MARKS.get(int(m)) for m in verdict.vs_mark[0]]
    history.loc[at, "fails"] = verdict.fails[0]
    if np.isfinite(verdict.base_level[0]):
        history.loc[at[start:start + BASELINE_RUNS], "in_baseline"] = True
        history.loc[at, "base_level"] = float(np.exp(verdict.base_level[0]))
        history.loc[at, "base_band"] = float(np.expm1(verdict.base_band[0]))


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
    """One row per change point: where, how much, from which segment level to what."""
    marked = history[history["mark"].notna()]
    rows = [{"cell": r["cell_id"], "run": runs[r["run"]].label, "change": marker(r),
             "from -> to": f"{fmt(r['segment'])} -> {fmt(r['median'])}", "status": r["mark"]}
            for r in marked.to_dict("records")]
    return pd.DataFrame(rows, columns=["cell", "run", "change", "from -> to", "status"])


BASELINE_COLUMNS = ["cell", "baseline", "from -> to", "change", "band", "status",
                    "first confirmed"]


def baseline_table(history: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """One row per measured cell: its last run against its baseline level, the band,
    whether the last two runs confirm a change, and the first run that confirmed one."""
    rows = []
    for cell_id, group in history.groupby("cell_id", sort=False):
        measured = group[group["n"] > 0]
        base = measured[measured["in_baseline"]]
        if measured.empty:
            continue
        row: dict[str, Any] = dict.fromkeys(BASELINE_COLUMNS, "-") | {"cell": cell_id}
        if base.empty:
            rows.append(row | {"status": f"too few runs ({BASELINE_RUNS} from the baseline "
                                         "run, then one to compare)"})
            continue
        last = measured.iloc[-1]
        confirmed = measured[measured["vs_mark"] == "confirmed"]
        rows.append(row | {
            "baseline": f"{runs[base['run'].iloc[0]].label} ({len(base)} runs)",
            "from -> to": f"{fmt(last['base_level'])} -> {fmt(last['median'])}",
            "change": f"{last['vs_baseline'] * 100:+.1f}%" if pd.notna(last["vs_baseline"])
            else "-",
            "band": f"+-{last['base_band'] * 100:.1f}%", "status": _against(last),
            "first confirmed": runs[confirmed["run"].iloc[0]].label if len(confirmed) else "-"})
    return pd.DataFrame(rows, columns=BASELINE_COLUMNS)


def _against(row: dict[str, Any] | pd.Series) -> str:
    """The last run against the baseline: 'confirmed slowdown', 'unconfirmed speedup',
    'within band', or 'in the baseline' (no run after the baseline's own)."""
    if pd.isna(row["vs_baseline"]):
        return "in the baseline"
    way = "slowdown" if row["vs_baseline"] < 0 else "speedup"
    return {"confirmed": f"confirmed {way}", "beyond": f"unconfirmed {way}"}.get(
        row["vs_mark"], "within band")
