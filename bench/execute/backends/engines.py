"""What a hand-written loop drives: the bare network (the ``raw`` control) or one of
the engines under Lightning's distributed strategies (torch DDP, FSDP2
``fully_shard``, the DeepSpeed engine), each set up as its Lightning strategy sets
it up: the same wrap units, the same DeepSpeed config builder."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from bench.matrix import Cell
from bench.measure.dtypes import dtypes
from mnist_core.model import build_optimizer
from strategies.registry import strategy_spec

# The alternate DDP cell's timed all_reduces after its window, bare and through DDP's
# round trip, each: a 150 MB one takes 0.15-0.3 s on 2 CPU ranks (gloo), a few
# milliseconds over NVLink.
BARE_ALLREDUCES = 7


class Plain:
    """One module, one optimizer, torch's GradScaler for fp16."""

    name = "raw PyTorch loop"

    def __init__(self, cell: Cell, net: nn.Module, device: torch.device) -> None:
        self.cell = cell
        self.input_dtype = dtypes(cell.precision).param
        self.module: nn.Module = self.wrap(net.to(dtype=self.input_dtype), device)
        self.optimizer = build_optimizer(self.module.parameters(), cell.optimizer, cell.lr,
                                         cell.optimizer_impl)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cell.precision == "16-mixed")
        self.autocast = dtypes(cell.precision).autocast

    def wrap(self, net: nn.Module, device: torch.device) -> nn.Module:
        return net

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def train_step(self, loss: torch.Tensor) -> None:
        """Zero the gradients, backward, step: the raw loop's calls in its order
        (bench.execute.backends.raw marks the clock between them instead), for the
        microbenchmarks of one step (tests/benchmarks)."""
        self.zero_grad()
        self.backward(loss)
        self.step()

    @property
    def grad_scaler(self) -> bool:
        return self.scaler.is_enabled()

    def effective(self) -> dict[str, Any]:
        """What the engine ran that its record's ``effective`` should say."""
        return {}

    def after_window(self) -> list[dict[str, Any]]:
        """What the engine measures once training's window is closed, off the clock, on
        every rank alike: the rows of the record's ``raw.comm`` (none by default)."""
        return []


class DDP(Plain):
    """Lightning's DDPStrategy defaults (nothing set beyond the device), or a variant
    that isolates its communication (StrategySpec.ddp_comm): every gradient in one
    bucket, reduced only once backward is done (no overlap); every step under
    ``no_sync()`` (no communication at all; the ranks' weights then drift apart,
    which a throughput cell does not mind); or one bucket with the steps alternately
    synced and not, and after the window the bucket's bytes all-reduced bare in the
    same process group: both sides of the DDP check in one process
    (bench.analyze.ddp_check)."""

    name = "engine: DistributedDataParallel"

    def wrap(self, net: nn.Module, device: torch.device) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        comm = self.comm = strategy_spec(self.cell.strategy).ddp_comm
        options: dict[str, Any] = {}
        self.synced_steps: list[bool] = []  # per backward, warm-up included
        self.bucket_sizes: list[int] | None = None  # read once the buckets are final
        if comm in ("one-bucket", "alternate"):  # a cap above the gradients: one bucket
            grads_mib = sum(p.numel() * p.element_size() for p in net.parameters()) / 2**20
            options["bucket_cap_mb"] = math.ceil(grads_mib) + 1
        module = DistributedDataParallel(
            net, device_ids=[device.index] if device.index is not None else None, **options)
        if comm == "none":  # no_sync() entered for good: what it does for one step, always
            self._no_sync = module.no_sync()
            self._no_sync.__enter__()
        self.ddp = module
        return module

    def backward(self, loss: torch.Tensor) -> None:
        self.synced_steps.append(bool(self.ddp.require_backward_grad_sync))
        super().backward(loss)

    def step(self) -> None:
        super().step()
        if self.comm == "alternate":
            # What no_sync() sets, for the next step's forward (where DDP reads it) and
            # backward: every other step then communicates nothing.
            self.ddp.require_backward_grad_sync = not self.synced_steps[-1]

    def after_window(self) -> list[dict[str, Any]]:
        """Alternate cells: the bucket's bytes, in this process group right after
        training, as a comm cell times them (bench.measure.collectives): all-reduced
        bare (label ``bucket``), and through DDP's round trip (label
        ``bucket-round-trip``: copied in from gradients, divided by the world size,
        all-reduced, copied back)."""
        if self.comm != "alternate":
            return []
        from bench.measure.collectives import (
            CommSize,
            comm_row,
            time_bucket_round_trip,
            time_collective,
        )

        [nbytes] = self._bucket_bytes()  # one bucket
        parameter = next(self.ddp.parameters())
        dtype, device = parameter.dtype, parameter.device
        world = torch.distributed.get_world_size()
        bare = CommSize("all_reduce", nbytes, "bucket")
        round_trip = CommSize("all_reduce", nbytes, "bucket-round-trip")
        return [
            comm_row(bare, dtype, time_collective(
                bare, dtype, device, iterations=BARE_ALLREDUCES, warmup=1),
                world, self.cell.num_nodes),
            comm_row(round_trip, dtype, time_bucket_round_trip(
                nbytes, dtype, device, iterations=BARE_ALLREDUCES, warmup=1),
                world, self.cell.num_nodes)]

    def _bucket_bytes(self) -> list[int]:
        """The bytes of each bucket the reducer holds, read once (the read copies every
        bucket) after training, when they are final."""
        if self.bucket_sizes is None:
            buckets = self.ddp.reducer._get_zeros_like_grad_buckets()
            self.bucket_sizes = [b.buffer().numel() * b.buffer().element_size()
                                 for b in buckets]
        return self.bucket_sizes

    def effective(self) -> dict[str, Any]:
        """The communication variant, and the bytes of each bucket the reducer holds
        now: as it rebuilt them at the second step (by the order the gradients became
        ready), else as built (one bucket of every gradient; under no_sync nothing is
        rebuilt, or sent). (Its log says the same a step later, so not after 2 steps.)"""
        data = self.ddp._get_ddp_logging_data()
        # DDP's own timer of its buckets' reduction (first started to last done), in ns,
        # averaged over the steps it samples (its first 10, warm-up included, then one in
        # 100); absent where nothing was sent.
        comm_ns = data.get("avg_backward_comm_time")
        return {"ddp_comm": self.comm,
                "ddp_bucket_bytes": self._bucket_bytes(),
                "ddp_timer_comm_ms": comm_ns / 1e6 if comm_ns else None,
                # alternate cells: which steps communicated (True) or ran as no_sync()
                "ddp_step_synced": self.synced_steps if self.comm == "alternate" else None}


