"""The benchmark matrix: the Cell, its id, presets, expansion and command-line overrides."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from mnist_core.data import LOADERS
from mnist_core.model import OPTIMIZER_IMPLS, OPTIMIZERS
from strategies.registry import (
    Machine,
    accelerator_name,
    precision_name,
    strategy_spec,
    why_skipped,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODES = ("throughput", "accuracy")
COMPILE_MODES = ("none", "default", "reduce-overhead")
MATMUL_PRECISIONS = ("highest", "high", "medium")


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
    optimizer: str = "adam"
    optimizer_impl: str = "default"
    lr: float = 1e-3
    mode: str = "throughput"
    steps: int = 30
    warmup_steps: int = 5
    target_acc: float = 0.98
    max_epochs: int = 3
    val_every_steps: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        expected = {"int": int, "float": (int, float), "str": str, "bool": bool}
        for f in fields(self):
            value = getattr(self, f.name)
            kind = expected[str(f.type)]
            if not isinstance(value, kind) or (isinstance(value, bool) and f.type != "bool"):
                raise MatrixError(f"{f.name} must be {f.type}, got {value!r}")
        try:
            object.__setattr__(self, "accelerator", accelerator_name(self.accelerator))
            strategy_spec(self.strategy)
            precision_name(self.precision)
        except ValueError as error:
            raise MatrixError(str(error)) from error
        for name, valid in (("loader", LOADERS), ("compile", COMPILE_MODES), ("mode", MODES),
                            ("matmul_precision", MATMUL_PRECISIONS),
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
        parts += [self.strategy, self.precision, f"bs{self.batch_size}", self.loader]
        if self.compile != "none":
            parts.append(f"compile-{self.compile}")
        if self.matmul_precision != "highest":
            parts.append(f"mm-{self.matmul_precision}")
        if self.channels_last:
            parts.append("cl")
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


# A preset is a dict of axis lists (plus scalar settings shared by every cell).
# Axes named in AXES are crossed; every other key is a plain Cell field.
AXES = ("accelerator", "devices", "strategy", "precision", "batch_size", "loader", "compile",
        "optimizer_impl", "mode", "matmul_precision", "channels_last")

PRESETS: dict[str, dict[str, Any]] = {
    # What CI runs end to end: seconds per cell on two cores.
    "smoke": {"accelerator": ["cpu"], "devices": "auto", "strategy": ["single", "ddp"],
              "precision": ["32-true", "bf16-mixed"], "batch_size": [64], "loader": ["tensor"],
              "steps": 30, "warmup_steps": 5},
    "cpu": {"accelerator": ["cpu"], "devices": "auto", "strategy": ["raw", "single", "ddp"],
            "precision": ["32-true", "bf16-mixed", "bf16-true"], "batch_size": [64, 256],
            "loader": ["torchvision", "tensor"], "steps": 40, "warmup_steps": 5},
    "gpu": {"accelerator": ["cuda"], "devices": [1],
            "strategy": ["raw", "single", "ddp", "fsdp", "deepspeed_stage_1",
                         "deepspeed_stage_2", "deepspeed_stage_3"],
            "precision": ["32-true", "16-mixed", "bf16-mixed"], "batch_size": [256],
            "loader": ["device"], "compile": ["none", "default"],
            "steps": 200, "warmup_steps": 20},
    "multi-gpu": {"accelerator": ["cuda"], "devices": "auto",
                  "strategy": ["ddp", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3"],
                  "precision": ["bf16-mixed"], "batch_size": [256], "loader": ["device"],
                  "steps": 200, "warmup_steps": 20},
    # Fastest honest cell per accelerator, beside the tutorial's defaults (bs 64,
    # 32-true, torchvision loader, default Adam) and the raw-loop control.
    "speed": {"devices": [1], "steps": 30, "warmup_steps": 5, "blocks": [
        {"accelerator": ["cpu"], "strategy": ["single", "raw"],
         "precision": ["32-true", "bf16-mixed", "bf16-true"], "batch_size": [256, 1024],
         "loader": ["device"], "optimizer_impl": ["fused"]},
        {"accelerator": ["cuda"], "strategy": ["single", "raw"],
         "precision": ["32-true", "bf16-mixed", "bf16-true"], "matmul_precision": ["high"],
         "batch_size": [64, 1024, 8192], "loader": ["device"], "optimizer_impl": ["fused"],
         "compile": ["none", "default", "reduce-overhead"], "steps": 200, "warmup_steps": 30},
        {"accelerator": ["cpu", "cuda"], "strategy": ["single", "raw"],
         "precision": ["32-true"], "batch_size": [64], "loader": ["torchvision"],
         "optimizer_impl": ["default"]},
    ]},
    # Every GPU path once, on one GPU, in a few minutes (scripts/gpu_check.sh).
    "gpu-check": {"accelerator": ["cuda"], "devices": [1], "loader": ["device"],
                  "optimizer_impl": ["fused"], "steps": 50, "warmup_steps": 10, "blocks": [
        {"strategy": ["raw", "single"], "batch_size": [256],
         "precision": ["32-true", "16-mixed", "bf16-mixed", "bf16-true"]},
        {"strategy": ["ddp", "fsdp", "deepspeed_stage_1", "deepspeed_stage_2",
                      "deepspeed_stage_3", "deepspeed_stage_2_offload",
                      "deepspeed_stage_3_offload"],
         "precision": ["bf16-mixed"], "batch_size": [256], "optimizer_impl": ["default"]},
        {"strategy": ["single"], "precision": ["bf16-mixed"], "batch_size": [64, 8192],
         "compile": ["none", "default", "reduce-overhead"]},
        {"strategy": ["single"], "precision": ["32-true"], "batch_size": [64],
         "loader": ["torchvision"], "optimizer_impl": ["default"]},
        {"strategy": ["single"], "precision": ["bf16-mixed"], "batch_size": [256],
         "mode": ["accuracy"], "target_acc": 0.98, "max_epochs": 5, "val_every_steps": 50},
    ]},
    "accuracy": {"accelerator": ["cpu", "cuda"], "devices": [1], "strategy": ["single"],
                 "precision": ["bf16-mixed"], "batch_size": [64], "loader": ["tensor"],
                 "mode": ["accuracy"], "target_acc": 0.98, "max_epochs": 3,
                 "val_every_steps": 200, "repeats": 3},
    # `--matrix` with no name: everything this machine can run, modest steps.
    "all": {"accelerator": ["cpu", "cuda"], "devices": "auto",
            "strategy": ["raw", "single", "ddp", "fsdp", "deepspeed_stage_1",
                         "deepspeed_stage_2", "deepspeed_stage_3",
                         "deepspeed_stage_2_offload", "deepspeed_stage_3_offload"],
            "precision": ["32-true", "16-mixed", "bf16-mixed", "bf16-true"],
            "batch_size": [64], "loader": ["tensor"], "steps": 30, "warmup_steps": 5},
}
DEFAULT_PRESET = "all"
RUN_SETTINGS = ("repeats",)  # preset keys that belong to the run, not to a cell


def auto_devices(accelerator: str, machine: Machine, multi_device: bool) -> list[int]:
    """Device counts for ``devices = "auto"``. Under a launcher: the launch's processes
    per node. Otherwise one-device strategies get 1; multi-device strategies get the
    powers of two from 2 up to the GPUs present (on CPU: 2 processes, since more
    ranks only split the same cores), or 1 where there is a single device. The
    scaling baseline is then the one-device `single` cell."""
    if machine.launched_world_size is not None:
        return [machine.launched_local_world_size or machine.launched_world_size]
    if not multi_device:
        return [1]
    if accelerator == "cpu":
        return [2] if machine.cpu_count >= 2 else [1]
    counts, n = [], 2
    while n <= machine.cuda_devices:
        counts.append(n)
        n *= 2
    return counts or [1]


def load_matrix(name_or_path: str | None) -> dict[str, Any]:
    """A preset by name, or a TOML file of axis lists (same keys as the presets)."""
    if name_or_path is None:
        return dict(PRESETS[DEFAULT_PRESET])
    if name_or_path in PRESETS:
        return dict(PRESETS[name_or_path])
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            what = "is a directory, not a TOML file" if path.is_dir() else "does not exist"
            raise MatrixError(f"matrix file {path} {what}")
        try:
            spec = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise MatrixError(f"matrix file {path} is not valid TOML: {error}") from error
        known = {f.name for f in fields(Cell)} | set(RUN_SETTINGS) | {"blocks"}
        unknown = set(spec).union(*(b for b in spec.get("blocks", []))) - known
        if unknown:
            raise MatrixError(f"matrix file {path}: unknown key(s) {sorted(unknown)}; "
                              f"valid: {sorted(known)}")
        return spec
    raise MatrixError(f"unknown preset {name_or_path!r}; valid: {', '.join(PRESETS)} "
                      "or a path to a .toml file")


def expand(spec: Mapping[str, Any], machine: Machine) -> list[Cell]:
    """Cross the axis lists into cells, in order, without duplicates. Only
    meaningful combinations become cells: a one-device strategy (single, raw)
    only on one device. A spec with ``blocks`` (a list of specs, ``[[blocks]]``
    in TOML) is the union of its blocks, each laid over the spec's other keys."""
    if "blocks" in spec:
        common = {k: v for k, v in spec.items() if k != "blocks"}
        cells: list[Cell] = []
        for block in spec["blocks"]:
            cells += [c for c in expand(common | block, machine) if c not in cells]
        return cells
    return _expand_block(spec, machine)


