"""Energy over the measured window, from the hardware's own cumulative counters:
NVML's total-energy counter per GPU (``nvmlDeviceGetTotalEnergyConsumption``,
millijoules since the driver loaded; Volta and later), or on a CPU the RAPL
package counters under ``/sys/class/powercap`` (microjoules, wrapping at
``max_energy_range_uj``). Read right after the window's opening and closing
synchronisations, so the figure covers what the window timed.

Where no counter can be read (no pynvml, a sandboxed GPU runtime that refuses the
call, RAPL absent or readable by root only), the meter says why and the record's
energy figures stay empty: never a guess from a power reading.

A RAPL package counter is the whole socket's, shared by every rank on the node: only
the node's local rank 0 reads it, and the cell's energy is the sum over the ranks
that read one (each GPU's own counter; each node's packages once).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

POWERCAP = Path("/sys/class/powercap")


class RaplCounter:
    """The RAPL packages' energy in joules since the first read, wraps undone."""

    def __init__(self, packages: list[Path]) -> None:
        self.packages = packages
        self.ranges = [int((p / "max_energy_range_uj").read_text()) for p in packages]
        self.last = [self._raw(p) for p in packages]
        self.total_uj = 0

    @staticmethod
    def _raw(package: Path) -> int:
        return int((package / "energy_uj").read_text())

    def __call__(self) -> float:
        for i, package in enumerate(self.packages):
            now = self._raw(package)
            # A counter that went down wrapped once (a window is far shorter than the
            # minutes a package takes to wrap).
            self.total_uj += now - self.last[i] + (self.ranges[i] if now < self.last[i] else 0)
            self.last[i] = now
        return self.total_uj / 1e6


def rapl_counter(root: Path = POWERCAP) -> tuple[Callable[[], float] | None, str | None]:
    """The node's RAPL package counters (``intel-rapl:N``, the packages, not their
    sub-domains; AMD's are exposed under the same name), or why not."""
    packages = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
    if not packages:
        return None, f"no RAPL package counters under {root}"
    try:
        return RaplCounter(packages), None
    except (OSError, ValueError) as error:  # readable by root only on recent kernels
        return None, f"RAPL counters unreadable: {error}"


def nvml_counter(device: torch.device) -> tuple[Callable[[], float] | None, str | None]:
    """``device``'s NVML total-energy counter in joules, or why not."""
    try:
        import pynvml
    except ImportError:
        return None, "pynvml is not installed (NVML's energy counter is read through it)"
    try:
        pynvml.nvmlInit()
        # NVML counts every GPU; CUDA only the visible ones (CUDA_VISIBLE_DEVICES).
        index = torch.cuda._get_nvml_device_index(device)
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # refused on some runtimes
    except Exception as error:  # noqa: BLE001 - any refusal: the record says why
        return None, f"NVML's energy counter unreadable: {type(error).__name__}: {error}"
    return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0, None


@dataclass
class EnergyMeter:
    """Joules over the window's training time: ``start`` where the window opens,
    ``pause``/``resume`` around what the clock pauses for (validation inside fit),
    ``close`` where the window closes, then ``result``."""

    read: Callable[[], float] | None  # joules, cumulative
    source: str | None
    reason: str | None = None  # why there is no counter
    shared: bool = False  # another rank reads the counter this rank's energy is in
    joules: float | None = None  # counted so far; None until the window opens
    _since: float | None = None  # the reading the running interval started at
    _closed: bool = False

    @classmethod
    def for_device(cls, device: torch.device) -> EnergyMeter:
        if device.type == "cuda":
            read, reason = nvml_counter(device)
            return cls(read, "nvml" if read else None, reason)
        if int(os.environ.get("LOCAL_RANK", "0")) != 0:
            return cls(None, None, "the node's RAPL packages are read by its local rank 0",
                       shared=True)
        read, reason = rapl_counter()
        return cls(read, "rapl" if read else None, reason)

    def start(self) -> None:
        if self.read is not None and self.joules is None:
            self.joules, self._since = 0.0, self.read()

    def pause(self) -> None:
        if self.read is not None and self._since is not None and self.joules is not None:
            self.joules += self.read() - self._since
            self._since = None

    def resume(self) -> None:
        if self.read is not None and self.joules is not None and not self._closed:
            self._since = self.read()

    def close(self) -> None:
        self.pause()
        self._closed = True

    def result(self) -> dict[str, Any]:
        """{"joules", "source"} over the window, or {"joules": None, "reason"}."""
        if self.joules is None:
            return {"joules": None, "source": None, "shared": self.shared,
                    "reason": self.reason or "the window never opened"}
        return {"joules": self.joules, "source": self.source}
