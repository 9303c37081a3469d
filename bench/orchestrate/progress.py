"""The lines a run prints while it walks the matrix, and its verdict at the end."""

from __future__ import annotations

import sys
from collections import Counter

from bench.orchestrate.plan import RunPlan
from bench.record import OOM_REASON, Record, RunDir, Status, read_records


def repeat_text(plan: RunPlan, repeat: int) -> str:
    repeats = plan.matrix.repeats
    return f" (repeat {repeat + 1}/{repeats})" if repeats > 1 else ""


def eta_text(durations: list[float], runnable_left: int) -> str:
    if not durations or runnable_left <= 0:
        return ""
    left = sum(durations) / len(durations) * runnable_left
    return f"  (ETA {left / 60:.1f} min)" if left >= 60 else f"  (ETA {left:.0f} s)"


def progress_line(index: int, plan: RunPlan, record: Record) -> str:
    """``[i/n] cell-id  status  samples/s  val_acc  seconds`` (or the reason)."""
    line = (f"[{index}/{len(plan.pending)}] {record.cell_id}{repeat_text(plan, record.repeat)}"
            f"  {record.status.value}")
    if record.status is Status.OK:
        if record.metrics.get("samples_per_s") is not None:
            line += f"  {record.metrics['samples_per_s']:.0f} samples/s"
        if record.metrics.get("allreduce_ms") is not None:  # a comm cell: the grads' all_reduce
            line += (f"  all_reduce {record.metrics['allreduce_ms']:.3g} ms, busbw "
                     f"{record.metrics['allreduce_busbw_gbps']:.3g} GB/s")
        if record.metrics.get("val_acc") is not None:
            line += f"  val_acc {record.metrics['val_acc']:.4f}"
        line += f"  {record.wall_s or 0:.0f} s"
    elif record.reason:
        line += f"  {record.reason.splitlines()[0]}"
    return line


def verdict(run_dir: RunDir) -> int:
    """The run's exit status from its records: 1 when any cell failed (out of memory
    included) or timed out, with the count on stderr; 0 when each is ok or skipped. The
    records file holds each (cell, repeat)'s last word: a resume has moved the earlier
    failures it reran to records.superseded.jsonl."""
    counts: Counter[str] = Counter()
    for record in read_records(run_dir.records):
        oom = record["status"] == Status.FAILED.value and record["reason"] == OOM_REASON
        counts["out of memory" if oom else record["status"]] += 1
    bad = {kind: counts[kind] for kind in (Status.FAILED.value, "out of memory",
                                           Status.TIMEOUT.value) if counts[kind]}
    if not bad:
        return 0
    print(f"{sum(bad.values())} of {sum(counts.values())} cell run(s) did not finish: "
          + ", ".join(f"{n} {kind}" for kind, n in bad.items())
          + f" (why: \"Not run\" in {run_dir.path / 'report.md'})",
          file=sys.stderr)
    return 1
