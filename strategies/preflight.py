"""Build what a cell needs, without the hardware, to find problems before anything
trains: the Trainer's strategy object, the DeepSpeed config as DeepSpeed parses it,
and the precision plugin (``python -m bench.run --dry-run``)."""

from __future__ import annotations

from typing import Any

from strategies.registry import CellLike, build_strategy, strategy_spec


def precision_plugin(cell: CellLike) -> Any:
    """The precision plugin Lightning would use for the cell's strategy."""
    spec = strategy_spec(cell.strategy)
    if spec.needs_deepspeed:
        from lightning.pytorch.plugins.precision import DeepSpeedPrecision

        return DeepSpeedPrecision(cell.precision)  # type: ignore[arg-type]
    if spec.name == "fsdp":
        from lightning.pytorch.plugins.precision import FSDPPrecision

        return FSDPPrecision(cell.precision)  # type: ignore[arg-type]
    if cell.precision.endswith("-mixed"):
        from lightning.pytorch.plugins.precision import MixedPrecision

        return MixedPrecision(cell.precision, device=cell.accelerator)  # type: ignore[arg-type]
    if cell.precision == "bf16-true":
        from lightning.pytorch.plugins.precision import HalfPrecision

        return HalfPrecision("bf16-true")
    from lightning.pytorch.plugins.precision import Precision

    return Precision()


def build_problems(cell: CellLike) -> list[str]:
    """Everything that fails to build for ``cell``, one line each (empty: all built)."""
    spec = strategy_spec(cell.strategy)
    if not spec.lightning:
        return []  # the raw loop builds nothing ahead of time
    problems = []
    for what, build in (("strategy", lambda: build_strategy(cell)),
                        ("precision plugin", lambda: precision_plugin(cell)),
                        ("DeepSpeed config", lambda: parse_deepspeed_config(cell))):
        try:
            build()
        except Exception as error:
            problems.append(f"{what}: {type(error).__name__}: {error}")
    return problems


def parse_deepspeed_config(cell: CellLike) -> None:
    """DeepSpeed's own parsing and checking of the config the cell would use."""
    spec = strategy_spec(cell.strategy)
    if not spec.needs_deepspeed:
        return
    from deepspeed.runtime.config import DeepSpeedConfig

    from strategies.deepspeed import deepspeed_config

    DeepSpeedConfig(deepspeed_config(spec.zero_stage or 1, spec.offload, cell.precision,
                                     lr=cell.lr, batch_size=cell.batch_size))
