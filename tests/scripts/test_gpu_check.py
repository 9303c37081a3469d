"""scripts/gpu_check.sh on a machine without a GPU: it stops at once, says why, and
exits non-zero (the GPU run itself is the script's job on a GPU machine)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_stops_at_once_with_a_clear_message(tmp_path: Path) -> None:
    result = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True,
                            text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "GPU_CHECK_SCRATCH": str(tmp_path),
                                 "HOME": str(tmp_path)} | _python_env())
    assert result.returncode == 2
    assert "no CUDA GPU here" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing installed, unpacked or run


def _python_env() -> dict[str, str]:
    import os
    import sys

    # python3 on PATH must be this interpreter (the one with torch installed).
    bin_dir = str(Path(sys.executable).parent)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin",
            **{k: v for k, v in os.environ.items() if k.startswith(("PYENV", "VIRTUAL_ENV"))}}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_it_asks_the_interpreter_named_by_python(tmp_path: Path) -> None:
    import sys

    marker = tmp_path / "asked"
    wrapper = tmp_path / "python-with-torch"
    wrapper.write_text(f'#!/bin/sh\ntouch "{marker}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True,
                            text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "GPU_CHECK_SCRATCH": str(scratch),
                                 "HOME": str(tmp_path), "PYTHON": str(wrapper)})
    assert result.returncode == 2 and "no CUDA GPU here" in result.stderr
    assert marker.exists()  # the check asked $PYTHON, not whatever python3 is on PATH


STAND_IN = """# CPU stand-ins for gpu-check's cells: the script's own test
accelerator = ["cpu"]
devices = [1]
strategy = ["raw", "single"]
precision = ["32-true"]
batch_size = [16, 8]
loader = ["tensor"]
steps = 3
warmup_steps = 1
warmup = "fixed"
"""


def records_in(tarball: Path) -> tuple[list[str], set[str]]:
    """The records and the file names inside a snapshot's run.tar.gz."""
    import tarfile

    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        [records] = [name for name in names if name.endswith("/records.jsonl")]
        handle = tar.extractfile(records)
        assert handle is not None
        return handle.read().decode().splitlines(), names


def mnist_tarball(data_dir: Path, scratch: Path) -> Path:
    """The packed MNIST a GPU machine is handed (MNIST/raw/*), packed here if absent."""
    import tarfile

    packed = data_dir / "mnist-raw.tar.gz"
    if packed.is_file():
        return packed
    packed = scratch / "mnist-raw.tar.gz"
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(data_dir / "MNIST" / "raw", arcname="MNIST/raw")
    return packed


@pytest.mark.slow
def test_a_check_cut_short_leaves_every_finished_cell_and_a_report(
        tmp_path: Path, data_dir: Path) -> None:
    import contextlib
    import json
    import os
    import signal
    import sys
    import time

    matrix, out = tmp_path / "stand-in.toml", tmp_path / "out"
    matrix.write_text(STAND_IN)
    env = {k: v for k, v in os.environ.items() if k != "MNIST_DATA_DIR"} | {
        "GPU_CHECK_STAND_IN": str(matrix), "GPU_CHECK_SCRATCH": str(tmp_path / "scratch"),
        "PYTHON": sys.executable, "WANDB_MODE": "disabled"}
    command = ["bash", "scripts/gpu_check.sh", "--data-tar", str(mnist_tarball(data_dir, tmp_path)),
               "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline, records = time.monotonic() + 400, []
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if (out / "run.tar.gz").exists():
                records, _ = records_in(out / "run.tar.gz")
                if len(records) >= 2:
                    break
            time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the slot ends: script, run, cell
            os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate()[0]
    assert len(records) >= 2, output[-4000:]
    records, names = records_in(out / "run.tar.gz")
    statuses = [json.loads(line)["status"] for line in records]
    assert statuses[:2] == ["ok", "ok"], output[-4000:]
    assert any(name.endswith("/report.md") for name in names)
    assert any(name.endswith("/env.json") for name in names)
    assert not any("/inductor-" in name for name in names)
    beside = (out / "records.jsonl").read_text().splitlines()
    assert beside[:2] == records[:2] and "mnist-bench report" in (out / "report.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["env.json", "records.jsonl", "report.md",
                                                      "run.tar.gz"]
