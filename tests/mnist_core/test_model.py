from __future__ import annotations

import pytest
import torch

from mnist_core.model import MnistModel, MnistNet, build_optimizer, optimizer_kernel


def test_parameter_count_is_the_tutorials_39_4_million() -> None:
    count = sum(p.numel() for p in MnistNet().parameters())
    assert count == 39_407_378
    assert round(count / 1e6, 1) == 39.4


def test_output_is_ten_logits_per_image() -> None:
    logits = MnistNet()(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10)


def test_hyperparameters_are_saved() -> None:
    model = MnistModel(lr=0.01, optimizer="sgd", optimizer_impl="foreach", use_scheduler=True)
    assert model.hparams.lr == 0.01
    assert model.hparams.optimizer == "sgd"
    assert model.hparams.use_scheduler is True


def test_configure_optimizers_adam_by_default_and_steplr_as_in_the_tutorial() -> None:
    plain = MnistModel().configure_optimizers()
    assert isinstance(plain, torch.optim.Adam)
    assert plain.defaults["lr"] == 1e-3
    optimizers, schedulers = MnistModel(use_scheduler=True).configure_optimizers()
    assert isinstance(optimizers[0], torch.optim.Adam)
    assert isinstance(schedulers[0], torch.optim.lr_scheduler.StepLR)
    assert schedulers[0].step_size == 1 and schedulers[0].gamma == 0.1


@pytest.mark.parametrize("impl", ["default", "foreach", "fused"])
def test_optimizer_implementation_is_what_was_asked(impl: str) -> None:
    optimizer = build_optimizer(torch.nn.Linear(2, 2).parameters(), "adam", 1e-3, impl)
    assert optimizer_kernel(optimizer) == impl


def test_unknown_optimizer_names_list_the_valid_ones() -> None:
    params = list(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="valid: adam, sgd"):
        build_optimizer(params, "lamb", 1e-3)
    with pytest.raises(ValueError, match="valid: default, foreach, fused"):
        build_optimizer(params, "adam", 1e-3, "apex")
