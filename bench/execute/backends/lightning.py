"""The Lightning backend: the prepared workload through ``lightning.Trainer``, as a
user runs it, with the measuring callbacks attached."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from bench.execute.backends.accuracy import accuracy_callbacks
from bench.execute.workload import (
    LOG_EVERY_N_STEPS,
    LoopResult,
    Workload,
    arithmetic_probe,
    compile_network,
    step_trace,
    warmup_rule,
)
from bench.matrix import Cell
from bench.measure import ledger
from bench.measure.hooks import DataPhaseProfiler, MeasureCallback, PeakCallback, gather
from bench.measure.window import Window
from strategies.registry import trainer_arguments


class WalksOwnSigterm(L.Callback):
    """Under torchrun or SLURM a cell trains inside the walk's process, whose SIGTERM
    handler (bench.orchestrate.launched.TermSignal) ends the walk and has rank 0 record
    the cell as interrupted. For fit, Lightning puts a handler of its own in front, and
    that one broadcasts from rank 0 inside the handler: a rank signalled while the other
    sits in a gradient all_reduce waits for a partner that never comes, and the job's
    kill (SLURM's KillWait later) ends rank 0 before it records anything. Once fit has
    installed its handlers, this puts the walk's back. A process with no handler of its
    own (a cell run locally, which its orchestrator records) is left as Lightning sets it."""

    def __init__(self) -> None:
        self.walks = signal.getsignal(signal.SIGTERM)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if callable(self.walks):
            signal.signal(signal.SIGTERM, self.walks)


def build_trainer(cell: Cell, cell_dir: Path, callbacks: list[L.Callback], loggers: list[Any],
                  verbose: bool, profiler: Any = None, window: Window | None = None
                  ) -> L.Trainer:
    """Throughput cells train up to the longest warm-up plus the most steps the
    ``window`` can take (default: the cell's own, as a first repeat chooses it); the
    MeasureCallback stops training (``trainer.should_stop``) once the window's steps
    have been measured. ``max_epochs=-1``: a window longer than an epoch of data goes
    on into the next epoch, and with ``check_val_every_n_epoch=None`` an epoch's end
    does not validate."""
    common: dict[str, Any] = dict(
        **trainer_arguments(cell), callbacks=callbacks, logger=loggers, profiler=profiler,
        enable_progress_bar=verbose, enable_model_summary=verbose, num_sanity_val_steps=0,
        default_root_dir=str(cell_dir), log_every_n_steps=LOG_EVERY_N_STEPS, deterministic=False,
    )
    if cell.mode == "throughput":
        # One validation inside fit, after the last step (the clock pauses for it):
        # Lightning validates when should_stop is set, or at val_check_interval when
        # warm-up took its longest. Not trainer.validate() after fit: Lightning's
        # teardown has moved the module to the CPU by then, which ZeRO-3 never moves
        # back, and under FSDP the root is not rewrapped for it.
        window = window or Window.for_cell(cell, 0)
        assert window is not None  # a throughput cell has one
        steps = warmup_rule(cell).max_steps + window.most_steps
        return L.Trainer(max_steps=steps, max_epochs=-1, check_val_every_n_epoch=None,
                         val_check_interval=steps, enable_checkpointing=False, **common)
    return L.Trainer(max_epochs=cell.max_epochs, check_val_every_n_epoch=None,
                     val_check_interval=cell.val_every_steps, **common)


def run(workload: Workload, cell_dir: Path, loggers: list[Any], verbose: bool) -> LoopResult:
    cell, repeat = workload.cell, workload.repeat
    measure = MeasureCallback(warmup_rule(cell), workload.window)
    peak = PeakCallback(cell.precision, workload.peaks_file)
    callbacks: list[L.Callback] = [measure, peak, WalksOwnSigterm()]
    target = None
    if cell.mode == "accuracy":
        extra, target = accuracy_callbacks(cell, cell_dir, measure)
        callbacks += extra
    # Per-step metrics always land in cells/<id>/metrics-r<repeat>/metrics.csv.
    csv = CSVLogger(str(cell_dir), name="", version=f"metrics-r{repeat}")
    trainer = build_trainer(cell, cell_dir, callbacks, [csv, *loggers], verbose,
                            profiler=DataPhaseProfiler(measure), window=workload.window)
    measure.compile_meter = compile_network(workload, trainer.global_rank)
    measure.trace = step_trace(workload, trainer.global_rank, trainer.strategy.root_device)
    probe = arithmetic_probe(workload)
    trainer.fit(workload.model, datamodule=workload.datamodule)
    arithmetic = probe.result(workload.model.net) if probe else {}

    ranks = measure.ranks
    for rank_raw, rank_peak in zip(ranks, gather(peak.peak_tflops), strict=True):
        rank_raw.peak_tflops = rank_peak
    outcome = {key: float(trainer.callback_metrics[key]) for key in ("val_acc", "val_loss")
               if key in trainer.callback_metrics}  # the in-fit validation's
    if target is not None:
        outcome |= target.result()
        ledger.mark("eval_start")  # after fit, off the clock: the ledger times it
        results = trainer.test(workload.model, datamodule=workload.datamodule, verbose=verbose)
        ledger.mark("eval_end")
        outcome |= {key: float(value) for key, value in (results[0] if results else {}).items()}
    extra: dict[str, Any] = {}
    if hasattr(trainer.strategy, "config") and isinstance(trainer.strategy.config, dict):
        extra["deepspeed_config"] = trainer.strategy.config
    return LoopResult(
        ranks=ranks, peak_source=peak.source, precision=str(trainer.precision),
        world_size=trainer.world_size, strategy=type(trainer.strategy).__name__,
        optimizer=trainer.optimizers[0] if trainer.optimizers else None,
        grad_scaler=getattr(trainer.precision_plugin, "scaler", None) is not None,
        outcome=outcome, extra_effective=extra, arithmetic=arithmetic, window=workload.window)
