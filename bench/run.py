"""``python -m bench.run --matrix NAME|FILE.toml``: run a benchmark matrix.

``python -m bench.run`` alone, or ``--matrix`` with no name, prints the usage and
every preset with its cells (how many run here, how many are skipped) and an
estimated time, and exits 0: a bare command runs nothing. Everything this machine
can run is ``--matrix all``.

What every cell needs (MNIST, a writable results root) is checked once, first. Each
cell then runs in its own child process, forked from a server that imported torch,
Lightning and the cell's modules and read MNIST once (--no-preload, and multi-rank
cells: a new interpreter); under torchrun every rank walks the matrix in process.
Records are appended to results/<run-id>/records.jsonl as cells finish, then the
report is written.

Exit status:
  0    every cell ok or skipped; the presets listed; a dry run with no problem
  1    a cell failed (an error, a crash, out of memory) or timed out; its record,
       the report and the other cells are all written. A dry run that found a cell
       that cannot be built. Under torchrun rank 0 exits 1, and so torchrun does.
  2    bad input, or a check before the first cell failed (no MNIST, a results root
       that cannot be written): one ``error:`` line, and no cell ran
  130  interrupted (Ctrl-C, SIGTERM): finish it with ``--resume RUN_DIR``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.execute.wandb_sink import report_run, resolve_mode
from bench.matrix import WARMUP_MODES, WINDOW_MODES, Cell, MatrixError
from bench.measure.ledger import process_started_at
from bench.measure.trace import PROFILE_VAR
from bench.measure.window import MAX_WINDOW_STEPS
from bench.orchestrate.estimate import History, estimate, print_overview
from bench.orchestrate.plan import (
    DEFAULT_TIMEOUT_S,
    Matrix,
    RunPlan,
    make_plan,
    new_run_id,
    print_plan,
    requested_matrix,
)
from bench.orchestrate.preflight import check_before_running
from bench.orchestrate.progress import verdict
from bench.orchestrate.rundir import (
    RunDirError,
    check_run_id,
    create_run_dir,
    ensure_results_root,
    open_resume,
    records_in,
)
from bench.orchestrate.snapshot import refresh
from bench.record import RunDir, read_records
from strategies.registry import Machine

LIST = ""  # --matrix with no name: list the presets
USAGE = ("usage: python -m bench.run --matrix NAME|FILE.toml [options]\n"
         "       python -m bench.run --resume RUN_DIR")
NO_MATRIX = ("no matrix named: give --matrix NAME or FILE.toml (`--matrix all` runs "
             "everything this machine can run) or --resume RUN_DIR; `python -m bench.run` "
             "alone lists the presets")


def csv_list(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list: {error}") from None
    return parse


def add_cell_settings(settings: Any) -> None:
    """The settings every cell of the run shares (Cell fields), overriding the preset's."""
    for flag, kind in (("steps", int), ("warmup-steps", int), ("seed", int),
                       ("target-acc", float), ("max-epochs", int), ("val-every-steps", int),
                       ("num-nodes", int)):
        settings.add_argument(f"--{flag}", type=kind, default=None)
    settings.add_argument(
        "--warmup", choices=WARMUP_MODES, default=None,
        help="steady (default): after --warmup-steps, warm up until the last 3 steps are "
             "within 10%% of their median, at most 4x --warmup-steps; fixed: exactly "
             "--warmup-steps")
    settings.add_argument(
        "--window", choices=WINDOW_MODES, default=None,
        help="how many steps a throughput cell measures. time (default): at least --steps "
             "and at least --min-window-s seconds, the count chosen from the warm-up's step "
             f"time in the cell's first repeat (at most {MAX_WINDOW_STEPS} steps) and kept "
             "for its every repeat in the run; fixed: exactly --steps")
    settings.add_argument(
        "--min-window-s", type=float, default=None, metavar="S",
        help="with --window time: the shortest measured window, in seconds (default "
             f"{Cell.min_window_s:g})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--matrix", nargs="?", const=LIST, default=None, metavar="NAME|FILE",
                   help="preset (smoke, cpu, gpu, gpu-check, multi-gpu, speed, accuracy, "
                        "all-strategies, all) or a TOML file of axis lists; alone: list the "
                        "presets with their cell counts here and estimated times")
    axes = p.add_argument_group("axis overrides (comma-separated lists)")
    for flag, kind in (("accelerators", str), ("devices", int), ("strategies", str),
                       ("precisions", str), ("batch-sizes", int), ("loaders", str),
                       ("compile", str), ("optimizer-impls", str), ("modes", str)):
        axes.add_argument(f"--{flag}", type=csv_list(kind), default=None)
    add_cell_settings(p.add_argument_group("settings shared by every cell"))
    p.add_argument("--repeats", type=int, default=None, help="runs per cell (seed + repeat)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the cells and skip reasons, build each runnable cell's strategy, "
                        "precision plugin and DeepSpeed config; exit 1 on a problem")
    p.add_argument("--assume-gpus", type=int, default=None, metavar="N",
                   help="with --dry-run (or a bare --matrix): plan as if N CUDA GPUs (bf16), "
                        "DeepSpeed and a compiler were here")
    p.add_argument("--out", type=Path, default=Path("results"), help="results root")
    p.add_argument("--run-id", default=None, metavar="NAME",
                   help="name the new run OUT/NAME, not by the time (a job: job-$SLURM_JOB_ID)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="finish an earlier run: only cells without an ok record run")
    p.add_argument("--cell-timeout", type=float, default=None,
                   help="seconds per cell before its processes are killed "
                        "(default 900, accuracy cells 3600)")
    p.add_argument("--data-dir", default=None,
                   help="MNIST root (default $MNIST_DATA_DIR, else ./data)")
    p.add_argument("--wandb", choices=("offline", "online", "disabled"), default=None,
                   help="default $WANDB_MODE, else offline")
    p.add_argument("--verbose", action="store_true", help="Lightning's progress bar and logs")
    p.add_argument("--snapshot", type=Path, default=None, metavar="DIR",
                   help="after every cell, refresh DIR with run.tar.gz (the run folder, no "
                        "compile caches), records.jsonl, env.json and report.md: whatever "
                        "finished survives a run cut short (a metered GPU slot)")
    p.add_argument("--preload", action=argparse.BooleanOptionalAction, default=True,
                   help="fork each single-process cell from one server that imported torch, "
                        "Lightning and the cell's modules and read MNIST once per run "
                        "(default); --no-preload: every cell a new interpreter. Multi-rank "
                        "cells are always new interpreters")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="write a torch.profiler trace of the first N measured steps of each "
                        "cell to cells/<id>/trace-r<repeat>-rank<rank>.json (Perfetto, "
                        "TensorBoard); the profiled figures carry the profiler's overhead")
    return p


