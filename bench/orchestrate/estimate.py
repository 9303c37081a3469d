"""How long a matrix will take: a rough estimate that says it is one and how it was
made; and the presets listed with their counts and estimates (``python -m bench.run``).

Each (cell, repeat) that runs here costs

    start-up + (warm-up steps + measured steps) x seconds per step

The measured steps are the cell's ``steps``, or under a time window as many as its
``min_window_s`` takes at that step time (bench.measure.window.window_steps).

- From this machine's earlier records (same host name and device) of the same cell
  id under the results root: the median step time of their measured windows, and
  the median of the cell's wall less its training time: the ledger's wall (from
  asking for the process to reading its record: bench.measure.ledger), or for a
  record without one ``wall_s`` (model, calibration, validation) plus START_S.
- Otherwise guessed: START_S + CELL_OVERHEAD_S (+ EXTRA_RANKS_S with several
  processes, + COMPILE_S, + DEEPSPEED_S), and a step of ``batch_size`` samples at
  CPU_SAMPLES_PER_S_PER_CORE (the cores shared by every rank) or CUDA_SAMPLES_PER_S
  per GPU (at least CUDA_MIN_STEP_S).
- An accuracy cell counts ``max_epochs`` of steps and its validations: an upper
  bound, since it stops at the target.

Skipped cells cost nothing. The walk prints a measured ETA once cells have finished.
"""

from __future__ import annotations

import socket
import statistics
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.matrix import Cell, MatrixError
from bench.measure.env import device_name
from bench.measure.window import window_steps
from bench.orchestrate.plan import Matrix, RunPlan, make_plan
from bench.orchestrate.presets import PRESETS
from bench.record import read_records
from strategies.registry import Machine

START_S = 1.0  # a fork of the preload server (which imports torch and Lightning once)
CELL_OVERHEAD_S = 4.0  # model, data, peak calibration, the 480-image validation, exit
EXTRA_RANKS_S = 3.0  # the other ranks (forks of rank 0), the process group
COMPILE_S = 60.0
DEEPSPEED_S = 20.0
# This model's training on a CPU core, as the smoke cells measured it on a 2-core Xeon VM
# (bs 64: 120 samples/s in 32-true, 116 in bf16-mixed): a guess, for lack of records.
CPU_SAMPLES_PER_S_PER_CORE = {"32": 60.0, "bf16": 60.0}
CUDA_SAMPLES_PER_S = 20_000.0
CUDA_MIN_STEP_S = 0.005
TRAIN_SAMPLES, VAL_SAMPLES = 55_000, 5_000
HISTORY_FILES = 40  # the newest records files read: the estimate stays quick


@dataclass
class History:
    """This machine's earlier ok records, by cell id: (seconds per step, start-up s)."""

    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @classmethod
    def load(cls, results_root: Path) -> History:
        history = cls()
        host = socket.gethostname()
        devices = {accelerator: device_name(accelerator) for accelerator in ("cpu", "cuda")}
        for path in newest_records(results_root):
            try:
                for record in read_records(path):
                    key = record.get("env_key") or {}
                    device = devices.get((record.get("cell") or {}).get("accelerator", ""))
                    if (record.get("status") == "ok" and key.get("hostname") == host
                            and key.get("device") == device):
                        history.add(record)
            except (OSError, ValueError, TypeError, KeyError):
                continue  # a damaged or foreign file only costs its share of the estimate
        return history

    def add(self, record: dict[str, Any]) -> None:
        ranks = (record.get("raw") or {}).get("ranks") or []
        if not ranks or not ranks[0].get("step_s") or record.get("wall_s") is None:
            return
        rank = ranks[0]
        training_s = sum(rank.get("warmup_step_s") or []) + rank["window_s"]
        step_s = rank["window_s"] / len(rank["step_s"])
        wall_s = (record.get("ledger") or {}).get("wall_s")
        start_s = max(0.0, wall_s - training_s) if wall_s is not None else \
            START_S + max(0.0, record["wall_s"] - training_s)
        self.samples.setdefault(record["cell_id"], []).append((step_s, start_s))

    def cell_s(self, cell: Cell) -> float | None:
        """The estimate from this cell's own earlier runs; None when it has none."""
        found = self.samples.get(cell.id)
        if not found:
            return None
        step_s = statistics.median(step for step, _ in found)
        start_s = statistics.median(start for _, start in found)
        return start_s + steps_of(cell, step_s) * step_s


def newest_records(results_root: Path) -> list[Path]:
    """records.jsonl of run directories under the root, and one level deeper
    (results/reference/<machine>/), newest first."""
    found = [*results_root.glob("*/records.jsonl"), *results_root.glob("*/*/records.jsonl")]
    found = [path for path in found if path.is_file()]
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)[:HISTORY_FILES]


