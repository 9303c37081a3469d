"""Both backends measure exactly the window's steps, a time window chosen at the end of
the warm-up, going round the training data's epochs when the window is longer than
one. A tiny network on a fake perf_counter: every step takes 0.25 s by the clock, so
a 2 s window (2.2 s with the margin) is 9 steps, and 2 warm-up + 9 steps need three
epochs of 4 batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.execute.backends.engines import Plain
from bench.execute.backends.lightning import build_trainer
from bench.execute.backends.raw import _train_steps
from bench.matrix import Cell
from bench.measure.clock import StepClock
from bench.measure.hooks import MeasureCallback
from bench.measure.warmup import WarmupRule
from bench.measure.window import MAX_WINDOW_STEPS, Window
from tests.bench.measure import test_warmup
from tests.bench.measure.test_warmup import FakeTime

CPU = torch.device("cpu")
STEP_S, BATCHES = 0.25, 4
CELL = Cell(strategy="single", steps=3, warmup_steps=2, warmup="fixed", min_window_s=2.0)
CHOSEN = 9  # ceil(1.1 x 2.0 s / 0.25 s)
fake_time = test_warmup.fake_time  # the clock on a fake perf_counter, moved by hand


class Epochs:
    """BATCHES batches of two 4-feature samples a pass; each fetch takes STEP_S."""

    def __init__(self, fake: FakeTime) -> None:
        self.fake, self.passes = fake, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.passes += 1
        for _ in range(BATCHES):
            self.fake.now += STEP_S
            yield torch.randn(2, 4), torch.tensor([0, 1])


def test_the_raw_loop_measures_the_chosen_count_across_epochs(fake_time: FakeTime) -> None:
    window = Window.for_cell(CELL, 0)
    clock = StepClock(WarmupRule.fixed(2), CPU, window)
    data = Epochs(fake_time)
    held = _train_steps(Plain(CELL, nn.Linear(4, 2), CPU), data, clock, None, CPU)
    rank = clock.rank_raw(0)
    assert rank.step_s == pytest.approx([STEP_S] * CHOSEN)
    assert len(rank.warmup_step_s) == 2 and rank.samples == 2 * CHOSEN
    assert data.passes == 3  # 11 batches from epochs of 4
    assert window is not None and window.to_record()["steps"] == CHOSEN
    assert held["params"] == (4 * 2 + 2) * 4  # the last step's, after its backward


class Tiny(L.LightningModule):
    def __init__(self, fake: FakeTime) -> None:
        super().__init__()
        self.net, self.fake = nn.Linear(4, 2), fake
        self.validated_at: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.fake.now += STEP_S
        images, labels = batch
        return nn.functional.cross_entropy(self.net(images), labels)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.validated_at.append(self.trainer.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_measures_the_chosen_count_across_epochs_and_validates_after_it(
        fake_time: FakeTime, tmp_path: Path) -> None:
    window = Window.for_cell(CELL, 0)
    measure = MeasureCallback(WarmupRule.fixed(2), window)
    trainer = build_trainer(CELL, tmp_path, [measure], [], verbose=False, window=window)
    # Not yet chosen: the Trainer's bound is the longest window; the callback stops it.
    assert trainer.max_steps == 2 + MAX_WINDOW_STEPS
    samples = TensorDataset(torch.randn(2 * BATCHES, 4), torch.randint(0, 2, (2 * BATCHES,)))
    model = Tiny(fake_time)
    trainer.fit(model, train_dataloaders=DataLoader(samples, batch_size=2),
                val_dataloaders=DataLoader(samples, batch_size=8))
    [rank] = measure.ranks
    assert rank.step_s == pytest.approx([STEP_S] * CHOSEN)
    # 11 steps from epochs of 4 batches: the third epoch was cut short by the callback
    assert trainer.global_step == 2 + CHOSEN and trainer.current_epoch == 3
    assert model.validated_at == [2 + CHOSEN]  # once, after the window, not at an epoch's end
    assert window is not None and window.to_record()["chosen_in_repeat"] == 0


def test_a_known_count_bounds_the_trainer() -> None:
    fixed = Window.for_cell(Cell(window="fixed", steps=3, warmup_steps=2, warmup="fixed"), 0)
    assert build_trainer(CELL, Path("unused"), [], [], verbose=False,
                         window=fixed).max_steps == 2 + 3
