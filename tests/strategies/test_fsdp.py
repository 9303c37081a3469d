"""strategies.fsdp: the FSDPStrategy for the fsdp cell, its wrap policy applied to the
real model, and mixed precision coming from Lightning's plugin."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from fakes import FakeCell
from lightning.pytorch.plugins.precision import FSDPPrecision
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from torch.distributed.fsdp import ShardingStrategy

from mnist_core.model import MnistNet
from strategies.fsdp import PRECISIONS, fsdp_strategy
from strategies.registry import trainer_arguments


class Marker(nn.Module):
    """Stands in for the FSDP wrapper: FSDP itself needs an accelerator device."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def wrapped_names(policy: object) -> list[str]:
    """Submodules of the real model that ``policy`` makes their own FSDP unit, by
    torch's own recursion (the root is always a unit, so it is left out)."""
    try:
        from torch.distributed.fsdp.wrap import _recursive_wrap
    except ImportError:  # private helper; do not fail the suite if torch moves it
        pytest.skip("torch.distributed.fsdp.wrap._recursive_wrap is gone")
    model = MnistNet()
    _recursive_wrap(model, policy, Marker, set(), set(), only_wrap_children=True)
    return [name for name, module in model.named_modules() if isinstance(module, Marker)]


def test_strategy_settings() -> None:
    strategy = fsdp_strategy("bf16-mixed")
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert strategy.kwargs["use_orig_params"] is True
    assert strategy.mixed_precision is None  # left to the precision plugin


def test_policy_wraps_the_two_big_linear_layers() -> None:
    policy = fsdp_strategy("32-true").kwargs["auto_wrap_policy"]
    assert wrapped_names(policy) == ["classifier.1", "classifier.3"]
    model = MnistNet()
    total = sum(p.numel() for p in model.parameters())
    big = (model.classifier[1], model.classifier[3])
    wrapped = sum(p.numel() for layer in big for p in layer.parameters())
    assert wrapped / total > 0.99


def test_class_policy_would_wrap_attention_out_proj() -> None:
    """Why fsdp.py does not use ``{nn.Linear}``: it catches a layer FSDP cannot run."""
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    assert "attention.out_proj" in wrapped_names(ModuleWrapPolicy({nn.Linear}))


# Expected on CPU: the fp16 scaler disables itself; Lightning notes bf16-true.
@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled:UserWarning")
@pytest.mark.filterwarnings("ignore:FSDP with `bf16-true`")
@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("32-true", torch.float32), ("16-mixed", torch.float16),
     ("bf16-mixed", torch.bfloat16), ("bf16-true", torch.bfloat16)],
)
def test_mixed_precision_comes_from_lightnings_plugin(
    precision: str, dtype: torch.dtype
) -> None:
    strategy = fsdp_strategy(precision)
    strategy.precision_plugin = FSDPPrecision(precision)  # what the Trainer does
    config = strategy.mixed_precision_config
    assert config is not None
    assert (config.param_dtype, config.reduce_dtype) == (dtype, dtype)


def test_every_registry_precision_is_accepted() -> None:
    from strategies.registry import PRECISIONS as REGISTRY_PRECISIONS

    assert set(REGISTRY_PRECISIONS) <= set(PRECISIONS)


def test_unknown_precision() -> None:
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid: 32-true"):
        fsdp_strategy("fp8")


def test_trainer_refuses_fsdp_on_cpu() -> None:
    """The reason registry.why_skipped gives for fsdp on CPU."""
    with pytest.raises(ValueError, match="requires a GPU accelerator"):
        L.Trainer(accelerator="cpu", devices=1, strategy=fsdp_strategy("32-true"),
                  logger=False, enable_checkpointing=False)




def test_registry_trainer_arguments() -> None:
    args = trainer_arguments(FakeCell("cuda", 4, 1, "fsdp", "16-mixed"))
    strategy = args.pop("strategy")
    assert isinstance(strategy, FSDPStrategy)
    assert args == {"accelerator": "cuda", "devices": 4, "num_nodes": 1, "precision": "16-mixed"}
