"""bench.analyze (load, summary, tables, report, plots) on hand-built records with known answers."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench import report as report_cli
from bench.analyze import load, plots, tables
from bench.analyze import report as report_writer
from bench.analyze import summary as summaries
from bench.metrics import PHASES
from bench.metrics import STORED_NAMES as METRIC_NAMES
from bench.record import validate


def make_record(strategy: str = "single", devices: int = 1, precision: str = "32-true", *,
                sps: float | None = 100.0, repeat: int = 0, status: str = "ok",
                reason: str | None = None, accelerator: str = "cpu", mode: str = "throughput",
                batch_size: int = 64, **metrics: Any) -> dict[str, Any]:
    """A valid record (bench.record schema) for one (cell, repeat) with the given throughput."""
    cell = {"accelerator": accelerator, "devices": devices, "num_nodes": 1, "strategy": strategy,
            "precision": precision, "batch_size": batch_size, "loader": "tensor",
            "compile": "none", "optimizer": "adam", "optimizer_impl": "default", "lr": 1e-3,
            "mode": mode, "steps": 8, "warmup_steps": 2, "target_acc": 0.98, "max_epochs": 1,
            "val_every_steps": 4, "seed": 0}
    cell_id = f"{accelerator}-{devices}x-{strategy}-{precision}-bs{batch_size}-tensor"
    cell_id += "-acc0.98" if mode == "accuracy" else ""
    ran = status == "ok"
    step_s = batch_size * devices / sps if ran and sps else 0.1
    values: dict[str, Any] = dict.fromkeys(METRIC_NAMES)
    if ran:
        values.update(samples_per_s=sps, samples_per_s_per_device=sps / devices,
                      step_ms_p50=step_s * 1000, data_wait_frac=0.02, mfu=0.015,
                      peak_source="calibrated", peak_rss_mb=1000.0 + 10 * devices,
                      window_median_ratio=1.0,
                      **{f"step_{p}_ms": step_s * 1000 * share for p, share in zip(
                          PHASES, (0.02, 0.3, 0.5, 0.15, 0.03), strict=True)})
    values.update(metrics)
    ranks = [{"rank": r, "samples": 8 * batch_size, "window_s": 8 * step_s,
              "step_s": [step_s] * 8, "data_wait_s": [0.0] * 8, "warmup_step_s": [step_s * 3] * 2,
              "loss": [2.3 / (1 + 0.3 * i) for i in range(10)]}
             for r in range(devices if ran else 0)]
    raw: dict[str, Any] = {"ranks": ranks}
    if ran and mode == "accuracy":
        raw["val_curve"] = [{"step": 4, "time_s": 1.0, "val_acc": 0.9, "val_loss": 0.4},
                            {"step": 8, "time_s": 2.0, "val_acc": 0.985, "val_loss": 0.1}]
    record = {"schema": 1, "run_id": "run-a", "cell_id": cell_id, "cell": cell, "repeat": repeat,
              "seed": repeat, "status": status, "reason": reason,
              "effective": {"world_size": devices if ran else None, "precision": precision,
                            "param_dtype": "float32", "compute_dtype": "float32",
                            "autocast": False, "grad_scaler": False},
              "raw": raw, "metrics": values,
              "env_key": {"hostname": "box", "device": "cpu", "torch": "2.5.1",
                          "lightning": "2.4.0"},
              "started_at": "2026-11-27T10:00:00Z", "wall_s": 3.0}
    validate(record)
    return record


def write_run(run_dir: Path, records: list[dict[str, Any]], env: dict | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "records.jsonl", "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
    (run_dir / "env.json").write_text(json.dumps(env or {
        "hostname": "box", "cpu_model": "Test CPU 9000", "gpus": [], "cuda": None,
        "versions": {"torch": "2.5.1", "lightning": "2.4.0"}, "git_sha": "abc1234"}))
    return run_dir


BASE = "cpu-1x-single-32-true-bs64-tensor"
DDP1, DDP2, DDP4 = (f"cpu-{n}x-ddp-32-true-bs64-tensor" for n in (1, 2, 4))
FSDP2 = "cpu-2x-fsdp-32-true-bs64-tensor"  # no 1-device fsdp: scaling falls back to single
BF16 = "cpu-1x-single-bf16-mixed-bs64-tensor"
ACC = "cpu-1x-single-32-true-bs64-tensor-acc0.98"
SKIPPED = "cuda-1x-single-16-mixed-bs64-tensor"
FAILED = "cpu-2x-deepspeed_stage_1-32-true-bs64-tensor"


def golden_records() -> list[dict[str, Any]]:
    return [
        make_record(sps=80, repeat=0), make_record(sps=88, repeat=1),
        make_record(status="interrupted", reason="SIGINT", sps=None, repeat=2),
        make_record(sps=72, repeat=2),  # the resumed run's newer record for repeat 2 wins
        make_record(precision="bf16-mixed", sps=120, repeat=0),
        make_record(precision="bf16-mixed", sps=120, repeat=1),
        make_record("ddp", 1, sps=100, repeat=0), make_record("ddp", 1, sps=100, repeat=1),
        *(make_record("ddp", 2, sps=v, repeat=i) for i, v in enumerate((180, 190, 170))),
        make_record("ddp", 2, status="timeout", reason="cell exceeded 600 s", sps=None, repeat=3),
        make_record("ddp", 4, sps=320),
        make_record("fsdp", 2, sps=150),
        make_record(mode="accuracy", sps=60, val_acc=0.985, test_acc=0.983,
                    time_to_target_s=12.5),
        make_record(accelerator="cuda", precision="16-mixed", status="skipped", sps=None,
                    reason="CUDA is not available on this machine"),
        make_record("deepspeed_stage_1", 2, status="failed", sps=None,
                    reason="Traceback (most recent call last):\n  File x\n"
                           "ImportError: deepspeed is not installed"),
    ]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run-a", golden_records())


def test_load_records_flattens(run_dir: Path) -> None:
    df = load.load_records(run_dir)
    assert len(df) == 17
    for column in ("cell_id", "repeat", "status", "reason", "world_size", "accelerator",
                   "strategy", "precision", "devices", "samples_per_s", "mfu", "env_hostname"):
        assert column in df.columns
    assert df["samples_per_s"].dtype == float
    assert df.loc[0, "peak_mem_mb"] == 1010.0  # RSS on CPU


def test_latest_keeps_a_resumed_runs_newer_record_and_every_other_runs(tmp_path: Path) -> None:
    first, resumed = make_record(sps=100.0), make_record(sps=120.0)  # same run, cell, repeat
    other = make_record(sps=90.0) | {"run_id": "run-b"}  # another run of the same cell
    df = pd.concat([load.load_records(write_run(tmp_path / "a", [first, resumed])),
                    load.load_records(write_run(tmp_path / "b", [other]))], ignore_index=True)
    assert sorted(load.latest(df)["samples_per_s"]) == [90.0, 120.0]
    assert set(df["malloc"]) == {"system"}  # records from before the axis: glibc as it starts


def test_summary_golden(run_dir: Path) -> None:
    summary = summaries.summarize(load.load_records(run_dir)).set_index("cell_id")
    assert list(summary.index) == [BASE, ACC, BF16, DDP1, DDP2, DDP4, FSDP2, FAILED, SKIPPED]
    base = summary.loc[BASE]
    assert (base["samples_per_s"], base["samples_per_s_min"], base["samples_per_s_max"]) == (
        80, 72, 88)
    assert (base["n"], base["n_total"], base["status"]) == (3, 3, "ok")
    ddp2 = summary.loc[DDP2]
    assert (ddp2["samples_per_s"], ddp2["samples_per_s_min"], ddp2["samples_per_s_max"]) == (
        180, 170, 190)
    assert (ddp2["n"], ddp2["n_total"], ddp2["status"]) == (3, 4, "partial")
    speedups = summary["speedup"].to_dict()
    expected = {BASE: 1.0, ACC: 1.0, BF16: 1.5, DDP1: 1.25, DDP2: 2.25, DDP4: 4.0, FSDP2: 1.875}
    for cell_id, value in expected.items():
        assert speedups[cell_id] == pytest.approx(value), cell_id
    assert summary.loc[ACC, "baseline_cell_id"] == ACC  # prefers a baseline of the same mode
    assert summary.loc[DDP2, "baseline_cell_id"] == BASE
    assert summary.loc[DDP2, "scaling_eff"] == pytest.approx(0.9)
    assert summary.loc[DDP4, "scaling_eff"] == pytest.approx(0.8)
    assert summary.loc[DDP4, "scaling_ref_cell_id"] == DDP1
    assert summary.loc[FSDP2, "scaling_eff"] == pytest.approx(150 / 160)
    assert summary.loc[FSDP2, "scaling_ref_cell_id"] == BASE
    for single in (BASE, BF16, DDP1, ACC):
        assert math.isnan(summary.loc[single, "scaling_eff"])
    for missing in (FAILED, SKIPPED):
        assert summary.loc[missing, "n"] == 0
        assert math.isnan(summary.loc[missing, "speedup"])
    assert summary.loc[SKIPPED, "status"] == "skipped"
    assert summary.loc[ACC, "val_acc"] == pytest.approx(0.985)


def test_not_run_lists_reasons(run_dir: Path) -> None:
    table = summaries.not_run(load.load_records(run_dir))
    assert list(table["cell_id"]) == [DDP2, FAILED, SKIPPED]
    assert list(table["status"]) == ["timeout", "failed", "skipped"]
    assert tables.short_reason(table.loc[1, "reason"]) == "ImportError: deepspeed is not installed"


def test_main_table_format(run_dir: Path) -> None:
    table = tables.main_table(summaries.summarize(load.load_records(run_dir)))
    row = table.set_index("cell").loc[DDP2]
    assert row["samples/s"] == "180 [170-190]"
    assert (row["n"], row["speedup"], row["scaling"]) == ("3/4", "2.25x", "90.0%")
    assert SKIPPED not in set(table["cell"])  # listed under "not run" instead
    text = tables.render(table)
    assert text.splitlines()[0].startswith("cell")


def test_write_report_writes_everything(run_dir: Path) -> None:
    text = report_writer.write_report(run_dir)
    assert DDP4 in text and "speedup" in text
    for name in ("summary.csv", "records.csv", "report.md", "report.html"):
        assert (run_dir / name).stat().st_size > 0, name
    has_pyarrow = importlib.util.find_spec("pyarrow") is not None
    assert (run_dir / "records.parquet").exists() == has_pyarrow
    for png in ("throughput", "scaling", "mfu", "time_breakdown", "loss", "val_accuracy"):
        assert (run_dir / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG", png
    md = (run_dir / "report.md").read_text()
    assert "CUDA is not available on this machine" in md
    assert "ImportError: deepspeed is not installed" in md
    assert "cell exceeded 600 s" in md
    assert "Test CPU 9000" in md and "abc1234" in md
    assert "](plots/scaling.png)" in md
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()
    summary = pd.read_csv(run_dir / "summary.csv")
    assert {"cell_id", "samples_per_s", "speedup", "scaling_eff"} <= set(summary.columns)


def test_html_and_markdown_carry_the_same_tables(run_dir: Path) -> None:
    report_writer.write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    page = (run_dir / "report.html").read_text()
    sections = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert sections == ["Results", "Fastest cells", "Where the time goes",
                        "What each cell computed", "Not run (3)", "Plots"]
    for title in sections:
        assert f"<h2>{title}</h2>" in page
    assert page.count("<table") == md.count("\n| ---") == 5
    for cell_id in (BASE, DDP4, FAILED, SKIPPED):
        assert cell_id in md and cell_id in page


def test_no_multi_device_no_scaling_plot(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", [make_record(sps=50), make_record(sps=60, repeat=1)])
    report_writer.write_report(run)
    assert not (run / "plots" / "scaling.png").exists()
    assert (run / "plots" / "loss.png").exists()  # no accuracy cell: throughput losses


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_cli.main([str(tmp_path / "nope")]) == 2
    assert report_cli.main([str(tmp_path)]) == 2
    assert "records.jsonl" in capsys.readouterr().err


def panels(figure: Any) -> list[tuple[str, list[str]]]:
    """(title, the y labels of its bars: cell ids and bold strategy headers) per panel."""
    try:
        return [(ax.get_title(), [t.get_text() for t in ax.get_yticklabels()])
                for ax in figure.axes]
    finally:
        plots.plt.close(figure)


def test_plots_panel_per_accelerator(tmp_path: Path) -> None:
    """CPU bars vanish next to GPU bars on one axis: each accelerator gets its own panel,
    holding its own cells; the MFU panel names the peak that accelerator divides by."""
    records = [make_record(sps=50), make_record("ddp", 2, sps=90),
               make_record(accelerator="cuda", sps=5000, peak_source="table:NVIDIA H100"),
               make_record("ddp", 2, accelerator="cuda", sps=9000,
                           peak_source="table:NVIDIA H100")]
    df = load.load_records(write_run(tmp_path / "r", records))
    summary = summaries.summarize(df)
    made = plots.make_plots(df, summary, tmp_path / "plots")
    assert {p.name for p in made} == {"throughput.png", "scaling.png", "mfu.png", "loss.png",
                                      "time_breakdown.png"}
    assert plots.plot_scaling(summaries.summarize(df.iloc[:1]), tmp_path / "none") is None

    cells = {accelerator: {f"{accelerator}-1x-single-32-true-bs64-tensor", "single:",
                           f"{accelerator}-2x-ddp-32-true-bs64-tensor", "ddp:"}
             for accelerator in ("cpu", "cuda")}
    throughput = panels(plots.throughput_figure(summary))
    assert [title for title, _ in throughput] == ["accelerator: cpu", "accelerator: cuda"]
    assert [set(labels) for _, labels in throughput] == [cells["cpu"], cells["cuda"]]
    assert [title for title, _ in panels(plots.mfu_figure(summary))] == [
        "accelerator: cpu (peak: calibrated)", "accelerator: cuda (peak: table:NVIDIA H100)"]


def test_a_run_cut_short_before_its_first_record_still_gets_a_report(tmp_path: Path) -> None:
    run = tmp_path / "20260101-000000-host-0000"
    run.mkdir()
    (run / "records.jsonl").touch()  # created with the run, empty until a cell finishes
    from bench.analyze.report import write_report

    assert write_report(run) == "No cell has a record yet."
    assert "No cell has a record yet." in (run / "report.md").read_text()
    assert (run / "report.html").is_file()
