"""Bad command lines: one clear `error:` line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run
from bench.orchestrate.plan import make_plan, requested_matrix
from bench.orchestrate.rundir import create_run_dir
from strategies.registry import Machine

REPO = Path(__file__).resolve().parents[3]
SMOKE = ["--matrix", "smoke", "--wandb", "disabled"]


@pytest.fixture
def out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An existing, empty results root; the working directory is tmp_path, so that a
    stray relative write would be seen too."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "results"
    root.mkdir()
    return root


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def new_run_dir(out: Path, argv: list[str]) -> Path:
    """A run directory as `bench.run` creates it, with nothing run yet."""
    machine = Machine.detect()
    matrix = requested_matrix(run.build_parser().parse_args(argv), machine)
    assert matrix is not None
    return create_run_dir(out, make_plan("test-run", matrix, machine, "disabled")).path


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


CASES = {
    # name: (argv after --out, fragments of the error line)
    "unknown preset": (["--matrix", "nope"], ["unknown preset 'nope'", "smoke", ".toml"]),
    "unknown strategy": ([*SMOKE, "--strategies", "nope"],
                         ["unknown strategy 'nope'", "ddp", "deepspeed_stage_2"]),
    "unknown precision": ([*SMOKE, "--precisions", "fp8"], ["unknown precision 'fp8'",
                                                            "bf16-mixed"]),
    "unknown accelerator": ([*SMOKE, "--accelerators", "tpu"],
                            ["unknown accelerator 'tpu'", "cpu, cuda"]),
    "unknown loader": ([*SMOKE, "--loaders", "disk"], ["unknown loader 'disk'", "tensor"]),
    "zero steps": ([*SMOKE, "--steps", "0"], ["steps must be a positive integer, got 0"]),
    "negative steps": ([*SMOKE, "--steps", "-3"], ["steps must be a positive integer, got -3"]),
    "negative warm-up": ([*SMOKE, "--warmup-steps", "-1"], ["warmup_steps must be >= 0"]),
    "zero batch size": ([*SMOKE, "--batch-sizes", "0"],
                        ["batch_size must be a positive integer, got 0"]),
    "zero repeats": ([*SMOKE, "--repeats", "0"], ["--repeats must be at least 1, got 0"]),
    "zero cell timeout": ([*SMOKE, "--cell-timeout", "0"],
                          ["--cell-timeout must be a positive number of seconds, got 0"]),
    "negative cell timeout": ([*SMOKE, "--cell-timeout", "-5"],
                              ["--cell-timeout must be a positive number of seconds, got -5"]),
    "run id with a slash": ([*SMOKE, "--run-id", "a/b"],
                            ["--run-id must be a plain directory name, got 'a/b'"]),
    "run id ..": ([*SMOKE, "--run-id", ".."], ["--run-id must be a plain directory name"]),
    "run id and resume": ([*SMOKE, "--run-id", "job-7", "--resume", "{tmp}"],
                          ["--run-id names a new run; --resume keeps the run's own id"]),
    "missing matrix file": (["--matrix", "{tmp}/missing.toml"], ["does not exist"]),
    "malformed TOML": (["--matrix", "{tmp}/broken.toml"], ["is not valid TOML"]),
    "unknown TOML key": (["--matrix", "{tmp}/unknown.toml"],
                         ["unknown key(s) ['bogus']", "valid:", "batch_size"]),
    "TOML repeats not a number": (["--matrix", "{tmp}/repeats.toml"],
                                  ["repeats must be an integer, got 'x'"]),
    "TOML value of the wrong type": (["--matrix", "{tmp}/steps.toml"], ["steps must be int"]),
    "one-device strategy on 8 devices": ([*SMOKE, "--strategies", "single", "--devices", "8"],
                                         ["the matrix is empty"]),
}
TOML_FILES = {
    "broken.toml": 'strategy = ["single"\n',
    "unknown.toml": 'strategy = ["single"]\nbogus = 1\n',
    "repeats.toml": 'strategy = ["single"]\nrepeats = "x"\n',
    "steps.toml": 'strategy = ["single"]\nsteps = "many"\n',
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_writes_nothing(
        case: str, out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, text in TOML_FILES.items():
        write(tmp_path, name, text)
    argv, fragments = CASES[case]
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    before = files_under(tmp_path)
    code, stdout, err = run_main([*argv, "--out", str(out)], capsys)
    assert code == 2
    assert_one_error_line(err, *fragments)
    assert stdout == ""
    assert files_under(out) == []
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("argv, message", [
    (["--steps", "x"], "argument --steps: invalid int value: 'x'"),
    (["--batch-sizes", "16,a"], "argument --batch-sizes: expected a comma-separated list"),
    (["--wandb", "sometimes"], "argument --wandb: invalid choice: 'sometimes'"),
])
def test_argparse_rejects_malformed_values_with_usage(
        argv: list[str], message: str, out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run.main([*SMOKE, *argv, "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m bench.run")
    assert err.splitlines()[-1].startswith(f"python -m bench.run: error: {message}")
    assert files_under(out) == []


def test_more_devices_than_available_is_listed_as_skipped(
        out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run_main([*SMOKE, "--strategies", "ddp", "--devices", "64",
                                  "--batch-sizes", "64,32", "--precisions", "32-true",
                                  "--dry-run", "--out", str(out)], capsys)
    assert (code, err) == (0, "")
    assert "0 run(s) here, 2 skipped" in stdout
    for batch in (64, 32):
        assert re.search(rf"cpu-64x-ddp-32-true-bs{batch}-tensor +skip: needs 64 CPU cores, "
                         r"this machine has \d+", stdout), stdout
    assert files_under(out) == []


def test_results_root_under_a_regular_file(tmp_path: Path, out: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # Tests run as root, where chmod does not stop writes; a file in the path does.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    for target, reason in ((blocker / "results", "Not a directory"), (blocker, "File exists")):
        code, stdout, err = run_main([*SMOKE, "--out", str(target)], capsys)
        assert code == 2
        assert_one_error_line(err, f"cannot create the results root {target}", reason)
    assert blocker.read_text() == "not a directory\n"
    assert files_under(out) == []


def test_resume_of_a_missing_or_foreign_directory(tmp_path: Path, out: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-run"
    code, _, err = run_main(["--resume", str(missing)], capsys)
    assert code == 2
    assert_one_error_line(err, f"cannot resume {missing}: no such directory")
    assert not missing.exists()

    code, _, err = run_main(["--resume", str(out)], capsys)  # exists, not a run directory
    assert code == 2
    assert_one_error_line(err, f"cannot resume {out}", "not a bench.run results directory")
    assert files_under(out) == []


def test_resume_with_a_different_matrix_is_refused(tmp_path: Path, out: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    base = [*SMOKE, "--strategies", "single", "--warmup-steps", "1"]
    run_dir = new_run_dir(out, [*base, "--steps", "3"])
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    for other, difference in ((["--steps", "4"], "changed settings in"),
                              (["--steps", "3", "--batch-sizes", "32"], "new cells"),
                              (["--steps", "3", "--repeats", "2"], "a different order or repeat")):
        code, stdout, err = run_main([*base, *other, "--resume", str(run_dir)], capsys)
        assert code == 2
        assert_one_error_line(err, f"cannot resume {run_dir} with a different matrix",
                              difference, f"Run `--resume {run_dir}` without matrix arguments")
        assert stdout == ""
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert files_under(out) == sorted(str(p.relative_to(out)) for p in [run_dir, *before])


@pytest.mark.parametrize("damage, message", [
    ({"matrix.json": "{not json"}, "its matrix.json is unreadable (JSONDecodeError: "),
    ({"matrix.json": '{"cells": [{"bogus": 1}], "repeats": 1}'},
     "its matrix.json is unreadable (MatrixError: unknown cell field(s) ['bogus']"),
    ({"matrix.json": '{"cells": []}'}, "its matrix.json is unreadable (KeyError: 'repeats')"),
    ({"records.jsonl": "{half a record\n{}\n"}, "its records.jsonl has a damaged line ("),
])
def test_resume_of_a_damaged_run_directory(damage: dict[str, str], message: str, out: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = new_run_dir(out, [*SMOKE, "--strategies", "single"])
    for name, text in damage.items():
        (run_dir / name).write_text(text)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, stdout, err = run_main(["--resume", str(run_dir)], capsys)
    assert code == 2
    assert_one_error_line(err, f"cannot resume {run_dir}: {message}")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_the_command_line_prints_just_the_error(tmp_path: Path,
                                                bench_env: dict[str, str]) -> None:
    """The real CLI: no traceback and no library noise around the one line."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--matrix", "smoke", "--precisions", "fp8",
         "--out", str(tmp_path / "results")], cwd=REPO, env=bench_env, capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr == ("error: unknown precision 'fp8'; valid: 32-true, 16-mixed, "
                             "bf16-mixed, bf16-true\n")
    assert result.stdout == ""
    assert not (tmp_path / "results").exists()
