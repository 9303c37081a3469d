from __future__ import annotations

import pytest
from fakes import FakeCell

from strategies.registry import (
    PRECISIONS,
    STRATEGIES,
    Machine,
    UnknownNameError,
    strategy_spec,
    trainer_arguments,
    why_skipped,
)
from strategies.toolchain import Toolchain

CPU_BOX = Machine(cpu_count=2, cuda_devices=0, cuda_bf16=False, deepspeed=True)
ONE_GPU = Machine(cpu_count=16, cuda_devices=1, cuda_bf16=True, deepspeed=True)
TORCHRUN_2 = Machine(cpu_count=2, cuda_devices=0, cuda_bf16=False, deepspeed=True,
                     launched_world_size=2, launched_local_world_size=2)




def test_the_names_users_type() -> None:
    assert set(STRATEGIES) >= {"single", "ddp", "fsdp", "deepspeed_stage_1", "deepspeed_stage_2",
                               "deepspeed_stage_3", "deepspeed_stage_2_offload",
                               "deepspeed_stage_3_offload", "raw"}
    assert PRECISIONS == ("32-true", "16-mixed", "bf16-mixed", "bf16-true")


@pytest.mark.parametrize("field,value,listed", [
    ("strategy", "horovod", "deepspeed_stage_3_offload"),
    ("precision", "fp8", "bf16-true"),
    ("accelerator", "tpu", "cuda"),
])
def test_unknown_names_are_errors_listing_the_valid_ones(field: str, value: str,
                                                         listed: str) -> None:
    with pytest.raises(UnknownNameError, match=f"unknown {field} '{value}'; valid: .*{listed}"):
        why_skipped(FakeCell(**{field: value}), CPU_BOX)


@pytest.mark.parametrize("cell,machine,reason", [
    (FakeCell(accelerator="cuda"), CPU_BOX, "no CUDA device"),
    (FakeCell(accelerator="gpu"), CPU_BOX, "no CUDA device"),
    (FakeCell(strategy="ddp", devices=4), CPU_BOX, "needs 4 CPU cores, this machine has 2"),
    (FakeCell(accelerator="cuda", strategy="ddp", devices=2), ONE_GPU,
     "needs 2 CUDA devices, this machine has 1"),
    (FakeCell(strategy="fsdp"), CPU_BOX, "FSDP strategy needs CUDA"),
    (FakeCell(strategy="deepspeed_stage_2"), CPU_BOX, "DeepSpeed strategy needs CUDA"),
    (FakeCell(accelerator="cuda", strategy="deepspeed_stage_1"),
     Machine(16, 1, True, deepspeed=False), "deepspeed is not installed"),
    (FakeCell(precision="16-mixed"), CPU_BOX, "silently run bf16-mixed"),
    (FakeCell(strategy="raw", mode="accuracy"), CPU_BOX, "throughput only"),
    (FakeCell(accelerator="cuda", strategy="deepspeed_stage_2_offload", optimizer="sgd"),
     ONE_GPU, "own CPU Adam"),
    (FakeCell(strategy="ddp", devices=4), TORCHRUN_2, "launched with 2 processes"),
    (FakeCell(strategy="ddp", devices=1, num_nodes=2), CPU_BOX, "torchrun or SLURM"),
    (FakeCell(malloc="retain"), Machine(2, 0, False, deepspeed=False, glibc=False),
     "this C library is not glibc"),
    (FakeCell(malloc="jemalloc"), Machine(2, 0, False, deepspeed=False, jemalloc=False),
     "apt install libjemalloc2"),
    # a launched walk's multi-rank cell runs in the launcher's processes, as they started
    (FakeCell(strategy="ddp", devices=2, malloc="jemalloc"), TORCHRUN_2,
     "launch with LD_PRELOAD="),
    (FakeCell(precision="bf16-mixed"), Machine(2, 0, False, deepspeed=True, cpu_bf16=False),
     "this CPU has no bf16 kernels"),
    (FakeCell(strategy="raw", precision="bf16-true"),
     Machine(2, 0, False, deepspeed=True, cpu_bf16=False), "a bf16-true cell would take hours"),
])
def test_skip_reasons(cell: FakeCell, machine: Machine, reason: str) -> None:
    assert reason in (why_skipped(cell, machine) or "")


@pytest.mark.parametrize("cell,machine", [
    (FakeCell(), CPU_BOX),
    (FakeCell(precision="bf16-mixed"), CPU_BOX),
    (FakeCell(strategy="ddp", devices=2), CPU_BOX),
    (FakeCell(strategy="raw"), CPU_BOX),
    (FakeCell(strategy="ddp", devices=2), TORCHRUN_2),
    (FakeCell(strategy="single"), TORCHRUN_2),  # one device: rank 0 runs it alone
    # ... in a child process, which bench.run starts with jemalloc preloaded
    (FakeCell(strategy="single", malloc="jemalloc"), TORCHRUN_2),
    (FakeCell(strategy="ddp", devices=2, malloc="jemalloc"),
     Machine(2, 0, False, deepspeed=True, launched_world_size=2, launched_local_world_size=2,
             jemalloc_preloaded=True)),
    (FakeCell(accelerator="cuda", strategy="deepspeed_stage_3", precision="16-mixed"), ONE_GPU),
    # A CPU without bf16 kernels still runs its 32-true cells, and its GPU its bf16 ones.
    (FakeCell(), Machine(2, 0, False, deepspeed=True, cpu_bf16=False)),
    (FakeCell(accelerator="cuda", precision="bf16-mixed"),
     Machine(16, 1, True, deepspeed=True, cpu_bf16=False)),
])
def test_runnable_cells_have_no_reason(cell: FakeCell, machine: Machine) -> None:
    assert why_skipped(cell, machine) is None


