"""bench.analyze.scale: the alpha-beta cost of each collective, hierarchical across
nodes, each strategy's collectives and the step time they give, against values
computed by hand."""

from __future__ import annotations

import pytest

from bench.analyze.links import OPS, Link
from bench.analyze.scale import (
    Network,
    collective_time_s,
    plan_of,
    plans,
    predict,
    ring_time_s,
    without_one_rank_collectives,
)

NVL = Link("test-nvl", 400.0, 2e-6, "test")  # 400 GB/s, 2 us a step
NIC = Link("test-nic", 50.0, 10e-6, "test")
HIERARCHY = Network({op: NVL for op in OPS}, {op: NIC for op in OPS}, devices_per_node=8)
MIB_25 = 25 * 1024 * 1024
# 26.2144 GB/s, no latency: one 25 MiB all_reduce on two ranks takes exactly 1 ms.
FLAT = Link("test-flat", MIB_25 / 1e6, 0.0, "test")
TWO = Network({op: FLAT for op in OPS}, {op: FLAT for op in OPS}, devices_per_node=8)
PHASES_S = {"data": 0.0, "forward": 0.1, "backward": 0.2, "optimizer": 0.1, "rest": 0.0}


def test_a_ring_all_reduce_is_its_steps_latency_and_its_share_of_the_buffer() -> None:
    # 4 ranks: 6 steps of 10 us, 1.5 x 1 GB at 100 GB/s
    link = Link("l", 100.0, 10e-6, "test")
    assert ring_time_s("all_reduce", 4, 1e9, link) == pytest.approx(60e-6 + 0.015)
    assert ring_time_s("all_gather", 4, 1e9, link) == pytest.approx(30e-6 + 0.0075)
    assert ring_time_s("all_reduce", 1, 1e9, link) == 0.0


def test_within_one_node_a_collective_is_one_ring_on_the_intra_node_link() -> None:
    # 8 devices: all_reduce 14 steps of 2 us + 1.75 x 0.8 GB / 400 GB/s
    assert collective_time_s("all_reduce", 8e8, 8, HIERARCHY) == pytest.approx(28e-6 + 3.5e-3)


def test_across_nodes_all_reduce_is_reduce_scatter_inter_all_reduce_all_gather() -> None:
    # 16 devices, 8 per node, S = 0.8 GB:
    #   reduce_scatter on 8: 7 x 2 us + 7/8 x 0.8 GB / 400 GB/s = 1.764 ms (all_gather alike)
    #   all_reduce on 2 nodes of S/8 = 0.1 GB: 2 x 10 us + 1 x 0.1 GB / 50 GB/s = 2.02 ms
    assert collective_time_s("all_reduce", 8e8, 16, HIERARCHY) == pytest.approx(
        1.764e-3 + 2.02e-3 + 1.764e-3)
    # all_gather: 1.764 ms on the node + 10 us + 1/2 x 0.1 GB / 50 GB/s across
    assert collective_time_s("all_gather", 8e8, 16, HIERARCHY) == pytest.approx(
        1.764e-3 + 1.01e-3)


def test_one_device_per_node_is_a_ring_of_nodes() -> None:
    net = Network({op: NVL for op in OPS}, {op: NIC for op in OPS}, devices_per_node=1)
    assert collective_time_s("all_reduce", 1e8, 2, net) == pytest.approx(20e-6 + 2e-3)


def test_ddp_sends_a_bucket_per_big_layer() -> None:
    # each of the two big Linear layers is over DDP's 25 MiB: a bucket of its own
    [send] = plans(157.6e6)["ddp"].sends
    assert (send.op, send.calls, send.nbytes) == ("all_reduce", 2, pytest.approx(78.8e6))
    assert send.hides_behind == "backward"


def test_sharded_plans_gather_and_reduce_the_whole_model_once_per_phase() -> None:
    plan = plans(3e6)["fsdp"]
    assert [(s.op, s.nbytes * s.calls, s.hides_behind) for s in plan.sends] == [
        ("all_gather", 3e6, "forward"), ("all_gather", 3e6, "backward"),
        ("reduce_scatter", 3e6, "backward")]
    # ZeRO-3 keeps the gathered parameters for backward (stage3_max_reuse_distance), in
    # one call each, as DeepSpeed sends; its reduce_scatter runs on one rank too
    assert [(s.op, s.nbytes, s.calls, s.hides_behind, s.on_one_rank)
            for s in plans(3e6)["zero-3"].sends] == [
        ("all_gather", 3e6, 1, "forward", False), ("reduce_scatter", 3e6, 1, "backward", True)]
    assert not any(s.on_one_rank for name in ("ddp", "fsdp", "zero-1", "zero-2")
                   for s in plans(3e6)[name].sends)
    for name in ("zero-1", "zero-2"):
        assert [(s.op, s.nbytes, s.hides_behind) for s in plans(3e6)[name].sends] == [
            ("all_reduce", 3e6, None), ("all_gather", 3e6, None)]  # as DeepSpeed sends
    assert [p.sharded_optimizer for p in plans(3e6).values()] == [False, True, True, True, True]


def test_ddp_without_overlap_adds_every_bucket_to_the_step() -> None:
    # two buckets of 25 MiB, 1 ms each on two ranks; step 0.4 s of compute
    p = predict(plans(2 * MIB_25)["ddp"], PHASES_S, 64, 2, TWO, overlap=0.0)
    assert (p.comm_s, p.exposed_s, p.step_s) == pytest.approx((2e-3, 2e-3, 0.402))
    assert p.samples_per_s == pytest.approx(128 / 0.402)
    assert p.efficiency == pytest.approx(0.4 / 0.402)


