"""The orchestrator (`python -m bench.run`) end to end: real child processes, real
Lightning, real signals. Faults are injected through bench.execute.faults."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench import run
from bench.execute.faults import ENV_VAR

REPO = Path(__file__).resolve().parents[2]
TINY = ["--accelerators", "cpu", "--strategies", "single", "--steps", "3",
        "--warmup-steps", "1", "--loaders", "tensor", "--wandb", "disabled"]
# A tiny cell takes ~25-35 s on an idle 2-core box (imports, a 4-step fit, a peak
# calibration and the 5000-image validation). The hang cell costs its whole timeout,
# so it runs apart, under a timeout just long enough for its imports and its hang.
CELL_TIMEOUT_S = 60
HANG_TIMEOUT_S = 15


def cell_id(batch_size: int, precision: str = "32-true") -> str:
    return f"cpu-1x-single-{precision}-bs{batch_size}-tensor"


def records(run_dir: Path) -> list[dict[str, Any]]:
    """Every line of records.jsonl, each of which must be complete, valid JSON."""
    text = (run_dir / "records.jsonl").read_text()
    assert text == "" or text.endswith("\n"), "torn last line in records.jsonl"
    return [json.loads(line) for line in text.splitlines()]


def run_dir_of(out: Path) -> Path:
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, f"expected one run directory under {out}, found {dirs}"
    return dirs[0]


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under root: size, mtime and content hash (to prove nothing changed)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns,
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line, or whose stdout (a cell's log), contains
    ``text`` (e.g. a run directory). A cell forked from the preload server has the
    server's command line, but its stdout is the cell's log in the run directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().split(") ")[-1][:1]
            stdout = os.readlink(proc / "fd" / "1")
        except OSError:
            continue
        if (text in cmdline or text.rstrip() in stdout) and state != "Z":
            found.append(int(proc.name))
    return found


class Orchestrator:
    """`python -m bench.run` in the background, its stdout read line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.run", *args], cwd=REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.stdout.append(line)
            if match := re.search(pattern, line):
                return match
        self.kill()
        pytest.fail(f"no line matching {pattern!r} within {timeout} s; stdout so far:\n"
                    + "".join(self.stdout))

    def finish(self, timeout: float) -> tuple[int, str]:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"bench.run did not exit within {timeout} s:\n" + "".join(self.stdout))
        while not self.lines.empty():
            self.stdout.append(self.lines.get())
        assert self.process.stderr is not None
        return self.process.returncode, self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def bench_run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"bench.run {' '.join(args)} did not finish within {timeout} s:\n"
                    f"{error.stdout}\n{error.stderr}")


