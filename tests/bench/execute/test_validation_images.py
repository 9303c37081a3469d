"""A throughput cell validates on the fixed sanity subset, an accuracy cell on the
whole split; the Lightning backend and the hand-written loop validate on the same
images, so their val_acc stays comparable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import torch

from bench.execute.backends.raw import evaluate
from bench.execute.workload import LoopResult, build_raw, prepare, validation_images
from bench.matrix import Cell
from bench.metrics import FULL_VAL_IMAGES, SANITY_VAL_IMAGES
from mnist_core.data import VAL_SIZE
from tests.mnist_core.test_val_subset import SUBSET

THROUGHPUT = Cell(strategy="single", batch_size=32, loader="tensor", steps=3, warmup_steps=1)


def test_one_subset_size_everywhere() -> None:
    assert FULL_VAL_IMAGES == VAL_SIZE  # bench.metrics cannot import mnist_core (torch)
    assert SUBSET == SANITY_VAL_IMAGES < FULL_VAL_IMAGES


def test_the_mode_chooses_the_validation_images() -> None:
    assert validation_images(THROUGHPUT) == SANITY_VAL_IMAGES
    assert validation_images(replace(THROUGHPUT, mode="accuracy")) == FULL_VAL_IMAGES
    for strategy in ("raw", "ddp", "engine-ddp"):  # the controls validate as their cell
        assert validation_images(replace(THROUGHPUT, strategy=strategy)) == SANITY_VAL_IMAGES


def test_build_raw_records_the_images_only_when_it_validated(data_dir: Path) -> None:
    workload = prepare(THROUGHPUT, 0, str(data_dir))
    result = LoopResult(ranks=[], peak_source="test", precision="32-true", world_size=1,
                        strategy="test", optimizer=None, grad_scaler=False,
                        outcome={"val_acc": 0.5, "val_loss": 1.0})
    assert build_raw(workload, result).val_images == SANITY_VAL_IMAGES
    assert build_raw(workload, replace(result, outcome={})).val_images is None


def test_lightning_and_the_loop_validate_the_same_images(data_dir: Path) -> None:
    """Same weights through Lightning's validation and the hand-written loop's
    evaluate: the same accuracy and loss, over exactly the subset's images."""
    workload = prepare(THROUGHPUT, 0, str(data_dir))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    [lightning] = trainer.validate(workload.model, datamodule=workload.datamodule,
                                   verbose=False)
    data = workload.datamodule
    assert len(data.val_set[1]) == SANITY_VAL_IMAGES
    loop = evaluate(workload.model.net, data.val_dataloader(), torch.device("cpu"),
                    torch.float32, None)
    assert lightning["val_acc"] == pytest.approx(loop["val_acc"], abs=1e-6)
    assert lightning["val_loss"] == pytest.approx(loop["val_loss"], rel=1e-5)
    correct = loop["val_acc"] * SANITY_VAL_IMAGES  # a whole count of the subset's images
    assert correct == pytest.approx(round(correct), abs=1e-6)
