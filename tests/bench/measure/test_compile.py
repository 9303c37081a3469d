"""bench.measure.compile: torch's own account of compilation, per (cell, repeat)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from bench.measure.compile import CompileMeter


def test_the_meter_reads_dynamo_timers_into_a_fresh_cache(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    torch._dynamo.reset()
    cache = tmp_path / "inductor-r0-rank0"
    meter = CompileMeter.start(cache)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache)
    module = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
    module.compile(backend="aot_eager")  # dynamo and AOTAutograd, no C++ build: fast
    started = time.perf_counter()
    module(torch.randn(4, 8)).sum().backward()
    outside = time.perf_counter() - started
    result = meter.result()
    assert result["inductor_cache_cold"] is True
    assert result["graphs_compiled"] == 1
    # torch's timer: most of the first call, which also ran the compiled code
    assert 0 < result["compile_s"] <= outside
    # a second meter over the same cache, once something is in it, says it was warm;
    # and a call that compiles nothing new counts nothing
    (cache / "entry").write_text("")
    again = CompileMeter.start(cache)
    module(torch.randn(4, 8))
    assert again.result() == {"compile_s": 0.0, "graphs_compiled": 0,
                              "inductor_cache_cold": False}
