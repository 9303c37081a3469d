"""Shared fixtures: the real MNIST files and a skip for CUDA-only tests; how the two
xdist workers share the suite (tests/scheduling.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests import scheduling
from tests.e2e.launches import launch_env

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """MNIST_DATA_DIR, else ../shared/data beside the checkout. Read-only: never write there."""
    path = Path(os.environ.get("MNIST_DATA_DIR") or DEFAULT_DATA)
    if not (path / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.fail(f"MNIST not found under {path}; set MNIST_DATA_DIR (see README)")
    os.environ["MNIST_DATA_DIR"] = str(path)  # child processes (bench.cell) read it
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    scheduling.check_units(items)
    scheduling.heavy_first(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    with scheduling.exclusive_if_alone(item):
        return (yield)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "loadscope":
        return None  # another --dist asked for on the command line: xdist's own
    return scheduling.make_scheduler(config, log)


@pytest.fixture
def bench_env(data_dir: Path) -> dict[str, str]:
    """Environment for `python -m bench.run` subprocesses: the shared data, no wandb,
    unbuffered output, and no launcher or fault-injection variables leaking in."""
    return launch_env(data_dir)


@pytest.fixture(scope="session")
def execute_cell(data_dir: Path) -> Callable[..., dict[str, Any]]:
    """Run one cell in this process through ``bench.execute`` (as a torchrun rank does)
    and return its record as written to disk."""
    from bench.execute.lifecycle import ExecuteOptions, execute
    from bench.record import RunDir

    def run(cell: Any, run_dir: Path, save_weights: Path | None = None,
            repeat: int = 0) -> dict[str, Any]:
        options = ExecuteOptions("test", str(data_dir), save_weights=save_weights)
        return execute(cell, repeat, RunDir(Path(run_dir)), options).to_dict()

    return run
