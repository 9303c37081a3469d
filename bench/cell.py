"""Run ONE cell (one repeat) and write its record: ``python -m bench.cell ...``.

The orchestrator starts this in a child process per cell. Lightning's DDP
launcher re-executes this same command line for the other ranks, so the
command line describes exactly one cell. Rank 0 writes the record.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from bench import record as rec
from bench.env import device_name, env_key, version
from bench.faults import inject as inject_fault
from bench.matrix import Cell
from bench.measure import (
    MeasureCallback,
    derive_metrics,
    flops_per_training_sample,
    gather,
    reset_memory_peaks,
)
from bench.peaks import device_peak_tflops
from bench.settings import apply_process_settings, loader_workers
from mnist_core.data import MnistDataModule
from mnist_core.model import MnistModel, MnistNet, optimizer_kernel
from strategies.registry import strategy_spec, trainer_arguments


def record_path(run_dir: Path, cell: Cell, repeat: int) -> Path:
    return run_dir / "cells" / cell.id / f"record-r{repeat}.json"


def base_record(cell: Cell, repeat: int, run_id: str, status: str,
                reason: str | None = None) -> dict[str, Any]:
    """A record with every schema key; ``raw``, ``metrics``, ``effective`` still empty."""
    return {
        "schema": rec.SCHEMA_VERSION, "run_id": run_id, "cell_id": cell.id,
        "cell": cell.to_dict(), "repeat": repeat, "seed": cell.seed + repeat,
        "status": status, "reason": reason, "effective": {}, "raw": {}, "metrics": {},
        "env_key": env_key(cell.accelerator),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": None, "log": f"cells/{cell.id}/log.txt",
    }


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


class PeakCallback(L.Callback):
    """This rank's peak FLOP/s for the cell's compute dtype, found once every rank is up
    (CPU ranks calibrate together, as they will train: side by side)."""

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.peak_tflops: float | None = None
        self.source = ""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.strategy.barrier()
        self.peak_tflops, self.source = device_peak_tflops(
            trainer.strategy.root_device, self.precision)
        reset_memory_peaks(trainer.strategy.root_device)


def build_trainer(cell: Cell, cell_dir: Path, callbacks: list[L.Callback], loggers: list[Any],
                  verbose: bool) -> L.Trainer:
    common: dict[str, Any] = dict(
        **trainer_arguments(cell), callbacks=callbacks, logger=loggers,
        enable_progress_bar=verbose, enable_model_summary=verbose, num_sanity_val_steps=0,
        default_root_dir=str(cell_dir), log_every_n_steps=10, deterministic=False,
    )
    if cell.mode == "throughput":
        # Fixed steps; no validation inside fit (it is not training time), one after.
        return L.Trainer(max_steps=cell.warmup_steps + cell.steps, max_epochs=-1,
                         check_val_every_n_epoch=None, val_check_interval=10**9,
                         enable_checkpointing=False, **common)
    return L.Trainer(max_epochs=cell.max_epochs, check_val_every_n_epoch=None,
                     val_check_interval=cell.val_every_steps, **common)


def run_lightning(cell: Cell, repeat: int, cell_dir: Path, data_dir: str | None,
                  loggers: list[Any], verbose: bool
                  ) -> tuple[dict[str, Any], dict[str, Any], torch.nn.Module]:
    from bench.accuracy import accuracy_callbacks

    L.seed_everything(cell.seed + repeat, workers=True, verbose=False)
    model = MnistModel(lr=cell.lr, optimizer=cell.optimizer, optimizer_impl=cell.optimizer_impl)
    datamodule = MnistDataModule(data_dir, cell.batch_size, cell.loader,
                                 num_workers=loader_workers(cell), seed=cell.seed + repeat)
    measure, peak = MeasureCallback(cell.warmup_steps), PeakCallback(cell.precision)
    callbacks: list[L.Callback] = [measure, peak]
    target = None
    if cell.mode == "accuracy":
        extra, target = accuracy_callbacks(cell, cell_dir, measure)
        callbacks += extra
    # Per-step metrics always land in cells/<id>/metrics-r<repeat>/metrics.csv.
    csv = CSVLogger(str(cell_dir), name="", version=f"metrics-r{repeat}")
    trainer = build_trainer(cell, cell_dir, callbacks, [csv, *loggers], verbose)
    if cell.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fit_model: Any = model
    if cell.compile != "none":
        fit_model = torch.compile(model, mode=cell.compile)
    trainer.fit(fit_model, datamodule=datamodule)

    raw: dict[str, Any] = {"ranks": measure.ranks}
    for rank_raw, rank_peak in zip(raw["ranks"], gather_peaks(peak.peak_tflops), strict=True):
        rank_raw["peak_tflops"] = rank_peak
    raw["peak_source"] = peak.source
    raw["flops_per_sample"] = flops_per_training_sample(MnistNet)
    if cell.compile != "none" and raw["ranks"][0]["warmup_step_s"]:
        # Compilation happens in the first step: its excess over a steady step.
        rank0 = raw["ranks"][0]
        raw["compile_s"] = max(0.0, rank0["warmup_step_s"][0] - statistics.median(rank0["step_s"]))
    if target is not None:
        raw |= target.result()
        results = trainer.test(fit_model, datamodule=datamodule, verbose=verbose)
    else:
        results = trainer.validate(fit_model, datamodule=datamodule, verbose=verbose)
    for key, value in (results[0] if results else {}).items():
        raw[key] = float(value)
    if target is not None:
        raw["val_acc"] = target.best_val_acc
        raw["val_loss"] = target.last_val_loss
    optimizer = trainer.optimizers[0] if trainer.optimizers else None
    effective = {
        "accelerator": cell.accelerator,
        "precision": str(trainer.precision),
        "world_size": trainer.world_size,
        "global_batch_size": cell.batch_size * trainer.world_size,
        "strategy": type(trainer.strategy).__name__,
        "optimizer": type(optimizer).__name__ if optimizer else None,
        "optimizer_kernel": optimizer_kernel(optimizer),
        # fp16 needs loss scaling: torch's GradScaler (AMP) or DeepSpeed's own.
        "grad_scaler": getattr(trainer.precision_plugin, "scaler", None) is not None,
    }
    if hasattr(trainer.strategy, "config") and isinstance(trainer.strategy.config, dict):
        effective["deepspeed_config"] = trainer.strategy.config
    return raw, effective, model


def gather_peaks(peak: float | None) -> list[float | None]:
    return [item["peak"] for item in gather({"peak": peak})]


def current_rank() -> int:
    """This process's global rank (Lightning sets it once the Trainer exists)."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def run_cell(cell: Cell, repeat: int, run_dir: Path, run_id: str, data_dir: str | None,
             wandb_mode: str = "disabled", verbose: bool = False,
             save_weights: Path | None = None) -> dict[str, Any] | None:
    """Run the cell; return the record on rank 0 (None on other ranks)."""
    from bench import wandb_sink

    started = time.perf_counter()
    inject_fault(cell.id)
    cell_dir = run_dir / "cells" / cell.id
    cell_dir.mkdir(parents=True, exist_ok=True)
    choices = apply_process_settings(cell)
    record = base_record(cell, repeat, run_id, "ok")
    if strategy_spec(cell.strategy).lightning:
        logger = wandb_sink.cell_logger(cell, repeat, run_id, cell_dir, wandb_mode)
        raw, effective, model = run_lightning(
            cell, repeat, cell_dir, data_dir, [logger] if logger else [], verbose)
    else:
        from bench.raw_loop import run_raw

        logger = None
        raw, effective, model = run_raw(cell, repeat, data_dir)
    rank = current_rank()
    if save_weights is not None and rank == 0:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, save_weights)
    effective |= choices | {"device_name": device_name(cell.accelerator),
                  "torch": version("torch"), "lightning": version("lightning")}
    record["raw"], record["effective"] = raw, effective
    record["metrics"] = derive_metrics(raw, effective["world_size"])
    record["wall_s"] = record["metrics"]["wall_s"] = time.perf_counter() - started
    if logger is not None:
        wandb_sink.finish_cell(logger, record)
    return record if rank == 0 else None


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
    out = record_path(args.run_dir, cell, args.repeat)
    try:
        record = run_cell(cell, args.repeat, args.run_dir, args.run_id, args.data_dir,
                          args.wandb, args.verbose, args.save_weights)
    except Exception as error:  # the record says how it failed; the matrix goes on
        traceback.print_exc()
        reason = "oom" if is_out_of_memory(error) else f"{type(error).__name__}: {error}"
        if current_rank() == 0:
            rec.write_json_atomic(out, base_record(cell, args.repeat, args.run_id, "failed",
                                                   reason.strip()[:2000]))
        return 1
    if record is not None:
        rec.write_json_atomic(out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
