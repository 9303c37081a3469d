"""strategies.deepspeed: the configs per ZeRO cell, checked against DeepSpeed's own
config parser and Lightning's precision defaults; the strategy objects."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fakes import FakeCell

from strategies.deepspeed import PRECISION_SECTIONS, deepspeed_config, deepspeed_strategy
from strategies.registry import STRATEGIES, trainer_arguments

DEEPSPEED_NAMES = [name for name, spec in STRATEGIES.items()
                   if spec.needs_deepspeed and spec.lightning]
PRECISIONS = list(PRECISION_SECTIONS)
ROOT = Path(__file__).resolve().parents[2]


def stage_offload(name: str) -> tuple[int, bool]:
    spec = STRATEGIES[name]
    assert spec.zero_stage is not None
    return spec.zero_stage, spec.offload


def as_lightning_leaves_it(config: dict) -> dict:
    """What Lightning adds before deepspeed.initialize (from the Trainer)."""
    config.setdefault("train_micro_batch_size_per_gpu", 1)
    config["gradient_accumulation_steps"] = 1
    config.setdefault("gradient_clipping", 0.0)
    return config


def test_registry_names_cover_every_stage_and_offload() -> None:
    assert sorted(stage_offload(name) for name in DEEPSPEED_NAMES) == [
        (1, False), (2, False), (2, True), (3, False), (3, True),
    ]


@pytest.mark.parametrize("name", DEEPSPEED_NAMES)
def test_zero_stage_and_offload_sections(name: str) -> None:
    stage, offload = stage_offload(name)
    zero = deepspeed_config(stage, offload, "32-true")["zero_optimization"]
    assert zero["stage"] == stage
    pinned_cpu = {"device": "cpu", "pin_memory": True}
    assert zero.get("offload_optimizer") == (pinned_cpu if offload else None)
    assert zero.get("offload_param") == (pinned_cpu if offload and stage == 3 else None)


@pytest.mark.parametrize("name", DEEPSPEED_NAMES)
def test_optimizer_section_only_for_offload(name: str) -> None:
    stage, offload = stage_offload(name)
    config = deepspeed_config(stage, offload, "bf16-mixed", lr=3e-4)
    if not offload:
        # Lightning then takes torch Adam from the LightningModule.
        assert "optimizer" not in config
        return
    assert config["zero_force_ds_cpu_optimizer"] is True
    optimizer = config["optimizer"]
    assert optimizer["type"] == "Adam"
    assert optimizer["params"]["lr"] == 3e-4
    # torch Adam semantics on DeepSpeedCPUAdam, not torch's Adam on the CPU.
    assert optimizer["params"]["adam_w_mode"] is False
    assert optimizer["params"]["torch_adam"] is False


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_sections(precision: str) -> None:
    config = deepspeed_config(2, False, precision)
    fp16, bf16 = config.get("fp16"), config.get("bf16")
    if precision == "16-mixed":
        assert fp16 is not None and fp16["enabled"] is True
        assert fp16["loss_scale"] == 0  # 0 = dynamic loss scaling
        assert fp16["initial_scale_power"] == 16
        assert bf16 is None
    elif precision.startswith("bf16"):
        assert bf16 == {"enabled": True}
        assert fp16 is None
    else:
        assert fp16 is None and bf16 is None


def test_batch_size_and_what_lightning_owns() -> None:
    assert deepspeed_config(2, False, "32-true", batch_size=64)[
        "train_micro_batch_size_per_gpu"
    ] == 64
    config = deepspeed_config(2, False, "32-true")
    assert "train_micro_batch_size_per_gpu" not in config  # Lightning infers it
    # Lightning refuses a config with gradient_accumulation_steps.
    assert "gradient_accumulation_steps" not in config


@pytest.mark.parametrize("stage, offload", [(1, False), (2, False), (3, False), (2, True),
                                            (3, True)])
def test_no_config_clips_gradients_as_deepspeed_does_by_default(stage: int,
                                                                 offload: bool) -> None:
    """DeepSpeed clips at norm 1.0 when a config does not say otherwise; an engine built
    from our config must train unclipped, as every other strategy does."""
    config = deepspeed_config(stage, offload, "bf16-mixed", batch_size=16)
    assert config["gradient_clipping"] == 0.0
    deepspeed = pytest.importorskip("deepspeed")
    parsed = deepspeed.runtime.config.DeepSpeedConfig(config)
    assert parsed.gradient_clipping == 0.0
    assert deepspeed.runtime.config.DeepSpeedConfig(
        {"train_micro_batch_size_per_gpu": 16}).gradient_clipping == 1.0  # the trap


def test_each_call_returns_a_fresh_config() -> None:
    first = deepspeed_config(3, True, "16-mixed")
    first["zero_optimization"]["offload_param"]["device"] = "nvme"
    first["fp16"]["loss_scale"] = 128
    second = deepspeed_config(3, True, "16-mixed")
    assert second["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert second["fp16"]["loss_scale"] == 0


@pytest.mark.parametrize("stage", [0, 4, "2"])
def test_bad_stage(stage: object) -> None:
    with pytest.raises(ValueError, match="ZeRO stage must be one of"):
        deepspeed_config(stage, False, "32-true")  # type: ignore[arg-type]


def test_offload_needs_stage_2_or_3() -> None:
    with pytest.raises(ValueError, match="offload needs ZeRO stage 2 or 3"):
        deepspeed_config(1, True, "32-true")


def test_unknown_precision_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown precision '16'.*32-true, 16-mixed, bf16-mixed"):
        deepspeed_config(2, False, "16")


@pytest.mark.parametrize("name", DEEPSPEED_NAMES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_deepspeed_parses_every_config(name: str, precision: str) -> None:
    """DeepSpeed's config models forbid unknown keys, so a typo fails here."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    stage, offload = stage_offload(name)
    parsed = DeepSpeedConfig(as_lightning_leaves_it(deepspeed_config(stage, offload, precision)))
    assert parsed.zero_optimization_stage == stage
    assert parsed.float16_config.enabled is (precision == "16-mixed")
    assert parsed.bfloat16_config.enabled is precision.startswith("bf16")
    if precision == "16-mixed":
        assert parsed.float16_config.loss_scale == 0
    assert (parsed.zero_config.offload_optimizer is not None) is offload
    assert (parsed.zero_config.offload_param is not None) is (offload and stage == 3)
    assert parsed.optimizer_name == ("adam" if offload else None)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_sections_agree_with_lightning_defaults(precision: str) -> None:
    """Lightning fills missing precision sections itself; ours must equal what it
    would write, and it must leave ours alone."""
    pytest.importorskip("deepspeed")
    from lightning.fabric.strategies.deepspeed import _format_precision_config

    strategy = deepspeed_strategy(2, False, precision)
    scaling = {
        "loss_scale": strategy.loss_scale,
        "loss_scale_window": strategy.loss_scale_window,
        "min_loss_scale": strategy.min_loss_scale,
        "initial_scale_power": strategy.initial_scale_power,
        "hysteresis": strategy.hysteresis,
    }
    lightning_own: dict = {}
    _format_precision_config(config=lightning_own, precision=precision, **scaling)
    ours = deepspeed_config(2, False, precision)
    assert {k: ours[k] for k in ("fp16", "bf16") if k in ours} == lightning_own
    formatted = deepspeed_config(2, False, precision)
    _format_precision_config(config=formatted, precision=precision, **scaling)
    assert formatted == ours


