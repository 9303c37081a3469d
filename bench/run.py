"""``python -m bench.run --matrix [NAME|FILE.toml]``: run a benchmark matrix.

Each cell runs in its own child process (bench.orchestrate.local); under
torchrun every rank walks the matrix in process instead
(bench.orchestrate.launched). Records are appended to
results/<run-id>/records.jsonl as cells finish, then the report is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bench.execute.wandb_sink import report_run, resolve_mode
from bench.matrix import WARMUP_MODES, MatrixError
from bench.measure.trace import PROFILE_VAR
from bench.orchestrate.plan import (
    DEFAULT_TIMEOUT_S,
    RunPlan,
    make_plan,
    new_run_id,
    print_plan,
    requested_matrix,
)
from bench.orchestrate.rundir import RunDirError, create_run_dir, open_resume
from bench.record import RunDir
from strategies.registry import Machine


def csv_list(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list: {error}") from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--matrix", nargs="?", const="all", default=None, metavar="NAME|FILE",
                   help="preset (smoke, cpu, gpu, gpu-check, multi-gpu, accuracy, speed, all) or "
                        "a TOML file of axis lists; alone: everything this machine can run")
    axes = p.add_argument_group("axis overrides (comma-separated lists)")
    for flag, kind in (("accelerators", str), ("devices", int), ("strategies", str),
                       ("precisions", str), ("batch-sizes", int), ("loaders", str),
                       ("compile", str), ("optimizer-impls", str), ("modes", str)):
        axes.add_argument(f"--{flag}", type=csv_list(kind), default=None)
    settings = p.add_argument_group("settings shared by every cell")
    for flag, kind in (("steps", int), ("warmup-steps", int), ("seed", int),
                       ("target-acc", float), ("max-epochs", int), ("val-every-steps", int),
                       ("num-nodes", int)):
        settings.add_argument(f"--{flag}", type=kind, default=None)
    settings.add_argument(
        "--warmup", choices=WARMUP_MODES, default=None,
        help="steady (default): after --warmup-steps, warm up until the last 3 steps are "
             "within 10%% of their median, at most 4x --warmup-steps; fixed: exactly "
             "--warmup-steps")
    p.add_argument("--repeats", type=int, default=None, help="runs per cell (seed + repeat)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the cells and skip reasons, build each runnable cell's strategy, "
                        "precision plugin and DeepSpeed config; exit 1 on a problem")
    p.add_argument("--assume-gpus", type=int, default=None, metavar="N",
                   help="with --dry-run: plan as if N CUDA GPUs (bf16), DeepSpeed and a "
                        "compiler were here")
    p.add_argument("--out", type=Path, default=Path("results"), help="results root")
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
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="write a torch.profiler trace of the first N measured steps of each "
                        "cell to cells/<id>/trace-r<repeat>-rank<rank>.json (Perfetto, "
                        "TensorBoard); the profiled figures carry the profiler's overhead")
    return p


def finish(run_dir: RunDir, plan: RunPlan) -> None:
    """Write the report of whatever finished, print its table, log the report run."""
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


def planning_machine(args: argparse.Namespace) -> Machine:
    if args.assume_gpus is None:
        return Machine.detect()
    if not args.dry_run:
        raise ValueError("--assume-gpus plans only: use it with --dry-run")
    if args.assume_gpus < 1:
        raise ValueError(f"--assume-gpus must be at least 1, got {args.assume_gpus}")
    return Machine.assume_gpus(args.assume_gpus)


def open_run(args: argparse.Namespace, machine: Machine, wandb_mode: str
             ) -> tuple[RunDir, RunPlan]:
    """A new run directory and its plan, or the resumed run's."""
    asked = requested_matrix(args, machine)
    if args.resume is not None:
        return open_resume(args.resume, asked, machine, wandb_mode)
    assert asked is not None  # only a bare --resume asks for no matrix
    plan = make_plan(new_run_id(), asked, machine, wandb_mode)
    return create_run_dir(args.out, plan), plan


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cell_timeout is not None and not args.cell_timeout > 0:
            raise ValueError(f"--cell-timeout must be a positive number of seconds, "
                             f"got {args.cell_timeout:g}")
        if args.profile < 0:
            raise ValueError(f"--profile takes a number of steps, got {args.profile}")
        if args.profile:  # every cell process and rank inherits it
            os.environ[PROFILE_VAR] = str(args.profile)
        wandb_mode = resolve_mode(args.wandb)
        machine = planning_machine(args)
        if args.dry_run:
            asked = requested_matrix(args, machine)
            if asked is None:
                raise ValueError("--dry-run lists a matrix: give --matrix (a bare --resume "
                                 "runs the matrix.json of the run it resumes)")
            return 1 if print_plan(make_plan("dry-run", asked, machine, wandb_mode)) else 0
        if machine.launched_world_size is not None:
            from bench.orchestrate.launched import run_launched

            run_launched(lambda: open_run(args, machine, wandb_mode), finish, args.data_dir,
                         args.verbose, args.cell_timeout or DEFAULT_TIMEOUT_S["accuracy"])
            return 0
        run_dir, plan = open_run(args, machine, wandb_mode)
    except (MatrixError, RunDirError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"run {plan.run_id}: {len(plan.pending)} cell run(s) -> {run_dir.path}", flush=True)
    from bench.orchestrate.local import run_local

    completed = run_local(plan, run_dir, args.data_dir, args.verbose, args.cell_timeout)
    finish(run_dir, plan)
    if not completed:
        print(f"interrupted; finish it with: python -m bench.run --resume {run_dir.path}",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