@pytest.mark.slow
def test_faults_are_isolated_and_the_matrix_goes_on(tmp_path: Path,
                                                    bench_env: dict[str, str]) -> None:
    faults = {cell_id(16): "raise", cell_id(24): "sigkill", cell_id(32): "oom"}
    env = bench_env | {ENV_VAR: ",".join(f"{cell}={kind}" for cell, kind in faults.items())}
    out = tmp_path / "out"
    result = bench_run([*TINY, "--matrix", "smoke", "--precisions", "32-true",
                        "--batch-sizes", "16,24,32,48", "--out", str(out),
                        "--cell-timeout", str(CELL_TIMEOUT_S)],
                       env, timeout=CELL_TIMEOUT_S + 400)
    # Three cells failed: the run says so in its exit status, after finishing the matrix.
    assert result.returncode == 1, result.stderr
    assert "3 of 4 cell run(s) did not finish: 2 failed, 1 out of memory" in result.stderr
    run_dir = run_dir_of(out)
    by_id = {r["cell_id"]: r for r in records(run_dir)}
    assert list(by_id) == [cell_id(b) for b in (16, 24, 32, 48)]  # in order, once each

    raised = by_id[cell_id(16)]
    assert raised["status"] == "failed"
    assert raised["reason"].startswith(f"RuntimeError: fault injected into {cell_id(16)}")
    assert "--- last lines of the log ---" in raised["reason"]
    assert "Traceback" in raised["reason"]  # the tail of the child's log

    killed = by_id[cell_id(24)]
    assert killed["status"] == "failed"
    assert killed["reason"].startswith("killed by SIGKILL")
    assert "before writing its record" in killed["reason"]

    assert by_id[cell_id(32)]["status"] == "failed"
    assert by_id[cell_id(32)]["reason"] == "oom"

    # A failed cell keeps the parts of its ledger it reached (bench.measure.ledger).
    assert raised["ledger"]["parts"]["setup"] > 0 and raised["ledger"]["parts"]["window"] is None
    assert [part for part, value in killed["ledger"]["parts"].items()
            if value is not None] == ["handoff", "other"]  # it left no record
    assert killed["ledger"]["wall_s"] > 0

    ok = by_id[cell_id(48)]
    assert ok["status"] == "ok", ok["reason"]
    assert {r["preloaded"] for r in by_id.values()} == {True}  # bench.run's default
    assert ok["metrics"]["samples_per_s"] > 0
    assert ok["effective"]["world_size"] == 1
    for line in (f"{cell_id(16)}  failed  RuntimeError", f"{cell_id(24)}  failed  killed by",
                 f"{cell_id(32)}  failed  oom", f"{cell_id(48)}  ok"):
        assert line in result.stdout
    assert (run_dir / "report.md").is_file()


@pytest.mark.slow
def test_a_hung_cell_times_out_and_leaves_no_process(tmp_path: Path,
                                                     bench_env: dict[str, str]) -> None:
    env = bench_env | {ENV_VAR: f"{cell_id(40)}=hang"}
    out = tmp_path / "out"
    result = bench_run([*TINY, "--matrix", "smoke", "--precisions", "32-true",
                        "--batch-sizes", "40", "--out", str(out),
                        "--cell-timeout", str(HANG_TIMEOUT_S)], env, timeout=120)
    assert result.returncode == 1, result.stderr  # a timeout fails the run
    assert "1 of 1 cell run(s) did not finish: 1 timeout" in result.stderr
    run_dir = run_dir_of(out)
    [hung] = records(run_dir)
    assert hung["status"] == "timeout"
    assert hung["preloaded"] is True
    assert f"no result after {HANG_TIMEOUT_S} s" in hung["reason"]
    assert HANG_TIMEOUT_S <= hung["wall_s"] < HANG_TIMEOUT_S + 15
    assert not processes_mentioning(str(run_dir)), "a cell's process outlived the run"
    assert f"{cell_id(40)}  timeout" in result.stdout


