"""bench.analyze.gate through ``bench.compare --fail-on-regression``: every way a
change can be worse exits 1, with doctored records; and the hardware identity per
accelerator (bench.analyze.identity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import compare
from tests.bench.analyze.test_compare import FAST, failed, record, write

GATE = "--fail-on-regression"


def repeats(values: tuple[float, ...], **kwargs: Any) -> list[dict[str, Any]]:
    return [record("single", 1, "32-true", v, i, **kwargs) for i, v in enumerate(values)]


def with_metrics(rec: dict[str, Any], **metrics: Any) -> dict[str, Any]:
    rec["metrics"] |= metrics
    return rec


def gate(tmp_path: Path, a: list[dict[str, Any]], b: list[dict[str, Any]],
         *flags: str) -> int:
    return compare.main([str(write(tmp_path / "a", a)), str(write(tmp_path / "b", b)),
                         GATE, *flags])


def test_a_partly_failed_cell_fails_the_gate(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """2 of 3 repeats "loss is NaN", the third fine and as fast as A."""
    b = repeats((100, 101, 99))
    b[0], b[1] = failed(b[0], reason="loss is NaN"), failed(b[1], reason="loss is NaN")
    assert gate(tmp_path, repeats((100, 101, 99)), b) == 1
    err = capsys.readouterr().err
    assert f"regression in B: {FAST}: partly broken: 2 of 3 repeats failed: loss is NaN" in err


def test_a_cell_missing_from_b_fails_unless_allowed(tmp_path: Path) -> None:
    a = [*repeats((100, 101, 99)), *(record("single", 1, "bf16-mixed", 150, i)
                                     for i in range(3))]
    assert gate(tmp_path, a, repeats((100, 101, 99))) == 1
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b"), GATE,
                         "--allow-missing"]) == 0


def test_a_changed_batch_size_is_a_missing_cell(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The cell id holds the batch size: A's cell is gone, B's is new."""
    b = []
    for rec in repeats((100, 101, 99)):
        rec["cell"]["batch_size"] = 32
        rec["cell_id"] = rec["cell_id"].replace("bs64", "bs32")
        b.append(rec)
    assert gate(tmp_path, repeats((100, 101, 99)), b) == 1
    assert f"missing in B: {FAST}" in capsys.readouterr().err


def test_a_collapsed_accuracy_fails_on_any_cell(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """val_acc 0.87 -> 0.098 at the same speed: the model stopped learning."""
    a = [with_metrics(r, val_acc=0.87) for r in repeats((100, 101, 99))]
    b = [with_metrics(r, val_acc=0.098) for r in repeats((100, 101, 99))]
    assert gate(tmp_path, a, b) == 1
    assert "val_acc collapsed: 0.870 -> 0.098" in capsys.readouterr().err
    # a throughput cell's sanity val_acc may move a few points: not a collapse
    ok = [with_metrics(r, val_acc=0.80) for r in repeats((100, 101, 99))]
    assert compare.main([str(tmp_path / "a"), str(write(tmp_path / "c", ok)), GATE]) == 0


def accuracy_cell(values: tuple[float, ...], test_acc: float) -> list[dict[str, Any]]:
    out = []
    for rec in repeats(values):
        rec["cell"]["mode"] = "accuracy"
        rec["cell_id"] += "-acc0.98"
        out.append(with_metrics(rec, val_acc=test_acc, test_acc=test_acc))
    return out


def test_an_accuracy_drop_beyond_its_threshold_fails_accuracy_cells(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a", accuracy_cell((100, 101, 99), 0.985))
    drop = write(tmp_path / "b", accuracy_cell((100, 101, 99), 0.965))
    small = write(tmp_path / "c", accuracy_cell((100, 101, 99), 0.980))
    assert compare.main([str(a), str(drop), GATE]) == 1
    assert "test_acc -2.0 points (beyond 1)" in capsys.readouterr().err
    assert compare.main([str(a), str(small), GATE]) == 0
    assert compare.main([str(a), str(drop), GATE, "--accuracy-threshold", "3"]) == 0


def test_strict_fails_an_inconclusive_slowdown(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """One repeat a side at -31.5%: no test can call it, --strict fails it anyway."""
    assert gate(tmp_path, repeats((100,)), repeats((68.5,))) == 0
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b"), GATE, "--strict"]) == 1
    assert "inconclusive -31.5% (--strict)" in capsys.readouterr().err


def test_a_median_that_disagrees_with_the_test_is_not_faster(tmp_path: Path) -> None:
    """A = [1, 1, 2]x, B = 1.10x: the medians say +10%, the geometric means -12.7%."""
    assert gate(tmp_path, repeats((100, 100, 200)), repeats((110, 110, 110)),
                "--strict") == 1  # inconclusive, beyond -5%: strict fails it


def test_a_run_whose_cpu_cell_failed_is_still_the_same_machine(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CPU part of the fingerprint comes from any record, the GPU part from CUDA
    records; a failed CPU cell on one side does not make the GPUs a difference."""
    gpus = [{"name": "NVIDIA H100", "sm_count": 132, "memory_gib": 79.6,
             "capability": "9.0", "driver": "550.54"}] * 8
    cpu = record("single", 1, "32-true", 100, 0)["env_key"]["hardware"]["cpu"]

    def cuda(values: tuple[float, ...], prints: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for rec in repeats(values, device="NVIDIA H100"):
            rec["cell"]["accelerator"] = "cuda"
            rec["cell_id"] = rec["cell_id"].replace("cpu-", "cuda-")
            rec["env_key"]["hardware"] = {"cpu": cpu, "gpus": prints}
            out.append(rec)
        return out

    a = write(tmp_path / "a", [*repeats((100, 101, 99)), *cuda((5000, 5010, 4990), gpus)])
    b = write(tmp_path / "b", [*(failed(r) for r in repeats((100, 101, 99))),
                               *cuda((5000, 5010, 4990), gpus)])
    assert compare.main([str(a), str(b)]) == 0
    # four GPUs of another SM count: refused, naming it
    other = [g | {"sm_count": 114} for g in gpus[:4]]
    c = write(tmp_path / "c", [*repeats((100, 101, 99)), *cuda((5000, 5010, 4990), other)])
    assert compare.main([str(a), str(c)]) == 2
    err = capsys.readouterr().err
    assert "gpu count: A 8 vs B 4" in err and "gpu0 sm_count: A 132 vs B 114" in err


def test_the_hostname_is_shown_never_decisive(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A container's hostname changes at every start."""
    b = repeats((100, 101, 99))
    for rec in b:
        rec["env_key"]["hostname"] = "container-7f3a"
    assert gate(tmp_path, repeats((100, 101, 99)), b) == 0
    assert "hostname: A box vs B container-7f3a (not decisive" in capsys.readouterr().out
