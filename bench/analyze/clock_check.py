"""The GPU check's clock checks (scripts/gpu_check.sh), on records alone: each compares
the step clock with a reading taken apart from its marks (bench.measure.clock), so a
clock that loses, doubles or misplaces time fails them.

- STEP PAIR: each measured step's phases, summed, against the device time between
  an event pair of the step's own (its opening to its close). Fails when the
  phases miss part of a step or count part twice, when a pause is left in or taken
  out on one side, when marks land in the wrong step.
- WINDOW: the device's window (the sum of its steps) against ``window_wall_s``, the
  window on the host's monotonic clock between the synchronised points where it
  opens and closes, less its pauses. Fails when the device events do not cover the
  work (recorded on another stream, read in the wrong unit), when steps go missing
  from the window, or when a pause is excluded on one clock only.
"""

from __future__ import annotations

import json
import sys
from typing import Any

# A step's own pair and its phases read the same device timeline a few events apart.
PAIR_RELATIVE, PAIR_ABSOLUTE_S = 0.03, 50e-6
# The host's window also holds the loop's own end (hooks, logging) after the last step.
WINDOW_RELATIVE, WINDOW_ABSOLUTE_S = 0.05, 0.01


def _beyond(value: float, reference: float, relative: float, absolute_s: float) -> bool:
    return abs(value - reference) > relative * abs(reference) + absolute_s


def step_problems(where: str, rank: dict[str, Any]) -> list[str]:
    """STEP PAIR lines for the steps whose phases disagree with their own event pair."""
    pairs, phases = rank.get("step_pair_s"), rank.get("phase_s") or {}
    if pairs is None:
        return [f"NO STEP PAIRS  {where}: the steps have no event pair of their own"]
    steps = len(rank["step_s"])
    if len(pairs) != steps:
        return [f"STEP PAIR  {where}: {len(pairs)} pairs for {steps} steps"]
    problems = []
    for i, pair in enumerate(pairs):
        summed = sum(values[i] for values in phases.values())
        if _beyond(summed, pair, PAIR_RELATIVE, PAIR_ABSOLUTE_S):
            problems.append(f"STEP PAIR  {where} step {i}: phases add up to {summed:.6f} s, "
                            f"its own events span {pair:.6f} s")
    return problems


def window_problems(where: str, rank: dict[str, Any]) -> list[str]:
    """A WINDOW line when the device's window and the host's outside clock disagree."""
    wall = rank.get("window_wall_s")
    if wall is None:
        return [f"NO WINDOW WALL  {where}: the window was not timed on the host's clock"]
    device = sum(rank["step_s"])
    if _beyond(device, wall, WINDOW_RELATIVE, WINDOW_ABSOLUTE_S):
        return [f"WINDOW  {where}: device {device:.4f} s, host's monotonic clock "
                f"{wall:.4f} s over the same synchronised window"]
    return []


def record_problems(record: dict[str, Any]) -> list[str]:
    """Every clock problem of an ok CUDA record (none for others: their steps are
    timed by the host alone)."""
    if record["status"] != "ok" or record["cell"]["accelerator"] != "cuda":
        return []
    problems = []
    for rank in record["raw"]["ranks"]:
        where = f"{record['cell_id']} (repeat {record['repeat']}) rank {rank['rank']}"
        if not rank.get("host_step_s"):  # steps timed by CUDA events keep the host's apart
            problems.append(f"NO EVENTS  {where}: steps were not timed by CUDA events")
            continue
        problems += step_problems(where, rank) + window_problems(where, rank)
    return problems


def main(argv: list[str]) -> int:
    """``python -m bench.analyze.clock_check RECORDS_JSONL``: print the problems, exit 1
    when there is one."""
    [path] = argv
    with open(path) as handle:
        problems = [p for line in handle if line.strip()
                    for p in record_problems(json.loads(line))]
    for problem in problems:
        print(problem)
    print("the step clock agrees with its own pairs and the host's window" if not problems
          else f"{len(problems)} clock problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
