"""A stand-in for bench.matrix.Cell: the registry reads any object with these fields
(strategies never imports bench)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FakeCell:
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "single"
    precision: str = "32-true"
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    mode: str = "throughput"
    compile: str = "none"
    malloc: str = "system"
