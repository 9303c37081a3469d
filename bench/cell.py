"""``python -m bench.cell --cell JSON ...``: run ONE cell (one repeat) in this
process and leave its record in the run directory for the orchestrator.

The orchestrator starts this in a child process per cell, or, for a cell of one
process, runs it as ``__main__`` in a child forked from its preload server
(bench.execute.preload), with the same arguments. Lightning's DDP launcher
re-executes this same command line for the other ranks, so the command line
describes exactly one cell. Exit status 1 when the cell failed
(its record says how).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.execute.spawn import needs_own_ranks, start_other_ranks
from bench.matrix import Cell
from bench.record import RunDir, write_record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one benchmark cell (used by bench.run).")
    parser.add_argument("--cell", required=True, help="the cell as JSON")
    parser.add_argument("--repeat", type=int, default=0)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--wandb", default="disabled", choices=("offline", "online", "disabled"))
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--save-weights", type=Path, default=None,
                        help="rank 0 saves the final state_dict here (for checks)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cell = Cell.from_dict(json.loads(args.cell))
    # An engine cell's other ranks start now, to import torch and Lightning while
    # this rank does.
    started = start_other_ranks(cell) if needs_own_ranks(cell) else []
    from bench.execute.lifecycle import ExecuteOptions, current_rank, execute

    run_dir = RunDir(args.run_dir)
    options = ExecuteOptions(args.run_id, args.data_dir, args.wandb, args.verbose,
                             args.save_weights)
    record = execute(cell, args.repeat, run_dir, options)
    for rank in started:  # when this rank failed before it could wait for them
        if not record.ok:
            rank.kill()
        rank.wait()
    if current_rank() == 0:
        write_record(run_dir.cell_record(cell.id, args.repeat), record)
    return 0 if record.ok else 1


if __name__ == "__main__":
    sys.exit(main())
