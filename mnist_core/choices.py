"""The workload's named choices, importable without torch or Lightning (the
orchestrator validates a matrix with them before any training process starts)."""

from __future__ import annotations

LOADERS = ("torchvision", "tensor", "device", "synthetic")
OPTIMIZERS = ("adam", "sgd")
# How the optimizer step is computed: torch's default choice, the multi-tensor
# ("foreach") kernels, or the single fused kernel. "fused" is the fastest where
# torch has it; the choice is a matrix axis so its effect is a measured row.
OPTIMIZER_IMPLS = ("default", "foreach", "fused")
