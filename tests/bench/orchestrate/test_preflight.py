"""Fail fast, exit honestly: what every cell needs is checked once before the first
one (one `error:` line, exit 2, nothing written), and a run's exit status says
whether every cell ended ok or skipped (0) or one failed or timed out (1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import run
from bench.matrix import Cell
from bench.orchestrate import preflight
from bench.orchestrate.plan import Matrix, make_plan
from bench.orchestrate.preflight import PreflightError, check_before_running, mnist_problem
from bench.orchestrate.progress import verdict
from bench.orchestrate.rundir import create_run_dir, open_resume
from bench.record import OOM_REASON, Record, Status, append_record
from mnist_core.files import RAW_FILES
from strategies.registry import Machine

BOX = Machine(cpu_count=2, cuda_devices=0, cuda_bf16=False, deepspeed=True)
ENV_KEY = {"hostname": "h", "device": "d", "torch": "t", "lightning": "l"}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow  # one child process that imports Lightning, as a cell's would
def test_no_mnist_stops_before_the_first_cell(tmp_path: Path, data_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    empty, out = tmp_path / "empty", tmp_path / "results"
    empty.mkdir()
    capsys.readouterr()
    code = run.main(["--matrix", "smoke", "--data-dir", str(empty), "--out", str(out),
                     "--wandb", "disabled"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""  # no "run ..." line: no run started
    [line] = captured.err.splitlines()
    assert line.startswith(f"error: MNIST not found in {empty} (")
    assert "point --data-dir or MNIST_DATA_DIR at a directory holding MNIST/raw/" in line
    assert list(out.iterdir()) == []  # no run directory


def test_a_damaged_file_is_named_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW_FILES:
        (raw / name).write_bytes(b"\0" * 16)
    for check in (mnist_problem, preflight.mnist_problem_of_orchestrator):
        problem = check(str(tmp_path))
        assert problem is not None and "\n" not in problem
        assert problem.startswith(f"MNIST file {raw / 'train-images-idx3-ubyte'} is truncated")
        assert check(str(data_dir)) is None  # the real files pass, MD5s and all


def test_no_check_when_no_cell_here_reads_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(data_dir: str | None) -> str:
        raise AssertionError("MNIST was checked for a plan that reads none")

    monkeypatch.setattr(preflight, "mnist_problem_of_orchestrator", must_not_run)
    for cells in ((Cell(strategy="fsdp", devices=2),),  # skipped on a CPU machine
                  (Cell(loader="synthetic"),)):
        check_before_running(make_plan("x", Matrix(cells, 1), BOX, "disabled"), "/nowhere")
    monkeypatch.setattr(preflight, "mnist_problem_of_orchestrator", lambda data_dir: "no MNIST")
    with pytest.raises(PreflightError, match="no MNIST"):
        check_before_running(make_plan("x", Matrix((Cell(),), 1), BOX, "disabled"), None)


def test_a_resume_that_fails_the_check_changes_nothing(tmp_path: Path) -> None:
    matrix = Matrix((Cell(),), 2)
    run_dir = create_run_dir(tmp_path, make_plan("run-1", matrix, BOX, "disabled"))
    append_record(run_dir.records, Record.new(Cell(), 0, "run-1", Status.FAILED, ENV_KEY, "x"))
    before = snapshot(tmp_path)

    def refuse(plan: object) -> None:
        raise PreflightError("no MNIST")

    with pytest.raises(PreflightError):
        open_resume(run_dir.path, None, BOX, "disabled", refuse)
    assert snapshot(tmp_path) == before  # the failed record was not set aside


@pytest.mark.parametrize("statuses, code, message", [
    ([(Status.OK, None), (Status.SKIPPED, "no CUDA")], 0, ""),
    ([(Status.OK, None), (Status.FAILED, "RuntimeError: x")], 1, "1 of 2 cell run(s) did not "
                                                                 "finish: 1 failed"),
    ([(Status.TIMEOUT, "no result"), (Status.FAILED, OOM_REASON), (Status.SKIPPED, "x")], 1,
     "2 of 3 cell run(s) did not finish: 1 out of memory, 1 timeout"),
])
def test_the_exit_status_says_whether_every_cell_ended_ok_or_skipped(
        statuses: list, code: int, message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cells = tuple(Cell(batch_size=16 + i) for i in range(len(statuses)))
    run_dir = create_run_dir(tmp_path, make_plan("run-1", Matrix(cells, 1), BOX, "disabled"))
    for cell, (status, reason) in zip(cells, statuses, strict=True):
        append_record(run_dir.records, Record.new(cell, 0, "run-1", status, ENV_KEY, reason))
    capsys.readouterr()
    assert verdict(run_dir) == code
    err = capsys.readouterr().err
    assert err.startswith(message) and (err == "") == (code == 0)
    if code:
        assert f'(why: "Not run" in {run_dir.path / "report.md"})' in err
