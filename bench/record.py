"""The record of one (cell, repeat): its schema, and safe reading and writing.

A record holds the raw per-rank timings; every statistic is derived from them
by :func:`bench.measure.derive_metrics`, so a reader can always recompute.

    {
      "schema": 1,
      "run_id": "20261127-101500-host-ab12",
      "cell_id": "cpu-2x-ddp-bf16-mixed-bs64-tensor",
      "cell": {... every Cell field as asked ...},
      "repeat": 0, "seed": 0,             # seed = cell.seed + repeat
      "status": "ok" | "skipped" | "failed" | "timeout" | "interrupted",
      "reason": null | "why it did not run, or how it failed",
      "effective": {"precision", "world_size", "global_batch_size", "strategy",
                    "accelerator", "device_name", "num_threads", ...},
      "raw": {"ranks": [{"rank", "samples", "window_s", "step_s": [...],
                         "data_wait_s": [...], "warmup_step_s": [...],
                         "loss": [...], "peak_mem_alloc_mb", "peak_mem_reserved_mb",
                         "peak_rss_mb", "peak_tflops"}, ...],
              "flops_per_sample", "peak_source", "compile_s", ...},
      "metrics": {METRIC_NAMES -> number | null},
      "env_key": {"hostname", "device", "torch", "lightning"},
      "started_at": ISO-8601 UTC, "wall_s": seconds the cell took,
      "log": "cells/<cell-id>/log.txt" (relative to the run directory)
    }
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "skipped", "failed", "timeout", "interrupted")
METRIC_NAMES = (
    "samples_per_s",
    "samples_per_s_per_device",
    "step_ms_p50",
    "step_ms_p90",
    "step_ms_p99",
    "data_wait_frac",
    "flops_per_sample",
    "achieved_tflops",
    "mfu",
    "peak_tflops",
    "peak_source",
    "peak_mem_alloc_mb",
    "peak_mem_reserved_mb",
    "peak_rss_mb",
    "val_acc",
    "val_loss",
    "test_acc",
    "test_loss",
    "time_to_target_s",
    "steps_to_target",
    "compile_s",
    "wall_s",
)
REQUIRED_KEYS = ("schema", "run_id", "cell_id", "cell", "repeat", "seed", "status", "reason",
                 "effective", "raw", "metrics", "env_key", "started_at", "wall_s")


def validate(record: dict[str, Any]) -> None:
    """Raise ValueError when ``record`` does not follow the schema."""
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise ValueError(f"record lacks {', '.join(missing)}")
    if record["schema"] != SCHEMA_VERSION:
        raise ValueError(f"record schema {record['schema']}, this reader knows {SCHEMA_VERSION}")
    if record["status"] not in STATUSES:
        raise ValueError(f"record status {record['status']!r} not one of {STATUSES}")
    unknown = set(record["metrics"]) - set(METRIC_NAMES)
    if unknown:
        raise ValueError(f"record has unknown metrics {sorted(unknown)}")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON so that readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def append_record(records_path: Path, record: dict[str, Any]) -> None:
    """Append one line and fsync it. The orchestrator is the only writer of the file."""
    validate(record)
    line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
    with open(records_path, "a") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_records(records_path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record; a torn last line (a crash mid-write) is skipped."""
    with open(records_path) as handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            if line.strip():
                yield json.loads(line)
