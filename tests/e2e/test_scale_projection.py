"""python -m bench.scale on real records: the shared torchrun walk's engine cells and
its one-device cell. The projection reads the real phases and model-state bytes; the
engine cells are not checked, because the one-device cell ran with all the machine's
cores and each rank of theirs with its share (threads per rank differ), and bench.scale
says so instead of checking against the wrong inputs."""

from __future__ import annotations

from typing import Any

import pytest

from bench import scale
from tests.e2e.conftest import ALONE_CELL, FAILING_CELL

PLANS = ("ddp", "fsdp", "zero-1", "zero-2", "zero-3")


@pytest.mark.slow
def test_bench_scale_projects_a_real_walk_and_refuses_unpaired_checks(
        engine_walk: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code = scale.main([str(engine_walk["run_dir"]), "--link", "ib-ndr400",
                       "--intra-link", "nvlink4", "--devices", "8,64,512"])
    out = capsys.readouterr().out
    assert code == 0, out
    projected = out.split("(a model, not a measurement):\n")[1].split("\ninputs: ")[0]
    assert [tuple(line.split()[:3]) for line in projected.splitlines()[2:]] == [
        (plan, devices, nodes) for plan in PLANS
        for devices, nodes in (("8", "1"), ("64", "8"), ("512", "64"))]
    # 39,407,378 fp32 parameters, counted by the engine cells' ranks
    assert f"inputs: {ALONE_CELL} (cpu, batch 16 per device" in out
    ddp = FAILING_CELL.replace("-ddp-", "-engine-ddp-")
    assert f"gradients 157.6 MB ({ddp}'s params)" in out
    alone = engine_walk["records"][-1]["effective"]["num_threads"]
    engines = {record["cell_id"]: record["effective"]["num_threads"]
               for strategy, record in engine_walk["by_strategy"].items()
               if strategy.startswith("engine-")}
    assert len(engines) == 5 and alone not in engines.values()
    checks = out.split("Predicted against measured (out of sample):\n")[1]
    for cell, threads in engines.items():
        [row] = [line for line in checks.splitlines() if line.startswith(cell)]
        assert (f"threads per rank differ: this cell {threads}, the one-device cells "
                f"{ALONE_CELL} {alone}") in row
    assert "no multi-device cell of the runs could be checked" in checks
