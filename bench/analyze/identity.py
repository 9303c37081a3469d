"""Are two runs on the same hardware, with the same libraries?

A pair compare must not read a hardware change as a code change. Hostname and
device name are not enough (cloud VMs are all "vm", many CPUs all "AMD EPYC"), so
the records carry the hardware's fingerprint (bench.measure.hardware: CPU vendor,
family, model, stepping, ISA flags, cores, memory, caches; GPU name, SMs, memory,
driver) and the calibrated CPU peaks; every difference is named.

Tolerances: memory within ``MEMORY_TOLERANCE`` (the kernel's share of a VM's memory
moves a little); calibrated peaks within ``PEAK_TOLERANCE`` x of each other (a
calibration is the median of five timings; back-to-back runs here move +-20%).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

MEMORY_TOLERANCE = 0.05
PEAK_TOLERANCE = 1.5
NAME_KEYS, VERSION_KEYS = ("hostname", "device"), ("torch", "lightning")


def _measured(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df["status"] == "ok"]
    return ok if len(ok) else df


def _values(df: pd.DataFrame, key: str) -> set[str]:
    column = _measured(df).get(f"env_{key}", pd.Series(dtype=str))
    return set(column.dropna().astype(str))


def _fingerprints(df: pd.DataFrame) -> list[dict[str, Any]]:
    column = _measured(df).get("env_hardware", pd.Series(dtype=object))
    found: list[dict[str, Any]] = []
    for value in column:
        if isinstance(value, dict) and value not in found:
            found.append(value)
    return found


def cpu_identity(df: pd.DataFrame) -> str:
    """'AuthenticAMD 25/17/1 avx512_bf16' (vendor family/model/stepping, and the widest
    bf16/AMX flags) from a run's fingerprint; '-' for records without one."""
    prints = _fingerprints(df)
    if not prints:
        return "-"
    cpu = prints[0].get("cpu") or {}
    isa = [flag for flag in str(cpu.get("isa") or "").split()
           if flag in ("avx512_bf16", "amx_bf16", "avx512_fp16", "sve", "bf16")]
    return " ".join([str(cpu.get("vendor")), "/".join(str(cpu.get(k)) for k in
                                                      ("family", "model", "stepping")), *isa])


def peaks_summary(df: pd.DataFrame) -> str:
    """'32-true 0.31, bf16-true 0.86' TFLOP/s per rank, calibrated CPU peaks of one rank."""
    peaks = calibrated_peaks(df)
    return ", ".join(f"{precision} {peak:.2g}" for (precision, ranks), peak in
                     sorted(peaks.items()) if ranks == 1) or "-"


def _same(key: str, left: Any, right: Any) -> bool:
    if key == "memory_gib" and isinstance(left, int | float) and isinstance(right, int | float):
        return abs(left - right) <= MEMORY_TOLERANCE * max(left, right)
    return left == right


def fingerprint_differences(a: dict[str, Any], b: dict[str, Any], name: str = "B") -> list[str]:
    """'cpu stepping: A 1 vs B 0', one phrase per field that differs (``name``: what
    the second run is called)."""
    found = []
    parts = {"cpu": (a.get("cpu") or {}, b.get("cpu") or {})}
    gpus_a, gpus_b = a.get("gpus") or [], b.get("gpus") or []
    if len(gpus_a) != len(gpus_b):
        found.append(f"gpu count: A {len(gpus_a)} vs {name} {len(gpus_b)}")
    parts |= {f"gpu{i}": pair for i, pair in enumerate(zip(gpus_a, gpus_b, strict=False))}
    for part, (left, right) in parts.items():
        found += [f"{part} {key}: A {left.get(key)} vs {name} {right.get(key)}"
                  for key in dict.fromkeys([*left, *right])
                  if not _same(key, left.get(key), right.get(key))]
    return found


def calibrated_peaks(df: pd.DataFrame) -> dict[tuple[str, int], float]:
    """(precision, ranks) -> the median calibrated CPU peak per rank, TFLOP/s."""
    ok = df[(df["status"] == "ok") & df.get("peak_source", pd.Series(dtype=str))
            .astype(str).str.startswith("calibrated")]
    if not len(ok):
        return {}
    per_rank = ok["peak_tflops"] / ok["world_size"].fillna(1)
    return {(str(precision), int(ranks)): float(values.median())
            for (precision, ranks), values in per_rank.groupby(
                [ok["precision"], ok["world_size"].fillna(1)])}


def peak_differences(a: pd.DataFrame, b: pd.DataFrame, name: str = "B") -> list[str]:
    peaks_a, peaks_b = calibrated_peaks(a), calibrated_peaks(b)
    found = []
    for key in sorted(set(peaks_a) & set(peaks_b)):
        low, high = sorted((peaks_a[key], peaks_b[key]))
        if low > 0 and high / low > PEAK_TOLERANCE:
            found.append(f"calibrated CPU peak {key[0]} ({key[1]} rank(s)): A "
                         f"{peaks_a[key]:.3g} vs {name} {peaks_b[key]:.3g} TFLOP/s per rank "
                         f"({high / low:.1f}x apart, over {PEAK_TOLERANCE}x)")
    return found


def env_mismatch(a: pd.DataFrame, b: pd.DataFrame, name: str = "B"
                 ) -> tuple[list[str], list[str], list[str]]:
    """(hardware differences, version differences, what could not be checked) between
    run A and run ``name``."""
    hardware, versions, unchecked = [], [], []
    for keys, found in ((NAME_KEYS, hardware), (VERSION_KEYS, versions)):
        for key in keys:
            in_a, in_b = _values(a, key), _values(b, key)
            if in_a != in_b:
                found.append(f"{key}: A {', '.join(sorted(in_a)) or '?'} "
                             f"vs {name} {', '.join(sorted(in_b)) or '?'}")
    prints_a, prints_b = _fingerprints(a), _fingerprints(b)
    if prints_a and prints_b:
        hardware += fingerprint_differences(prints_a[0], prints_b[0], name)
    for side, prints in (("A", prints_a), (name, prints_b)):
        if not prints:
            unchecked.append(f"{side}'s records carry no hardware fingerprint (older "
                             "records): the CPU model, stepping and ISA are unchecked")
        elif len(prints) > 1:
            unchecked.append(f"{side}'s records come from {len(prints)} different machines")
    hardware += peak_differences(a, b, name)
    return hardware, versions, unchecked
