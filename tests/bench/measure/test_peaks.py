"""bench.measure.peaks: datasheet peaks are the DENSE figures, names map to the right part,
unknown parts say why there is no MFU, and the CPU calibration measures something."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from bench.measure import peaks as peaks_module
from bench.measure.dtypes import dtypes
from bench.measure.peaks import (
    DENSE_TFLOPS,
    calibrate_cpu_tflops,
    cpu_calibration_key,
    device_peak_tflops,
    gpu_table_key,
    table_peak_tflops,
    tf32_matmul_allowed,
)

# What torch.cuda.get_device_name() returns on each part, and the datasheet figures
# for it, typed from the vendors' datasheets (not from bench.measure.peaks). A "*"
# figure is the datasheet's 2:4-sparse tensor number; the dense one is half.
#   H100 SXM5 / PCIe / NVL: NVIDIA H100 Tensor Core GPU datasheet (2023): FP32 67 /
#     51 / 60; TF32 989* / 756* / 835*; BF16 and FP16 1979* / 1513* / 1671*.
#   H200 SXM / NVL: NVIDIA H200 datasheet (2024): FP32 67 / 60; TF32 989* / 835*;
#     BF16 and FP16 1979* / 1671*. GH200: the same Hopper GPU as H200 SXM.
#   A100 (SXM4 and PCIe, 40 and 80 GB): NVIDIA A100 datasheet: FP32 19.5, TF32 156,
#     BF16 and FP16 312 (dense; 312* / 624* sparse).
#   L40S: NVIDIA L40S datasheet: FP32 91.6, TF32 183, BF16 and FP16 362.05.
#   L4: NVIDIA L4 datasheet: FP32 30.3, TF32 120*, BF16 and FP16 242*.
#   A10: NVIDIA A10 datasheet: FP32 31.2, TF32 62.5, BF16 and FP16 125.
#   V100 SXM2 / PCIe / V100S PCIe: NVIDIA V100 datasheet: FP32 15.7 / 14 / 16.4,
#     Tensor (FP16) 125 / 112 / 130.
#   T4: NVIDIA T4 datasheet: FP32 8.1, mixed precision (FP16) 65.
#   B200: NVIDIA HGX B200 datasheet, per GPU: FP32 75, TF32 2.2 PF*, BF16 and FP16
#     4.5 PF*.
DATASHEET: list[tuple[str, str, dict[str, float]]] = [
    ("NVIDIA H100 80GB HBM3", "h100",
     {"fp32": 67, "tf32": 989 / 2, "bf16": 1979 / 2, "fp16": 1979 / 2}),
    ("NVIDIA H100 PCIe", "h100 pcie",
     {"fp32": 51, "tf32": 756 / 2, "bf16": 1513 / 2, "fp16": 1513 / 2}),
    ("NVIDIA H100 NVL", "h100 nvl",
     {"fp32": 60, "tf32": 835 / 2, "bf16": 1671 / 2, "fp16": 1671 / 2}),
    ("NVIDIA H200", "h200", {"fp32": 67, "tf32": 989 / 2, "bf16": 1979 / 2, "fp16": 1979 / 2}),
    ("NVIDIA H200 NVL", "h200 nvl",
     {"fp32": 60, "tf32": 835 / 2, "bf16": 1671 / 2, "fp16": 1671 / 2}),
    ("NVIDIA GH200 480GB", "gh200",
     {"fp32": 67, "tf32": 989 / 2, "bf16": 1979 / 2, "fp16": 1979 / 2}),
    ("NVIDIA A100-SXM4-80GB", "a100", {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312}),
    ("NVIDIA A100-SXM4-40GB", "a100", {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312}),
    ("NVIDIA A100 80GB PCIe", "a100", {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312}),
    ("NVIDIA L40S", "l40s", {"fp32": 91.6, "tf32": 183, "bf16": 362.05, "fp16": 362.05}),
    ("NVIDIA L4", "l4", {"fp32": 30.3, "tf32": 120 / 2, "bf16": 242 / 2, "fp16": 242 / 2}),
    ("NVIDIA A10", "a10", {"fp32": 31.2, "tf32": 62.5, "bf16": 125, "fp16": 125}),
    ("Tesla V100-SXM2-16GB", "v100", {"fp32": 15.7, "fp16": 125}),
    ("Tesla V100-SXM2-32GB", "v100", {"fp32": 15.7, "fp16": 125}),
    ("Tesla V100-PCIE-16GB", "v100 pcie", {"fp32": 14, "fp16": 112}),
    ("Tesla V100-PCIE-32GB", "v100 pcie", {"fp32": 14, "fp16": 112}),
    ("Tesla V100S-PCIE-32GB", "v100s pcie", {"fp32": 16.4, "fp16": 130}),
    ("Tesla T4", "t4", {"fp32": 8.1, "fp16": 65}),
    ("NVIDIA B200", "b200", {"fp32": 75, "tf32": 2200 / 2, "bf16": 4500 / 2, "fp16": 4500 / 2}),
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.mark.parametrize(("name", "key", "figures"), DATASHEET, ids=[d[0] for d in DATASHEET])
def test_each_part_gets_its_own_datasheet_dense_peak(name: str, key: str,
                                                     figures: dict[str, float]) -> None:
    assert gpu_table_key(name) == key
    for kind, figure in figures.items():
        dtype, tf32 = (torch.float32, True) if kind == "tf32" else (DTYPES[kind], False)
        assert table_peak_tflops(name, dtype, tf32) == (pytest.approx(figure),
                                                        f"table:{key}:{kind}"), kind
    for kind in set(DTYPES) - set(figures):  # a dtype the part has no tensor figure for
        assert table_peak_tflops(name, DTYPES[kind], False)[0] is None, kind


def test_every_table_row_is_checked_against_a_datasheet() -> None:
    assert {key for _, key, _ in DATASHEET} == set(DENSE_TFLOPS)


@pytest.mark.parametrize("name", [
    "NVIDIA GeForce RTX 4090", "NVIDIA L40",  # L40 is not an L4 nor an L40S
    "NVIDIA A40", "AMD Instinct MI300X", "",
    "NVIDIA A10G",  # AWS's part: no public datasheet, so no claimed peak
])
def test_unknown_gpu_has_no_key(name: str) -> None:
    assert gpu_table_key(name) is None


def test_t4_float32_stays_float32_when_tf32_is_allowed() -> None:
    assert table_peak_tflops("Tesla T4", torch.float32, True) == (8.1, "table:t4:fp32")


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


@pytest.mark.alone  # timings: no other test beside it (tests/scheduling.py)
def test_calibration_agrees_with_an_outside_timing() -> None:
    """The calibrated figure, against the same matmul timed here by hand."""
    size = 512
    calibrated = calibrate_cpu_tflops(torch.float32, size=size, seconds=0.05, repeats=3)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start, count = time.perf_counter(), 30
    for _ in range(count):
        a @ b
    by_hand = 2.0 * size**3 * count / (time.perf_counter() - start) / 1e12
    assert by_hand / 2 < calibrated < by_hand * 2


class MatmulDtypes(TorchFunctionMode):
    """Records the operand dtypes of every matmul run inside it (the real matmul runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[torch.dtype, ...]] = set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        if func in (torch.Tensor.__matmul__, torch.Tensor.matmul, torch.matmul, torch.mm):
            self.seen.add(tuple(arg.dtype for arg in args))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_calibration_multiplies_in_the_dtype_it_is_asked_for(dtype: torch.dtype) -> None:
    """A bf16 cell's MFU divides by a bf16 peak: fp32 GEMMs would set another scale."""
    with MatmulDtypes() as matmuls:
        calibrate_cpu_tflops(dtype, size=64, seconds=0.001, repeats=1)
    assert matmuls.seen == {(dtype, dtype)}


def test_cpu_peak_is_calibrated_once_per_run(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The first cell of a run calibrates and writes the run's peaks.json; the next
    cells divide by that same number; another dtype or rank count calibrates anew."""
    peaks = tmp_path / "peaks.json"
    calls: list[torch.dtype] = []
    calibrate = peaks_module.calibrate_cpu_tflops
    monkeypatch.setattr(peaks_module, "calibrate_cpu_tflops",
                        lambda dtype: calls.append(dtype) or calibrate(dtype, 256, 0.02, 3))
    cpu = torch.device("cpu")
    first, source = device_peak_tflops(cpu, "32-true", peaks)
    assert source.startswith("calibrated") and first is not None and first > 0
    assert json.loads(peaks.read_text()) == {cpu_calibration_key(torch.float32, 1): first}
    again, reused = device_peak_tflops(cpu, "32-true", peaks)
    assert again == first and "this run's" in reused and len(calls) == 1
    device_peak_tflops(cpu, "bf16-true", peaks)
    device_peak_tflops(cpu, "32-true", peaks, ranks_here=2)
    assert len(calls) == 3 and len(json.loads(peaks.read_text())) == 3
    assert calls == [torch.float32, torch.bfloat16, torch.float32]  # each precision's own


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
