"""The record of one (cell, repeat), the run directory's paths, and safe reading
and writing. This module is the only code that builds records.

A record keeps the raw per-rank values; every statistic is derived from them
(bench.measure.derive when the cell ends, bench.analyze when reading), so a
reader can always recompute. On disk a record is one JSON object:

    {"schema": 1, "run_id", "cell_id", "cell": {every Cell field as asked},
     "repeat", "seed" (= cell.seed + repeat), "status", "reason",
     "effective": {what actually ran: precision, world_size, strategy class, ...},
     "raw": {"ranks": [RankRaw, ...], "flops_per_sample", "peak_source",
             "window": {how many steps were measured, chosen how},
             "comm": [{op, bytes, time_s, ...}] (comm cells), ...},
     "metrics": {bench.metrics.STORED_NAMES -> number | null},
     "env_key": {"hostname", "device", "hardware", "torch", "lightning"; under SLURM
                 "slurm": {"job_id", "node_list", "nodes", "restart_count"}},
     "started_at": ISO-8601 UTC, "wall_s", "log": "cells/<cell-id>/log.txt",
     "machine": {...} | null, "ledger": {"wall_s", "parts", "marks", "note"} | null}
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from bench.matrix import Cell
from bench.metrics import STORED_NAMES

SCHEMA_VERSION = 1


class Status(str, Enum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


OOM_REASON = "oom"  # the reason of a failed record whose cell ran out of memory


@dataclass
class RankRaw:
    """One rank's raw values: the warm-up apart from the measured window."""

    rank: int
    step_s: list[float]
    data_wait_s: list[float]
    samples: int
    window_s: float
    warmup_step_s: list[float] = field(default_factory=list)
    warmup_data_wait_s: list[float] = field(default_factory=list)
    # Whether warm-up ended steady (bench.measure.warmup); None: a fixed warm-up.
    warmup_steady: bool | None = None
    loss: list[float | None] = field(default_factory=list)  # warm-up and window, in order
    # bench.measure.clock.PHASES -> seconds per measured step; they add up to step_s.
    phase_s: dict[str, list[float]] | None = None
    # On CUDA step_s is timed by CUDA events (the device's); these are the host's
    # intervals between the same points. None where the two clocks are one (CPU).
    host_step_s: list[float] | None = None
    paused_s: float | None = None  # host seconds the clock was paused (validation inside fit)
    # On CUDA, per measured step: device seconds between an event pair of the step's own
    # (its opening, or the resume after a pause, to its close), apart from the marks.
    step_pair_s: list[float] | None = None
    # The measured window on time.monotonic, from its synchronised opening to its
    # synchronised close, less its pauses: an outside clock for the device's window.
    window_wall_s: float | None = None
    # bench.measure.compile, compiled cells: compile_s, compile_val_s, graphs_compiled,
    # inductor_cache_cold
    compile: dict[str, Any] | None = None
    peak_mem_alloc_mb: float | None = None
    peak_mem_reserved_mb: float | None = None
    peak_rss_mb: float | None = None
    peak_tflops: float | None = None
    # bench.measure.model_state, hand-written loops: params, grads,
    # optimizer_state, master_params, in bytes held by this rank.
    model_state_bytes: dict[str, int | None] | None = None
    # bench.measure.energy over the window: joules and source, or joules None and why
    energy: dict[str, Any] | None = None


@dataclass
class Raw:
    """The raw values of a cell: per rank, plus what the whole cell measured once."""

    ranks: list[RankRaw] = field(default_factory=list)
    flops_per_sample: float | None = None
    peak_source: str | None = None
    compile_s: float | None = None  # the training graph's, forward and backward
    compile_val_s: float | None = None  # after training first handed over to validation
    val_acc: float | None = None  # the last validation's
    val_loss: float | None = None
    val_images: int | None = None  # images the validation ran on (None: none ran)
    best_val_acc: float | None = None  # accuracy cells: the best over the curve
    checkpoint_s: float | None = None  # accuracy cells: writing checkpoints, off the clock
    test_acc: float | None = None
    test_loss: float | None = None
    time_to_target_s: float | None = None
    steps_to_target: int | None = None
    target_acc: float | None = None
    val_curve: list[dict[str, float]] | None = None
    # Throughput cells: how the measured step count was chosen (bench.measure.window):
    # rule, min_steps, min_window_s, max_steps, steps, chosen_in_repeat, step_s_estimate.
    window: dict[str, Any] | None = None
    # Comm cells (mode "comm"): one dict per timed (op, size): op, bytes (nccl-tests'
    # size), label, dtype, time_s (the timed iterations, each the slowest rank's),
    # world_size, nodes (bench.execute.backends.comm; docs/records.md).
    comm: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; empty optional values are left out, as schema 1 wrote them."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Raw:
        known = {f.name for f in fields(cls)}
        ranks = [RankRaw(**rank) for rank in data.get("ranks") or []]
        return cls(**{k: v for k, v in data.items() if k in known and k != "ranks"}, ranks=ranks)