@pytest.mark.parametrize("name", DEEPSPEED_NAMES)
def test_strategy_builds_on_cpu_and_carries_the_config(name: str) -> None:
    pytest.importorskip("deepspeed")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    stage, offload = stage_offload(name)
    strategy = deepspeed_strategy(stage, offload, "16-mixed", lr=5e-4, batch_size=32)
    assert isinstance(strategy, DeepSpeedStrategy)
    assert strategy.config == deepspeed_config(stage, offload, "16-mixed", 5e-4, 32)
    assert strategy.zero_stage_3 is (stage == 3)




@pytest.mark.parametrize("name", DEEPSPEED_NAMES)
def test_registry_trainer_arguments(name: str) -> None:
    pytest.importorskip("deepspeed")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    args = trainer_arguments(FakeCell("gpu", 2, 1, name, "bf16-mixed", batch_size=32, lr=0.005))
    strategy = args.pop("strategy")
    assert args == {"accelerator": "cuda", "devices": 2, "num_nodes": 1, "precision": "bf16-mixed"}
    assert isinstance(strategy, DeepSpeedStrategy)
    stage, offload = stage_offload(name)
    assert strategy.config["zero_optimization"]["stage"] == stage
    assert "bf16" in strategy.config and "fp16" not in strategy.config  # same as the Trainer's
    assert ("optimizer" in strategy.config) is offload
    assert strategy.config["train_micro_batch_size_per_gpu"] == 32  # the cell's batch size
    if offload:
        assert strategy.config["optimizer"]["params"]["lr"] == 0.005  # the cell's lr


# deepspeed.initialize on DeepSpeed's CPU accelerator (gloo, one process), in a child
# process so its process group cannot leak into other tests. The first offload run
# JIT-builds DeepSpeed's cpu_adam op (about a minute; cached afterwards); the shared-
# memory all_reduce op, which training never calls, is skipped as the cells skip it.
ENGINE_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"], RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed, torch
    import deepspeed.comm.comm
    from strategies.deepspeed import deepspeed_config, skip_inference_only_ops
    skip_inference_only_ops()
    deepspeed.init_distributed("gloo")
    print("SHM_OP", deepspeed.comm.comm.cdb.shm_comm_op)
    for stage, offload in [(1, False), (2, False), (3, False), (2, True), (3, True)]:
        config = deepspeed_config(stage, offload, "32-true", batch_size=4)
        config["gradient_accumulation_steps"] = 1
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        # What Lightning does: offload -> no client optimizer; else configure_optimizers.
        client = None if offload else torch.optim.Adam(model.parameters(), lr=1e-3)
        engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                          optimizer=client, config=config,
                                          dist_init_required=False)
        engine.backward(engine(torch.randn(4, 8)).sum())
        engine.step()
        print("BASIC", stage, offload, type(engine.basic_optimizer).__name__)
    """
)


@pytest.mark.slow
def test_deepspeed_engine_picks_cpu_adam_only_for_offload(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PORT": str(port), "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", ENGINE_SCRIPT], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SHM_OP None" in done.stdout  # not built: its C++ is no part of a training step
    basic = sorted(line.split()[1:] for line in done.stdout.splitlines()
                   if line.startswith("BASIC"))
    assert basic == [
        ["1", "False", "Adam"], ["2", "False", "Adam"], ["2", "True", "DeepSpeedCPUAdam"],
        ["3", "False", "Adam"], ["3", "True", "DeepSpeedCPUAdam"],
    ]
