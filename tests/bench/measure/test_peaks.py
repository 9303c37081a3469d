"""bench.measure.peaks: datasheet peaks are the DENSE figures, names map to the right part,
unknown parts say why there is no MFU, and the CPU calibration measures something."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bench.measure.dtypes import dtypes
from bench.measure.peaks import (
    DENSE_TFLOPS,
    calibrate_cpu_tflops,
    device_peak_tflops,
    gpu_table_key,
    table_peak_tflops,
    tf32_matmul_allowed,
)


@pytest.mark.parametrize(("name", "key"), [
    # torch.cuda.get_device_name() strings as the drivers report them
    ("NVIDIA H100 80GB HBM3", "h100"),  # SXM5
    ("NVIDIA H100 PCIe", "h100 pcie"),
    ("NVIDIA H100 NVL", "h100 nvl"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA H200 NVL", "h200 nvl"),
    ("NVIDIA GH200 480GB", "gh200"),  # not taken for an H200
    ("NVIDIA A100-SXM4-80GB", "a100"),
    ("NVIDIA A100 80GB PCIe", "a100"),
    ("NVIDIA A100-SXM4-40GB", "a100"),
    ("NVIDIA L4", "l4"),
    ("NVIDIA L40S", "l40s"),  # not taken for an L4
    ("NVIDIA A10G", "a10"),
    ("NVIDIA A10", "a10"),
    ("Tesla T4", "t4"),
    ("Tesla V100-SXM2-16GB", "v100"),
    ("NVIDIA B200", "b200"),
])
def test_gpu_table_key(name: str, key: str) -> None:
    assert gpu_table_key(name) == key


@pytest.mark.parametrize("name", [
    "NVIDIA GeForce RTX 4090", "NVIDIA L40",  # L40 is not an L4 nor an L40S
    "NVIDIA A40", "AMD Instinct MI300X", "",
])
def test_unknown_gpu_has_no_key(name: str) -> None:
    assert gpu_table_key(name) is None


@pytest.mark.parametrize(("name", "dtype", "tf32", "peak", "source"), [
    # dense, not the 2:4-sparse figures the datasheets print first
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, False, 989.4, "table:h100:bf16"),
    ("NVIDIA H100 80GB HBM3", torch.float16, False, 989.4, "table:h100:fp16"),
    ("NVIDIA H100 80GB HBM3", torch.float32, False, 66.9, "table:h100:fp32"),
    ("NVIDIA H100 80GB HBM3", torch.float32, True, 494.7, "table:h100:tf32"),
    ("NVIDIA H100 PCIe", torch.bfloat16, False, 756.0, "table:h100 pcie:bf16"),
    ("NVIDIA H100 NVL", torch.bfloat16, False, 835.5, "table:h100 nvl:bf16"),
    ("NVIDIA H200", torch.bfloat16, False, 989.4, "table:h200:bf16"),
    ("NVIDIA GH200 480GB", torch.bfloat16, False, 989.4, "table:gh200:bf16"),
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, False, 312.0, "table:a100:bf16"),
    ("NVIDIA A100-SXM4-80GB", torch.float32, True, 156.0, "table:a100:tf32"),
    ("NVIDIA A100-SXM4-80GB", torch.float32, False, 19.5, "table:a100:fp32"),
    ("NVIDIA L4", torch.bfloat16, False, 121.0, "table:l4:bf16"),
    ("NVIDIA L40S", torch.bfloat16, False, 362.0, "table:l40s:bf16"),
    ("NVIDIA A10G", torch.float16, False, 125.0, "table:a10:fp16"),
    ("Tesla T4", torch.float16, False, 65.0, "table:t4:fp16"),
    # T4 has no TF32: float32 stays float32 even when TF32 is allowed
    ("Tesla T4", torch.float32, True, 8.1, "table:t4:fp32"),
])
def test_table_peak_is_dense(name: str, dtype: torch.dtype, tf32: bool, peak: float,
                             source: str) -> None:
    assert table_peak_tflops(name, dtype, tf32) == (peak, source)


def test_no_table_value_is_a_sparse_figure() -> None:
    # Every dense bf16/fp16 peak is at most 2x the dense tf32 one (sparse would be 4x).
    for key, row in DENSE_TFLOPS.items():
        if "tf32" in row and "bf16" in row:
            assert row["bf16"] <= 2.05 * row["tf32"], key
    assert table_peak_tflops("NVIDIA H100 80GB HBM3", torch.bfloat16, False)[0] != 1979.0


def test_unknown_gpu_gives_none_with_reason() -> None:
    peak, reason = table_peak_tflops("NVIDIA GeForce RTX 4090", torch.bfloat16, False)
    assert peak is None
    assert "unknown GPU" in reason and "RTX 4090" in reason and "MFU" in reason


def test_missing_dtype_gives_none_with_reason() -> None:
    peak, reason = table_peak_tflops("Tesla T4", torch.bfloat16, False)  # no bf16 on Turing
    assert peak is None
    assert "T4" in reason and "MFU" in reason


@pytest.mark.parametrize(("precision", "dtype"), [
    ("32-true", torch.float32), ("16-mixed", torch.float16),
    ("bf16-mixed", torch.bfloat16), ("bf16-true", torch.bfloat16),
])
def test_compute_dtype(precision: str, dtype: torch.dtype) -> None:
    assert dtypes(precision).compute is dtype


def test_calibrate_cpu_tflops_is_positive() -> None:
    tflops = calibrate_cpu_tflops(torch.float32, size=256, seconds=0.05)
    assert 0 < tflops < 1000


def test_cpu_device_peak_is_calibrated() -> None:
    peak, source = device_peak_tflops(torch.device("cpu"), "32-true")
    assert source == "calibrated"
    assert peak is not None and peak > 0


@pytest.fixture
def restore_matmul_precision() -> Any:
    matmul = torch.backends.cuda.matmul
    legacy = torch.get_float32_matmul_precision()
    new = getattr(matmul, "fp32_precision", None)
    yield matmul
    if new is not None:
        matmul.fp32_precision = new
    torch.set_float32_matmul_precision(legacy)


def test_tf32_follows_the_legacy_setting(restore_matmul_precision: Any) -> None:
    torch.set_float32_matmul_precision("high")
    assert tf32_matmul_allowed()
    torch.set_float32_matmul_precision("highest")
    assert not tf32_matmul_allowed()


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"),
                    reason="torch < 2.9 has no fp32_precision API")
def test_tf32_follows_the_new_setting(restore_matmul_precision: Any) -> None:
    # Once the new API is used, torch raises on reading the legacy allow_tf32 flag.
    restore_matmul_precision.fp32_precision = "tf32"
    assert tf32_matmul_allowed()
    restore_matmul_precision.fp32_precision = "ieee"
    assert not tf32_matmul_allowed()
