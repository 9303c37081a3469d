"""`--dry-run` with `--assume-gpus`: a GPU run planned on this CPU machine lists no
cell that is known to fail; each runs, or is skipped with its reason."""

from __future__ import annotations

import pytest

from bench import run


@pytest.mark.parametrize("preset, gpus, skipped", [
    ("gpu", 1, 9),  # DeepSpeed ZeRO 1/2/3 x 3 precisions x compile: Lightning refuses them
    ("gpu-check", 1, 0),
    ("multi-gpu", 8, 0),
])
def test_gpu_presets_plan_without_known_failures(preset: str, gpus: int, skipped: int,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = run.main(["--matrix", preset, "--dry-run", "--assume-gpus", str(gpus)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PROBLEM" not in out
    lines = [line for line in out.splitlines() if line.startswith("  ")]
    reasons = [line.split("skip: ", 1)[1] for line in lines if "skip: " in line]
    assert len(reasons) == skipped, reasons
    assert all("refuses a compiled model under DeepSpeedStrategy" in r for r in reasons)
    if preset == "multi-gpu":
        assert {line.split()[0].split("-")[1] for line in lines} == {"1x", "2x", "4x", "8x"}
        assert "cuda-1x-single-bf16-mixed-bs256-device" in out  # the scaling reference


def test_assume_gpus_only_plans(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--matrix", "gpu", "--assume-gpus", "1", "--out", "/nonexistent"]) == 2
    assert "--assume-gpus plans only: use it with --dry-run" in capsys.readouterr().err