def _expand_block(spec: Mapping[str, Any], machine: Machine) -> list[Cell]:
    axes = {k: (list(v) if isinstance(v, list | tuple) else [v])
            for k, v in spec.items() if k in AXES}
    scalars = {k: v for k, v in spec.items() if k not in AXES and k not in RUN_SETTINGS}
    if machine.launched_world_size is not None and "num_nodes" not in scalars:
        scalars["num_nodes"] = machine.launched_nodes
    names = list(axes)
    cells: list[Cell] = []
    one_device_only: set[str] = set()
    for combination in itertools.product(*(axes[name] for name in names)):
        values = dict(zip(names, combination, strict=True)) | scalars
        if values.get("devices") == "auto":
            device_counts = auto_devices(
                accelerator_name(str(values["accelerator"])), machine,
                strategy_spec(str(values.get("strategy", "single"))).multi_device)
        else:
            device_counts = [values.get("devices", 1)]
        for devices in device_counts:
            values["devices"] = devices
            try:
                cell = Cell(**values)
            except TypeError as error:  # e.g. a string where a number belongs
                raise MatrixError(f"bad matrix value: {error}") from error
            if not strategy_spec(cell.strategy).multi_device and cell.world_size > 1:
                one_device_only.add(cell.strategy)
                continue
            if cell not in cells:
                cells.append(cell)
    if not cells:
        detail = (f": the one-device strategies ({', '.join(sorted(one_device_only))}) get no "
                  "cell when every device count is above 1" if one_device_only else "")
        raise MatrixError(f"the matrix is empty after expansion{detail}")
    return cells


def apply_overrides(spec: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Replace axes or settings with command-line values (already parsed into lists)."""
    given = {key: value for key, value in overrides.items() if value is not None}
    merged = dict(spec) | given
    if "blocks" in merged:  # the command line wins over every block
        merged["blocks"] = [dict(block) | given for block in merged["blocks"]]
    return merged


def plan(cells: Iterable[Cell], machine: Machine) -> list[tuple[Cell, str | None]]:
    """Each cell with the reason it cannot run here (None when it can)."""
    return [(cell, why_skipped(cell, machine)) for cell in cells]


def with_seed(cell: Cell, repeat: int) -> Cell:
    return replace(cell, seed=cell.seed + repeat)
