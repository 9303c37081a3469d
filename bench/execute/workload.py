"""What every backend trains, prepared once: process settings, seed, model,
data, memory format; and the parts of a record that every backend fills the
same way. A backend (bench.execute.backends) owns only its training loop."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from bench.execute.settings import apply_process_settings, loader_workers
from bench.matrix import Cell
from bench.measure.arithmetic import ArithmeticProbe
from bench.measure.compile import CompileMeter
from bench.measure.env import device_name, version
from bench.measure.flops import flops_per_training_sample
from bench.measure.trace import StepTrace, profile_steps
from bench.measure.warmup import WarmupRule
from bench.measure.window import Window, WindowChoice
from bench.metrics import FULL_VAL_IMAGES, SANITY_VAL_IMAGES
from bench.record import RankRaw, Raw
from mnist_core.data import MnistDataModule
from mnist_core.model import MnistModel, MnistNet

# Every loop reads its loss to the host (Lightning's logger: .item()) once per this
# many steps, so that Lightning and the hand-written loops do the same per-step work.
LOG_EVERY_N_STEPS = 10


@dataclass
class Workload:
    """The model and data of one (cell, repeat), seeded and set up for its process."""

    cell: Cell
    repeat: int
    model: MnistModel
    datamodule: MnistDataModule
    settings: dict[str, Any]  # per-process choices, recorded in ``effective``
    # cells/<id>/ in the run directory (a temporary one when prepared outside a run):
    # where the cell's compile cache and profiler trace go
    cell_dir: Path
    peaks_file: Path | None = None  # the run's calibrated CPU peaks (RunDir.peaks)
    # How many steps it measures (bench.measure.window); None for an accuracy cell.
    window: Window | None = None

    @property
    def seed(self) -> int:
        return self.cell.seed + self.repeat


def prepare(cell: Cell, repeat: int, data_dir: str | None, peaks_file: Path | None = None,
            cell_dir: Path | None = None, window_choice: WindowChoice | None = None
            ) -> Workload:
    """Settings, seed, then the model (its weights depend only on the seed) and data.
    Both backends train ``model.net`` from here, so their first steps are identical.
    ``window_choice``: the time window an earlier repeat of the cell chose."""
    settings = apply_process_settings(cell)
    L.seed_everything(cell.seed + repeat, workers=True, verbose=False)
    model = MnistModel(lr=cell.lr, optimizer=cell.optimizer, optimizer_impl=cell.optimizer_impl)
    if cell.channels_last:
        model = model.to(memory_format=torch.channels_last)
    datamodule = MnistDataModule(data_dir, cell.batch_size, cell.loader,
                                 num_workers=loader_workers(cell), seed=cell.seed + repeat,
                                 val_images=validation_images(cell))
    return Workload(cell, repeat, model, datamodule, settings,
                    cell_dir or Path(tempfile.mkdtemp(prefix="mnist-bench-")), peaks_file,
                    Window.for_cell(cell, repeat, window_choice))


def validation_images(cell: Cell) -> int:
    """How many images of the validation split the cell validates on: a throughput
    cell's validation is only a sanity check, off the clock but not off the cell's
    wall time, so it takes the fixed subset (bench.metrics.SANITY_VAL_IMAGES); an
    accuracy cell's decides when the target is reached, so it takes the whole split.
    Every backend reads its validation loader from the same datamodule, so the
    Lightning cell and its controls validate on the same images."""
    return SANITY_VAL_IMAGES if cell.mode == "throughput" else FULL_VAL_IMAGES


ARITHMETIC_KEYS = ("param_dtype", "param_dtype_in_forward", "compute_dtype", "autocast")


def arithmetic_probe(workload: Workload) -> ArithmeticProbe | None:
    """A probe of the arithmetic the cell runs (not under torch.compile: its first
    forward is traced, and a hook there would be traced with it)."""
    if workload.cell.compile != "none":
        return None
    return ArithmeticProbe(workload.model.net, workload.cell.accelerator)


def warmup_rule(cell: Cell) -> WarmupRule:
    """When the cell's warm-up ends (bench.measure.warmup), for every backend."""
    return WarmupRule.for_cell(cell.warmup_steps, cell.warmup, cell.mode)


