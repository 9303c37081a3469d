from __future__ import annotations

import pandas as pd

from bench.analyze.overhead import overhead_table
from bench.matrix import Cell


def summary_row(strategy: str, samples: float, devices: int = 1, n: int = 1,
                **fields: object) -> dict:
    cell = Cell(accelerator="cpu", devices=devices, strategy=strategy, **fields)  # type: ignore[arg-type]
    return {**cell.to_dict(), "cell_id": cell.id, "n": n, "samples_per_s": samples,
            "step_ms_p50": 1000 * 64 / samples}


def test_each_lightning_cell_meets_the_control_of_its_own_workload() -> None:
    summary = pd.DataFrame([
        summary_row("single", 180.0), summary_row("raw", 200.0),
        summary_row("single", 300.0, precision="bf16-true"),  # its raw cell did not run
        summary_row("ddp", 90.0, devices=2), summary_row("engine-ddp", 100.0, devices=2),
        summary_row("fsdp", 50.0, devices=2),
        summary_row("engine-fsdp", 40.0, devices=2, n=0),  # failed: nothing to set against
        summary_row("deepspeed_stage_3", 30.0, devices=2, batch_size=32),
        summary_row("engine-deepspeed_stage_3", 30.0, devices=2),  # another batch size
    ])
    table = overhead_table(summary)
    assert table["control"].tolist() == ["raw", "engine-ddp"]
    assert table["Lightning / control"].tolist() == ["0.90x", "0.90x"]
    assert table["cell"].tolist() == [Cell(accelerator="cpu", strategy="single").id,
                                      Cell(accelerator="cpu", devices=2, strategy="ddp").id]


def test_no_pairs_no_rows() -> None:
    assert overhead_table(pd.DataFrame([summary_row("single", 100.0)])).empty
