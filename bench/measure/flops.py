"""FLOPs of one training sample, counted by torch rather than by hand."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def flops_per_training_sample(net_factory: Any, batch_size: int = 8) -> float:
    """Forward + backward FLOPs of one sample, counted by torch's FlopCounterMode on a
    copy of the network on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        net = net_factory()
        images = torch.randn(batch_size, 1, 28, 28)
        labels = torch.randint(0, 10, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(net(images), labels).backward()
    return counter.get_total_flops() / batch_size
