"""wandb: one run per cell (through Lightning's WandbLogger) and one report run.

wandb is optional at run time: missing, misconfigured or failing, it prints one
warning and the benchmark goes on. Offline runs land in the run directory;
``wandb sync results/<run-id>/cells/*/wandb/offline-run-*`` uploads them later.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from bench.measure.env import env_key
from bench.record import Record

PROJECT = os.environ.get("WANDB_PROJECT", "mnist-bench")
MODES = ("offline", "online", "disabled")
_warned = False


def resolve_mode(flag: str | None) -> str:
    """``--wandb`` when given, else ``$WANDB_MODE``, else offline."""
    mode = flag or os.environ.get("WANDB_MODE") or "offline"
    if mode == "dryrun":
        mode = "offline"
    if mode not in MODES:
        raise ValueError(f"unknown wandb mode {mode!r}; valid: {', '.join(MODES)}")
    return mode


def _warn_once(what: str, error: BaseException) -> None:
    global _warned
    if not _warned:
        warnings.warn(f"wandb {what} failed ({type(error).__name__}: {error}); "
                      "the benchmark goes on without it", stacklevel=2)
        _warned = True


def cell_logger(cell: Any, repeat: int, run_id: str, cell_dir: Path, mode: str) -> Any:
    """A WandbLogger for this cell, or None when wandb is disabled or unavailable."""
    if mode == "disabled":
        return None
    try:
        import wandb  # noqa: F401
        from lightning.pytorch.loggers import WandbLogger

        os.environ["WANDB_SILENT"] = os.environ.get("WANDB_SILENT", "true")
        return WandbLogger(
            project=PROJECT, group=run_id, name=cell.id if repeat == 0 else f"{cell.id}-r{repeat}",
            save_dir=str(cell_dir), mode=mode, job_type="cell",
            config={"cell": cell.to_dict(), "repeat": repeat, "cell_id": cell.id,
                    "env": env_key(cell.accelerator)},
            tags=[cell.accelerator, cell.strategy, cell.precision],
        )
    except Exception as error:
        _warn_once("set-up", error)
        return None


def finish_cell(logger: Any, record: Record) -> None:
    """Put the record's metrics in the run summary and close the run (rank 0 only)."""
    try:
        from lightning.pytorch.utilities import rank_zero_only

        if getattr(rank_zero_only, "rank", 0) != 0:
            return
        experiment = logger.experiment
        experiment.summary.update({k: v for k, v in record.metrics.items() if v is not None})
        experiment.summary.update({"status": record.status.value, "cell_id": record.cell_id})
        experiment.finish()
    except Exception as error:
        _warn_once("logging", error)


def report_run(run_dir: Path, run_id: str, summary: Any, plots: list[Path], mode: str) -> None:
    """One run holding the summary table and the plots."""
    if mode == "disabled":
        return
    try:
        import wandb

        os.environ["WANDB_SILENT"] = os.environ.get("WANDB_SILENT", "true")
        run = wandb.init(project=PROJECT, group=run_id, name=f"{run_id}-report",
                         job_type="report", dir=str(run_dir), mode=mode, reinit="finish_previous")
        run.log({"summary": wandb.Table(dataframe=summary.reset_index(drop=True)),
                 **{f"plots/{path.stem}": wandb.Image(str(path)) for path in plots}})
        run.finish()
    except Exception as error:
        _warn_once("report run", error)
