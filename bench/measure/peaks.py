"""Peak FLOP/s that MFU divides by: a dense datasheet figure for a known GPU, or a
matmul calibrated on this CPU in this process."""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.measure.dtypes import dtypes
from bench.record import write_json_atomic

# Dense (no structured sparsity) tensor throughput per GPU, TFLOP/s, from the
# vendors' datasheets; where a datasheet prints only the 2:4-sparse tensor figure
# (marked *), the dense one is half of it. "tf32" applies to float32 matmuls when
# torch allows TF32. tests/bench/measure/test_peaks.py checks these against the
# datasheets' figures, typed there independently.
DENSE_TFLOPS: dict[str, dict[str, float]] = {
    "b200": {"fp32": 75.0, "tf32": 1100.0, "bf16": 2250.0, "fp16": 2250.0},
    "h200 nvl": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    "h200": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
    "gh200": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},
    "h100 nvl": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    "h100 pcie": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5, "fp16": 756.5},
    "h100": {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5},  # SXM5
    "a100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "l40s": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05},
    "l4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
    "a10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
    "v100s pcie": {"fp32": 16.4, "fp16": 130.0},
    "v100 pcie": {"fp32": 14.0, "fp16": 112.0},
    "v100": {"fp32": 15.7, "fp16": 125.0},  # SXM2
    "t4": {"fp32": 8.1, "fp16": 65.0},
}
_DTYPE_KEYS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


# Device-name patterns, most specific first.
_GPU_PATTERNS = [(key, re.compile(pattern)) for key, pattern in (
    ("b200", r"b200"), ("gh200", r"gh200"), ("h200 nvl", r"h200.*nvl"), ("h200", r"h200"),
    ("h100 nvl", r"h100.*nvl"), ("h100 pcie", r"h100.*pcie"), ("h100", r"h100"),
    ("a100", r"a100"), ("l40s", r"l40s"), ("l4", r"\bl4\b"), ("a10", r"\ba10\b"),
    ("v100s pcie", r"v100s"), ("v100 pcie", r"v100.*pcie"), ("v100", r"v100"),
    ("t4", r"\bt4\b"),
)]


def gpu_table_key(device_name: str) -> str | None:
    """Our table's key for a CUDA device name, e.g. 'NVIDIA H100 80GB HBM3' -> 'h100'."""
    name = device_name.lower()
    return next((key for key, pattern in _GPU_PATTERNS if pattern.search(name)), None)


def table_peak_tflops(device_name: str, dtype: torch.dtype, tf32: bool) -> tuple[float | None, str]:
    """(peak, source) from the datasheet table; peak None with the reason when unknown."""
    key = gpu_table_key(device_name)
    if key is None:
        return None, f"unknown GPU {device_name!r}: no datasheet peak, MFU not computed"
    dtype_key = _DTYPE_KEYS.get(dtype)
    if dtype_key == "fp32" and tf32 and "tf32" in DENSE_TFLOPS[key]:
        dtype_key = "tf32"
    peak = DENSE_TFLOPS[key].get(dtype_key or "")
    if peak is None:
        return None, f"no datasheet peak for {dtype} on {device_name}, MFU not computed"
    return peak, f"table:{key}:{dtype_key}"


def calibrate_cpu_tflops(dtype: torch.dtype, size: int = 2048, seconds: float = 0.2,
                        repeats: int = 5) -> float:
    """The median of ``repeats`` timings (each at least ``seconds``) of a square matmul
    in ``dtype`` on this process's threads, after a warm-up: what this CPU does for
    dense GEMM. The median, not the best: one lucky burst would set MFU's scale."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    flops = 2.0 * size**3
    for _ in range(2):
        a @ b
    rates = []
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while True:
            a @ b
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        rates.append(flops * count / elapsed)
    return statistics.median(rates) / 1e12


def cpu_calibration_key(dtype: torch.dtype, ranks_here: int) -> str:
    """What a CPU calibration depends on: the dtype, the threads of each rank and how
    many ranks share the machine (they calibrate side by side, as they train)."""
    return f"cpu {_DTYPE_KEYS.get(dtype, str(dtype))} threads={torch.get_num_threads()} " \
           f"ranks={ranks_here}"


def _read_peaks(path: Path | None) -> dict[str, float]:
    try:
        return json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}


def cpu_peak_tflops(dtype: torch.dtype, peaks_file: Path | None, ranks_here: int = 1,
                    rank: int = 0, barrier: Callable[[], None] = lambda: None
                    ) -> tuple[float, str]:
    """This run's calibrated CPU peak for ``dtype``: measured by the first cell that
    needs it and kept in the run's ``peaks_file``, so every cell of the run divides
    by the same number. Every rank reads the file before any writes it (``barrier``)."""
    key = cpu_calibration_key(dtype, ranks_here)
    known = _read_peaks(peaks_file).get(key)
    barrier()
    if known is not None:
        return known, f"calibrated ({key}, this run's)"
    peak = calibrate_cpu_tflops(dtype)
    if peaks_file is not None and rank == 0:
        write_json_atomic(peaks_file, _read_peaks(peaks_file) | {key: peak})
    return peak, f"calibrated ({key})"


def tf32_matmul_allowed() -> bool:
    """Whether float32 CUDA matmuls may run in TF32. On torch >= 2.9 this reads the new
    ``fp32_precision`` setting: reading the legacy ``allow_tf32`` raises a RuntimeError
    once anything has used the new API."""
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)
    if precision is None:  # torch < 2.9
        return bool(matmul.allow_tf32) or torch.get_float32_matmul_precision() != "highest"
    if precision == "none":  # inherits the global setting
        precision = getattr(torch.backends, "fp32_precision", "none")
    return precision == "tf32"


def device_peak_tflops(device: torch.device, precision: str, peaks_file: Path | None = None,
                       ranks_here: int = 1, rank: int = 0,
                       barrier: Callable[[], None] = lambda: None) -> tuple[float | None, str]:
    """Peak of one device (one rank) for ``precision``'s compute dtype, and its source.
    On CPU it is calibrated once per run (see ``cpu_peak_tflops``)."""
    dtype = dtypes(precision).compute
    if device.type == "cuda":
        tf32 = tf32_matmul_allowed()
        return table_peak_tflops(torch.cuda.get_device_name(device), dtype, tf32)
    if device.type == "cpu":
        return cpu_peak_tflops(dtype, peaks_file, ranks_here, rank, barrier)
    return None, f"no peak known for {device.type} devices, MFU not computed"
