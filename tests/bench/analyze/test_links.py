"""bench.analyze.links: every named link is its datasheet's figure with a source; ring
factors are nccl-tests' bus-bandwidth factors; a link fitted from a comm frame (the
columns of bench.analyze.comm.comm_table, built by hand here) recovers the latency and
bandwidth the frame's times were made from."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.analyze.links import (
    LINKS,
    LinkError,
    fit_link,
    measured_links,
    named_link,
    one_rank_costs,
    one_rank_time_s,
    ring_factors,
)

# Per-direction GB/s typed from the sources, independently of bench.analyze.links:
#   NVLink 4 (H100 SXM5 datasheet): 900 GB/s per GPU, both directions together.
#   PCIe Gen5 x16 (H100 PCIe datasheet): 128 GB/s, both directions together.
#   InfiniBand NDR (ConnectX-7 datasheet): 400 Gb/s per port, per direction.
#   100 Gigabit Ethernet (IEEE 802.3): 100 Gb/s per direction.
# Latency per ring step, NCCL src/graph/tuning.cc hwLat Ring/Simple: NVLink 3.4 us,
# PCI 5.7 us, NET 9.6 us.
DATASHEET = {"nvlink4": (900 / 2, 3.4e-6), "pcie5": (128 / 2, 5.7e-6),
             "ib-ndr400": (400 / 8, 9.6e-6), "eth100": (100 / 8, 9.6e-6)}


def test_every_named_link_is_its_datasheet_figure_and_says_where_from() -> None:
    assert set(LINKS) == set(DATASHEET)
    for name, (gbps, latency_s) in DATASHEET.items():
        link = named_link(name)
        assert (link.gbps, link.latency_s) == (pytest.approx(gbps), pytest.approx(latency_s))
        assert "datasheet" in link.source or "IEEE 802.3" in link.source
        assert "NCCL src/graph/tuning.cc" in link.source


def test_an_unknown_link_lists_the_valid_ones() -> None:
    with pytest.raises(LinkError, match="unknown link 'nvlink9'; valid: nvlink4, pcie5, "
                                        "ib-ndr400, eth100, measured"):
        named_link("nvlink9")


@pytest.mark.parametrize(("op", "n", "expected"), [
    ("all_reduce", 4, (6, 1.5)), ("all_gather", 4, (3, 0.75)), ("reduce_scatter", 8, (7, 0.875)),
    ("all_reduce", 2, (2, 1.0)), ("all_gather", 1, (0, 0.0)),
])
def test_ring_factors(op: str, n: int, expected: tuple[int, float]) -> None:
    assert ring_factors(op, n) == expected


def test_ring_factors_refuse_an_unknown_collective() -> None:
    with pytest.raises(LinkError, match="unknown collective 'broadcast'"):
        ring_factors("broadcast", 2)


def comm_row(op: str, nbytes: int, time_s: float, world: int = 2, nodes: int = 1) -> dict:
    """One row of bench.analyze.comm.comm_table's frame (the contract's columns)."""
    algbw = nbytes / time_s / 1e9
    factor = 2 * (world - 1) / world if op == "all_reduce" else (world - 1) / world
    return {"cell_id": f"cpu-{world}x-{nodes}n-comm", "op": op, "label": "sweep",
            "dtype": "float32", "bytes": nbytes, "world_size": world, "nodes": nodes,
            "time_s": time_s, "algbw_gbps": algbw, "busbw_gbps": algbw * factor}


def test_a_fit_recovers_latency_and_bandwidth() -> None:
    # all_reduce on 4 ranks: 6 x 50 us + 1.5 x bytes / 2 GB/s
    frame = pd.DataFrame([comm_row("all_reduce", b, 6 * 50e-6 + 1.5 * b / 2e9, world=4)
                          for b in (10**6, 10**7, 10**8)])
    link = fit_link(frame, "all_reduce", "within a node")
    assert link.latency_s == pytest.approx(50e-6)
    assert link.gbps == pytest.approx(2.0)
    assert link.source == f"fitted from 3 sizes 1000000-100000000 B of {frame['cell_id'][0]}"


def test_one_size_cannot_tell_latency_from_bandwidth_so_latency_is_zero() -> None:
    frame = pd.DataFrame([comm_row("all_gather", 10**8, 0.1)])  # 2 ranks: half of it moves
    link = fit_link(frame, "all_gather", "within a node")
    assert (link.latency_s, link.gbps) == (0.0, pytest.approx(0.5))


def test_times_that_do_not_grow_with_bytes_are_no_fit() -> None:
    frame = pd.DataFrame([comm_row("all_reduce", 10**6, 0.2), comm_row("all_reduce", 10**8, 0.1)])
    with pytest.raises(LinkError, match="do not grow with bytes"):
        fit_link(frame, "all_reduce", "within a node")


def test_measured_links_split_the_levels_and_lend_all_reduce_to_missing_ops() -> None:
    frame = pd.DataFrame([
        comm_row("all_reduce", 10**8, 0.1), comm_row("all_reduce", 10**7, 0.01),  # 1 GB/s
        comm_row("reduce_scatter", 10**8, 0.025),  # half moves: 2 GB/s
        comm_row("all_reduce", 10**8, 0.4, world=2, nodes=2),  # one rank per node: 0.25 GB/s
        comm_row("all_reduce", 10**8, 9.9, world=4, nodes=2),  # two per node: left out
    ])
    intra = measured_links(frame, across_nodes=False)
    inter = measured_links(frame, across_nodes=True)
    assert intra["all_reduce"].gbps == pytest.approx(1.0)
    assert intra["reduce_scatter"].gbps == pytest.approx(2.0)
    assert intra["all_gather"] is intra["all_reduce"]
    assert {op: link.gbps for op, link in inter.items()} == pytest.approx(
        {"all_reduce": 0.25, "all_gather": 0.25, "reduce_scatter": 0.25})


def test_measured_links_say_which_world_is_missing() -> None:
    frame = pd.DataFrame([comm_row("all_reduce", 10**8, 0.1)])
    with pytest.raises(LinkError, match="measured no world across nodes"):
        measured_links(frame, across_nodes=True)
    with pytest.raises(LinkError, match="measured no all_reduce within a node"):
        measured_links(pd.DataFrame([comm_row("all_gather", 10**8, 0.1)]), across_nodes=False)


def test_the_one_rank_cost_is_a_copy_fitted_from_the_comm_cells_of_one_rank() -> None:
    # 1 ms + bytes at 2 GB/s; the two-rank rows are no part of it
    rows = [comm_row("reduce_scatter", n, 1e-3 + n / 2e9, world=1) for n in (10**6, 10**8)]
    rows += [comm_row("reduce_scatter", 10**8, 9.0), comm_row("all_reduce", 10**8, 0.05, world=1)]
    costs = one_rank_costs(pd.DataFrame(rows))
    assert set(costs) == {"reduce_scatter"}  # one size of all_reduce: nothing to fit
    assert costs["reduce_scatter"].gbps == pytest.approx(2.0)
    assert costs["reduce_scatter"].latency_s == pytest.approx(1e-3)
    assert one_rank_time_s(costs["reduce_scatter"], 4e8) == pytest.approx(0.201)
    assert "fitted from 2 sizes 1000000-100000000 B of cpu-1x-1n-comm" in \
        costs["reduce_scatter"].source
    assert one_rank_costs(None) == {}
