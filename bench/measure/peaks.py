"""Peak FLOP/s that MFU divides by: a dense datasheet figure for a known GPU, or a
matmul calibrated on this CPU in this process."""

from __future__ import annotations

import re
import time

import torch

from bench.measure.dtypes import dtypes

# Dense (no structured sparsity) tensor throughput per GPU, TFLOP/s, from the
# vendors' datasheets. "tf32" applies to float32 matmuls when torch allows TF32.
# Lightning's own table lists some Hopper parts with their sparse figure, hence ours.
DENSE_TFLOPS: dict[str, dict[str, float]] = {
    "b200": {"fp32": 75.0, "tf32": 1100.0, "bf16": 2250.0, "fp16": 2250.0},
    "h200 nvl": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    "h200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "gh200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "h100 nvl": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    "h100 pcie": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "h100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "a100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "l40s": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0},
    "l4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
    "a10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
    "v100": {"fp32": 15.7, "fp16": 125.0},
    "t4": {"fp32": 8.1, "fp16": 65.0},
}
_DTYPE_KEYS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


# Device-name patterns, most specific first.
_GPU_PATTERNS = [(key, re.compile(pattern)) for key, pattern in (
    ("b200", r"b200"), ("gh200", r"gh200"), ("h200 nvl", r"h200.*nvl"), ("h200", r"h200"),
    ("h100 nvl", r"h100.*nvl"), ("h100 pcie", r"h100.*pcie"), ("h100", r"h100"),
    ("a100", r"a100"), ("l40s", r"l40s"), ("l4", r"\bl4\b"), ("a10", r"\ba10g?\b"),
    ("v100", r"v100"), ("t4", r"\bt4\b"),
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


def calibrate_cpu_tflops(dtype: torch.dtype, size: int = 2048, seconds: float = 0.3) -> float:
    """The best of three timed runs of a square matmul in ``dtype`` on this process's
    threads, after a warm-up: what this CPU can actually do for dense GEMM."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    flops = 2.0 * size**3
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while True:
            a @ b
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / 3:
                break
        best = max(best, flops * count / elapsed)
    return best / 1e12


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


def device_peak_tflops(device: torch.device, precision: str) -> tuple[float | None, str]:
    """Peak of one device (one rank) for ``precision``'s compute dtype, and its source."""
    dtype = dtypes(precision).compute
    if device.type == "cuda":
        tf32 = tf32_matmul_allowed()
        return table_peak_tflops(torch.cuda.get_device_name(device), dtype, tf32)
    if device.type == "cpu":
        return calibrate_cpu_tflops(dtype), "calibrated"
    return None, f"no peak known for {device.type} devices, MFU not computed"
