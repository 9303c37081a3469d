"""``python -m bench.cell --cell JSON ...``: run ONE cell (one repeat) in this
process and leave its record in the run directory for the orchestrator.

The orchestrator starts this in a child process per cell, or, for a cell of one
process, runs it as ``__main__`` in a child forked from its preload server
(bench.execute.preload), with the same arguments. A cell of several ranks starts
its other ranks first thing (bench.execute.spawn): forks of this process when it was
forked from the preload server, else new interpreters on this same command line, so
the command line describes exactly one cell. Exit status 1 when the cell failed
(its record says how).
"""

from __future__ import annotations

import time

# The first thing the process does: Python's start-up ends here (bench.measure.ledger),
# so every import below is counted as the cell's imports.
INTERPRETER_AT = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.execute.preload import forked_from_preload  # noqa: E402
from bench.execute.spawn import needs_own_ranks, start_other_ranks  # noqa: E402
from bench.matrix import Cell  # noqa: E402
from bench.measure import ledger  # noqa: E402
from bench.measure.window import WindowChoice  # noqa: E402
from bench.record import RunDir, write_record  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.cell",
                                     description="Run one benchmark cell (used by bench.run).")
    parser.add_argument("--cell", required=True, help="the cell as JSON")
    parser.add_argument("--repeat", type=int, default=0)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--wandb", default="disabled", choices=("offline", "online", "disabled"))
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--save-weights", type=Path, default=None,
                        help="rank 0 saves the final state_dict here (for checks)")
    parser.add_argument("--window-choice", type=WindowChoice.from_json, default=None,
                        help="the time window an earlier repeat of the cell chose, as JSON "
                             "(bench.measure.window): this repeat measures as many steps")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cell = Cell.from_dict(json.loads(args.cell))
    # A cell's other ranks start now: forked with everything loaded, or new interpreters
    # that import torch and Lightning while this rank does.
    run_rank = (lambda: main(argv)) if forked_from_preload() else None
    started = start_other_ranks(cell, run_rank) if needs_own_ranks(cell) else []
    from bench.execute.lifecycle import ExecuteOptions, current_rank, execute

    asked = ledger.asked_at(dict(os.environ))
    if asked is not None:
        ledger.mark("asked", asked)
    ledger.mark("interpreter", INTERPRETER_AT)
    ledger.mark("imported")
    run_dir = RunDir(args.run_dir)
    options = ExecuteOptions(args.run_id, args.data_dir, args.wandb, args.verbose,
                             args.save_weights, args.window_choice)
    record = execute(cell, args.repeat, run_dir, options)
    for rank in started:  # when this rank failed before it could wait for them
        if not record.ok:
            rank.kill()
        rank.wait()
    if current_rank() == 0:
        ledger.mark("written")
        record.ledger = ledger.build(ledger.marks(), record.raw)
        write_record(run_dir.cell_record(cell.id, args.repeat), record)
    return 0 if record.ok else 1


if __name__ == "__main__":
    sys.exit(main())
