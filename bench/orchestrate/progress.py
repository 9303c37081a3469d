"""The lines a run prints while it walks the matrix."""

from __future__ import annotations

from bench.orchestrate.plan import RunPlan
from bench.record import Record, Status


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
        line += f"  {record.metrics['samples_per_s']:.0f} samples/s"
        if record.metrics.get("val_acc") is not None:
            line += f"  val_acc {record.metrics['val_acc']:.4f}"
        line += f"  {record.wall_s or 0:.0f} s"
    elif record.reason:
        line += f"  {record.reason.splitlines()[0]}"
    return line
