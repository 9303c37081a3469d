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
    assert again.result() == {"compile_s": 0.0, "compile_val_s": 0.0, "graphs_compiled": 0,
                              "inductor_cache_cold": False}


def test_the_training_graph_counts_its_backward_and_not_the_validation_recompile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._dynamo.utils import compilation_time_metrics

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    torch._dynamo.reset()

    def timer(name: str) -> float:
        return sum(compilation_time_metrics.get(name, []))

    meter = CompileMeter.start(tmp_path / "inductor-r0-rank0")
    before = {name: timer(name) for name in ("_compile.compile_inner", "backward._backward_impl")}
    module = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
    module.compile(backend="aot_eager")
    loss = module(torch.randn(4, 8)).sum()
    forward_s = timer("_compile.compile_inner") - before["_compile.compile_inner"]
    loss.backward()  # AOTAutograd compiles the backward graph here, lazily
    backward_s = timer("backward._backward_impl") - before["backward._backward_impl"]
    meter.training_done()
    with torch.inference_mode():  # a validation: inference mode, another batch, a recompile
        module(torch.randn(16, 8))
    validation_s = timer("_compile.compile_inner") - before["_compile.compile_inner"] - forward_s
    meter.training_done()  # a second hand-over does not move the mark
    result = meter.result()
    assert backward_s > 0 and validation_s > 0
    assert result["compile_s"] == pytest.approx(forward_s + backward_s, abs=1e-9)
    assert result["compile_val_s"] == pytest.approx(validation_s, abs=1e-9)
    assert result["graphs_compiled"] == 2


def test_without_a_hand_over_everything_is_the_training_graphs(tmp_path: Path) -> None:
    torch._dynamo.reset()
    meter = CompileMeter.start(tmp_path / "cache")
    module = torch.nn.Linear(4, 4)
    module.compile(backend="aot_eager")
    module(torch.randn(2, 4)).sum().backward()
    result = meter.result()
    assert result["compile_s"] > 0 and result["compile_val_s"] == 0.0
