"""A cell at ``malloc = ["jemalloc"]`` for real: bench.run starts it as a new
interpreter with jemalloc preloaded (never a fork of the preload server; its other
ranks would inherit the environment), and the cell checks that jemalloc is there
before it runs (bench.execute.allocator). A one-rank comm cell: the cheapest cell
there is (its gloo collectives on a world of one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import record as rec
from strategies.host import jemalloc_library

pytestmark = pytest.mark.skipif(jemalloc_library() is None,
                                reason="no jemalloc here (apt install libjemalloc2)")

MATRIX = """
accelerator = ["cpu"]
malloc = ["jemalloc"]
[[blocks]]
mode = ["comm"]
strategy = ["ddp"]
devices = [1]
precision = ["32-true"]
steps = 1
warmup_steps = 0
"""


def test_a_jemalloc_cell_runs_its_ranks_on_jemalloc(tmp_path: Path) -> None:
    matrix = tmp_path / "jemalloc.toml"
    matrix.write_text(MATRIX)
    done = subprocess.run([sys.executable, "-m", "bench.run", "--matrix", str(matrix),
                           "--wandb", "disabled", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = (tmp_path / "out").iterdir()
    (record,) = rec.read_records(run_dir / "records.jsonl")
    assert record["cell_id"] == "cpu-1x-ddp-32-true-comm-malloc-jemalloc"
    assert record["status"] == "ok", record.get("error")
    assert record["effective"]["malloc"] == "jemalloc"
    assert not record["preloaded"]  # a new interpreter: jemalloc is chosen as it starts
    assert {row["op"] for row in record["raw"]["comm"]} >= {"all_reduce", "all_gather"}
