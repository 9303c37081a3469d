"""Are two runs on the same hardware, with the same libraries?

A pair compare must not read a hardware change as a code change. Hostname and
device name are not enough (cloud VMs are all "vm", many CPUs all "AMD EPYC", a
container's hostname changes at every start), so the records carry the hardware's
fingerprint (bench.measure.hardware: CPU vendor, family, model, stepping, ISA
flags, cores, memory, caches; GPU name, SMs, memory, driver) and the calibrated
CPU peaks; every difference is named.

The fingerprint is compared per accelerator: the CPU part from any record, the GPU
part from CUDA records, and the device names over the cells both runs ran. A run
without a fingerprint cannot be checked, and is refused like different hardware.
The hostname is shown, never decisive.

Tolerances: memory within ``MEMORY_TOLERANCE`` (the kernel's share of a VM's memory
moves a little); calibrated peaks within ``PEAK_TOLERANCE`` x of each other (a
calibration is the median of five timings; back-to-back runs here move +-20%).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


def _parts(df: pd.DataFrame, part: str) -> list[Any]:
    """The distinct values of one part of the fingerprint ("cpu" or "gpus") in a run's
    records (ok ones first); the GPU part only from CUDA records."""
    rows = df
    if part == "gpus":
        rows = df[df.get("accelerator", pd.Series(index=df.index, dtype=object)) == "cuda"]
    found: list[Any] = []
    for value in _measured(rows).get("env_hardware", pd.Series(dtype=object)):
        if isinstance(value, dict) and value.get(part) is not None and value[part] not in found:
            found.append(value[part])
    return found


def cpu_identity(df: pd.DataFrame) -> str:
    """'AuthenticAMD 25/17/1 avx512_bf16' (vendor family/model/stepping, and the widest
    bf16/AMX flags) from a run's fingerprint; '-' for records without one."""
    prints = _parts(df, "cpu")
    if not prints:
        return "-"
    cpu = prints[0]
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


def part_differences(part: str, left: dict[str, Any], right: dict[str, Any],
                     name: str = "B") -> list[str]:
    """'cpu stepping: A 1 vs B 0', one phrase per field of one part that differs
    (``name``: what the second run is called)."""
    return [f"{part} {key}: A {left.get(key)} vs {name} {right.get(key)}"
            for key in dict.fromkeys([*left, *right])
            if not _same(key, left.get(key), right.get(key))]


def gpu_differences(gpus_a: list[dict[str, Any]], gpus_b: list[dict[str, Any]],
                    name: str = "B") -> list[str]:
    found = []
    if len(gpus_a) != len(gpus_b):
        found.append(f"gpu count: A {len(gpus_a)} vs {name} {len(gpus_b)}")
    for index, (left, right) in enumerate(zip(gpus_a, gpus_b, strict=False)):
        found += part_differences(f"gpu{index}", left, right, name)
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


@dataclass
class Mismatch:
    """What stands between two runs and a verdict."""

    refusals: list[str] = field(default_factory=list)  # different or unknown hardware
    versions: list[str] = field(default_factory=list)  # torch, Lightning: flagged only
    notes: list[str] = field(default_factory=list)  # shown, never decisive


def _devices(df: pd.DataFrame) -> dict[str, set[str]]:
    """cell id -> the device names its (ok, else any) records ran on."""
    measured = _measured(df)
    column = measured.get("env_device", pd.Series(index=measured.index, dtype=object))
    return {str(cell): set(names.dropna().astype(str))
            for cell, names in column.groupby(measured["cell_id"])}


def _device_differences(a: pd.DataFrame, b: pd.DataFrame, name: str) -> list[str]:
    devices_a, devices_b = _devices(a), _devices(b)
    pairs: dict[str, list[str]] = {}
    for cell in sorted(set(devices_a) & set(devices_b)):
        if devices_a[cell] and devices_b[cell] and devices_a[cell] != devices_b[cell]:
            pair = (f"device: A {', '.join(sorted(devices_a[cell]))} vs {name} "
                    f"{', '.join(sorted(devices_b[cell]))}")
            pairs.setdefault(pair, []).append(cell)
    return [f"{pair} ({len(cells)} cell(s), e.g. {cells[0]})" for pair, cells in pairs.items()]


def _fingerprint_check(a: pd.DataFrame, b: pd.DataFrame, name: str, found: Mismatch) -> None:
    """The CPU part (any record) and the GPU part (CUDA records), side against side."""
    for part in ("cpu", "gpus"):
        parts = {"A": _parts(a, part), name: _parts(b, part)}
        if part == "gpus" and not all(parts.values()):
            if any(parts.values()):  # only one side ran on a GPU: nothing to line up
                found.notes.append("only one run has CUDA cells: their GPUs are not compared")
            continue
        for side, values in parts.items():
            if not values:
                found.refusals.append(f"{side}'s records carry no hardware fingerprint "
                                      "(made before fingerprints existed?): the CPU model, "
                                      "stepping and ISA cannot be checked")
            elif len(values) > 1:
                found.notes.append(f"{side}'s records hold {len(values)} different "
                                   f"{part.rstrip('s').upper()} fingerprints (several machines?)")
        if parts["A"] and parts[name]:
            found.refusals += (part_differences("cpu", parts["A"][0], parts[name][0], name)
                               if part == "cpu"
                               else gpu_differences(parts["A"][0], parts[name][0], name))


def env_mismatch(a: pd.DataFrame, b: pd.DataFrame, name: str = "B") -> Mismatch:
    """What differs between run A and run ``name``: hardware (refused), versions
    (flagged), hostnames and anything unusual (notes)."""
    found = Mismatch()
    hosts = {side: _values(df, "hostname") for side, df in (("A", a), (name, b))}
    if hosts["A"] != hosts[name]:
        found.notes.append(f"hostname: A {', '.join(sorted(hosts['A'])) or '?'} vs {name} "
                           f"{', '.join(sorted(hosts[name])) or '?'} (not decisive: the "
                           "fingerprint is)")
    for key in VERSION_KEYS:
        in_a, in_b = _values(a, key), _values(b, key)
        if in_a != in_b:
            found.versions.append(f"{key}: A {', '.join(sorted(in_a)) or '?'} "
                                  f"vs {name} {', '.join(sorted(in_b)) or '?'}")
    found.refusals += _device_differences(a, b, name)
    _fingerprint_check(a, b, name, found)
    found.refusals += peak_differences(a, b, name)
    return found
