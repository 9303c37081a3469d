"""From the command line to the (cell, repeat) runs in run order, with skip reasons:
counted at once, made one at a time."""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from bench.matrix import Cell, MatrixError
from bench.orchestrate.presets import apply_overrides, expand, load_matrix
from strategies.registry import Machine, strategy_spec, why_skipped

# --flag (argparse dest) -> matrix key
AXIS_FLAGS = {"accelerators": "accelerator", "devices": "devices", "strategies": "strategy",
              "precisions": "precision", "batch_sizes": "batch_size", "loaders": "loader",
              "compile": "compile", "optimizer_impls": "optimizer_impl", "modes": "mode"}
SETTING_FLAGS = ("steps", "warmup_steps", "warmup", "window", "min_window_s", "seed",
                 "target_acc", "max_epochs", "val_every_steps", "num_nodes")
DEFAULT_TIMEOUT_S = {"throughput": 900.0, "accuracy": 3600.0, "comm": 900.0}


class PlannedRun(NamedTuple):
    cell: Cell
    repeat: int
    skip_reason: str | None  # None: it runs here


@dataclass(frozen=True)
class Matrix:
    """The cells asked for and how often each runs."""

    cells: tuple[Cell, ...]
    repeats: int

    def to_json(self) -> dict[str, Any]:
        return {"repeats": self.repeats, "cells": [cell.to_dict() for cell in self.cells]}


class PendingRuns:
    """The (cell, repeat) runs still to do, in run order, made one at a time as the walk
    asks for them. Counting them needs no list (a round's cells times the repeats, less
    the finished pairs), so ``--repeats 100000000 --dry-run`` answers at once.

    Repeats are interleaved: the first repeat of every cell, then the second, ... A
    machine drifts over minutes (a neighbour on a VM, clocks, heat); run back to back,
    one cell's repeats would all land in one phase of it and the next cell's in
    another, and the drift would read as a difference between the cells."""

    def __init__(self, cells: tuple[Cell, ...], repeats: int, reasons: dict[Cell, str | None],
                 finished: frozenset[tuple[str, int]] = frozenset()) -> None:
        self.repeats = repeats
        # paired_order depends on the round only through its parity: two orders serve all.
        self._rounds = (paired_order(cells, 0), paired_order(cells, 1))
        self._reasons = reasons
        self._finished = frozenset((cell_id, repeat) for cell_id, repeat in finished
                                   if 0 <= repeat < repeats)
        done = Counter(cell_id for cell_id, _ in self._finished)
        self._left = {cell: repeats - done[cell.id] for cell in self._rounds[0]}
        self._len = sum(self._left.values())
        self.runnable = sum(n for cell, n in self._left.items() if reasons[cell] is None)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[PlannedRun]:
        for repeat in range(self.repeats):
            for cell in self._rounds[repeat % 2]:
                if (cell.id, repeat) not in self._finished:
                    yield PlannedRun(cell, repeat, self._reasons[cell])

    def first_round(self) -> list[PlannedRun]:
        """Each cell once, in the order of the first round, with its skip reason."""
        return [PlannedRun(cell, 0, self._reasons[cell]) for cell in self._rounds[0]]

    def cells_to_run(self) -> list[Cell]:
        """The cells that run here and have a repeat left."""
        return [cell for cell, n in self._left.items() if n and self._reasons[cell] is None]

    def repeats_left(self, cell: Cell) -> int:
        return self._left.get(cell, 0)


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    matrix: Matrix
    machine: Machine
    wandb_mode: str
    pending: PendingRuns  # in run order; a resume leaves out the finished ones

    @property
    def launched(self) -> bool:
        return self.machine.launched_world_size is not None


def make_plan(run_id: str, matrix: Matrix, machine: Machine, wandb_mode: str,
              finished: frozenset[tuple[str, int]] = frozenset()) -> RunPlan:
    """Every repeat of every cell (see PendingRuns for the order), minus the (cell id,
    repeat) pairs already ``finished``; each cell asked once why it cannot run here."""
    reasons = {cell: why_skipped(cell, machine) for cell in matrix.cells}
    pending = PendingRuns(matrix.cells, matrix.repeats, reasons, finished)
    return RunPlan(run_id, matrix, machine, wandb_mode, pending)


def paired_order(cells: tuple[Cell, ...], repeat: int) -> list[Cell]:
    """The cells of one repeat round, each control cell (``raw``, ``engine-*``) run right
    beside the Lightning cell it stands beside, first after it and then before it in
    alternate rounds (A B, B A, ...): the two sides of the "Lightning against its
    control" table meet the machine in the same minute, and neither always goes first."""
    partner = {cell: replace(cell, strategy=spec.controls) for cell in cells
               if (spec := strategy_spec(cell.strategy)).controls}
    control_of = {lightning: control for control, lightning in partner.items()
                  if lightning in cells}
    order: list[Cell] = []
    for cell in cells:
        if partner.get(cell) in control_of:
            continue  # a control: placed beside its Lightning cell
        pair = [cell, control_of[cell]] if cell in control_of else [cell]
        order += pair[::-1] if repeat % 2 else pair
    return order


def new_run_id() -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    host = socket.gethostname().split(".")[0][:20] or "host"
    return f"{stamp}-{host}-{secrets.token_hex(2)}"


def matrix_given(args: argparse.Namespace) -> bool:
    return args.matrix is not None or any(
        getattr(args, flag) is not None for flag in (*AXIS_FLAGS, *SETTING_FLAGS, "repeats"))


def requested_matrix(args: argparse.Namespace, machine: Machine) -> Matrix | None:
    """The matrix the command line asks for; None for a bare ``--resume`` (the run's
    own matrix then decides)."""
    if args.resume is not None and not matrix_given(args):
        return None
    spec = load_matrix(args.matrix or "all")
    overrides = {key: getattr(args, flag) for flag, key in AXIS_FLAGS.items()}
    overrides |= {flag: getattr(args, flag) for flag in SETTING_FLAGS}
    spec = apply_overrides(spec, overrides)
    repeats = args.repeats if args.repeats is not None else spec.get("repeats", 1)
    if not isinstance(repeats, int) or isinstance(repeats, bool):
        raise MatrixError(f"repeats must be an integer, got {repeats!r}")
    if repeats < 1:
        raise MatrixError(f"--repeats must be at least 1, got {repeats}")
    return Matrix(tuple(expand(spec, machine)), repeats)


def print_plan(plan: RunPlan, estimate: str = "") -> int:
    """List every cell with its fate here; build what each runnable cell needs (strategy,
    precision plugin, DeepSpeed config) and list what fails. Returns the problem count.
    ``estimate``, when given, is printed under the count."""
    runnable, cells = plan.pending.runnable, plan.matrix.cells
    # Flushed before the builds below import Lightning: the count is there at once.
    print(f"{len(cells)} cells x {plan.matrix.repeats} repeat(s): {runnable} run(s) here, "
          f"{len(plan.pending) - runnable} skipped", flush=True)
    if estimate:
        print(estimate, flush=True)
    from strategies.preflight import build_problems  # imports Lightning: dry runs only

    width = max((len(cell.id) for cell in cells), default=10)
    problems = 0
    for cell, _, reason in plan.pending.first_round():
        if reason is not None:
            print(f"  {cell.id:<{width}}  skip: {reason}")
            continue
        found = build_problems(cell)
        problems += len(found)
        print(f"  {cell.id:<{width}}  " + ("run" if not found else "PROBLEM: " + "; ".join(found)))
    if problems:
        print(f"{problems} problem(s) found before anything ran")
    return problems