def finish(run_dir: RunDir, plan: RunPlan, walked_from: int = 0,
           started_at: float | None = None) -> None:
    """Write the report of whatever finished, print its table, log the report run, and
    print the harness line of the records this walk added (from index ``walked_from``)
    over the run's wall since ``started_at`` (epoch; None: the harness line is left out)."""
    from bench.analyze.ledger import harness_line
    from bench.analyze.load import load_records
    from bench.analyze.report import write_report
    from bench.analyze.summary import summarize

    if not run_dir.records.exists():
        return
    print(write_report(run_dir.path))
    print(f"\nresults: {run_dir.path}  (report.md, summary.csv, records.jsonl)")
    plots = sorted(run_dir.plots.glob("*.png"))
    report_run(run_dir.path, plan.run_id, summarize(load_records(run_dir.path)), plots,
               plan.wandb_mode)
    if started_at is not None:
        walked = list(read_records(run_dir.records))[walked_from:]
        print(harness_line((record.get("ledger") for record in walked),
                           time.time() - started_at))


def planning_machine(args: argparse.Namespace) -> Machine:
    if args.assume_gpus is None:
        return Machine.detect()
    if not (args.dry_run or args.matrix == LIST):
        raise ValueError("--assume-gpus plans only: use it with --dry-run (or with a bare "
                         "--matrix, to list the presets)")
    if args.assume_gpus < 1:
        raise ValueError(f"--assume-gpus must be at least 1, got {args.assume_gpus}")
    return Machine.assume_gpus(args.assume_gpus)


def check_options(args: argparse.Namespace) -> None:
    if args.cell_timeout is not None and not args.cell_timeout > 0:
        raise ValueError(f"--cell-timeout must be a positive number of seconds, "
                         f"got {args.cell_timeout:g}")
    check_run_id(args.run_id, resuming=args.resume is not None)
    if args.profile < 0:
        raise ValueError(f"--profile takes a number of steps, got {args.profile}")
    if args.profile:  # every cell process and rank inherits it
        os.environ[PROFILE_VAR] = str(args.profile)


def list_presets(args: argparse.Namespace, machine: Machine) -> int:
    """The usage and every preset's counts and estimate here, with any axis or setting
    given beside the bare --matrix laid over each."""
    def matrix_of(name: str) -> Matrix:
        matrix = requested_matrix(argparse.Namespace(**vars(args) | {"matrix": name,
                                                                      "resume": None}), machine)
        assert matrix is not None  # a named matrix is always given here
        return matrix

    print_overview(matrix_of, machine, args.out, USAGE)
    return 0


