"""The benchmark trains what it says it trains: the Lightning cell computes the
same losses as the hand-written loop, and 2-process DDP with batch B per rank
computes what one process computes with batch 2B over the same samples. Plus the
throughput accounting of a real DDP record. Real MNIST, real Trainer, real
gloo processes, on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

from bench.matrix import Cell
from bench.measure.ledger import IN_PROCESS_NOTE
from bench.record import RunDir
from mnist_core.model import MnistNet
from tests.cpu_bf16 import needs_cpu_bf16

REPO = Path(__file__).resolve().parents[2]
B = 16  # per-rank batch: small, so that every run takes seconds
SGD_LR = 0.01  # large enough that 5 steps move the weights far beyond the tolerance
CELL_TIMEOUT_S = 360


def in_process(execute_cell: Any, cell: Cell, run_dir: Path,
               save_weights: Path | None = None) -> dict[str, Any]:
    record = execute_cell(cell, run_dir, save_weights)
    assert record["status"] == "ok", record
    return record


def start_cell(cell: Cell, run_dir: Path, data_dir: Path,
               save_weights: Path | None = None) -> subprocess.Popen[bytes]:
    """``python -m bench.cell`` in a child process, a new interpreter: rank 0 starts
    rank 1 on that same command line (bench.execute.spawn), as in a run without the
    preload server."""
    command = [sys.executable, "-m", "bench.cell", "--cell", json.dumps(cell.to_dict()),
               "--repeat", "0", "--run-dir", str(run_dir), "--run-id", "validity",
               "--data-dir", str(data_dir), "--wandb", "disabled"]
    if save_weights is not None:
        command += ["--save-weights", str(save_weights)]
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MNIST_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO))
    env.pop("MASTER_PORT", None)  # each launch picks its own free port
    with (run_dir / f"{cell.id}.log").open("wb") as log:
        # its own process group, so that stopping it stops rank 1 too
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the cell's process group (the launcher and the rank it started)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def finish_cell(process: subprocess.Popen[bytes], cell: Cell, run_dir: Path) -> dict[str, Any]:
    try:
        rc = process.wait(timeout=CELL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(process)
        raise
    log = (run_dir / f"{cell.id}.log").read_text(errors="replace")
    assert rc == 0, f"{cell.id} exited {rc}:\n{log[-4000:]}"
    record = json.loads(RunDir(run_dir).cell_record(cell.id, 0).read_text())
    assert record["status"] == "ok", record["reason"]
    return record


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


# The runs: every check below reads them. The 2-process DDP cells run in children,
# side by side, while the one-process cells run in this process. A fixed warm-up and
# a fixed window: every run here trains exactly as many steps.
ADAM = Cell(strategy="single", precision="32-true", batch_size=2 * B, loader="tensor",
            optimizer="adam", optimizer_impl="fused", steps=18, warmup_steps=2, warmup="fixed",
            window="fixed", seed=0)
SGD = replace(ADAM, optimizer="sgd", optimizer_impl="default", lr=SGD_LR, steps=5,
              warmup_steps=0)
DDP = dict(strategy="ddp", devices=2, batch_size=B)  # B per rank: the same global batch
DDP_ADAM = replace(ADAM, steps=8, **DDP)  # 10 losses, compared with ADAM's first 10
DDP_SGD = replace(SGD, **DDP)
RAW_ADAM = replace(ADAM, strategy="raw")
ENGINES = ["engine-ddp", "engine-fsdp", "engine-deepspeed_stage_1", "engine-deepspeed_stage_2",
           "engine-deepspeed_stage_3"]  # walked by tests/e2e/conftest.py:engine_walk


@pytest.fixture(scope="module")
def runs(data_dir: Path, execute_cell: Any, engine_walk: dict[str, Any],
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("validity")
    weights = {name: root / f"{name}.pt" for name in ("ddp_sgd", "single_sgd")}
    ddp_sgd = start_cell(DDP_SGD, root / "ddp_sgd", data_dir, weights["ddp_sgd"])
    ddp_adam = start_cell(DDP_ADAM, root / "ddp_adam", data_dir)
    try:
        found = {
            "raw_adam": in_process(execute_cell, RAW_ADAM, root / "raw_adam"),
            "single_adam": in_process(execute_cell, ADAM, root / "single_adam"),
            "single_sgd": in_process(execute_cell, SGD, root / "single_sgd",
                                     weights["single_sgd"]),
        }
        found["ddp_sgd"] = finish_cell(ddp_sgd, DDP_SGD, root / "ddp_sgd")
        found["ddp_adam"] = finish_cell(ddp_adam, DDP_ADAM, root / "ddp_adam")
    finally:
        for process in (ddp_sgd, ddp_adam):
            stop(process)
    found["weights"] = {name: load_weights(path) for name, path in weights.items()}
    found["engines"] = engine_walk["by_strategy"]
    return found


def losses(record: dict[str, Any]) -> list[float]:
    return record["raw"]["ranks"][0]["loss"]


# -- 1. the Lightning cell and the hand-written loop ----------------------------------------

@pytest.mark.slow
def test_raw_loop_and_lightning_single_give_the_same_losses(runs: dict[str, Any]) -> None:
    raw, single = runs["raw_adam"], runs["single_adam"]
    assert len(losses(raw)) == len(losses(single)) == 20  # warm-up + measured
    np.testing.assert_array_almost_equal(losses(single), losses(raw), decimal=5)
    assert len(set(np.round(losses(raw), 5))) > 10  # real, changing losses, not a constant
    assert raw["effective"]["strategy"] == "raw PyTorch loop"
    assert single["effective"]["strategy"] == "SingleDeviceStrategy"


# (variant, the arithmetic both must report: weights kept in, computes in, autocast)
VARIANTS = {
    "torchvision loader": (dict(loader="torchvision"), ("float32", "float32", False)),
    "bf16-mixed": (dict(precision="bf16-mixed"), ("float32", "bfloat16", True)),
    "bf16-true": (dict(precision="bf16-true"), ("bfloat16", "bfloat16", False)),
    "channels_last": (dict(channels_last=True), ("float32", "float32", False)),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", [pytest.param(v, marks=needs_cpu_bf16) if v.startswith("bf16")
                                     else v for v in VARIANTS])
def test_raw_loop_and_lightning_single_agree_in_each_variant(execute_cell: Any, tmp_path: Path,
                                                              variant: str) -> None:
    """The same losses and the same arithmetic, as seen inside the forward pass."""
    fields, (kept, computes, autocast) = VARIANTS[variant]
    cell = replace(ADAM, steps=6, warmup_steps=0, **fields)
    raw = in_process(execute_cell, replace(cell, strategy="raw"), tmp_path)
    single = in_process(execute_cell, cell, tmp_path)
    assert len(losses(raw)) == len(losses(single)) == 6
    np.testing.assert_array_almost_equal(losses(single), losses(raw), decimal=5)
    for record in (raw, single):
        effective = record["effective"]
        assert (effective["param_dtype"], effective["compute_dtype"],
                effective["autocast"]) == (kept, computes, autocast), variant


@pytest.mark.slow
def test_raw_and_single_records_carry_the_same_keys(runs: dict[str, Any]) -> None:
    """The control is built by the same code as the Lightning cell, so it cannot drift:
    the same keys in every block of the record, and the same ones filled in."""
    raw, single = runs["raw_adam"], runs["single_adam"]
    # Only the hand-written loops count model state (their own tensors, at the moment
    # between backward and step that a Lightning callback does not have).
    loop_only = {"params_mb", "grads_mb", "optimizer_state_mb", "model_state_bytes"}
    assert raw.keys() == single.keys()
    for block in ("raw", "effective", "metrics"):
        assert raw[block].keys() == single[block].keys(), block
        filled = {block_key for block_key, value in single[block].items() if value is not None}
        assert filled == {k for k, v in raw[block].items() if v is not None} - loop_only, block
    assert raw["raw"]["ranks"][0].keys() == single["raw"]["ranks"][0].keys()


# -- 2. DDP with B per rank == one process with 2B ------------------------------------------

@pytest.mark.slow
def test_ddp_sgd_final_weights_match_one_process_with_twice_the_batch(
        runs: dict[str, Any]) -> None:
    ddp, single = runs["weights"]["ddp_sgd"], runs["weights"]["single_sgd"]
    assert ddp.keys() == single.keys()
    worst = max(float((ddp[k] - single[k]).abs().max()) for k in ddp)
    assert worst < 1e-6, f"largest weight difference {worst:.3g}"
    # ... and the check has teeth: training moved the weights far more than that.
    L.seed_everything(DDP_SGD.seed, verbose=False)
    init = {f"net.{k}": v for k, v in MnistNet().state_dict().items()}
    moved = max(float((single[k] - init[k]).abs().max()) for k in init)
    assert moved > 1e-3, f"weights moved only {moved:.3g}"
    assert runs["ddp_sgd"]["effective"]["optimizer"] == "SGD"


@pytest.mark.slow
def test_ddp_validation_counts_every_image_once_like_one_process(runs: dict[str, Any]) -> None:
    """Same weights, so the same validation: the 5000 images split over 2 ranks (each
    rank the same number of batches) give the one-process loss and accuracy exactly,
    not a mean of the ranks' means."""
    ddp, single = runs["ddp_sgd"]["metrics"], runs["single_sgd"]["metrics"]
    assert ddp["val_acc"] == pytest.approx(single["val_acc"], abs=1e-6)
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_ddp_adam_losses_match_one_process_with_twice_the_batch(
        runs: dict[str, Any]) -> None:
    ranks = runs["ddp_adam"]["raw"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(len(r["loss"]) == 10 for r in ranks)
    # the two ranks trained on different halves of each global batch
    assert not np.allclose(ranks[0]["loss"], ranks[1]["loss"])
    ddp_losses = np.mean([r["loss"] for r in ranks], axis=0)  # each rank: the mean of B
    # Adam turns reduction-order differences (2 ranks x 1 thread vs 1 process x 2 threads)
    # into loss differences of up to ~1e-4 by step 10; here about 8e-5 at the 10th loss.
    np.testing.assert_array_almost_equal(ddp_losses, losses(runs["single_adam"])[:10],
                                         decimal=4)


# -- 4. the engine controls: the engines under Lightning's strategies, hand-driven ------

def mean_losses(record: dict[str, Any]) -> np.ndarray:
    """Each step's loss over the global batch: the ranks' means, averaged."""
    return np.mean([rank["loss"] for rank in record["raw"]["ranks"]], axis=0)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_trains_as_lightning_ddp_and_one_process(runs: dict[str, Any],
                                                             engine: str) -> None:
    """torch DDP, FSDP2 and DeepSpeed ZeRO-1/2/3 on 2 gloo ranks, each driven by a
    hand-written loop: the first 10 losses of the Lightning ddp cell, and of one
    process with twice the batch, to 4 decimals."""
    record = runs["engines"][engine]
    assert record["status"] == "ok", record["reason"]
    assert record["effective"]["world_size"] == 2 and len(record["raw"]["ranks"]) == 2
    assert record["effective"]["strategy"].startswith("engine: ")
    assert len(mean_losses(record)) == 10
    np.testing.assert_array_almost_equal(mean_losses(record), mean_losses(runs["ddp_adam"]),
                                         decimal=4)
    np.testing.assert_array_almost_equal(mean_losses(record), losses(runs["single_adam"])[:10],
                                         decimal=4)
    assert record["metrics"]["samples_per_s"] > 0
    assert record["metrics"]["val_acc"] == pytest.approx(runs["ddp_adam"]["metrics"]["val_acc"],
                                                         abs=2e-3)


@pytest.mark.slow
def test_model_state_per_rank_shows_what_each_strategy_shards(runs: dict[str, Any]) -> None:
    """Counted from the tensors each of the 2 ranks holds (largest rank): FSDP and
    ZeRO-3 keep about 1/2 of DDP's parameters; ZeRO-1/2/3 keep about 1/2 of its Adam
    state, plus an fp32 master copy of their 1/2 of the parameters. After backward,
    torch DDP holds every gradient, FSDP and ZeRO-2/3 their 1/2; DeepSpeed's ZeRO-1
    too frees the parameters' gradients once reduced into its partition (1/2)."""
    def held(engine: str, kind: str) -> Any:
        values = [r["model_state_bytes"][kind] for r in runs["engines"][engine]["raw"]["ranks"]]
        return None if None in values else max(values)

    params, adam = held("engine-ddp", "params"), held("engine-ddp", "optimizer_state")
    assert params == pytest.approx(39_407_378 * 4, rel=1e-6)  # every fp32 parameter
    assert adam == pytest.approx(2 * params, rel=1e-3)  # exp_avg and exp_avg_sq
    assert held("engine-ddp", "grads") == params and held("engine-ddp", "master_params") == 0
    for sharded in ("engine-fsdp", "engine-deepspeed_stage_3"):
        assert held(sharded, "params") == pytest.approx(params / 2, rel=0.01), sharded
    for replicated in ("engine-deepspeed_stage_1", "engine-deepspeed_stage_2"):
        assert held(replicated, "params") == params, replicated
    assert held("engine-fsdp", "grads") == pytest.approx(params / 2, rel=0.01)
    assert held("engine-fsdp", "optimizer_state") == pytest.approx(adam / 2, rel=0.01)
    for zero in ("engine-deepspeed_stage_1", "engine-deepspeed_stage_2",
                 "engine-deepspeed_stage_3"):
        assert held(zero, "optimizer_state") == pytest.approx(adam / 2, rel=0.01), zero
        assert held(zero, "master_params") == pytest.approx(params / 2, rel=0.01), zero
        assert held(zero, "grads") == pytest.approx(params / 2, rel=0.01), zero


# -- 5. throughput accounting of a real DDP record ------------------------------------------

@pytest.mark.slow
def test_ledgers_of_cells_run_in_process(runs: dict[str, Any]) -> None:
    """The hand-written loop's validation after the window is timed by the ledger; a
    torchrun walk's cells have no process start, and say so."""
    raw = runs["raw_adam"]["ledger"]
    marks, rank0 = raw["marks"], runs["raw_adam"]["raw"]["ranks"][0]
    assert raw["parts"]["validation"] == round(marks["eval_end"] - marks["eval_start"], 4) > 0
    assert raw["parts"]["window"] == round(rank0["window_s"], 4)
    assert raw["wall_s"] is None and raw["parts"]["other"] is None  # no orchestrator here
    for record in runs["engines"].values():
        ledger = record["ledger"]
        assert ledger["note"] == IN_PROCESS_NOTE
        assert ledger["parts"]["start"] is None and ledger["parts"]["imports"] is None
        assert sum(v for v in ledger["parts"].values() if v is not None) == pytest.approx(
            ledger["wall_s"], abs=1e-3)
        assert ledger["parts"]["window"] == round(record["raw"]["ranks"][0]["window_s"], 4)


@pytest.mark.slow
def test_ddp_record_accounting(runs: dict[str, Any]) -> None:
    record = runs["ddp_adam"]
    ranks, metrics = record["raw"]["ranks"], record["metrics"]
    assert record["effective"]["world_size"] == 2
    assert record["effective"]["global_batch_size"] == 2 * B
    for rank in ranks:
        assert rank["samples"] == DDP_ADAM.steps * B  # measured steps only, per rank
        assert len(rank["step_s"]) == DDP_ADAM.steps
        assert len(rank["warmup_step_s"]) == DDP_ADAM.warmup_steps
        assert rank["window_s"] == pytest.approx(sum(rank["step_s"]))
    total = sum(r["samples"] for r in ranks)
    slowest = max(r["window_s"] for r in ranks)
    assert metrics["samples_per_s"] == pytest.approx(total / slowest)
    assert metrics["samples_per_s_per_device"] == pytest.approx(metrics["samples_per_s"] / 2)
    # both ranks' peaks are in the MFU's denominator
    assert all(r["peak_tflops"] and r["peak_tflops"] > 0 for r in ranks)
    assert metrics["peak_tflops"] == pytest.approx(sum(r["peak_tflops"] for r in ranks))
    assert metrics["mfu"] == pytest.approx(metrics["achieved_tflops"] / metrics["peak_tflops"])
