"""The FSDP cell: Lightning's FSDPStrategy, fully sharded, big Linear layers wrapped.

The model has 39.4 M parameters and 99.8 % of them sit in two Linear layers
(3136 -> 6272 and 6272 -> 3136, 19.7 M each); the rest (convolutions, attention,
the 3136 -> 10 head: about 60 k) is noise. Each wrapped layer is its own FSDP unit,
all-gathered just before its forward/backward and freed after, so the peak memory
is one big layer rather than the whole model; everything else lives in the root
unit, where a separate all-gather per tiny layer would cost more than it saves.

Why a size-based policy and not ``auto_wrap_policy={torch.nn.Linear}``: the class
policy matches by ``isinstance``, and ``MultiheadAttention.out_proj`` is a Linear
subclass whose ``forward`` is never called (attention reads ``out_proj.weight``
directly), so FSDP would never unshard it. ``size_based_auto_wrap_policy`` keeps
``MultiheadAttention`` whole (its ``FORCE_LEAF_MODULES``) and wraps by size.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch.strategies import FSDPStrategy

# Wrap a module once it holds at least this many not-yet-wrapped parameters: the
# two 19.7 M Linear layers qualify; the 31 k head, the convolutions and attention
# (all under 20 k) stay in the root unit.
MIN_PARAMS_TO_WRAP = 1_000_000

# Kept local (not imported from registry) so this module stays a leaf; the
# registry validates the name before it gets here anyway.
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "bf16-true")


def fsdp_strategy(precision: str) -> FSDPStrategy:
    """Lightning's FSDPStrategy for one cell. Constructing it needs no CUDA and starts
    nothing; the Trainer refuses it with a non-CUDA accelerator (and torch's FSDP
    itself needs an accelerator device), so ``registry.why_skipped`` keeps FSDP
    cells off CPU.

    ``precision`` is only validated: mixed precision is left to Lightning's
    FSDPPrecision plugin, which the Trainer builds from its own ``precision=``
    argument and which FSDPStrategy asks for a ``MixedPrecision`` when we pass none
    (16-mixed / bf16-mixed: params, gradient reduction and buffers in fp16 / bf16,
    under autocast, with a ShardedGradScaler for fp16). Setting ``mixed_precision``
    here as well would give two sources of truth that can disagree with the cell.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

    policy = functools.partial(size_based_auto_wrap_policy, min_num_params=MIN_PARAMS_TO_WRAP)
    # use_orig_params stays at Lightning's default (True), which torch.compile and
    # configure_optimizers(self.parameters()) need.
    return FSDPStrategy(auto_wrap_policy=policy, sharding_strategy="FULL_SHARD")


def wrapped_units(net: Any) -> list[Any]:
    """The modules the ``fsdp`` cell's policy makes FSDP units, for FSDP2's
    ``fully_shard`` in the engine control: leaves (MultiheadAttention counts as one)
    holding at least MIN_PARAMS_TO_WRAP parameters. For MnistNet: the two big Linears."""
    from torch import nn

    units = []
    for module in net.modules():
        leaf = isinstance(module, nn.MultiheadAttention) or not any(module.children())
        inside_attention = any(isinstance(outer, nn.MultiheadAttention) and module is not outer
                               and module in outer.modules() for outer in net.modules())
        size = sum(p.numel() for p in module.parameters())
        if leaf and not inside_attention and size >= MIN_PARAMS_TO_WRAP:
            units.append(module)
    return units