def dry_run(args: argparse.Namespace, machine: Machine, wandb_mode: str) -> int:
    asked = requested_matrix(args, machine)
    if asked is None:
        raise ValueError("--dry-run lists a matrix: give --matrix (a bare --resume "
                         "runs the matrix.json of the run it resumes)")
    plan = make_plan("dry-run", asked, machine, wandb_mode)
    return 1 if print_plan(plan, estimate(plan, History.load(args.out)).text()) else 0


def open_run(args: argparse.Namespace, machine: Machine, wandb_mode: str
             ) -> tuple[RunDir, RunPlan]:
    """A new run directory and its plan, or the resumed run's, once the checks before
    the first cell have passed (nothing is written when they fail)."""
    asked = requested_matrix(args, machine)

    def check(plan: RunPlan) -> None:
        check_before_running(plan, args.data_dir)

    if args.resume is not None:
        return open_resume(args.resume, asked, machine, wandb_mode, check)
    assert asked is not None  # only a bare --resume asks for no matrix
    plan = make_plan(args.run_id or new_run_id(), asked, machine, wandb_mode)
    ensure_results_root(args.out)  # the cheap check first
    check(plan)
    return create_run_dir(args.out, plan), plan


def run_under_launcher(args: argparse.Namespace, machine: Machine, wandb_mode: str,
                       started_at: float) -> int:
    """Every rank walks the matrix; rank 0 alone judges the records (1: a cell failed), the
    others exit 0 and torchrun reports rank 0's; all exit 130 when interrupted (SIGTERM)."""
    from bench.orchestrate.launched import run_launched

    statuses: list[int] = []
    walked_from: list[int] = []

    def open_and_count() -> tuple[RunDir, RunPlan]:
        run_dir, plan = open_run(args, machine, wandb_mode)
        walked_from.append(records_in(run_dir))
        return run_dir, plan

    def finish_and_judge(run_dir: RunDir, plan: RunPlan) -> None:
        finish(run_dir, plan, walked_from[0], started_at)
        statuses.append(verdict(run_dir))

    completed = run_launched(open_and_count, finish_and_judge, args.data_dir,
                             args.verbose, args.cell_timeout or DEFAULT_TIMEOUT_S["accuracy"])
    return (statuses[0] if statuses else 0) if completed else 130


def snapshot_now(run_dir: RunDir, dest: Path) -> None:
    """--snapshot: the report of what finished so far, then DIR refreshed from the run."""
    from bench.analyze.report import write_report

    if run_dir.records.exists():
        write_report(run_dir.path)
    refresh(run_dir, dest)


def walk(args: argparse.Namespace, run_dir: RunDir, plan: RunPlan, started_at: float) -> int:
    from bench.orchestrate.local import run_local

    print(f"run {plan.run_id}: {len(plan.pending)} cell run(s) -> {run_dir.path}", flush=True)
    print(estimate(plan, History.load(args.out)).text(), flush=True)
    walked_from = records_in(run_dir)
    after_each = (lambda: snapshot_now(run_dir, args.snapshot)) if args.snapshot else None
    if after_each is not None:  # env.json and matrix.json before any cell
        after_each()
    completed = run_local(plan, run_dir, args.data_dir, args.verbose, args.cell_timeout,
                          args.preload, after_each)
    finish(run_dir, plan, walked_from, started_at)
    if args.snapshot is not None:  # finish wrote the whole report: pack it
        refresh(run_dir, args.snapshot)
    if not completed:
        print(f"interrupted; finish it with: python -m bench.run --resume {run_dir.path}",
              file=sys.stderr)
        return 130
    return verdict(run_dir)


def main(argv: list[str] | None = None) -> int:
    # Run as a program, the run's wall starts with the process: its imports are the
    # harness's cost too (bench.analyze.ledger.harness_line).
    started_at = (process_started_at() if __name__ == "__main__" else None) or time.time()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    listing = not argv or args.matrix == LIST
    try:
        check_options(args)
        if not listing and args.matrix is None and args.resume is None:
            raise ValueError(NO_MATRIX)
        wandb_mode = resolve_mode(args.wandb)
        machine = planning_machine(args)
        if listing:
            return list_presets(args, machine)
        if args.dry_run:
            return dry_run(args, machine, wandb_mode)
        if machine.launched_world_size is not None:
            return run_under_launcher(args, machine, wandb_mode, started_at)
        run_dir, plan = open_run(args, machine, wandb_mode)
    except (MatrixError, RunDirError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # e.g. during the MNIST check, or a walk under torchrun
        print("interrupted", file=sys.stderr)
        return 130
    return walk(args, run_dir, plan, started_at)


if __name__ == "__main__":
    sys.exit(main())
