"""Names users type -> what Lightning runs, and why a combination cannot run here.

Nothing here measures or writes; ``bench`` asks and ``strategies`` answers.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from dataclasses import dataclass
from typing import Any, Protocol

from strategies.host import (
    NO_BF16_KERNELS,
    cpu_has_bf16_kernels,
    jemalloc_library,
    slurm_launched,
    usable_cpus,
    why_no_allocator,
)
from strategies.toolchain import Toolchain

ACCELERATORS = ("cpu", "cuda")
ACCELERATOR_ALIASES = {"gpu": "cuda"}
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "bf16-true")


@dataclass(frozen=True)
class StrategySpec:
    name: str
    multi_device: bool  # may run on more than one device
    needs_cuda: bool
    needs_deepspeed: bool = False
    zero_stage: int | None = None
    offload: bool = False
    lightning: bool = True  # False: a hand-written loop (a control cell)
    engine: str | None = None  # the engine a hand-written loop drives: ddp, fsdp, deepspeed
    about: str = ""
    # The DDP engine's gradient communication (bench.execute.backends.engines.DDP):
    # "buckets" as torch sets them (25 MiB, overlapped with backward); "one-bucket" (all
    # in one, all-reduced after backward: no overlap); "none" (no_sync() every step);
    # "alternate" (one bucket, no_sync() every other step, then the bucket all-reduced
    # bare after the window: the DDP check inside one process).
    ddp_comm: str = "buckets"

    @property
    def trains(self) -> bool:
        """False for a measuring control whose ranks do not exchange every step's
        gradients (engine-ddp_no_sync, engine-ddp_alternate): it is no data-parallel
        training, so presets that ask for every strategy ("auto") and the report's
        fastest cells leave it out."""
        return self.ddp_comm in ("buckets", "one-bucket")

    @property
    def controls(self) -> str | None:
        """The Lightning strategy this control cell stands beside: ``raw`` is
        ``single`` without Lightning, ``engine-X`` is X's engine without Lightning."""
        if self.name == "raw":
            return "single"
        if self.ddp_comm != "buckets":  # a variant of engine-ddp, not a Lightning strategy's
            return None
        return self.name.removeprefix("engine-") if self.engine else None


STRATEGIES: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in (
        StrategySpec("single", False, False, about="one device, no wrapper"),
        StrategySpec("raw", False, False, lightning=False,
                     about="hand-written PyTorch loop, no Lightning (control)"),
        StrategySpec("ddp", True, False, about="DistributedDataParallel"),
        StrategySpec("fsdp", True, True, about="FullyShardedDataParallel"),
        StrategySpec("deepspeed_stage_1", True, True, True, 1, about="ZeRO-1"),
        StrategySpec("deepspeed_stage_2", True, True, True, 2, about="ZeRO-2"),
        StrategySpec("deepspeed_stage_3", True, True, True, 3, about="ZeRO-3"),
        StrategySpec("deepspeed_stage_2_offload", True, True, True, 2, True,
                     about="ZeRO-2, optimizer state on CPU"),
        StrategySpec("deepspeed_stage_3_offload", True, True, True, 3, True,
                     about="ZeRO-3, optimizer state and parameters on CPU"),
        # Engine controls: the same engine as the Lightning strategy of the same name,
        # driven by a hand-written loop; they run on CPU ranks (gloo) and on CUDA.
        StrategySpec("engine-ddp", True, False, lightning=False, engine="ddp",
                     about="torch DistributedDataParallel, hand-written loop"),
        # DDP's communication measured in training (docs/communication.md): engine-ddp's
        # backward less this one's is what DDP's all-reduces cost it.
        StrategySpec("engine-ddp_one_bucket", True, False, lightning=False, engine="ddp",
                     ddp_comm="one-bucket",
                     about="torch DDP, every gradient in one bucket: no overlap (control)"),
        StrategySpec("engine-ddp_no_sync", True, False, lightning=False, engine="ddp",
                     ddp_comm="none",
                     about="torch DDP, every step under no_sync(): no communication (control)"),
        StrategySpec("engine-ddp_alternate", True, False, lightning=False, engine="ddp",
                     ddp_comm="alternate",
                     about="torch DDP, one bucket, every other step under no_sync(), then "
                           "the bucket all-reduced bare (control)"),
        StrategySpec("engine-fsdp", True, False, lightning=False, engine="fsdp",
                     about="torch FSDP2 fully_shard, hand-written loop"),
        *(StrategySpec(f"engine-deepspeed_stage_{stage}{suffix}", True, False, True, stage,
                       bool(suffix), lightning=False, engine="deepspeed",
                       about=f"deepspeed.initialize, ZeRO-{stage}{suffix.replace('_', ' ')}")
          for stage, suffix in ((1, ""), (2, ""), (3, ""), (2, "_offload"), (3, "_offload"))),
    )
}


class CellLike(Protocol):
    """The fields of a benchmark cell this package reads (bench.matrix.Cell)."""

    accelerator: str
    devices: int
    num_nodes: int
    strategy: str
    precision: str
    batch_size: int
    lr: float