def test_trainer_arguments_for_single_and_ddp() -> None:
    from lightning.pytorch.strategies import DDPStrategy

    single = trainer_arguments(FakeCell())
    assert single == {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto",
                      "precision": "32-true"}
    ddp = trainer_arguments(FakeCell(strategy="ddp", devices=2, precision="bf16-mixed"))
    assert isinstance(ddp["strategy"], DDPStrategy) and ddp["devices"] == 2


def test_raw_is_not_a_lightning_strategy() -> None:
    assert not strategy_spec("raw").lightning
    with pytest.raises(ValueError, match="not run through a Lightning Trainer"):
        trainer_arguments(FakeCell(strategy="raw"))


@pytest.mark.parametrize("strategy", ["deepspeed_stage_1", "deepspeed_stage_2",
                                      "deepspeed_stage_3", "deepspeed_stage_3_offload"])
def test_deepspeed_with_compile_is_skipped_as_lightning_refuses_it(strategy: str) -> None:
    cell = FakeCell(accelerator="cuda", strategy=strategy, precision="bf16-mixed",
                    compile="default")
    reason = why_skipped(cell, ONE_GPU)
    assert reason is not None and "refuses a compiled model under DeepSpeedStrategy" in reason
    assert why_skipped(FakeCell(accelerator="cuda", strategy=strategy), ONE_GPU) is None


@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp"])
def test_compile_runs_where_lightning_supports_it(strategy: str) -> None:
    cell = FakeCell(accelerator="cuda", strategy=strategy, compile="default")
    assert why_skipped(cell, ONE_GPU) is None


def test_missing_build_tools_skip_the_cells_that_need_them() -> None:
    no_tools = Machine(cpu_count=16, cuda_devices=1, cuda_bf16=True, deepspeed=True,
                       can_compile=False, can_build_cpu_adam=False)
    compiled = why_skipped(FakeCell(accelerator="cuda", compile="default"), no_tools)
    assert compiled is not None and "needs a C compiler and Python.h" in compiled
    offload = why_skipped(FakeCell(accelerator="cuda", strategy="deepspeed_stage_2_offload"),
                          no_tools)
    assert offload is not None and "ninja on PATH" in offload
    assert why_skipped(FakeCell(accelerator="cuda", strategy="deepspeed_stage_2"),
                       no_tools) is None


def test_an_assumed_gpu_machine_plans_like_a_real_one() -> None:
    eight = Machine.assume_gpus(8)
    assert eight.cuda_devices == 8 and eight.cuda_bf16 and eight.deepspeed
    assert eight.can_compile and eight.can_build_cpu_adam
    assert why_skipped(FakeCell(accelerator="cuda", devices=8, strategy="fsdp"), eight) is None
    assert "needs 16 CUDA devices" in str(why_skipped(
        FakeCell(accelerator="cuda", devices=16, strategy="ddp"), eight))


@pytest.mark.parametrize(("ninja", "cxx", "headers", "lacks"), [
    ("/usr/bin/ninja", "/usr/bin/c++", True, []),
    ("/usr/bin/ninja", "/usr/bin/c++", False, ["Python.h (python3-dev)"]),
    (None, None, True, ["ninja on PATH", "a C++ compiler"]),
])
def test_building_cpu_adam_needs_ninja_a_compiler_and_the_python_headers(
        ninja: str | None, cxx: str | None, headers: bool, lacks: list[str]) -> None:
    tools = Toolchain(c_compiler="/usr/bin/cc", cxx_compiler=cxx, python_headers=headers,
                      ninja=ninja, deepspeed_prebuilt_ops=frozenset())
    assert tools.cpu_adam_build_lacks() == lacks
    assert tools.can_build_cpu_adam is (not lacks)
    prebuilt = Toolchain(c_compiler=None, cxx_compiler=None, python_headers=False, ninja=None,
                         deepspeed_prebuilt_ops=frozenset({"cpu_adam"}))
    assert prebuilt.can_build_cpu_adam


def test_an_offload_skip_names_what_the_build_lacks() -> None:
    no_headers = Machine(cpu_count=16, cuda_devices=1, cuda_bf16=True, deepspeed=True,
                         can_build_cpu_adam=False, cpu_adam_lacks=("Python.h (python3-dev)",))
    reason = why_skipped(FakeCell(accelerator="cuda", strategy="deepspeed_stage_3_offload"),
                         no_headers)
    assert reason is not None and reason.endswith("this machine lacks Python.h (python3-dev)")


def test_the_toolchain_is_read_without_importing_deepspeed() -> None:
    import subprocess
    import sys

    code = ("import sys; from strategies.toolchain import Toolchain; t = Toolchain.detect(); "
            "print('deepspeed' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]
