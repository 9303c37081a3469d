"""bench.measure.flops: FLOPs per training sample, counted by torch."""

from __future__ import annotations

import pytest

from bench.measure.flops import flops_per_training_sample
from mnist_core.model import MnistNet


def test_flops_per_training_sample_is_the_published_figure() -> None:
    flops = flops_per_training_sample(MnistNet)
    assert flops == pytest.approx(264.9e6, rel=0.01)
    # per sample: the batch size it is counted at does not matter
    assert flops_per_training_sample(MnistNet, batch_size=2) == pytest.approx(flops, rel=1e-6)