def step_trace(workload: Workload, rank: int, device: torch.device) -> StepTrace | None:
    """``--profile N``: a trace of the first N measured steps, or None."""
    path = workload.cell_dir / f"trace-r{workload.repeat}-rank{rank}.json"
    return StepTrace.maybe(path, device)


def compile_network(workload: Workload, rank: int) -> CompileMeter | None:
    """Compile the network itself, in place, in the cell's mode: the same region for
    Lightning (whose training_step calls it) and the hand-written loops, whatever
    wraps it later (DDP, FSDP). Each rank of each (cell, repeat) gets an empty
    inductor cache. None when the cell does not compile."""
    if workload.cell.compile == "none":
        return None
    meter = CompileMeter.start(workload.cell_dir / f"inductor-r{workload.repeat}-rank{rank}")
    workload.model.net.compile(mode=workload.cell.compile)
    return meter


@dataclass
class LoopResult:
    """What a backend's loop measured and ran; the rest of the record is built from it."""

    ranks: list[RankRaw]
    peak_source: str
    precision: str  # the precision that actually ran, as the backend resolved it
    world_size: int
    strategy: str  # the class or loop that trained
    optimizer: torch.optim.Optimizer | None
    grad_scaler: bool  # fp16 loss scaling: torch's GradScaler or DeepSpeed's own
    outcome: dict[str, Any] = field(default_factory=dict)  # val/test values, accuracy curve
    extra_effective: dict[str, Any] = field(default_factory=dict)
    arithmetic: dict[str, Any] = field(default_factory=dict)  # bench.measure.arithmetic
    window: Window | None = None  # how many steps were measured, and how that was chosen


def build_raw(workload: Workload, result: LoopResult) -> Raw:
    cell = workload.cell
    trains = cell.mode != "comm"  # a comm cell times collectives, no training step
    raw = Raw(ranks=result.ranks, peak_source=result.peak_source,
              flops_per_sample=flops_per_training_sample(MnistNet) if trains else None,
              **result.outcome)
    if result.window is not None:
        raw.window = result.window.to_record()
    if raw.val_acc is not None:  # what the datamodule validated on (bench.metrics val_images)
        raw.val_images = workload.datamodule.val_images
    compiled = [r.compile for r in result.ranks if r.compile]
    if cell.compile != "none" and compiled:
        # The slowest rank's compilation: every rank waits for it at the first collective.
        raw.compile_s = max(c["compile_s"] for c in compiled)
        raw.compile_val_s = max(c.get("compile_val_s", 0.0) for c in compiled)
    return raw


def build_effective(workload: Workload, result: LoopResult) -> dict[str, Any]:
    """What actually ran: the same keys for every backend."""
    from mnist_core.model import optimizer_kernel

    cell, optimizer = workload.cell, result.optimizer
    return {
        "accelerator": cell.accelerator,
        "precision": result.precision,
        "world_size": result.world_size,
        "global_batch_size": cell.batch_size * result.world_size,
        "strategy": result.strategy,
        "optimizer": type(optimizer).__name__ if optimizer is not None else None,
        "optimizer_kernel": optimizer_kernel(optimizer),
        "grad_scaler": result.grad_scaler,
        # param_dtype, compute_dtype, autocast: as seen inside the first forward
        # (None under torch.compile, whose first forward is a trace)
        **{key: result.arithmetic.get(key) for key in ARITHMETIC_KEYS},
        **workload.settings,
        "profiled_steps": profile_steps() or None,  # --profile: figures carry its overhead
        "device_name": device_name(cell.accelerator),
        "torch": version("torch"),
        "lightning": version("lightning"),
        **result.extra_effective,
    }