@dataclass
class Record:
    run_id: str
    cell_id: str
    cell: dict[str, Any]
    repeat: int
    seed: int
    status: Status
    reason: str | None
    env_key: dict[str, Any]
    started_at: str
    log: str
    effective: dict[str, Any] = field(default_factory=dict)
    raw: Raw = field(default_factory=Raw)
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_s: float | None = None
    # bench.measure.machine_state: the machine around the cell's training (busy, what
    # else ran, load, steal, clocks); None in records that did not train or predate it.
    machine: dict[str, Any] | None = None
    # bench.measure.ledger: where the cell's wall time went, asked -> record read
    # (wall_s, parts, marks, note); None in records that predate it, and skipped ones.
    ledger: dict[str, Any] | None = None
    # True: the cell's process was forked from the run's preload server (imports and
    # MNIST already loaded); False: a new interpreter; None: no process (skipped), or
    # a record from before preloading existed or from a torchrun walk.
    preloaded: bool | None = None
    schema: int = SCHEMA_VERSION

    @classmethod
    def new(cls, cell: Cell, repeat: int, run_id: str, status: Status, env_key: dict[str, Any],
            reason: str | None = None) -> Record:
        """A record of ``cell`` with nothing measured yet (skipped, failed, or to be filled)."""
        return cls(run_id=run_id, cell_id=cell.id, cell=cell.to_dict(), repeat=repeat,
                   seed=cell.seed + repeat, status=Status(status), reason=reason,
                   env_key=dict(env_key), log=RunDir.cell_log_relative(cell.id),
                   started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return data | {"status": self.status.value, "raw": self.raw.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        """A record read back; raises ValueError when it does not follow the schema."""
        validate(data)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**values | {"status": Status(data["status"]),
                               "raw": Raw.from_dict(data.get("raw") or {})})


REQUIRED_KEYS = ("schema", "run_id", "cell_id", "cell", "repeat", "seed", "status", "reason",
                 "effective", "raw", "metrics", "env_key", "started_at", "wall_s")


def validate(record: dict[str, Any]) -> None:
    """Raise ValueError when ``record`` (its JSON form) does not follow the schema."""
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise ValueError(f"record lacks {', '.join(missing)}")
    if record["schema"] != SCHEMA_VERSION:
        raise ValueError(f"record schema {record['schema']}, this reader knows {SCHEMA_VERSION}")
    statuses = [s.value for s in Status]
    if record["status"] not in statuses:
        raise ValueError(f"record status {record['status']!r} not one of {statuses}")
    unknown = set(record["metrics"]) - set(STORED_NAMES)
    if unknown:
        raise ValueError(f"record has unknown metrics {sorted(unknown)}")


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (README "Where results go")."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def records(self) -> Path:
        return self.path / "records.jsonl"

    @property
    def superseded(self) -> Path:
        return self.path / "records.superseded.jsonl"

    @property
    def env(self) -> Path:
        return self.path / "env.json"

    @property
    def matrix(self) -> Path:
        return self.path / "matrix.json"

    @property
    def peaks(self) -> Path:
        """The run's calibrated CPU peaks (bench.measure.peaks), shared by its cells."""
        return self.path / "peaks.json"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    def cell_dir(self, cell_id: str) -> Path:
        return self.path / "cells" / cell_id

    def cell_log(self, cell_id: str) -> Path:
        return self.path / self.cell_log_relative(cell_id)

    @staticmethod
    def cell_log_relative(cell_id: str) -> str:
        return f"cells/{cell_id}/log.txt"

    def cell_record(self, cell_id: str, repeat: int) -> Path:
        """Where a cell's process leaves its record for the orchestrator."""
        return self.cell_dir(cell_id) / f"record-r{repeat}.json"

    def rank_failures(self, cell_id: str, repeat: int) -> list[Path]:
        """The failure notes the ranks of a cell left (see ``rank_failure``)."""
        return sorted(self.cell_dir(cell_id).glob(f"failure-r{repeat}-rank*.json"))

    def rank_failure(self, cell_id: str, repeat: int, rank: int) -> Path:
        """Where a rank notes how it failed: when one rank of a multi-process cell
        fails, rank 0 stops every rank and itself, and writes no record."""
        return self.cell_dir(cell_id) / f"failure-r{repeat}-rank{rank}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON so that readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_record(path: Path, record: Record) -> None:
    write_json_atomic(path, record.to_dict())


def read_record(path: Path) -> Record:
    return Record.from_dict(json.loads(path.read_text()))


def append_record(records_path: Path, record: Record) -> None:
    """Append one line and fsync it. The orchestrator is the only writer of the file."""
    data = record.to_dict()
    validate(data)
    line = json.dumps(data, default=str, separators=(",", ":")) + "\n"
    with open(records_path, "a") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def read_records(records_path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record as its JSON form; a torn last line (a crash mid-write)
    is skipped."""
    with open(records_path) as handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            if line.strip():
                yield json.loads(line)
