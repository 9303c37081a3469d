"""The scaling projection: a model, not a measurement. One device's measured step
phases, the model's gradient bytes, and an alpha-beta cost for every collective a
strategy sends give the step time at N devices on M nodes (FORMULA).

bench.analyze.links holds the links; bench.analyze.scale_check pairs the inputs with
a run's cells and checks the model against the cells the run measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.analyze.links import Link, one_rank_time_s, ring_factors

FORMULA = """\
ring(op, n, S, link) = steps x alpha + share x S / bandwidth   (alpha: latency per step)
    all_reduce: steps 2(n-1), share 2(n-1)/n; all_gather, reduce_scatter: n-1, (n-1)/n
across M nodes of G devices (one NIC of the inter-node link per device):
    all_reduce(S) = reduce_scatter_G(S) + all_reduce_M(S/G) + all_gather_G(S)
    all_gather(S) = all_gather_G(S) + all_gather_M(S/G)   (reduce_scatter alike)
step(N) = crowd(G) x (data + forward + backward + rest + optimizer (/N where sharded))
    + exposed
crowd(G) = a rank's compute with all G ranks of its node computing, against alone: DDP
    under no_sync() on G devices a node / the same on one device (1 where not measured)
exposed = sum over phases of max(comm - overlap x phase, one call) (the last call
    waits for the phase's end); comm with no phase to hide behind is all exposed
a strategy's own one-device cell as input: less the collectives it calls on one rank
    too (ZeRO-3's reduce_scatter), at their one-rank cost from the comm cells of one rank
samples/s = N x batch per device / step(N); efficiency = step(1) / step(N)"""

# 99.8% of the model's parameters sit in two Linear layers of 19.7 M each
# (strategies/fsdp.py). Each is over DDP's 25 MiB bucket, and DDP closes a bucket with a
# tensor that fills it, so DDP reduces the gradients in two calls of half the bytes (and
# a third, tiny one, left out); FSDP and ZeRO-3 gather and reduce them as two units.
BIG_LAYERS = 2


@dataclass(frozen=True)
class Network:
    intra: dict[str, Link]  # op -> the link between devices of one node
    inter: dict[str, Link]  # op -> the link between nodes
    devices_per_node: int


@dataclass(frozen=True)
class Collective:
    op: str
    nbytes: float  # one call's message (nccl-tests' size)
    calls: int
    hides_behind: str | None  # the step phase it may overlap with; None: always exposed
    # Called on a world of one rank too, so a one-device cell of the strategy holds it
    # already (as a copy of the buffer) in the phase it hides behind.
    on_one_rank: bool = False


@dataclass(frozen=True)
class Plan:
    """What one data-parallel strategy sends per step, and whether its optimizer step
    works on a shard (1/N of the parameters) or on all of them."""

    name: str
    sends: tuple[Collective, ...]
    sharded_optimizer: bool
    about: str


def ring_time_s(op: str, n: int, nbytes: float, link: Link) -> float:
    steps, share = ring_factors(op, n)
    return steps * link.latency_s + share * nbytes / (link.gbps * 1e9)


def collective_time_s(op: str, nbytes: float, devices: int, net: Network) -> float:
    """One call of ``op`` over ``devices``: a ring within a node, hierarchical across
    nodes (each device's share of the inter-node step rides its own NIC)."""
    per_node = min(devices, net.devices_per_node)
    nodes = devices // per_node
    if nodes == 1:
        return ring_time_s(op, per_node, nbytes, net.intra[op])
    across = ring_time_s(op, nodes, nbytes / per_node, net.inter[op])
    if per_node == 1:  # no ring within a node (and no link for one need be known)
        return across
    if op == "all_reduce":
        return (ring_time_s("reduce_scatter", per_node, nbytes, net.intra["reduce_scatter"])
                + across
                + ring_time_s("all_gather", per_node, nbytes, net.intra["all_gather"]))
    return ring_time_s(op, per_node, nbytes, net.intra[op]) + across


def plans(gradient_bytes: float) -> dict[str, Plan]:
    """The collectives of each strategy for a model of ``gradient_bytes``."""
    unit = gradient_bytes / BIG_LAYERS

    # DeepSpeed's stages 1-2 reduce each rank's gradient partition with an all_reduce of
    # its bucket, not a reduce_scatter (stage_1_and_2.py: average_tensor, under the
    # default use_multi_rank_bucket_allreduce); wrapping torch.distributed's collectives
    # in a 2-rank engine shows all_reduce and all_gather_into_tensor, no reduce_scatter.
    zero_12 = (Collective("all_reduce", gradient_bytes, 1, None),
               Collective("all_gather", gradient_bytes, 1, None))
    # DeepSpeed's stage 3 keeps a gathered parameter until its use in backward when that
    # use comes within stage3_max_reuse_distance parameters (1e9 by default; this model
    # has 39.4 M), so it gathers once a step, in forward (the two big layers in one
    # prefetch bucket), and reduces the gradients in one reduce_scatter in backward (one
    # reduce bucket); wrapped, a 2-rank engine's step shows one all_gather_into_tensor
    # of all the parameters (and 12 small ones), one reduce_scatter_tensor of all the
    # gradients. On one rank it skips the all_gather but still calls the reduce_scatter.
    zero_3 = (Collective("all_gather", gradient_bytes, 1, "forward"),
              Collective("reduce_scatter", gradient_bytes, 1, "backward", on_one_rank=True))
    return {
        "ddp": Plan("ddp", (Collective("all_reduce", unit, BIG_LAYERS, "backward"),), False,
                    f"all_reduce of the gradients in {BIG_LAYERS} buckets (one per big "
                    "Linear layer, each over DDP's 25 MiB), overlapped with backward"),
        "fsdp": Plan("fsdp", (Collective("all_gather", unit, BIG_LAYERS, "forward"),
                              Collective("all_gather", unit, BIG_LAYERS, "backward"),
                              Collective("reduce_scatter", unit, BIG_LAYERS, "backward")),
                     True, f"per unit ({BIG_LAYERS}, the big Linear layers): all_gather in "
                     "forward and in backward, reduce_scatter in backward, prefetched "
                     "(overlapped with the phase)"),
        "zero-1": Plan("zero-1", zero_12, True, "all_reduce of the gradients after "
                       "backward (DeepSpeed's default use_multi_rank_bucket_allreduce: an "
                       "all_reduce where ZeRO's paper has a reduce_scatter), all_gather of "
                       "the updated parameters after the step; DeepSpeed's overlap_comm is "
                       "off for stages 1-2: not overlapped"),
        "zero-2": Plan("zero-2", zero_12, True, "as ZeRO-1 (gradients partitioned in "
                       "backward; the same bytes on the wire)"),
        "zero-3": Plan("zero-3", zero_3, True,
                       "all_gather of the parameters once, in forward (kept for backward: "
                       "stage3_max_reuse_distance 1e9 parameters exceeds the model's), "
                       "reduce_scatter of the gradients in backward, each in one call and "
                       "overlapped with its phase (DeepSpeed's overlap_comm is on for "
                       "stage 3); the reduce_scatter runs on one rank too, so its one-rank "
                       "cost is taken out of a one-device ZeRO-3 cell's backward"),
    }


def without_one_rank_collectives(plan: Plan, phases_s: dict[str, float],
                                 one_rank: dict[str, Link]) -> tuple[dict[str, float], float]:
    """A one-device cell of ``plan``'s own strategy, less the collectives it called on
    its world of one (costed by ``one_rank``, the comm cells of one rank; those not
    costed stay in). Returns the phases and the time taken out."""
    phases, taken = dict(phases_s), 0.0
    for c in plan.sends:
        if c.on_one_rank and c.op in one_rank and c.hides_behind in phases:
            cost = min(one_rank_time_s(one_rank[c.op], c.nbytes) * c.calls,
                       phases[c.hides_behind])
            phases[c.hides_behind] -= cost
            taken += cost
    return phases, taken


# Each plan's Lightning strategy; its engine control is the same name after "engine-".
# Offloaded ZeRO is not here: its optimizer runs on the CPU, which the model leaves out.
PLAN_STRATEGIES = {"ddp": "ddp", "fsdp": "fsdp", "zero-1": "deepspeed_stage_1",
                   "zero-2": "deepspeed_stage_2", "zero-3": "deepspeed_stage_3"}


def plan_of(strategy: str) -> str | None:
    """The plan that models a cell's strategy (Lightning's or its engine control)."""
    name = strategy.removeprefix("engine-")
    return next((plan for plan, lightning in PLAN_STRATEGIES.items() if lightning == name), None)


def strategy_of(plan: str, engine: bool) -> str:
    """The strategy a plan models: Lightning's, or its engine control's."""
    return ("engine-" if engine else "") + PLAN_STRATEGIES[plan]


@dataclass(frozen=True)
class Prediction:
    plan: str
    devices: int
    nodes: int
    step_s: float
    comm_s: float  # every collective of the step, end to end
    exposed_s: float  # the part of it not hidden behind compute
    samples_per_s: float
    efficiency: float  # per-device throughput against one device's
    crowding: float = 1.0  # the factor its compute was taken at (crowd(G) of FORMULA)


def exposed_s(sends: tuple[Collective, ...], devices: int, net: Network,
              phases_s: dict[str, float], overlap: float) -> tuple[float, float]:
    """(all communication, its exposed part) of one step."""
    total = exposed = 0.0
    for phase in {c.hides_behind for c in sends}:
        calls = [c for c in sends if c.hides_behind == phase]
        times = [collective_time_s(c.op, c.nbytes, devices, net) for c in calls]
        comm = sum(t * c.calls for t, c in zip(times, calls, strict=True))
        hidden = overlap * phases_s.get(phase, 0.0) if phase and overlap > 0 else 0.0
        total += comm
        exposed += max(comm - hidden, min(times) if hidden else comm)
    return total, exposed


def predict(plan: Plan, phases_s: dict[str, float], batch_size: int, devices: int,
            net: Network, overlap: float, crowding: float = 1.0) -> Prediction:
    """Step time, samples/s and scaling efficiency of ``plan`` on ``devices``, whose
    compute takes ``crowding`` times one device's (its node's other ranks computing too)."""
    if devices % min(devices, net.devices_per_node):
        raise ValueError(f"{devices} devices do not fill nodes of {net.devices_per_node}")
    single_s = sum(phases_s.values())
    crowding = crowding if devices > 1 else 1.0
    crowded = {phase: s * crowding for phase, s in phases_s.items()}
    optimizer = crowded.get("optimizer", 0.0)
    compute = (sum(crowded.values()) - optimizer
               + optimizer / (devices if plan.sharded_optimizer else 1))
    comm, exposed = exposed_s(plan.sends, devices, net, crowded, overlap) if devices > 1 \
        else (0.0, 0.0)
    step = compute + exposed
    return Prediction(plan.name, devices, max(1, devices // net.devices_per_node), step, comm,
                      exposed, devices * batch_size / step, single_s / step, crowding)
