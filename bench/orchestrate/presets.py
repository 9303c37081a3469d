"""Presets, TOML matrices, expansion into cells and command-line overrides."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from bench.matrix import Cell, MatrixError
from strategies.registry import STRATEGIES, Machine, accelerator_name, strategy_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# A preset is a dict of axis lists (plus scalar settings shared by every cell).
# Axes named in AXES are crossed; every other key is a plain Cell field.
AXES = ("accelerator", "devices", "strategy", "precision", "batch_size", "loader", "compile",
        "optimizer_impl", "mode", "matmul_precision", "channels_last", "malloc")

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
    # The one-device cells are the report's references: bf16-mixed for the scaling
    # efficiency, 32-true for the speed-up. Under a launch rank 0 runs them alone.
    # engine-ddp_no_sync alone and on the node's GPUs measures the node's crowding for
    # bench.scale (docs/scaling.md).
    "multi-gpu": {"accelerator": ["cuda"], "batch_size": [256], "loader": ["device"],
                  "steps": 200, "warmup_steps": 20, "blocks": [
        {"strategy": ["single"], "devices": [1], "num_nodes": 1,
         "precision": ["32-true", "bf16-mixed"]},
        {"strategy": ["engine-ddp_no_sync"], "devices": [1], "num_nodes": 1,
         "precision": ["bf16-mixed"]},
        {"strategy": ["ddp", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3",
                      "engine-ddp_no_sync"],
         "devices": "auto", "precision": ["bf16-mixed"]},
    ]},
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
    # Every GPU path once, on one GPU, inside one 5-minute command (scripts/gpu_check.sh):
    # 17 cells, each with 90 s at most.
    "gpu-check": {"accelerator": ["cuda"], "devices": [1], "loader": ["device"],
                  "optimizer_impl": ["fused"], "steps": 50, "warmup_steps": 10, "blocks": [
        {"strategy": ["raw", "single"], "batch_size": [256],
         "precision": ["32-true", "16-mixed", "bf16-mixed", "bf16-true"]},
        {"strategy": ["ddp", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3",
                      "deepspeed_stage_2_offload"],
         "precision": ["bf16-mixed"], "batch_size": [256], "optimizer_impl": ["default"]},
        {"strategy": ["single"], "precision": ["bf16-mixed"], "batch_size": [8192],
         "compile": ["none", "default"]},
        {"strategy": ["single"], "precision": ["32-true"], "batch_size": [64],
         "loader": ["torchvision"], "optimizer_impl": ["default"]},
        {"strategy": ["single"], "precision": ["bf16-mixed"], "batch_size": [256],
         "mode": ["accuracy"], "target_acc": 0.98, "max_epochs": 5, "val_every_steps": 50},
    ]},
    # Every strategy this machine trains, Lightning's and the engine controls, a few steps
    # on 2 ranks (one device for single and raw).
    "all-strategies": {"accelerator": "auto", "devices": "auto", "strategy": "auto",
                       "precision": ["32-true"], "batch_size": [16], "loader": ["tensor"],
                       "optimizer_impl": ["fused"], "steps": 4, "warmup_steps": 1},
    "accuracy": {"accelerator": ["cpu", "cuda"], "devices": [1], "strategy": ["single"],
                 "precision": ["bf16-mixed"], "batch_size": [64], "loader": ["tensor"],
                 "mode": ["accuracy"], "target_acc": 0.98, "max_epochs": 3,
                 "val_every_steps": 200, "repeats": 3},
    # Collectives at this model's sizes on 1 and N ranks (docs/communication.md), and the
    # DDP cells whose backward phases say what DDP's communication costs in training.
    # Few iterations: on 2 CPU cores gloo takes about 0.3 s per 150 MB all_reduce and a
    # DDP step 3 s; a fixed warm-up, as a steady one rarely comes on a shared CPU.
    "comm": {"accelerator": "auto", "blocks": [
        {"mode": ["comm"], "strategy": ["ddp"], "devices": [1, "auto"],
         "precision": ["32-true", "bf16-true"], "steps": 5, "warmup_steps": 1},
        {"strategy": ["engine-ddp", "engine-ddp_one_bucket", "engine-ddp_no_sync",
                      "engine-ddp_alternate"],
         "devices": "auto", "precision": ["32-true"], "batch_size": [64],
         "loader": ["tensor"], "steps": 12, "warmup_steps": 3, "warmup": "fixed",
         "window": "fixed"},
    ]},
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
    _resolve_auto(axes, machine)
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


def _resolve_auto(axes: dict[str, list[Any]], machine: Machine) -> None:
    """``accelerator = "auto"``: this machine's best (CUDA when it has a GPU, else CPU);
    ``strategy = "auto"``: every strategy that trains on that accelerator (Lightning's
    FSDP and DeepSpeed strategies need CUDA; their engine controls do not; DDP without
    communication, a measuring control, does not train)."""
    if axes.get("accelerator") == ["auto"]:
        axes["accelerator"] = ["cuda" if machine.cuda_devices else "cpu"]
    if axes.get("strategy") == ["auto"]:
        accelerators = {accelerator_name(str(a)) for a in axes.get("accelerator", ["cpu"])}
        axes["strategy"] = [name for name, spec in STRATEGIES.items()
                            if spec.trains and (not spec.needs_cuda or accelerators == {"cuda"})]


def apply_overrides(spec: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Lay command-line values (already parsed into lists) over a matrix.

    Settings (steps, seed, ...) replace the matrix's everywhere. An axis replaces the
    matrix's in a flat matrix; in a matrix made of ``blocks`` it narrows instead: each
    block keeps the given values it already has and a block with none of them is
    dropped, so ``--matrix speed --accelerators cpu`` is the CPU part of ``speed``, not
    its GPU blocks turned into CPU cells."""
    given = {key: value for key, value in overrides.items() if value is not None}
    if "blocks" not in spec:
        return dict(spec) | given
    axes = {key: value for key, value in given.items() if key in AXES}
    settings = {key: value for key, value in given.items() if key not in AXES}
    common = {key: value for key, value in spec.items() if key != "blocks"}
    blocks = [narrowed for block in spec["blocks"]
              if (narrowed := _narrow(common | dict(block) | settings, axes)) is not None]
    if not blocks:
        have = {axis: sorted({str(v) for block in spec["blocks"]
                              for v in _values(common | dict(block), axis)}) for axis in axes}
        raise MatrixError(
            "an axis given on the command line narrows the blocks of this matrix, and no "
            f"block has all of {({k: list(v) for k, v in axes.items()})}; its blocks have "
            f"{have}. For other values, write a TOML matrix (see docs/matrices.md).")
    return {key: value for key, value in common.items() if key in RUN_SETTINGS} | {
        "blocks": blocks}


def _values(block: Mapping[str, Any], axis: str) -> list[Any]:
    default = next(f.default for f in fields(Cell) if f.name == axis)
    value = block.get(axis, default)
    return list(value) if isinstance(value, list | tuple) else [value]


def _narrow(block: dict[str, Any], axes: Mapping[str, list[Any]]) -> dict[str, Any] | None:
    """``block`` with each axis cut down to the given values; None when one is left empty."""
    for axis, wanted in axes.items():
        have = _values(block, axis)
        if have == ["auto"]:  # "every device count this machine offers": take the given ones
            block[axis] = list(wanted)
            continue
        names = {_canonical(axis, value) for value in wanted}
        kept = [value for value in have if _canonical(axis, value) in names]
        if not kept:
            return None
        block[axis] = kept
    return block


def _canonical(axis: str, value: Any) -> Any:
    return accelerator_name(str(value)) if axis == "accelerator" else value
