"""bench.measure.hardware: the fingerprint of this machine's CPU."""

from __future__ import annotations

from pathlib import Path

from bench.measure.env import env_key
from bench.measure.hardware import _first_cpu, cpu_fingerprint, fingerprint

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile

processor\t: 1
vendor_id\t: SomethingElse
"""


def test_first_processor_block_is_read() -> None:
    info = _first_cpu(X86)
    assert info["vendor_id"] == "AuthenticAMD" and info["stepping"] == "1"
    assert "amx_tile" in info["flags"]


def test_this_machines_fingerprint_tells_what_a_model_name_does_not() -> None:
    cpu = cpu_fingerprint()
    assert cpu["cores"] >= 1 and cpu["model_name"]
    if Path("/proc/cpuinfo").is_file():
        assert cpu["vendor"] and cpu["model"] is not None
        assert cpu["memory_gib"] > 0
    # only the flags that decide the compute dtypes' kernels, in a fixed order
    assert "fpu" not in cpu["isa"].split()
    assert fingerprint("cpu") == {"cpu": cpu}
    assert env_key("cpu")["hardware"] == {"cpu": cpu}
