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
