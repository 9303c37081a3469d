"""`python -m bench.run`'s exit status for real: a run whose cell fails exits 1 (a skipped
cell is no failure), alone and under torchrun, where rank 0 judges and torchrun
passes it on. The cheapest cells: the fault is raised before the cell trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.execute.faults import ENV_VAR
from tests.e2e.conftest import FAILING_CELL

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FAILING = "cpu-1x-single-32-true-bs16-tensor"
# One cell that fails at once, one that is skipped on CPU (fp16 AMP).
ARGS = ["-m", "bench.run", "--matrix", "smoke", "--strategies", "single", "--precisions",
        "32-true,16-mixed", "--batch-sizes", "16", "--steps", "2", "--warmup-steps", "1",
        "--warmup", "fixed", "--wandb", "disabled"]
TIMEOUT_S = 300
VERDICT = "1 of 2 cell run(s) did not finish: 1 failed"


def launch(command: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    process = subprocess.Popen(command, cwd=REPO, env=env | {ENV_VAR: f"{FAILING}=raise"},
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{' '.join(command)} did not finish in {TIMEOUT_S} s:\n{out}\n{err}")
    return process.returncode, out, err


def test_a_failed_cell_makes_the_run_exit_1(tmp_path: Path, bench_env: dict[str, str]) -> None:
    """Without the preload server, so that a single-process cell as a new interpreter,
    its failure and its log tail, stay covered too."""
    out = tmp_path / "out"
    code, stdout, stderr = launch([sys.executable, *ARGS, "--no-preload", "--out", str(out)],
                                  bench_env)
    assert code == 1, stdout[-3000:] + stderr[-3000:]
    assert f"{FAILING}  failed  RuntimeError: fault injected" in stdout
    assert "16-mixed-bs16-tensor  skipped" in stdout
    assert VERDICT in stderr.splitlines()[-1]
    [run_dir] = out.iterdir()
    assert (run_dir / "report.md").is_file()  # the report is still written
    [failed] = [record for line in (run_dir / "records.jsonl").read_text().splitlines()
                if (record := json.loads(line))["cell_id"] == FAILING]
    assert failed["preloaded"] is False
    assert "--- last lines of the log ---" in failed["reason"]
    assert "Traceback" in failed["reason"]


def test_under_torchrun_rank_0s_verdict_is_the_launchs(engine_walk: dict[str, Any]) -> None:
    """The shared 2-rank torchrun walk (tests/e2e/conftest.py), one of whose cells fails
    on rank 1: rank 0 judges, exits 1 (the fixture checks torchrun's exit status), and
    says why after writing every record and the report."""
    output, records = engine_walk["output"], engine_walk["records"]
    assert f"{FAILING_CELL}  failed  rank 1 failed: RuntimeError: fault injected" in output
    assert f"1 of {len(records)} cell run(s) did not finish: 1 failed" in output
    assert sum(record["status"] == "skipped" for record in records) == 6  # no failures
    assert (engine_walk["run_dir"] / "report.md").is_file()
