"""The machine's state around a cell: was anything else using it?

A snapshot before the cell trains and one after give, over the cell:
- ``others_cpu``: CPU time that processes outside the cell used, as a fraction of
  all the CPUs this process may use, with the busiest of them named. A process that
  may not run on any of those CPUs (a kernel thread bound to another core, a job
  pinned elsewhere: ``taskset``) cannot have taken them and is left out. The cell's own
  processes are its process group (its ranks and loader workers inherit it: a cell
  run by ``bench.cell`` has a group of its own, a torchrun launch shares the
  launcher's) and its ancestors (the orchestrator, waiting). Processes that started
  and ended between the snapshots are not seen.
- ``steal``: the share of CPU time the hypervisor gave to other guests, on the CPUs
  this process may use (/proc/stat).
- the load average and the CPU clock (/proc/cpuinfo, where the VM shows it) before
  and after; on CUDA the GPU's SM clock, temperature and power (NVML, where present).

The cell is flagged ``busy`` when others used more than ``BUSY_OTHERS_CPU`` of the
CPUs or steal passed ``BUSY_STEAL``: its figures measured the machine's other work too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

BUSY_OTHERS_CPU = 0.10
BUSY_STEAL = 0.05
NAMED_PROCESSES = 3  # the busiest other processes named in the record
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def process_times() -> dict[int, tuple[str, int, int, float]]:
    """pid -> (name, parent pid, process group, CPU seconds so far), every process."""
    found = {}
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if not entry.name.isdigit():
            continue
        text = _read(f"/proc/{entry.name}/stat")
        if text is None or ")" not in text:
            continue  # gone already
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()  # from the state field on
        found[int(entry.name)] = (name, int(fields[1]), int(fields[2]),
                                  (int(fields[11]) + int(fields[12])) / TICKS)
    return found


def usable_cpus() -> set[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def cpu_list(text: str) -> set[int]:
    """A kernel CPU list ("0-3,8") as numbers."""
    cpus: set[int] = set()
    for part in filter(None, text.strip().split(",")):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def allowed_cpus(pid: int) -> set[int] | None:
    """The CPUs process ``pid`` may run on (/proc/PID/status), None where it is gone."""
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return cpu_list(line.split(":", 1)[1])
    return None


def cpu_counters(cpus: set[int] | None = None) -> tuple[int, int] | None:
    """(total, steal) jiffies from /proc/stat: of ``cpus`` (its per-CPU lines), else of
    all CPUs."""
    text = _read("/proc/stat")
    if not text:
        return None
    lines = [line.split() for line in text.splitlines() if line.startswith("cpu")]
    if cpus is not None:
        lines = [line for line in lines if line[0][3:].isdigit() and int(line[0][3:]) in cpus]
    else:
        lines = lines[:1]
    total = steal = 0
    for line in lines:
        values = [int(v) for v in line[1:]]
        total += sum(values[:8])
        steal += values[7] if len(values) > 7 else 0
    return (total, steal) if lines else None


def cpu_mhz() -> float | None:
    """The mean clock over the CPUs, as /proc/cpuinfo shows it (a VM may show a constant)."""
    text = _read("/proc/cpuinfo") or ""
    clocks = [float(line.split(":")[1]) for line in text.splitlines()
              if line.startswith("cpu MHz")]
    return round(sum(clocks) / len(clocks)) if clocks else None


def gpu_state(device: torch.device) -> dict[str, Any]:
    """SM clock (MHz), temperature (C) and power (W) of ``device`` through NVML; empty
    where NVML (pynvml) is missing."""
    if device.type != "cuda":
        return {}
    found: dict[str, Any] = {}
    for key, read in (("gpu_clock_mhz", torch.cuda.clock_rate),
                      ("gpu_temperature_c", torch.cuda.temperature),
                      ("gpu_power_w", lambda d: torch.cuda.power_draw(d) / 1000)):
        try:
            found[key] = read(device)
        except Exception:  # noqa: BLE001 - no NVML here: the record says nothing
            return {}
    return found


def ours() -> set[int]:
    """This process's ancestors (up to init)."""
    found, pid = set(), os.getpid()
    while pid > 1:
        found.add(pid)
        stat = _read(f"/proc/{pid}/stat")
        if stat is None:
            break
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    return found


@dataclass
class Snapshot:
    at: float
    processes: dict[int, tuple[str, int, int, float]]
    counters: tuple[int, int] | None
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def take(cls, device: torch.device) -> Snapshot:
        load = (_read("/proc/loadavg") or "").split()
        state = {"load_1m": float(load[0]) if load else None, "cpu_mhz": cpu_mhz(),
                 **gpu_state(device)}
        return cls(time.monotonic(), process_times(), cpu_counters(usable_cpus()), state)


def others(before: Snapshot, after: Snapshot) -> list[tuple[str, int, float]]:
    """(name, pid, CPU seconds between the snapshots) of every process outside this
    cell that used CPU and may run on a CPU this one may use (one gone meanwhile
    counts), busiest first."""
    group, mine, cpus = os.getpgrp(), ours(), usable_cpus()
    used = []
    for pid, (name, _parent, pgid, seconds) in after.processes.items():
        if pgid == group or pid in mine:
            continue
        earlier = before.processes.get(pid)
        spent = seconds - (earlier[3] if earlier and earlier[0] == name else 0.0)
        if spent > 0 and ((allowed := allowed_cpus(pid)) is None or allowed & cpus):
            used.append((name, pid, spent))
    return sorted(used, key=lambda item: -item[2])


def machine_state(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """The record's ``machine`` block: the state before and after, what others used,
    and the verdict."""
    wall = max(after.at - before.at, 1e-9)
    busiest = others(before, after)
    others_cpu = sum(seconds for _, _, seconds in busiest) / (wall * len(usable_cpus()))
    steal = None
    if before.counters and after.counters and after.counters[0] > before.counters[0]:
        steal = (after.counters[1] - before.counters[1]) / (after.counters[0]
                                                            - before.counters[0])
    busy = others_cpu > BUSY_OTHERS_CPU or (steal is not None and steal > BUSY_STEAL)
    return {
        "busy": busy, "others_cpu": round(others_cpu, 4),
        "steal": round(steal, 4) if steal is not None else None,
        "busiest": [f"{name} (pid {pid}): {seconds / wall:.0%} of a CPU"
                    for name, pid, seconds in busiest[:NAMED_PROCESSES]
                    if seconds / wall >= 0.01],
        "before": before.state, "after": after.state, "seconds": round(wall, 3),
    }
