"""What each precision label means in dtypes, in one place: the dtype the weights
are stored in, the dtype the big matmuls run in (what MFU's peak is for), and the
autocast dtype (None: no autocast)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrecisionDtypes:
    param: torch.dtype
    compute: torch.dtype
    autocast: torch.dtype | None


PRECISION_DTYPES = {
    "32-true": PrecisionDtypes(torch.float32, torch.float32, None),
    "16-mixed": PrecisionDtypes(torch.float32, torch.float16, torch.float16),
    "bf16-mixed": PrecisionDtypes(torch.float32, torch.bfloat16, torch.bfloat16),
    "bf16-true": PrecisionDtypes(torch.bfloat16, torch.bfloat16, None),
}


def dtypes(precision: str) -> PrecisionDtypes:
    return PRECISION_DTYPES[precision]