def steps_of(cell: Cell, step_s: float) -> float:
    """Training steps of ``step_s`` seconds, with validations as steps' worth of work
    (a forward pass is about a third of a training step); accuracy cells at
    ``max_epochs``."""
    if cell.mode != "accuracy":
        measured = (window_steps(cell.steps, cell.min_window_s, step_s)
                    if cell.window == "time" else cell.steps)
        return cell.warmup_steps + measured
    per_epoch = max(1, TRAIN_SAMPLES // (cell.batch_size * cell.world_size))
    steps = cell.max_epochs * per_epoch
    validations = steps // max(1, cell.val_every_steps) + cell.max_epochs
    return steps + validations * VAL_SAMPLES / (3 * cell.batch_size * cell.world_size)


def guessed_cell_s(cell: Cell, cpu_count: int) -> float:
    start_s = START_S + CELL_OVERHEAD_S
    start_s += EXTRA_RANKS_S if cell.world_size > 1 else 0.0
    start_s += COMPILE_S if cell.compile != "none" else 0.0
    start_s += DEEPSPEED_S if "deepspeed" in cell.strategy else 0.0
    if cell.accelerator == "cpu":
        per_core = CPU_SAMPLES_PER_S_PER_CORE["bf16" if "bf16" in cell.precision else "32"]
        # Ranks on one machine's CPU share its cores: a step of every rank's samples.
        step_s = cell.batch_size * cell.devices / (per_core * max(1, cpu_count))
    else:
        step_s = max(CUDA_MIN_STEP_S, cell.batch_size / CUDA_SAMPLES_PER_S)
    return start_s + steps_of(cell, step_s) * step_s


@dataclass(frozen=True)
class Estimate:
    seconds: float
    cells_from_records: int  # runnable cells estimated from earlier records
    cells: int  # runnable cells

    def text(self) -> str:
        if not self.cells:
            return "estimated time: nothing runs here"
        if self.cells_from_records == self.cells:
            how = "from this machine's earlier records of these cells"
        elif self.cells_from_records:
            how = (f"{self.cells_from_records} of {self.cells} cells from this machine's "
                   "earlier records, the rest guessed from the accelerator")
        else:
            how = "guessed from the accelerator: no earlier records of these cells here"
        return f"estimated time: {duration_text(self.seconds)} (a rough estimate, {how})"


def estimate(plan: RunPlan, history: History) -> Estimate:
    """The plan's runs that run here, each costed once per repeat left."""
    total, known = 0.0, 0
    cells = plan.pending.cells_to_run()
    for cell in cells:
        from_records = history.cell_s(cell)
        known += from_records is not None
        seconds = from_records if from_records is not None else \
            guessed_cell_s(cell, plan.machine.cpu_count)
        total += seconds * plan.pending.repeats_left(cell)
    return Estimate(total, known, len(cells))


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"~{seconds / 3600:.1f} h"
    if seconds < 730 * 86400:
        return f"~{seconds / 86400:.0f} days"
    return f"~{seconds / (365 * 86400):.3g} years"



HOW = ("Estimates are rough: per cell run, a start-up plus (warm-up + measured steps) x a "
       "step time, both from this machine's earlier records of the same cell under {root}/ "
       "when there are any, else guessed (start-up ~{start:.0f} s; CPU {cpu32:.0f} samples/s "
       "per core in 32-bit, {cpu16:.0f} in bf16; CUDA {cuda:.0f} samples/s per GPU). A time "
       "window's steps take at least --min-window-s; accuracy cells count --max-epochs, an "
       "upper bound.")
EXAMPLES = """\
  python -m bench.run --matrix smoke              run one preset (or a TOML file of axis lists)
  python -m bench.run --matrix all                run everything this machine can run
  python -m bench.run --matrix NAME --dry-run     its cells, and why any cannot run here
  python -m bench.run --resume results/<run-id>   finish an interrupted run
  python -m bench.run --help                      every option"""


def machine_text(machine: Machine) -> str:
    gpus = f"{machine.cuda_devices} CUDA GPU(s)" if machine.cuda_devices else "no CUDA GPU"
    return f"{machine.cpu_count} CPU core(s), {gpus}"


def print_overview(matrix_of: Callable[[str], Matrix], machine: Machine, results_root: Path,
                   usage: str) -> None:
    """The usage, then every preset: its cells, how many run here and how many are
    skipped, its repeats and its estimated time on this machine."""
    history = History.load(results_root)
    print(usage.rstrip())
    print(f"\nPresets on this machine ({machine_text(machine)}):")
    print(f"  {'preset':<16}{'cells':>6}{'run here':>10}{'skipped':>9}{'repeats':>9}  estimate")
    for name in PRESETS:
        try:
            plan = make_plan("overview", matrix_of(name), machine, "disabled")
        except MatrixError as error:  # an axis given with a bare --matrix that fits no block
            print(f"  {name:<16}  not with these options: {error}")
            continue
        cells, here = len(plan.matrix.cells), len(plan.pending.cells_to_run())
        seconds = estimate(plan, history).seconds
        print(f"  {name:<16}{cells:>6}{here:>10}{cells - here:>9}{plan.matrix.repeats:>9}  "
              + (duration_text(seconds) if here else "-"))
    print("\n" + textwrap.fill(HOW.format(
        root=results_root, start=START_S + CELL_OVERHEAD_S,
        cpu32=CPU_SAMPLES_PER_S_PER_CORE["32"], cpu16=CPU_SAMPLES_PER_S_PER_CORE["bf16"],
        cuda=CUDA_SAMPLES_PER_S), width=88))
    print("\n" + EXAMPLES)
