"""Records on disk -> one pandas row per record. The analysis layer reads records
only through here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from bench.metrics import NUMERIC_NAMES, STORED_NAMES
from bench.record import RunDir, read_records

# Top-level record fields whose column is renamed so that a cell field keeps its plain name.
RENAMED = {"seed": "repeat_seed", "wall_s": "record_wall_s"}
# effective.* columns that keep a plain name; every other one is effective_<key>.
EFFECTIVE_PLAIN = ("world_size", "global_batch_size")
RECORD_COLUMNS = ("run_id", "cell_id", "repeat", "repeat_seed", "status", "reason", "world_size",
                  "global_batch_size", "effective_precision", "started_at", "record_wall_s", "log")


def records_path(path: str | Path) -> Path:
    """A run directory or a records.jsonl file -> the records file."""
    path = Path(path)
    return RunDir(path).records if path.is_dir() else path


def read_env(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's env.json; {} when it is missing or unreadable (the records
    still hold hostname, device and versions)."""
    try:
        env = json.loads(RunDir(Path(run_dir)).env.read_text())
    except (OSError, ValueError):
        return {}
    return env if isinstance(env, dict) else {}


def _column(name: str) -> str:
    """'cell.batch_size' -> 'batch_size', 'env_key.torch' -> 'env_torch', ..."""
    block, _, key = name.partition(".")
    if not key:
        return RENAMED.get(block, block)
    if block in ("cell", "metrics"):
        return key
    if block == "env_key":
        return f"env_{key}"
    if block == "machine":
        return f"machine_{key}"
    if block == "effective":
        return key if key in EFFECTIVE_PLAIN else f"effective_{key}"
    return name


def load_records(path: str | Path) -> pd.DataFrame:
    """One row per record: record fields, cell fields, env_key (env_*), effective
    (effective_*), stored metrics, and the raw values as a dict column ``raw``."""
    records = list(read_records(records_path(path)))
    raws = [record.pop("raw", None) or {} for record in records]
    ledgers = [record.pop("ledger", None) for record in records]
    for record in records:  # a nested effective value (a DeepSpeed config) stays one cell
        record["effective"] = {k: v if not isinstance(v, dict) else str(v)
                               for k, v in (record.get("effective") or {}).items()}
    df = pd.json_normalize(records, max_level=1) if records else pd.DataFrame()
    df = df.rename(columns=_column)
    for name in (*RECORD_COLUMNS, *STORED_NAMES):
        if name not in df:
            df[name] = None
    if len(df):  # a record from before the malloc axis ran glibc's allocator as it starts
        df["malloc"] = df.get("malloc", pd.Series(index=df.index, dtype=object)).fillna("system")
    df["raw"] = pd.Series(raws, index=df.index, dtype=object)
    df["ledger"] = pd.Series(ledgers, index=df.index, dtype=object)
    for name, values in ledger_metrics(ledgers).items():
        df[name] = pd.Series(values, index=df.index, dtype=float)
    for name in (*(n for n in NUMERIC_NAMES if n in STORED_NAMES), "world_size",
                 "global_batch_size"):
        df[name] = pd.to_numeric(df[name], errors="coerce").astype(float)
    # The memory a user cares about: what the allocator held on CUDA, the process RSS on CPU.
    on_cuda = df.get("accelerator", pd.Series(index=df.index, dtype=object)).eq("cuda")
    df["peak_mem_mb"] = df["peak_mem_alloc_mb"].where(on_cuda & df["peak_mem_alloc_mb"].notna(),
                                                      df["peak_rss_mb"])
    return df


def ledger_metrics(ledgers: list[dict[str, Any] | None]) -> dict[str, list[float | None]]:
    """cell_wall_s, overhead_s and harness_efficiency (bench.metrics) of each record, from
    its ledger (bench.measure.ledger); None where it has none or no wall."""
    walls, overheads, efficiencies = [], [], []
    for ledger in ledgers:
        wall = (ledger or {}).get("wall_s")
        parts = (ledger or {}).get("parts") or {}
        window = parts.get("window")
        walls.append(wall)
        overheads.append(wall - (parts.get("warmup") or 0.0) - (window or 0.0)
                         if wall is not None else None)
        efficiencies.append(window / wall if wall and window is not None else None)
    return {"cell_wall_s": walls, "overhead_s": overheads, "harness_efficiency": efficiencies}


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the last record per (run, cell, repeat): a resumed run appends a newer one
    under its own run id. Records of other runs loaded together (bench.scale pools
    several) are other measurements, and all stay."""
    keys = ["run_id", "cell_id", "repeat"] if "run_id" in df else ["cell_id", "repeat"]
    return df.drop_duplicates(keys, keep="last")
