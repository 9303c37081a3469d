"""The scaling projection's assumptions in words, printed under its table: its inputs
(and what was taken out of them), the overlap, the links and their sources, what each
strategy sends."""

from __future__ import annotations

from bench.analyze.scale import Plan, plans
from bench.analyze.scale_check import Inputs, Links, start_phases


def step_in_words(inputs: Inputs) -> str:
    return (f"step {sum(inputs.phases_s.values()) * 1000:.1f} ms = "
            + " + ".join(f"{p} {s * 1000:.1f}" for p, s in inputs.phases_s.items()))


def one_rank_words(plan: Plan, start: Inputs, links: Links) -> str:
    """What was taken out of a plan's own one-device cell: the collectives its strategy
    calls on one rank too, or why they stay in."""
    ops = [c.op for c in plan.sends if c.on_one_rank]
    if not ops:
        return ""
    _, taken = start_phases(plan, start, links)
    if taken:
        sources = "; ".join(links.one_rank[op].source for op in ops if op in links.one_rank)
        return (f"; less its {', '.join(ops)} on one rank, {taken * 1000:.1f} ms a step "
                f"({sources})")
    return (f"; its {', '.join(ops)} on one rank stays in (no comm cell of one rank to "
            "cost it)")


def assumptions(inputs: Inputs, own: dict[str, Inputs], links: Links, overlap: float
                ) -> list[str]:
    """What the projection assumes, in words: the inputs, the links and their sources,
    the overlap, what each strategy sends."""
    lines = [f"inputs: {inputs.cell_id} ({inputs.accelerator}, batch {inputs.batch_size} per "
             f"device, {inputs.threads} thread(s) per rank): {step_in_words(inputs)}; "
             f"gradients {inputs.gradient_bytes / 1e6:.1f} MB ({inputs.bytes_from})"]
    every = plans(inputs.gradient_bytes)
    for plan, start in own.items():
        lines.append(f"{plan} from its own strategy on one device, {start.cell_id}: "
                     f"{step_in_words(start)}{one_rank_words(every[plan], start, links)}")
    lines += [f"overlap: {overlap:g} of a phase's compute may hide the collectives "
              "assigned to it"]
    for scope, key, found in (("within a node", "intra", links.intra),
                              ("across nodes", "inter", links.inter)):
        if found is None:
            lines.append(f"link {scope}: none ({links.missing[key]})")
            continue
        for link in dict.fromkeys(found.values()):
            lines.append(f"link {scope}: {link.name}, {link.gbps:.3g} GB/s per direction, "
                         f"alpha {link.latency_s * 1e6:.3g} us ({link.source})")
    lines += [f"{plan.name}: {plan.about}" for plan in every.values()]
    return lines
