"""bench.measure.hardware: the fingerprint of this machine's CPU."""

from __future__ import annotations

import os
from pathlib import Path

from bench.measure.env import env_key
from bench.measure.hardware import _first_cpu, cpu_fingerprint, cpuinfo_fingerprint, fingerprint

# The flags out of ISA_FLAGS' order, with ones that do not decide kernels (fpu, ssse3).
X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu amx_tile avx2 ssse3 sse4_2 avx512f fma avx avx512_bf16

processor\t: 1
vendor_id\t: SomethingElse
"""

# An arm64 VM (Neoverse N1): no family, no model name; the part and variant number it.
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
"""


def test_first_processor_block_is_read() -> None:
    info = _first_cpu(X86)
    assert info["vendor_id"] == "AuthenticAMD" and info["stepping"] == "1"
    assert "amx_tile" in info["flags"]


def test_an_x86_cpuinfo_gives_family_model_stepping_and_the_isa_in_a_fixed_order() -> None:
    assert cpuinfo_fingerprint(X86) == {
        "vendor": "AuthenticAMD", "family": "25", "model": "17", "stepping": "1",
        "model_name": "AMD EPYC", "isa": "sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile"}


def test_an_arm_cpuinfo_gives_implementer_part_and_variant() -> None:
    assert cpuinfo_fingerprint(ARM) == {
        "vendor": "0x41", "family": None, "model": "0xd0c", "stepping": "0x3",
        "model_name": None, "isa": "asimd asimddp"}


def test_no_cpuinfo_gives_an_empty_fingerprint() -> None:
    assert cpuinfo_fingerprint("") == {"vendor": None, "family": None, "model": None,
                                       "stepping": None, "model_name": None, "isa": ""}


def test_this_machines_fingerprint_adds_cores_memory_and_a_model_name() -> None:
    cpu = cpu_fingerprint()
    assert cpu["cores"] == os.cpu_count()
    assert cpu["cores_usable"] == len(os.sched_getaffinity(0))
    assert cpu["model_name"]  # platform's name where /proc/cpuinfo has none (arm)
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total_kib = next(int(line.split()[1]) for line in meminfo.read_text().splitlines()
                         if line.startswith("MemTotal:"))
        assert abs(cpu["memory_gib"] - total_kib / 1024**2) <= 0.05
    assert set(fingerprint("cpu")) == {"cpu"}  # a CPU cell says nothing of the GPUs
    assert set(fingerprint("cuda")) == {"cpu", "gpus"}
    assert env_key("cpu")["hardware"] == {"cpu": cpu}
