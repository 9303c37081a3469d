"""The run directory: created exclusively, resumed safely.

results/<run-id>/
  env.json        the environment (bench.env)
  matrix.json     the cells and repeats, so that a resume runs the same matrix
  records.jsonl   one record per (cell, repeat), appended as each finishes
  cells/<cell-id>/log.txt, record-r<N>.json, metrics-r<N>/, wandb/
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench import record as rec
from bench.env import capture_env
from bench.matrix import Cell
from bench.plan import RunPlan


class RunDirError(ValueError):
    """The results directory cannot be used; the message says why."""


def create_run_dir(out: Path, plan: RunPlan) -> Path:
    """A fresh results/<run-id>; never an existing one (two runs never share)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirError(f"cannot create the results root {out}: {error.strerror}") from None
    if not os.access(out, os.W_OK):
        raise RunDirError(f"the results root {out} is not writable")
    run_dir = out / plan.run_id
    try:
        run_dir.mkdir()  # fails if it exists: a run id is never reused
    except FileExistsError:
        raise RunDirError(f"{run_dir} already exists; a run never writes into another's "
                          "directory") from None
    except OSError as error:
        raise RunDirError(f"cannot create {run_dir}: {error.strerror}") from None
    rec.write_json_atomic(run_dir / "env.json", capture_env())
    rec.write_json_atomic(run_dir / "matrix.json", plan.matrix_json())
    (run_dir / "records.jsonl").touch()
    return run_dir


def describe_difference(stored: list[Cell], asked: list[Cell]) -> str:
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


def open_resume(run_dir: Path, plan: RunPlan) -> Path:
    """Point ``plan`` at an earlier run: its run id, its matrix (refusing a different
    one), and only the (cell, repeat) pairs without an ok record still pending.
    Records that are not ok move to records.superseded.jsonl."""
    records_path, matrix_path = run_dir / "records.jsonl", run_dir / "matrix.json"
    if not run_dir.is_dir():
        raise RunDirError(f"cannot resume {run_dir}: no such directory")
    if not matrix_path.is_file() or not records_path.is_file():
        raise RunDirError(f"cannot resume {run_dir}: it has no matrix.json and records.jsonl, "
                          "so it is not a bench.run results directory")
    if not os.access(run_dir, os.W_OK):
        raise RunDirError(f"cannot resume {run_dir}: not writable")
    try:  # a damaged file is one clear error naming it, not a bare JSON/key error
        stored = json.loads(matrix_path.read_text())
        stored_cells = [Cell.from_dict(cell) for cell in stored["cells"]]
        repeats = int(stored["repeats"])
    except (ValueError, KeyError, TypeError) as error:
        raise RunDirError(f"cannot resume {run_dir}: its matrix.json is unreadable "
                          f"({type(error).__name__}: {error})") from None
    if plan.cells and (plan.cells != stored_cells or plan.repeats != repeats):
        raise RunDirError(
            f"cannot resume {run_dir} with a different matrix: "
            f"{describe_difference(stored_cells, plan.cells)}. Run `--resume {run_dir}` "
            "without matrix arguments to finish it as it was, or start a new run.")
    try:
        records = list(rec.read_records(records_path))
    except ValueError as error:
        raise RunDirError(f"cannot resume {run_dir}: its records.jsonl has a damaged line "
                          f"({error})") from None
    plan.cells, plan.repeats = stored_cells, repeats
    plan.run_id = run_dir.name
    kept = [r for r in records if r["status"] == "ok"]
    superseded = [r for r in records if r["status"] != "ok"]
    if superseded:
        with open(run_dir / "records.superseded.jsonl", "a") as handle:
            handle.writelines(json.dumps(r, default=str) + "\n" for r in superseded)
    tmp = records_path.with_name(".records.jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, default=str, separators=(",", ":")) + "\n"
                           for r in kept))
    os.replace(tmp, records_path)
    plan.schedule(keep={(r["cell_id"], r["repeat"]) for r in kept})
    return run_dir