class FSDP(Plain):
    """FSDP2: each of the units the Lightning ``fsdp`` cell wraps, then the root."""

    name = "engine: FSDP2 fully_shard"

    def wrap(self, net: nn.Module, device: torch.device) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from strategies.fsdp import wrapped_units

        mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
        compute = dtypes(self.cell.precision).autocast  # as Lightning's FSDPPrecision casts
        policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=compute) if compute \
            else MixedPrecisionPolicy()
        for unit in wrapped_units(net):
            fully_shard(unit, mesh=mesh, mp_policy=policy)
        fully_shard(net, mesh=mesh, mp_policy=policy)
        return net


class DeepSpeed:
    """``deepspeed.initialize`` with the config the Lightning cell gets. Without offload
    the client optimizer is the cell's (as Lightning passes configure_optimizers');
    with offload the config's optimizer section makes DeepSpeedCPUAdam."""

    name = "engine: DeepSpeedEngine"
    autocast = None  # DeepSpeed's bf16/fp16 modes hold the weights in that dtype instead

    def __init__(self, cell: Cell, net: nn.Module, device: torch.device) -> None:
        import deepspeed

        from strategies.deepspeed import deepspeed_config, skip_inference_only_ops

        skip_inference_only_ops()
        spec = strategy_spec(cell.strategy)
        config = deepspeed_config(spec.zero_stage or 1, spec.offload, cell.precision,
                                  lr=cell.lr, batch_size=cell.batch_size)
        optimizer = None if spec.offload else build_optimizer(
            net.parameters(), cell.optimizer, cell.lr, cell.optimizer_impl)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=net, optimizer=optimizer, config=config)
        self.module: Any = self.engine
        self.grad_scaler = "fp16" in config  # DeepSpeed scales the fp16 loss itself
        self.input_dtype = torch.bfloat16 if "bf16" in config else \
            torch.float16 if "fp16" in config else torch.float32

    def zero_grad(self) -> None:
        """Nothing to do: the engine's step zeroes the gradients it has consumed."""

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    def train_step(self, loss: torch.Tensor) -> None:
        self.backward(loss)
        self.step()

    def effective(self) -> dict[str, Any]:
        return {}

    def after_window(self) -> list[dict[str, Any]]:
        return []


def make_engine(cell: Cell, net: nn.Module, device: torch.device) -> Plain | DeepSpeed:
    engine = strategy_spec(cell.strategy).engine
    kinds: dict[str | None, Any] = {None: Plain, "ddp": DDP, "fsdp": FSDP, "deepspeed": DeepSpeed}
    return kinds[engine](cell, net, device)
