"""``python -m bench.run --matrix [NAME|FILE.toml]``: run a benchmark matrix.

Each cell runs in its own child process (see bench.isolate); under torchrun
every rank walks the matrix in process instead (see bench.launched). Records
are appended to results/<run-id>/records.jsonl as cells finish, then the
report is written.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import record as rec
from bench.cell import base_record
from bench.isolate import CellOptions, CellProcess
from bench.matrix import Cell, MatrixError
from bench.plan import RunPlan, build_plan, print_plan
from bench.rundir import RunDirError, create_run_dir, open_resume
from bench.wandb_sink import report_run, resolve_mode

DEFAULT_TIMEOUT_S = {"throughput": 900.0, "accuracy": 3600.0}


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
    p.add_argument("--repeats", type=int, default=None, help="runs per cell (seed + repeat)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and skip reasons")
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
    return p


def run_isolated(plan: RunPlan, run_dir: Path, args: argparse.Namespace) -> bool:
    """Run every pending (cell, repeat) in a child process. False when interrupted."""
    records_path = run_dir / "records.jsonl"
    current: dict[str, CellProcess] = {}
    stop_requested = False

    def on_signal(signum: int, frame: Any) -> None:
        # Only flag it (and stop a running cell): raising here could land in the middle
        # of append_record and lose the record of a cell that had just finished.
        nonlocal stop_requested
        stop_requested = True
        if "proc" in current:
            current["proc"].stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    durations: list[float] = []
    try:
        total = len(plan.pending)
        for index, (cell, repeat, reason) in enumerate(plan.pending, start=1):
            if stop_requested:
                break
            started = time.perf_counter()
            if reason is not None:
                record = base_record(cell, repeat, plan.run_id, "skipped", reason)
            else:
                timeout = args.cell_timeout or DEFAULT_TIMEOUT_S[cell.mode]
                options = CellOptions(run_dir, plan.run_id, args.data_dir, plan.wandb_mode,
                                      args.verbose, timeout)
                eta = eta_text(durations, plan.runnable_left(index - 1))
                print(f"[{index}/{total}] {cell.id}{repeat_text(plan, repeat)}  running{eta}",
                      flush=True)
                # Registered for the whole run(), so that a signal stops this cell.
                proc = current["proc"] = CellProcess(cell, repeat, options)
                if stop_requested:  # a signal between the check above and here
                    break
                record = proc.run()
                del current["proc"]
                durations.append(time.perf_counter() - started)
            rec.append_record(records_path, record)
            print(progress_line(index, total, plan, cell, repeat, record), flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return not stop_requested


def repeat_text(plan: RunPlan, repeat: int) -> str:
    return f" (repeat {repeat + 1}/{plan.repeats})" if plan.repeats > 1 else ""


def eta_text(durations: list[float], runnable_left: int) -> str:
    if not durations or runnable_left <= 0:
        return ""
    left = sum(durations) / len(durations) * runnable_left
    return f"  (ETA {left / 60:.1f} min)" if left >= 60 else f"  (ETA {left:.0f} s)"


def progress_line(index: int, total: int, plan: RunPlan, cell: Cell, repeat: int,
                  record: dict[str, Any]) -> str:
    status = record["status"]
    line = f"[{index}/{total}] {cell.id}{repeat_text(plan, repeat)}  {status}"
    if status == "ok":
        line += f"  {record['metrics']['samples_per_s']:.0f} samples/s"
        if record["metrics"].get("val_acc") is not None:
            line += f"  val_acc {record['metrics']['val_acc']:.4f}"
        line += f"  {record['wall_s']:.0f} s"
    elif record["reason"]:
        line += f"  {record['reason'].splitlines()[0]}"
    return line


def finish(run_dir: Path, plan: RunPlan) -> None:
    """Write the report of whatever finished, print its table, log the report run."""
    from bench.report import load_records, summarize, write_report

    if not (run_dir / "records.jsonl").exists():
        return
    print(write_report(run_dir))
    print(f"\nresults: {run_dir}  (report.md, summary.csv, records.jsonl)")
    plots = sorted((run_dir / "plots").glob("*.png"))
    report_run(run_dir, plan.run_id, summarize(load_records(run_dir)), plots, plan.wandb_mode)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cell_timeout is not None and not args.cell_timeout > 0:
            raise ValueError(f"--cell-timeout must be a positive number of seconds, "
                             f"got {args.cell_timeout:g}")
        wandb_mode = resolve_mode(args.wandb)
        plan = build_plan(args, wandb_mode)
        if args.dry_run:
            print_plan(plan)
            return 0
        if plan.launched:
            from bench.launched import run_launched

            return run_launched(plan, args)
        run_dir = open_resume(args.resume, plan) if args.resume else \
            create_run_dir(args.out, plan)
    except (MatrixError, RunDirError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"run {plan.run_id}: {len(plan.pending)} cell run(s) -> {run_dir}", flush=True)
    completed = run_isolated(plan, run_dir, args)
    finish(run_dir, plan)
    if not completed:
        print(f"interrupted; finish it with: python -m bench.run --resume {run_dir}",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
