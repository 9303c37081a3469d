"""bench.measure.collectives' sizes and nccl-tests' bus-bandwidth factors, exact."""

from __future__ import annotations

import pytest

from bench.measure.collectives import CommSize, comm_sizes
from bench.metrics import busbw_factor

PARAMS = 39_407_378  # mnist_core.model.MnistNet
SWEEP = [4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]


def test_the_model_has_the_parameters_the_sizes_below_assume() -> None:
    from mnist_core.model import MnistNet

    assert sum(p.numel() for p in MnistNet().parameters()) == PARAMS


@pytest.mark.parametrize(("op", "world", "factor"), [
    ("all_reduce", 1, 0.0), ("all_reduce", 2, 1.0), ("all_reduce", 4, 1.5),
    ("all_reduce", 8, 1.75), ("all_gather", 1, 0.0), ("all_gather", 2, 0.5),
    ("all_gather", 8, 0.875), ("reduce_scatter", 4, 0.75), ("reduce_scatter", 16, 0.9375)])
def test_busbw_factors_are_nccl_tests(op: str, world: int, factor: float) -> None:
    assert busbw_factor(op, world) == factor


def test_an_unknown_collective_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown collective 'broadcast'"):
        busbw_factor("broadcast", 2)


def test_two_ranks_fp32_time_grads_bucket_partition_and_the_sweep() -> None:
    sizes = comm_sizes(PARAMS, 4, 2)
    assert [s for s in sizes if s.op == "all_reduce"] == [
        *(CommSize("all_reduce", b, "sweep") for b in SWEEP[:7]),
        CommSize("all_reduce", 26_214_400, "bucket"),
        CommSize("all_reduce", SWEEP[7], "sweep"),
        CommSize("all_reduce", 78_814_756, "zero-partition"),
        CommSize("all_reduce", 157_629_512, "grads")]
    # all_gather and reduce_scatter: no bucket; whole fp32 elements per rank (8 bytes)
    for op in ("all_gather", "reduce_scatter"):
        assert [s for s in sizes if s.op == op] == [
            *(CommSize(op, b, "sweep") for b in SWEEP),
            CommSize(op, 78_814_752, "zero-partition"), CommSize(op, 157_629_512, "grads")]
    assert len(sizes) == 31


def test_one_rank_bf16_times_each_size_once_under_its_first_label() -> None:
    """At one rank the ZeRO partition is the whole gradients: timed once, as grads."""
    sizes = comm_sizes(PARAMS, 2, 1)
    assert [(s.bytes, s.label) for s in sizes if s.op == "all_reduce"] == [
        *((b, "sweep") for b in SWEEP[:7]), (26_214_400, "bucket"), (SWEEP[7], "sweep"),
        (78_814_756, "grads")]
    assert [(s.bytes, s.label) for s in sizes if s.op == "reduce_scatter"] == [
        *((b, "sweep") for b in SWEEP), (78_814_756, "grads")]


def test_sizes_that_do_not_split_evenly_are_rounded_down_to_whole_elements() -> None:
    """(And a bucket is never larger than the gradients: here it is all of them.)"""
    sizes = comm_sizes(1000, 4, 3)  # 4000 bytes of grads: below the sweep's first size
    assert sizes == [CommSize("all_reduce", 1332, "zero-partition"),
                     CommSize("all_reduce", 4000, "grads"),
                     CommSize("all_gather", 1332, "zero-partition"),
                     CommSize("all_gather", 3996, "grads"),
                     CommSize("reduce_scatter", 1332, "zero-partition"),
                     CommSize("reduce_scatter", 3996, "grads")]
