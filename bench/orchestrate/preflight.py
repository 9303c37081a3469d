"""What every cell of a run needs, checked once before the first one starts: MNIST
in the data directory (or downloadable into it). The results root is checked by
bench.orchestrate.rundir, also before any cell. A problem raises PreflightError, and
bench.run stops with one ``error:`` line and exit status 2, instead of every cell
spending its start-up to fail the same way.

The check is mnist_core's own (``MnistDataModule.prepare_data``: the four files
present with their published sizes and MD5s, else downloaded), so its rules live in
one place. Files that are there are checked in the orchestrating process with
mnist_core.files (no torch: a fraction of a second). A download needs torchvision,
and mnist_core.data imports Lightning, which the orchestrating process never does, so
a missing file is fetched in a child process (``python -m bench.orchestrate.preflight``),
as each cell's process would; under torchrun the ranks import Lightning anyway and the
whole check runs in process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.orchestrate.plan import RunPlan
from mnist_core.files import MnistDataError, check_raw_files, has_raw_files, resolve_data_dir

DATA_CHECK_TIMEOUT_S = 900.0  # room for a download on a slow network
PROBLEM_MARK = "mnist-problem: "  # the child's verdict line, after torchvision's own output


class PreflightError(ValueError):
    """Something every cell needs is missing; the message says what and how to fix it."""


def check_before_running(plan: RunPlan, data_dir: str | None) -> None:
    """Raise PreflightError when the plan's cells cannot get their data."""
    if not any(cell.loader != "synthetic" for cell in plan.pending.cells_to_run()):
        return  # nothing runs here, or only synthetic data: no files needed
    problem = mnist_problem(data_dir) if plan.launched else mnist_problem_of_orchestrator(data_dir)
    if problem is not None:
        raise PreflightError(problem)


def one_line(text: str) -> str:
    """torchvision's download error spans lines; ``error:`` is one."""
    return " ".join(text.split())


def mnist_problem(data_dir: str | None) -> str | None:
    """Why the cells would find no MNIST (one line), or None when it is there."""
    from mnist_core.data import MnistDataError, MnistDataModule  # imports Lightning

    try:
        MnistDataModule(data_dir, loader="tensor").prepare_data()
    except MnistDataError as error:
        return one_line(str(error))
    except Exception as error:  # under torchrun, anything but a ValueError would hang the
        # other ranks in their broadcast: every failure becomes the one error line
        return one_line(f"checking MNIST failed: {type(error).__name__}: {error}")
    return None


def mnist_problem_of_orchestrator(data_dir: str | None) -> str | None:
    """``mnist_problem`` without Lightning: the files that are there checked here, a
    download (some file missing) tried in a child process."""
    root = resolve_data_dir(data_dir)
    if not has_raw_files(root):
        return mnist_problem_in_child(data_dir)
    try:
        check_raw_files(root)
    except MnistDataError as error:
        return one_line(str(error))
    return None


def mnist_problem_in_child(data_dir: str | None) -> str | None:
    command = [sys.executable, "-m", "bench.orchestrate.preflight"]
    command += ["--data-dir", data_dir] if data_dir else []
    try:
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=DATA_CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return (f"checking MNIST took longer than {DATA_CHECK_TIMEOUT_S:g} s (a download "
                "stuck on a slow or filtered network?); put the four original files in "
                "DIR/MNIST/raw/ and point --data-dir or MNIST_DATA_DIR at DIR")
    if done.returncode == 0:
        return None
    verdicts = [line for line in done.stdout.splitlines() if line.startswith(PROBLEM_MARK)]
    if verdicts:
        return verdicts[-1][len(PROBLEM_MARK):]
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return one_line(f"the MNIST check ({' '.join(command[1:])}) exited with status "
                    f"{done.returncode}: {tail}")


def main(argv: list[str] | None = None) -> int:
    """The child: print the verdict line and exit 1 when MNIST is not usable."""
    parser = argparse.ArgumentParser(prog="python -m bench.orchestrate.preflight")
    parser.add_argument("--data-dir", default=None)
    problem = mnist_problem(parser.parse_args(argv).data_dir)
    if problem is None:
        return 0
    print(PROBLEM_MARK + problem, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
