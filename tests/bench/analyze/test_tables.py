from __future__ import annotations

import pandas as pd

from bench.analyze.tables import TUTORIAL_DEFAULTS, fastest_table, fmt


def summary_row(cell_id: str, samples: float, mfu: float, **fields: object) -> dict:
    return {**TUTORIAL_DEFAULTS, "accelerator": "cpu", "cell_id": cell_id, "n": 1,
            "samples_per_s": samples, "mfu": mfu, "flops_per_sample": 2.0e8,
            "peak_tflops": 1.0, **fields}


def test_fastest_cells_against_roofline_and_tutorial() -> None:
    summary = pd.DataFrame([
        summary_row("tutorial", 200.0, 0.04),
        summary_row("fast-bf16", 1800.0, 0.36, precision="bf16-true", batch_size=512,
                    loader="device", optimizer_impl="fused"),
        summary_row("fast-fp32", 600.0, 0.12, batch_size=512, loader="device",
                    optimizer_impl="fused"),
        summary_row("failed", float("nan"), float("nan"), n=0),
    ])
    table = fastest_table(summary)
    assert table["pick"].tolist() == ["fastest", "fastest 32-true"]
    assert table["cell"].tolist() == ["fast-bf16", "fast-fp32"]
    assert table["vs tutorial"].tolist() == ["9.00x", "3.00x"]
    assert table["roofline samples/s"].tolist() == [fmt(1e12 / 2e8)] * 2  # peak / FLOPs


def test_no_tutorial_cell_means_no_ratio() -> None:
    table = fastest_table(pd.DataFrame([summary_row("only", 100.0, 0.1, batch_size=256)]))
    assert table["vs tutorial"].tolist() == ["-", "-"]


def test_a_control_without_gradient_exchange_is_never_the_fastest() -> None:
    summary = pd.DataFrame([
        summary_row("ddp", 300.0, 0.1, devices=2, strategy="engine-ddp"),
        summary_row("no-sync", 900.0, 0.3, devices=2, strategy="engine-ddp_no_sync"),
    ])
    assert fastest_table(summary)["cell"].tolist() == ["ddp", "ddp"]
