"""From the command line to the list of (cell, repeat) runs, with skip reasons."""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from bench.matrix import Cell, MatrixError, apply_overrides, expand, load_matrix
from strategies.registry import Machine, why_skipped

# --flag (argparse dest) -> matrix key
AXIS_FLAGS = {"accelerators": "accelerator", "devices": "devices", "strategies": "strategy",
              "precisions": "precision", "batch_sizes": "batch_size", "loaders": "loader",
              "compile": "compile", "optimizer_impls": "optimizer_impl", "modes": "mode"}
SETTING_FLAGS = ("steps", "warmup_steps", "seed", "target_acc", "max_epochs", "val_every_steps",
                 "num_nodes")


@dataclass
class RunPlan:
    run_id: str
    cells: list[Cell]
    repeats: int
    machine: Machine
    wandb_mode: str
    # (cell, repeat, skip reason or None), in run order; a resume drops the finished ones.
    pending: list[tuple[Cell, int, str | None]] = field(default_factory=list)

    @property
    def launched(self) -> bool:
        return self.machine.launched_world_size is not None

    def runnable_left(self, done: int) -> int:
        return sum(1 for _, _, reason in self.pending[done:] if reason is None)

    def schedule(self, keep: set[tuple[str, int]] | None = None) -> None:
        """(Re)build ``pending``: every repeat of every cell, minus those in ``keep``."""
        keep = keep or set()
        reasons = {cell: why_skipped(cell, self.machine) for cell in self.cells}
        self.pending = [(cell, repeat, reasons[cell]) for cell in self.cells
                        for repeat in range(self.repeats) if (cell.id, repeat) not in keep]

    def matrix_json(self) -> dict[str, Any]:
        return {"repeats": self.repeats, "cells": [cell.to_dict() for cell in self.cells]}


def new_run_id() -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    host = socket.gethostname().split(".")[0][:20] or "host"
    return f"{stamp}-{host}-{secrets.token_hex(2)}"


def matrix_given(args: argparse.Namespace) -> bool:
    return args.matrix is not None or any(
        getattr(args, flag) is not None for flag in (*AXIS_FLAGS, *SETTING_FLAGS, "repeats"))


def build_plan(args: argparse.Namespace, wandb_mode: str) -> RunPlan:
    """The cells to run. With ``--resume`` and no matrix arguments, the cells come
    from the resumed run (filled in by bench.rundir.open_resume)."""
    machine = Machine.detect()
    if args.resume is not None and not matrix_given(args):
        return RunPlan("", [], 1, machine, wandb_mode)
    spec = load_matrix(args.matrix or "all")
    overrides = {key: getattr(args, flag) for flag, key in AXIS_FLAGS.items()}
    overrides |= {flag: getattr(args, flag) for flag in SETTING_FLAGS}
    spec = apply_overrides(spec, overrides)
    repeats = args.repeats if args.repeats is not None else spec.get("repeats", 1)
    if not isinstance(repeats, int) or isinstance(repeats, bool):
        raise MatrixError(f"repeats must be an integer, got {repeats!r}")
    if repeats < 1:
        raise MatrixError(f"--repeats must be at least 1, got {repeats}")
    plan = RunPlan(new_run_id(), expand(spec, machine), repeats, machine, wandb_mode)
    plan.schedule()
    return plan


def print_plan(plan: RunPlan) -> None:
    runnable = sum(1 for _, _, reason in plan.pending if reason is None)
    print(f"{len(plan.cells)} cells x {plan.repeats} repeat(s): {runnable} run(s) here, "
          f"{len(plan.pending) - runnable} skipped")
    width = max((len(cell.id) for cell in plan.cells), default=10)
    for cell, repeat, reason in plan.pending:
        if repeat:
            continue
        print(f"  {cell.id:<{width}}  {'run' if reason is None else 'skip: ' + reason}")
