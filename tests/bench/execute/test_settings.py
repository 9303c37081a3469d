"""bench.execute.settings: the per-process choices a cell makes and records."""

from __future__ import annotations

import os

import pytest
import torch

from bench.execute.settings import apply_process_settings, loader_workers, threads_per_rank
from bench.matrix import Cell

CORES = len(os.sched_getaffinity(0))


def test_the_ranks_on_a_machine_split_its_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads_per_rank(Cell(devices=1)) == CORES
    assert threads_per_rank(Cell(strategy="ddp", devices=2)) == max(1, CORES // 2)
    assert threads_per_rank(Cell(strategy="ddp", devices=64)) == 1  # never zero
    # GPU ranks too: they feed their device and run cpu_adam under offload
    assert threads_per_rank(Cell(accelerator="cuda", devices=1)) == CORES
    assert threads_per_rank(Cell(accelerator="cuda", strategy="ddp", devices=8)) == \
        max(1, CORES // 8)


def test_under_a_launcher_its_local_ranks_split_the_cores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: 2 ranks on this node
    assert threads_per_rank(Cell(accelerator="cuda", strategy="ddp", devices=2)) == \
        max(1, CORES // 2)
    assert threads_per_rank(Cell(accelerator="cuda", devices=1)) == max(1, CORES // 2)


def test_only_the_torchvision_loader_on_cuda_gets_workers() -> None:
    assert loader_workers(Cell(accelerator="cuda", loader="torchvision")) == 4
    assert loader_workers(Cell(accelerator="cpu", loader="torchvision")) == 0
    assert loader_workers(Cell(accelerator="cuda", loader="device")) == 0


def test_the_settings_applied_are_the_settings_recorded() -> None:
    before = torch.get_num_threads(), torch.get_float32_matmul_precision()
    try:
        chosen = apply_process_settings(Cell(matmul_precision="high", channels_last=True))
        assert chosen == {"num_threads": torch.get_num_threads(), "matmul_precision": "high",
                          "cudnn_allow_tf32": True, "channels_last": True, "malloc": "system",
                          "loader_workers": 0}
    finally:
        torch.set_num_threads(before[0])
        torch.set_float32_matmul_precision(before[1])