class UnknownNameError(ValueError):
    """A name that is not in the registry; the message lists the valid ones."""


def _check(kind: str, name: str, valid: tuple[str, ...] | list[str]) -> str:
    if name not in valid:
        raise UnknownNameError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")
    return name


def accelerator_name(name: str) -> str:
    name = ACCELERATOR_ALIASES.get(name, name)
    return _check("accelerator", name, ACCELERATORS)


def strategy_spec(name: str) -> StrategySpec:
    return STRATEGIES[_check("strategy", name, list(STRATEGIES))]


def precision_name(name: str) -> str:
    return _check("precision", name, PRECISIONS)


@dataclass(frozen=True)
class Machine:
    """What this machine (or this torchrun launch) offers."""

    cpu_count: int
    cuda_devices: int
    cuda_bf16: bool
    deepspeed: bool
    launched_world_size: int | None = None  # WORLD_SIZE from torchrun / SLURM, else None
    launched_local_world_size: int | None = None  # processes per node in that launch
    can_compile: bool = True  # a C compiler and Python.h (strategies.toolchain)
    can_build_cpu_adam: bool = True  # DeepSpeed's offload optimizer: prebuilt or buildable
    cpu_adam_lacks: tuple[str, ...] = ()  # what building it would need and is not here
    glibc: bool = True  # the C library whose mallopt malloc "retain" sets
    jemalloc: bool = True  # a jemalloc library for malloc "jemalloc" (strategies.host)
    jemalloc_preloaded: bool = False  # this process started with it (a launched walk's)
    cpu_bf16: bool = True  # torch's oneDNN runs bf16 on this CPU (cpu_has_bf16_kernels)

    @property
    def launched_nodes(self) -> int:
        if not self.launched_world_size or not self.launched_local_world_size:
            return 1
        return max(1, self.launched_world_size // self.launched_local_world_size)

    @classmethod
    def detect(cls) -> Machine:
        import torch  # here, not at the top: naming and checking cells needs no torch

        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        world, local_world = os.environ.get("WORLD_SIZE"), os.environ.get("LOCAL_WORLD_SIZE")
        if world is None and slurm_launched():
            world = os.environ["SLURM_NTASKS"]
            # e.g. "4" or "4(x2)": tasks per node, the same on every node here
            local_world = os.environ.get("SLURM_NTASKS_PER_NODE", world).split("(")[0]
        tools = Toolchain.detect()
        return cls(
            cpu_count=usable_cpus(),
            cuda_devices=cuda,
            # Every device's own capability (bf16 from Ampere, sm 8.0): is_bf16_supported()
            # asks the current device, which under a launcher is still device 0 here.
            cuda_bf16=bool(cuda) and all(torch.cuda.get_device_properties(index).major >= 8
                                         for index in range(cuda)),
            deepspeed=importlib.util.find_spec("deepspeed") is not None,
            launched_world_size=int(world) if world else None,
            launched_local_world_size=int(local_world) if local_world else None,
            can_compile=tools.can_compile,
            can_build_cpu_adam=tools.can_build_cpu_adam,
            cpu_adam_lacks=tuple(tools.cpu_adam_build_lacks()),
            glibc=platform.libc_ver()[0] == "glibc",
            jemalloc=jemalloc_library() is not None,
            jemalloc_preloaded="jemalloc" in os.environ.get("LD_PRELOAD", ""),
            cpu_bf16=cpu_has_bf16_kernels(),
        )

    @classmethod
    def assume_gpus(cls, count: int) -> Machine:
        """A machine with ``count`` bf16-capable CUDA GPUs, DeepSpeed and a full
        toolchain: for planning a GPU run (``--dry-run --assume-gpus N``) elsewhere."""
        return cls(cpu_count=max(usable_cpus(), 8 * count), cuda_devices=count, cuda_bf16=True,
                   deepspeed=True)


def why_skipped(cell: CellLike, machine: Machine) -> str | None:
    """None when the cell can run on ``machine``; otherwise the reason it cannot."""
    strategy_spec(cell.strategy)
    accelerator_name(cell.accelerator)
    precision_name(cell.precision)
    return (_not_on_this_hardware(cell, machine) or _refused_combination(cell, machine)
            or _not_in_this_launch(cell, machine))


def _not_on_this_hardware(cell: CellLike, machine: Machine) -> str | None:
    spec, accelerator = strategy_spec(cell.strategy), accelerator_name(cell.accelerator)
    if spec.needs_cuda and accelerator != "cuda":
        kind = "DeepSpeed" if spec.needs_deepspeed else "FSDP"
        return f"Lightning's {kind} strategy needs CUDA devices; it does not run on CPU"
    if accelerator == "cuda" and machine.cuda_devices == 0:
        return "no CUDA device on this machine"
    if spec.needs_deepspeed and not machine.deepspeed:
        return "deepspeed is not installed (pip install deepspeed)"
    if accelerator == "cuda" and cell.precision.startswith("bf16") and not machine.cuda_bf16:
        return "this GPU does not support bf16"
    if accelerator == "cpu" and cell.precision.startswith("bf16") and not machine.cpu_bf16:
        return (f"{NO_BF16_KERNELS}: its bf16 matmuls fall back to generic code some 200x "
                f"slower than fp32, so a {cell.precision} cell would take hours")
    if getattr(cell, "compile", "none") != "none" and not machine.can_compile:
        return ("torch.compile builds generated code (Triton's launcher on CUDA, C++ kernels "
                "on CPU) and needs a C compiler and Python.h; this machine lacks one "
                "(install gcc and python3-dev)")
    launched = machine.launched_world_size is not None and cell.devices * cell.num_nodes > 1
    if why := why_no_allocator(getattr(cell, "malloc", "system"), machine.glibc,
                               machine.jemalloc_preloaded if launched else machine.jemalloc,
                               launched):
        return why
    if spec.offload and not machine.can_build_cpu_adam:
        lacks = ", ".join(machine.cpu_adam_lacks) or "its tools"
        return ("DeepSpeed offload needs its cpu_adam op: prebuilt (DS_BUILD_CPU_ADAM=1 pip "
                "install deepspeed) or built on first use, which needs ninja on PATH, a C++ "
                f"compiler and Python.h; it is not prebuilt here, and this machine lacks {lacks}")
    return None


def _refused_combination(cell: CellLike, machine: Machine) -> str | None:
    """Combinations that Lightning or the libraries refuse, or would silently change."""
    spec, accelerator = strategy_spec(cell.strategy), accelerator_name(cell.accelerator)
    if accelerator == "cpu" and cell.precision == "16-mixed":
        return ("fp16 AMP is not supported on CPU (Lightning would silently run "
                "bf16-mixed instead)")
    if spec.needs_deepspeed and getattr(cell, "compile", "none") != "none":
        return ("Lightning refuses a compiled model under DeepSpeedStrategy (only single "
                "device, DDP and FSDP support torch.compile)")
    if spec.name == "raw" and cell.devices * cell.num_nodes > 1:
        return "the raw PyTorch loop runs on one device only"
    if not spec.lightning and getattr(cell, "mode", "throughput") != "throughput":
        return "the hand-written loops measure throughput only"
    if spec.engine and getattr(cell, "loader", "tensor") == "torchvision":
        return ("the engine controls shard the tensor and device loaders by rank; use one "
                "of those (the torchvision loader needs Lightning's DistributedSampler)")
    if spec.engine == "deepspeed" and getattr(cell, "compile", "none") != "none":
        return "the DeepSpeed engine control does not compile (as its Lightning cell cannot)"
    if spec.offload and getattr(cell, "optimizer", "adam") != "adam":
        return ("DeepSpeed offload runs its own CPU Adam; optimizer "
                f"{getattr(cell, 'optimizer', '?')!r} would be silently replaced")
    return None


def _not_in_this_launch(cell: CellLike, machine: Machine) -> str | None:
    world = cell.devices * cell.num_nodes
    if machine.launched_world_size is not None:
        # A one-device cell runs on rank 0 alone (bench.orchestrate.launched): the
        # scaling reference of the launch's multi-device cells.
        if world == 1:
            return None
        if world != machine.launched_world_size or cell.num_nodes != machine.launched_nodes:
            return (f"launched with {machine.launched_world_size} processes on "
                    f"{machine.launched_nodes} node(s); this cell needs {cell.devices} "
                    f"per node on {cell.num_nodes} node(s)")
        return None
    if cell.num_nodes > 1:
        return "multi-node cells need a torchrun or SLURM launch on every node"
    accelerator = accelerator_name(cell.accelerator)
    available = machine.cuda_devices if accelerator == "cuda" else machine.cpu_count
    unit = "CUDA devices" if accelerator == "cuda" else "CPU cores"
    if cell.devices > available:
        return f"needs {cell.devices} {unit}, this machine has {available}"
    return None


def build_strategy(cell: CellLike) -> Any:
    """The ``strategy=`` argument for ``lightning.Trainer``."""
    spec = strategy_spec(cell.strategy)
    if spec.name == "single":
        return "auto"
    if spec.name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # Default DDP settings: the comparison is of strategies as users run them.
        return DDPStrategy()
    if spec.name == "fsdp":
        from strategies.fsdp import fsdp_strategy

        return fsdp_strategy(cell.precision)
    if spec.needs_deepspeed:
        from strategies.deepspeed import deepspeed_strategy

        return deepspeed_strategy(spec.zero_stage or 1, spec.offload, cell.precision,
                                  lr=cell.lr, batch_size=cell.batch_size)
    raise ValueError(f"strategy {spec.name!r} is not run through a Lightning Trainer")


def trainer_arguments(cell: CellLike) -> dict[str, Any]:
    """accelerator, devices, num_nodes, strategy and precision for ``Trainer(...)``."""
    return {
        "accelerator": accelerator_name(cell.accelerator),
        "devices": cell.devices,
        "num_nodes": cell.num_nodes,
        "strategy": build_strategy(cell),
        "precision": precision_name(cell.precision),
    }
