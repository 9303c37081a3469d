"""DeepSpeed configs for the ZeRO cells (stage 1/2/3, optionally offloaded to CPU).

We pass Lightning a full config dict instead of its keyword arguments so that what
DeepSpeed runs is written down in one place and lands in the cell's record. Passing
a dict has consequences, each handled below:

* Lightning's own defaults (``zero_allow_untested_optimizer``, micro batch size from
  ``logging_batch_size_per_gpu``) are only used when it builds the config itself;
  with ours they are ignored, so we set the keys we rely on.
* Lightning adds ``fp16``/``bf16`` sections only when they are missing
  (``lightning.fabric.strategies.deepspeed._format_precision_config``); we write
  them ourselves with Lightning's default values, so both routes agree.
* ``gradient_accumulation_steps`` and ``gradient_clipping`` are filled from the
  Trainer (it refuses a config that sets the former), so they are not set here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch.strategies import DeepSpeedStrategy

STAGES = (1, 2, 3)
OFFLOAD_STAGES = (2, 3)

# Dynamic fp16 loss scaling with the values Lightning's DeepSpeedStrategy uses by
# default (loss_scale=0 means dynamic; start at 2**16). DeepSpeed's "fp16" is not
# torch AMP: weights are held in fp16 with fp32 master copies in the optimizer,
# and without loss scaling small gradients underflow.
FP16_SECTION: dict[str, Any] = {
    "enabled": True,
    "loss_scale": 0,
    "initial_scale_power": 16,
    "loss_scale_window": 1000,
    "hysteresis": 2,
    "min_loss_scale": 1,
}
BF16_SECTION: dict[str, Any] = {"enabled": True}  # bf16 has fp32's range: no loss scaling

# Cell precision -> the DeepSpeed precision sections. bf16-mixed and bf16-true both
# become DeepSpeed's bf16 mode (bf16 weights, fp32 master weights in the optimizer);
# the difference is only whether Lightning casts the module first.
PRECISION_SECTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "32-true": {},
    "16-mixed": {"fp16": FP16_SECTION},
    "bf16-mixed": {"bf16": BF16_SECTION},
    "bf16-true": {"bf16": BF16_SECTION},
}


def deepspeed_config(
    stage: int,
    offload: bool,
    precision: str,
    lr: float = 1e-3,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config for one ZeRO cell; a fresh dict on every call, because
    Lightning writes into the dict it is given."""
    if stage not in STAGES:
        raise ValueError(f"ZeRO stage must be one of {STAGES}, got {stage!r}")
    if offload and stage not in OFFLOAD_STAGES:
        raise ValueError(
            f"offload needs ZeRO stage 2 or 3 (stage 1 does not offload), got stage {stage}"
        )
    if precision not in PRECISION_SECTIONS:
        raise ValueError(
            f"unknown precision {precision!r}; valid: {', '.join(PRECISION_SECTIONS)}"
        )

    zero: dict[str, Any] = {"stage": stage}
    config: dict[str, Any] = {
        "zero_optimization": zero,
        # Lightning sets this in the config it builds for the "deepspeed_stage_*"
        # names; ours replaces that one, so keep it: DeepSpeed otherwise refuses any
        # optimizer outside its tested list (torch SGD, one of the model's choices).
        "zero_allow_untested_optimizer": True,
        # DeepSpeed clips gradients at norm 1.0 unless told otherwise; Lightning fills
        # in 0 only when the key is missing. Said here, so that every engine built from
        # this config trains the model as the other strategies do: unclipped.
        "gradient_clipping": 0.0,
    }
    for section, values in PRECISION_SECTIONS[precision].items():
        config[section] = dict(values)
    if batch_size is not None:
        # DeepSpeed reads this only for its throughput timer and sample counters
        # (and its own dataloader, unused under Lightning). Without it Lightning asks
        # the train loader for ``batch_sampler.batch_size`` and silently uses 1 for
        # a plain iterable (our "tensor"/"device" loaders).
        config["train_micro_batch_size_per_gpu"] = batch_size

    if offload:
        config |= offload_sections(zero, stage, lr)
    # Without offload there is no "optimizer" section: Lightning then calls the
    # LightningModule's configure_optimizers (torch Adam, optional StepLR) and hands
    # that optimizer to deepspeed.initialize, which wraps it in the ZeRO optimizer.
    return config


def offload_sections(zero: dict[str, Any], stage: int, lr: float) -> dict[str, Any]:
    """Move the optimizer state (and on stage 3 the parameters) to pinned CPU memory in
    ``zero``; return the top-level sections that offloading needs."""
    config: dict[str, Any] = {}
    pinned_cpu = {"device": "cpu", "pin_memory": True}
    zero["offload_optimizer"] = dict(pinned_cpu)
    if stage == 3:
        zero["offload_param"] = dict(pinned_cpu)
    # The optimizer must come from this config: DeepSpeed builds DeepSpeedCPUAdam
    # for type "Adam" when the optimizer is offloaded to CPU (and torch_adam is
    # false). A client optimizer from configure_optimizers (torch Adam) under
    # offload raises ZeRORuntimeException while zero_force_ds_cpu_optimizer is
    # true, which we keep (its default) so a slow path cannot sneak in. With an
    # optimizer here Lightning skips configure_optimizers entirely, so the
    # module's optional StepLR scheduler does not run in offload cells.
    config["zero_force_ds_cpu_optimizer"] = True
    config["optimizer"] = {
        "type": "Adam",
        "params": {
            "lr": lr,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "weight_decay": 0.0,
            # DeepSpeed's "Adam" is AdamW unless told otherwise; the model uses
            # torch.optim.Adam (coupled L2, here zero anyway).
            "adam_w_mode": False,
            "torch_adam": False,
        },
    }
    return config


# DeepSpeed's CPU communication backend JIT-compiles a shared-memory all_reduce when it
# starts (deepspeed/comm/torch.py: TorchBackend builds the ShareMemCommBuilder op), and
# only ``inference_all_reduce`` ever calls it: every collective of a ZeRO training step
# goes through torch.distributed (gloo on CPU). Its C++ build is a minute or two on every
# machine or environment it has not been built in, spent inside the first DeepSpeed cell.
SHM_COMM_OP = "deepspeed_shm_comm"


def skip_inference_only_ops() -> None:
    """Keep DeepSpeed from building an op no training step uses. DeepSpeed probes its
    compatible ops once and keeps the dict in ``deepspeed.ops`` so that edits to it
    persist; an op marked incompatible there is not built, and the backend falls back
    to torch.distributed, as it does where the op cannot be built."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False


def deepspeed_strategy(
    stage: int,
    offload: bool,
    precision: str,
    lr: float = 1e-3,
    batch_size: int | None = None,
) -> DeepSpeedStrategy:
    """Lightning's DeepSpeedStrategy for one ZeRO cell.

    Constructing it imports deepspeed but needs no CUDA and starts nothing; the CUDA
    check is in ``setup_environment`` (at fit time), and the Trainer itself refuses
    nothing earlier, so ``registry.why_skipped`` keeps these cells off CPU.
    """
    from lightning.pytorch.strategies import DeepSpeedStrategy

    skip_inference_only_ops()
    return DeepSpeedStrategy(config=deepspeed_config(stage, offload, precision, lr, batch_size))
