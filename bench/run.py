"""``python -m bench.run --matrix NAME|FILE.toml``: run a benchmark matrix.

``python -m bench.run`` alone, or ``--matrix`` with no name, prints the usage and
every preset with its cells (how many run here, how many are skipped) and an
estimated time, and exits 0: a bare command runs nothing. Everything this machine
can run is ``--matrix all``.

What every cell needs (MNIST, a writable results root) is checked once, first. Each
cell then runs in its own child process, forked from a server that imported torch,
Lightning and the cell's modules and read MNIST once (a multi-rank cell's other ranks
forked from its rank 0; --no-preload: new interpreters); under torchrun every rank
walks the matrix in process.
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

from bench.execute.wandb_sink import report_run, resolve_mode
from bench.matrix import MatrixError
from bench.measure.ledger import process_started_at
from bench.measure.trace import PROFILE_VAR
from bench.orchestrate import command_line
from bench.orchestrate.command_line import LIST, NO_MATRIX, USAGE
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
from bench.orchestrate.preload import PreloadServer, preloadable
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


def build_parser() -> argparse.ArgumentParser:
    return command_line.build_parser(__doc__)


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


def early_preload_server(args: argparse.Namespace, listing: bool,
                         wandb_mode: str) -> PreloadServer | None:
    """The run's preload server, started first thing, so that its imports (7 s of a core)
    overlap the orchestrator's own (torch, to see the GPUs) and the planning. None when
    no cell will be forked: a listing, a dry run, --no-preload, or a launch (torchrun,
    srun: its ranks walk in process)."""
    if listing or args.dry_run or not args.preload or \
            any(name in os.environ for name in ("WORLD_SIZE", "SLURM_NTASKS")):
        return None
    server = run_preload_server(args, wandb_mode)
    server.start()
    return server


def run_preload_server(args: argparse.Namespace, wandb_mode: str) -> PreloadServer:
    """The run's preload server (not started): wandb preloaded only when cells log to it."""
    return PreloadServer(args.data_dir, wandb=wandb_mode != "disabled")


def walk(args: argparse.Namespace, run_dir: RunDir, plan: RunPlan, started_at: float,
         server: PreloadServer | None) -> int:
    from bench.orchestrate.local import run_local

    print(f"run {plan.run_id}: {len(plan.pending)} cell run(s) -> {run_dir.path}", flush=True)
    print(estimate(plan, History.load(args.out)).text(), flush=True)
    walked_from = records_in(run_dir)
    after_each = (lambda: snapshot_now(run_dir, args.snapshot)) if args.snapshot else None
    if after_each is not None:  # env.json and matrix.json before any cell
        after_each()
    if not any(map(preloadable, plan.pending.cells_to_run())):
        # Every cell starts a new interpreter (malloc jemalloc, several nodes): the
        # server's imports would only take a core from the first cell.
        close(server, 0)
        server = None
    elif server is None and args.preload:  # not started early (under sbatch, without srun)
        server = run_preload_server(args, resolve_mode(args.wandb))
    completed = run_local(plan, run_dir, args.data_dir, args.verbose, args.cell_timeout,
                          server, after_each)
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
    server: PreloadServer | None = None
    try:
        check_options(args)
        if not listing and args.matrix is None and args.resume is None:
            raise ValueError(NO_MATRIX)
        wandb_mode = resolve_mode(args.wandb)
        server = early_preload_server(args, listing, wandb_mode)
        machine = planning_machine(args)
        if listing:
            return list_presets(args, machine)
        if args.dry_run:
            return dry_run(args, machine, wandb_mode)
        if machine.launched_world_size is not None:
            return close(server, run_under_launcher(args, machine, wandb_mode, started_at))
        run_dir, plan = open_run(args, machine, wandb_mode)
    except (MatrixError, RunDirError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return close(server, 2)
    except KeyboardInterrupt:  # e.g. during the MNIST check, or a walk under torchrun
        print("interrupted", file=sys.stderr)
        return close(server, 130)
    return walk(args, run_dir, plan, started_at, server)


def close(server: PreloadServer | None, status: int) -> int:
    """End the preload server of a run that will not walk; return ``status``."""
    if server is not None:
        server.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
