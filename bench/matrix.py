"""The Cell: one benchmark configuration, validated on construction, with its readable id.

Presets and their expansion into cells live in bench.orchestrate.presets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from mnist_core.choices import LOADERS, OPTIMIZER_IMPLS, OPTIMIZERS
from strategies.registry import accelerator_name, precision_name, strategy_spec

MODES = ("throughput", "accuracy", "comm")  # comm: collectives only (a communication cell)
WARMUP_MODES = ("steady", "fixed")  # bench.measure.warmup
WINDOW_MODES = ("time", "fixed")  # bench.measure.window
COMPILE_MODES = ("none", "default", "reduce-overhead")
MATMUL_PRECISIONS = ("highest", "high", "medium")
# The host allocator (bench.execute.allocator.apply_malloc): "system" as the process
# starts; "retain": glibc keeps what it frees for reuse instead of returning it;
# "jemalloc": jemalloc preloaded into the cell's processes, never purging what it frees.
MALLOC_MODES = ("system", "retain", "jemalloc")


# The fields a comm cell reads; the others are set to their defaults (COMM_FIXED: its
# own), whatever the matrix said.
COMM_FIELDS = ("accelerator", "devices", "num_nodes", "strategy", "precision", "mode",
               "steps", "warmup_steps", "seed", "malloc")
COMM_FIXED = {"warmup": "fixed", "window": "fixed"}


class MatrixError(ValueError):
    """Bad matrix input; the message is meant for the user as it is."""


@dataclass(frozen=True)
class Cell:
    """One benchmark configuration. Repeats are not part of a cell: each
    (cell, repeat) gives one record, with seed = cell.seed + repeat."""

    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "single"
    precision: str = "32-true"
    batch_size: int = 64
    loader: str = "tensor"
    compile: str = "none"
    matmul_precision: str = "highest"  # float32 matmuls: "high"/"medium" allow TF32 / bf16
    channels_last: bool = False
    malloc: str = "system"  # MALLOC_MODES
    optimizer: str = "adam"
    optimizer_impl: str = "default"
    lr: float = 1e-3
    mode: str = "throughput"
    steps: int = 30  # "time" window: at least; "fixed": exactly
    warmup_steps: int = 5  # at least; "steady": more until the step time is steady
    warmup: str = "steady"
    window: str = "time"  # "time": steps enough for min_window_s, timed on the warm-up
    min_window_s: float = 2.0
    target_acc: float = 0.98
    max_epochs: int = 3
    val_every_steps: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        self._check_types()
        try:
            object.__setattr__(self, "accelerator", accelerator_name(self.accelerator))
            strategy_spec(self.strategy)
            precision_name(self.precision)
        except ValueError as error:
            raise MatrixError(str(error)) from error
        if self.mode == "comm":
            self._as_comm_cell()
        self._check_values()

    def _check_types(self) -> None:
        expected = {"int": int, "float": (int, float), "str": str, "bool": bool}
        for f in fields(self):
            value = getattr(self, f.name)
            kind = expected[str(f.type)]
            if not isinstance(value, kind) or (isinstance(value, bool) and f.type != "bool"):
                raise MatrixError(f"{f.name} must be {f.type}, got {value!r}")

    def _as_comm_cell(self) -> None:
        """A communication cell times collectives (bench.execute.backends.comm): its
        strategy names the process group (ddp: gloo on CPU, NCCL on CUDA), its precision
        the buffers' dtype, devices and num_nodes the world, steps and warmup_steps the
        timed and warm-up iterations of each (op, size). Every other field means nothing
        to it and is set to one value, so that no two comm cells differ, in equality or
        id, by a batch size or a loader."""
        if self.strategy != "ddp":
            raise MatrixError(f"a comm cell times the ddp process group's collectives; "
                              f"strategy must be ddp, got {self.strategy!r}")
        for f in fields(self):
            if f.name not in COMM_FIELDS:
                object.__setattr__(self, f.name, COMM_FIXED.get(f.name, f.default))

    def _check_values(self) -> None:
        for name, valid in (("loader", LOADERS), ("compile", COMPILE_MODES), ("mode", MODES),
                            ("warmup", WARMUP_MODES), ("window", WINDOW_MODES),
                            ("matmul_precision", MATMUL_PRECISIONS), ("malloc", MALLOC_MODES),
                            ("optimizer", OPTIMIZERS), ("optimizer_impl", OPTIMIZER_IMPLS)):
            if getattr(self, name) not in valid:
                raise MatrixError(
                    f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        for name in ("devices", "num_nodes", "batch_size", "steps", "max_epochs",
                     "val_every_steps"):
            if getattr(self, name) <= 0:
                raise MatrixError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise MatrixError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.min_window_s > 0:
            raise MatrixError(f"min_window_s must be positive, got {self.min_window_s}")
        if self.window == "time" and self.mode == "throughput" and self.warmup_steps == 0:
            raise MatrixError("window time chooses the step count from the warm-up's step "
                              "time: give warmup_steps >= 1, or window fixed")
        if not 0.0 < self.target_acc <= 1.0:
            raise MatrixError(f"target_acc must be in (0, 1], got {self.target_acc}")
        if self.lr <= 0:
            raise MatrixError(f"lr must be positive, got {self.lr}")

    @property
    def id(self) -> str:
        """A readable, deterministic slug, e.g. ``cpu-2x-ddp-bf16-mixed-bs64-tensor``.
        Non-default optimizer, compile and mode settings are appended."""
        parts = [self.accelerator, f"{self.devices}x"]
        if self.num_nodes > 1:
            parts.append(f"{self.num_nodes}n")
        malloc = [f"malloc-{self.malloc}"] if self.malloc != "system" else []
        if self.mode == "comm":  # nothing else distinguishes a comm cell
            return "-".join([*parts, self.strategy, self.precision, "comm", *malloc])
        parts += [self.strategy, self.precision, f"bs{self.batch_size}", self.loader]
        if self.compile != "none":
            parts.append(f"compile-{self.compile}")
        if self.matmul_precision != "highest":
            parts.append(f"mm-{self.matmul_precision}")
        if self.channels_last:
            parts.append("cl")
        parts += malloc
        if self.optimizer != "adam" or self.optimizer_impl != "default":
            parts.append(f"{self.optimizer}-{self.optimizer_impl}")
        if self.mode == "accuracy":
            parts.append(f"acc{self.target_acc:g}")
        return "-".join(parts)

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cell:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise MatrixError(f"unknown cell field(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)
