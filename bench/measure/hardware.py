"""The hardware's fingerprint: what tells two machines apart when their hostname and
model name do not (cloud VMs are all "vm", many CPUs are all "AMD EPYC").

Kept in every record (``env_key.hardware``); ``bench.compare`` refuses to judge two
runs whose fingerprints differ, naming the difference (bench.analyze.identity). The
calibrated CPU peaks are compared there too (they are in the records' metrics): two
machines with the same fingerprint but a peak far apart are not the same hardware.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

# The instruction-set flags that decide which kernels the compute dtypes get on a CPU
# (x86 /proc/cpuinfo "flags", arm "Features").
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
             "amx_int8", "asimd", "asimddp", "bf16", "i8mm", "sve", "sve2")
CPUINFO_KEYS = {"vendor_id": "vendor", "CPU implementer": "vendor", "cpu family": "family",
                "model": "model", "CPU part": "model", "stepping": "stepping",
                "CPU variant": "stepping", "model name": "model_name"}
SYS_CPU = Path("/sys/devices/system/cpu/cpu0/cache")


def _first_cpu(text: str) -> dict[str, str]:
    """The ``key: value`` lines of the first processor block of /proc/cpuinfo."""
    found: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            found[key.strip()] = value.strip()
    return found


def _caches() -> str | None:
    """E.g. 'L1d 32K, L1i 32K, L2 1024K, L3 32768K' (cpu0's view)."""
    parts = []
    for index in sorted(SYS_CPU.glob("index*")):
        try:
            level, kind, size = ((index / name).read_text().strip()
                                 for name in ("level", "type", "size"))
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        parts.append(f"L{level}{suffix} {size}")
    return ", ".join(parts) or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def cpuinfo_fingerprint(text: str) -> dict[str, Any]:
    """The part of the fingerprint that /proc/cpuinfo's text tells: vendor, family,
    model, stepping, model name (None where the text has no such line) and the ISA
    flags that matter, in ``ISA_FLAGS``' order whatever the text's. Apart from the
    file, so that a test can give it a known text."""
    info = _first_cpu(text)
    fingerprint: dict[str, Any] = {key: None for key in dict.fromkeys(CPUINFO_KEYS.values())}
    for key, name in CPUINFO_KEYS.items():
        if key in info and fingerprint[name] is None:
            fingerprint[name] = info[key]
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return fingerprint | {"isa": " ".join(flag for flag in ISA_FLAGS if flag in flags)}


@cache
def cpu_fingerprint() -> dict[str, Any]:
    try:
        fingerprint = cpuinfo_fingerprint(Path("/proc/cpuinfo").read_text())
    except OSError:
        fingerprint = cpuinfo_fingerprint("")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return fingerprint | {
        "model_name": fingerprint["model_name"] or platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "cores_usable": usable, "memory_gib": _memory_gib(),
        "caches": _caches()}


@cache
def driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.splitlines()[0].strip() if out.returncode == 0 and out.stdout else None


def gpu_fingerprint() -> list[dict[str, Any]]:
    """Each visible GPU: name, SMs, memory, compute capability; the driver once."""
    import torch  # here: bench.run imports this module before it wants torch (bench.measure.env)

    if not torch.cuda.is_available():
        return []
    driver = driver_version()
    found = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        found.append({"name": props.name, "sm_count": props.multi_processor_count,
                      "memory_gib": round(props.total_memory / 2**30, 1),
                      "capability": f"{props.major}.{props.minor}", "driver": driver})
    return found


def fingerprint(accelerator: str = "cpu") -> dict[str, Any]:
    """The CPU's fingerprint, and the GPUs' for a CUDA cell."""
    return {"cpu": cpu_fingerprint(),
            **({"gpus": gpu_fingerprint()} if accelerator == "cuda" else {})}