@pytest.mark.slow
def test_sigint_keeps_what_finished_and_resume_completes_it(
        tmp_path: Path, bench_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    # Two real cells, then two that are skipped here (fp16 AMP on CPU): cheap, but
    # they are still pending when the signal comes, so the resume must schedule them.
    out = tmp_path / "out"
    first, second = cell_id(16), cell_id(24)
    orchestrator = Orchestrator([*TINY, "--matrix", "smoke", "--precisions", "32-true,16-mixed",
                                 "--batch-sizes", "16,24", "--out", str(out),
                                 "--cell-timeout", "400"], bench_env)
    run_dir = Path(orchestrator.wait_for_line(r"cell run\(s\) -> (\S+)", 120).group(1))
    orchestrator.wait_for_line(rf"\[1/4\] {first}  ok", 400)
    orchestrator.wait_for_line(rf"\[2/4\] {second}  running", 30)
    deadline = time.monotonic() + 30  # the second cell's child is started
    while not processes_mentioning(f"{run_dir} ") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(f"{run_dir} "), "the second cell never started"
    time.sleep(1.0)
    orchestrator.process.send_signal(signal.SIGINT)
    code, stderr = orchestrator.finish(timeout=120)

    assert code == 130, stderr
    assert f"python -m bench.run --resume {run_dir}" in stderr
    before = records(run_dir)
    assert [(r["cell_id"], r["status"]) for r in before] == [(first, "ok"),
                                                            (second, "interrupted")]
    assert before[1]["reason"] == "stopped by SIGINT/SIGTERM while running"
    assert [r["preloaded"] for r in before] == [True, True]
    assert (run_dir / "report.md").is_file()
    assert first in (run_dir / "report.md").read_text()
    deadline = time.monotonic() + 15  # the interrupted cell's processes are gone
    while processes_mentioning(f"{run_dir} ") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_mentioning(f"{run_dir} "), "the interrupted cell outlived the run"
    first_line = (run_dir / "records.jsonl").read_text().splitlines()[0]

    # A resume with another matrix is refused, says how, and touches nothing.
    files = snapshot(run_dir)
    capsys.readouterr()
    assert run.main(["--resume", str(run_dir), "--steps", "5", "--wandb", "disabled"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: cannot resume")
    assert "different matrix" in error and f"`--resume {run_dir}` without matrix" in error
    assert snapshot(run_dir) == files

    result = bench_run(["--resume", str(run_dir), "--wandb", "disabled", "--cell-timeout",
                        "400"], bench_env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"run {run_dir.name}: 3 cell run(s)" in result.stdout  # not the finished one
    after = records(run_dir)
    assert (run_dir / "records.jsonl").read_text().splitlines()[0] == first_line
    assert after[0]["started_at"] == before[0]["started_at"]
    keys = [(r["cell_id"], r["repeat"]) for r in after]
    assert len(keys) == len(set(keys)) == 4
    statuses = {r["cell_id"]: r["status"] for r in after}
    assert statuses == {first: "ok", second: "ok", cell_id(16, "16-mixed"): "skipped",
                        cell_id(24, "16-mixed"): "skipped"}
    superseded = [json.loads(line) for line in
                  (run_dir / "records.superseded.jsonl").read_text().splitlines()]
    assert [(r["cell_id"], r["status"]) for r in superseded] == [(second, "interrupted")]
    assert len(list(out.iterdir())) == 1  # the resume wrote into the same run directory
    assert second in (run_dir / "report.md").read_text()


@pytest.mark.slow
def test_a_failing_rank_is_the_reason_and_no_rank_outlives_its_cell(
        tmp_path: Path, bench_env: dict[str, str]) -> None:
    """Rank 1 of a 2-process DDP cell (forked from rank 0, itself forked from the preload
    server) fails; rank 0 then SIGKILLs itself, and writes no record. The record names
    rank 1's error, not the SIGKILL (which would read as the kernel's OOM killer), and
    nothing of the cell is left running."""
    ddp = "cpu-2x-ddp-32-true-bs16-tensor"
    env = bench_env | {ENV_VAR: f"{ddp}@1=raise"}
    out = tmp_path / "out"
    result = bench_run(["--matrix", "smoke", "--strategies", "ddp", "--precisions", "32-true",
                        "--batch-sizes", "16", "--steps", "2", "--warmup-steps", "1",
                        "--wandb", "disabled", "--out", str(out),
                        "--cell-timeout", str(3 * CELL_TIMEOUT_S)],
                       env, timeout=3 * CELL_TIMEOUT_S + 120)
    assert result.returncode == 1, result.stderr  # its one cell failed
    run_dir = run_dir_of(out)
    [failed] = records(run_dir)
    assert failed["status"] == "failed"
    assert failed["preloaded"] is True  # its ranks are forks (bench.execute.spawn)
    first_line = failed["reason"].splitlines()[0]
    assert first_line.startswith(f"RuntimeError: fault injected into {ddp}")
    assert "(rank 1, the first of 1 failed rank(s); rank 0 then killed by SIGKILL, as it " \
        "stops every rank when one fails)" in first_line
    assert "out-of-memory" not in first_line
    assert not processes_mentioning(str(run_dir)), "a rank outlived its cell"