def test_ddp_with_overlap_still_waits_for_the_last_bucket() -> None:
    p = predict(plans(2 * MIB_25)["ddp"], PHASES_S, 64, 2, TWO, overlap=1.0)
    assert (p.comm_s, p.exposed_s, p.step_s) == pytest.approx((2e-3, 1e-3, 0.401))


def test_zero_1_shards_the_optimizer_step_and_exposes_its_collectives() -> None:
    # optimizer 0.1 s / 2 ranks; all_reduce of 50 MiB (2(n-1)/n = 1 x 50 MiB at
    # 26.2144 GB/s: 2 ms) and all_gather of 50 MiB (1/2 x: 1 ms), exposed even with
    # overlap (DeepSpeed's stage 1 does not overlap)
    p = predict(plans(2 * MIB_25)["zero-1"], PHASES_S, 64, 2, TWO, overlap=1.0)
    assert (p.exposed_s, p.step_s) == pytest.approx((3e-3, 0.353))
    assert p.efficiency == pytest.approx(0.4 / 0.353)


def test_fsdp_hides_each_phase_behind_its_own_compute() -> None:
    # two units of 25 MiB: all_gather 0.5 ms a call, so forward 1 ms, backward 1 ms of
    # all_gather + 1 ms of reduce_scatter; overlap 1 hides all but one call in each phase
    p = predict(plans(2 * MIB_25)["fsdp"], PHASES_S, 64, 2, TWO, overlap=1.0)
    assert (p.comm_s, p.exposed_s) == pytest.approx((3e-3, 1e-3))
    assert p.step_s == pytest.approx(0.35 + 1e-3)


def test_zero_3_gathers_in_forward_and_reduces_in_backward_once() -> None:
    # all_gather of 50 MiB (1/2 x 50 MiB at 26.2144 GB/s: 1 ms) behind forward,
    # reduce_scatter alike behind backward; no overlap on CPU: both exposed
    p = predict(plans(2 * MIB_25)["zero-3"], PHASES_S, 64, 2, TWO, overlap=0.0)
    assert (p.comm_s, p.exposed_s) == pytest.approx((2e-3, 2e-3))
    assert p.step_s == pytest.approx(0.35 + 2e-3)


def test_a_one_device_zero_3_cell_loses_its_one_rank_reduce_scatter() -> None:
    # a copy of 50 MiB on one rank at 52.4288 GB/s and 1 ms a call: 2 ms out of backward
    copy = Link("test-copy", 2 * MIB_25 / 1e6, 1e-3, "test")
    phases, taken = without_one_rank_collectives(
        plans(2 * MIB_25)["zero-3"], PHASES_S, {"reduce_scatter": copy})
    assert taken == pytest.approx(2e-3)
    assert phases == pytest.approx(PHASES_S | {"backward": 0.198})
    # without a one-rank cost, or for a plan that calls nothing on one rank: unchanged
    assert without_one_rank_collectives(plans(2 * MIB_25)["zero-3"], PHASES_S, {}) == (
        PHASES_S, 0.0)
    assert without_one_rank_collectives(
        plans(2 * MIB_25)["fsdp"], PHASES_S, {"reduce_scatter": copy}) == (PHASES_S, 0.0)


def test_a_crowded_node_slows_every_phase_and_hides_more_behind_it() -> None:
    # crowding 1.5: compute 1.5 x (0.3 + 0.1 / 2); FSDP's backward of 0.3 s now hides
    # all but the last of its 2 ms there, as before; one device is never crowded
    p = predict(plans(2 * MIB_25)["fsdp"], PHASES_S, 64, 2, TWO, overlap=1.0, crowding=1.5)
    assert (p.step_s, p.exposed_s, p.crowding) == pytest.approx((0.525 + 1e-3, 1e-3, 1.5))
    assert p.efficiency == pytest.approx(0.4 / 0.526)
    p = predict(plans(2 * MIB_25)["fsdp"], PHASES_S, 64, 1, TWO, overlap=1.0, crowding=1.5)
    assert (p.step_s, p.crowding) == pytest.approx((0.4, 1.0))


def test_one_device_per_node_needs_no_link_within_a_node() -> None:
    # two nodes of one device: only the ring across the nodes, as two ranks on the NIC
    across = Network({}, {op: NIC for op in OPS}, devices_per_node=1)
    for op in OPS:
        assert collective_time_s(op, 1e8, 2, across) == pytest.approx(
            ring_time_s(op, 2, 1e8, NIC))


def test_one_device_sends_nothing() -> None:
    p = predict(plans(2 * MIB_25)["ddp"], PHASES_S, 64, 1, TWO, overlap=0.0)
    assert (p.step_s, p.samples_per_s, p.efficiency) == pytest.approx((0.4, 160.0, 1.0))


def test_devices_that_do_not_fill_whole_nodes_are_refused() -> None:
    with pytest.raises(ValueError, match="12 devices do not fill nodes of 8"):
        predict(plans(MIB_25)["ddp"], PHASES_S, 64, 12, TWO, overlap=0.0)


@pytest.mark.parametrize(("strategy", "plan"), [
    ("ddp", "ddp"), ("engine-ddp", "ddp"), ("fsdp", "fsdp"), ("engine-fsdp", "fsdp"),
    ("deepspeed_stage_1", "zero-1"), ("engine-deepspeed_stage_3", "zero-3"),
    ("deepspeed_stage_2_offload", None), ("single", None), ("raw", None)])
def test_which_plan_models_a_cell(strategy: str, plan: str | None) -> None:
    assert plan_of(strategy) == plan
