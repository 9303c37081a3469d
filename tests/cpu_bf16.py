"""Whether this CPU trains in bf16 at speed. Where torch's oneDNN has no bf16 kernels
(an x86 CPU without AVX-512 or AMX) one bf16 step of the model takes tens of seconds:
the suite skips its CPU bf16 cells there (strategies.registry), and the tests whose
subject is bf16 arithmetic skip too, saying why."""

from __future__ import annotations

import pytest

from strategies.host import NO_BF16_KERNELS, cpu_has_bf16_kernels

CPU_BF16 = cpu_has_bf16_kernels()
needs_cpu_bf16 = pytest.mark.skipif(
    not CPU_BF16, reason=f"{NO_BF16_KERNELS}: one bf16 step takes tens of seconds here")
