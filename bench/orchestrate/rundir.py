"""The run directory: created exclusively, resumed safely.

results/<run-id>/ (paths: bench.record.RunDir)
  env.json        the environment (bench.measure.env)
  matrix.json     the cells and repeats, so that a resume runs the same matrix
  records.jsonl   one record per (cell, repeat), appended as each finishes
  cells/<cell-id>/log.txt, record-r<N>.json, metrics-r<N>/, wandb/
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from bench.matrix import Cell
from bench.measure.env import capture_env
from bench.orchestrate.plan import Matrix, RunPlan, make_plan
from bench.record import RunDir, read_records, write_json_atomic
from strategies.registry import Machine


class RunDirError(ValueError):
    """The results directory cannot be used; the message says why."""


def ensure_results_root(out: Path) -> None:
    """The results root exists and is writable (checked before any cell, and again when
    the run directory is made)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirError(f"cannot create the results root {out}: {error.strerror}") from None
    if not os.access(out, os.W_OK):
        raise RunDirError(f"the results root {out} is not writable")


def check_run_id(name: str | None, resuming: bool) -> None:
    """--run-id (None: not given): a plain directory name, for a new run only."""
    if name is None:
        return
    if resuming:
        raise RunDirError("--run-id names a new run; --resume keeps the run's own id")
    if name in ("", ".", "..") or "/" in name:
        raise RunDirError(f"--run-id must be a plain directory name, got {name!r}")


def records_in(run_dir: RunDir) -> int:
    """How many records the run holds (the records a walk adds come after them)."""
    return sum(1 for _ in read_records(run_dir.records)) if run_dir.records.exists() else 0


def create_run_dir(out: Path, plan: RunPlan) -> RunDir:
    """A fresh results/<run-id>; never an existing one (two runs never share)."""
    ensure_results_root(out)
    run_dir = out / plan.run_id
    try:
        run_dir.mkdir()  # fails if it exists: a run id is never reused
    except FileExistsError:
        raise RunDirError(f"{run_dir} already exists; a run never writes into another's "
                          "directory") from None
    except OSError as error:
        raise RunDirError(f"cannot create {run_dir}: {error.strerror}") from None
    paths = RunDir(run_dir)
    write_json_atomic(paths.env, capture_env())
    write_json_atomic(paths.matrix, plan.matrix.to_json())
    paths.records.touch()
    return paths


def describe_difference(stored: tuple[Cell, ...], asked: tuple[Cell, ...]) -> str:
    stored_ids, asked_ids = {c.id: c for c in stored}, {c.id: c for c in asked}
    parts = []
    if added := sorted(set(asked_ids) - set(stored_ids)):
        parts.append(f"new cells {added}")
    if removed := sorted(set(stored_ids) - set(asked_ids)):
        parts.append(f"missing cells {removed}")
    changed = sorted(i for i in set(stored_ids) & set(asked_ids) if stored_ids[i] != asked_ids[i])
    if changed:
        parts.append(f"changed settings in {changed}")
    return "; ".join(parts) or "a different order or repeat count"


def open_resume(path: Path, asked: Matrix | None, machine: Machine, wandb_mode: str,
                before_writing: Callable[[RunPlan], None] = lambda plan: None
                ) -> tuple[RunDir, RunPlan]:
    """An earlier run and the plan that finishes it: its run id, its matrix (refusing a
    different ``asked`` one), and only the (cell, repeat) pairs without an ok record.
    Records that are not ok move to records.superseded.jsonl, after ``before_writing``
    (the checks before any cell) has passed the plan: a refused resume changes nothing."""
    run_dir = RunDir(path)
    if not path.is_dir():
        raise RunDirError(f"cannot resume {path}: no such directory")
    if not run_dir.matrix.is_file() or not run_dir.records.is_file():
        raise RunDirError(f"cannot resume {path}: it has no matrix.json and records.jsonl, "
                          "so it is not a bench.run results directory")
    if not os.access(path, os.W_OK):
        raise RunDirError(f"cannot resume {path}: not writable")
    try:  # a damaged file is one clear error naming it, not a bare JSON/key error
        stored_json = json.loads(run_dir.matrix.read_text())
        # A cell written before the window existed measured exactly its steps.
        stored = Matrix(tuple(Cell.from_dict({"window": "fixed"} | cell)
                              for cell in stored_json["cells"]), int(stored_json["repeats"]))
    except (ValueError, KeyError, TypeError) as error:
        raise RunDirError(f"cannot resume {path}: its matrix.json is unreadable "
                          f"({type(error).__name__}: {error})") from None
    if asked is not None and asked != stored:
        raise RunDirError(
            f"cannot resume {path} with a different matrix: "
            f"{describe_difference(stored.cells, asked.cells)}. Run `--resume {path}` "
            "without matrix arguments to finish it as it was, or start a new run.")
    try:
        records = list(read_records(run_dir.records))
    except ValueError as error:
        raise RunDirError(f"cannot resume {path}: its records.jsonl has a damaged line "
                          f"({error})") from None
    kept = [r for r in records if r["status"] == "ok"]
    superseded = [r for r in records if r["status"] != "ok"]
    finished = frozenset((r["cell_id"], r["repeat"]) for r in kept)
    plan = make_plan(run_dir.run_id, stored, machine, wandb_mode, finished)
    before_writing(plan)
    if superseded:
        with open(run_dir.superseded, "a") as handle:
            handle.writelines(json.dumps(r, default=str) + "\n" for r in superseded)
    tmp = run_dir.records.with_name(".records.jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, default=str, separators=(",", ":")) + "\n"
                           for r in kept))
    os.replace(tmp, run_dir.records)
    return run_dir, plan
