"""bench.analyze.across and across_plot: runs from different machines lined up, with
their differences shown and nothing refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.analyze import across
from bench.analyze.across_plot import plot_across
from bench.analyze.load import load_records
from bench.analyze.tables import render
from tests.bench.analyze.test_report import BASE, make_record, write_run

REPO = Path(__file__).resolve().parents[3]
REFERENCE = REPO / "results" / "reference" / "cpu-AMD-EPYC-2-cores"
BF16 = "cpu-1x-single-bf16-mixed-bs64-tensor"
DDP2 = "cpu-2x-ddp-32-true-bs64-tensor"


def on_machine(record: dict[str, Any], host: str, device: str, torch: str) -> dict[str, Any]:
    record["env_key"] = {"hostname": host, "device": device, "torch": torch, "lightning": "2.4.0"}
    return record


def env(host: str, cpu: str, torch: str, cores: int) -> dict[str, Any]:
    return {"hostname": host, "cpu_model": cpu, "cpu_cores": cores, "cpu_cores_usable": cores,
            "gpus": [], "versions": {"torch": torch, "lightning": "2.4.0"},
            "git_sha": "0123456789abcdef", "git_dirty": False,
            "started_at": "2026-11-27T10:00:00+00:00"}


def two_machines(tmp_path: Path) -> list[Path]:
    """Under a reference folder: 'big' (Xeon, torch 2.5.1) has all three cells; 'small'
    (EPYC, torch 2.4.0) is half as fast, lacks bf16 and failed ddp."""
    big = [on_machine(make_record(sps=v, repeat=i), "big", "Xeon", "2.5.1")
           for i, v in enumerate((200.0, 210.0, 190.0))]
    big += [on_machine(make_record(precision="bf16-mixed", sps=400.0, mfu=0.04), "big", "Xeon",
                       "2.5.1"),
            on_machine(make_record("ddp", 2, sps=300.0), "big", "Xeon", "2.5.1")]
    small = [on_machine(make_record(sps=v, repeat=i), "small", "EPYC", "2.4.0")
             for i, v in enumerate((100.0, 105.0, 95.0))]
    small.append(on_machine(make_record("ddp", 2, status="failed", sps=None,
                                        reason="RuntimeError: gloo"), "small", "EPYC", "2.4.0"))
    root = tmp_path / "reference"
    return [write_run(root / "big", big, env("big", "Xeon", "2.5.1", 64)),
            write_run(root / "small", small, env("small", "EPYC", "2.4.0", 2))]


@pytest.fixture
def machines(tmp_path: Path) -> list[across.Machine]:
    return across.load_machines(two_machines(tmp_path))


def test_machines_are_labelled_and_their_differences_shown(
        machines: list[across.Machine]) -> None:
    assert [label for label, _, _ in machines] == ["big", "small"]
    table = across.machines_table(machines).set_index("key")
    assert table.loc["A", "machine"] == "big"
    assert table.loc["B", "CPU"] == "EPYC"
    assert table.loc["A", "cores"] == "64"
    assert table.loc["B", "torch"] == "2.4.0"
    assert table.loc["B", "GPUs"] == "none"
    assert table.loc["A", "git"] == "0123456789"
    assert table.loc["A", "date"] == "2026-11-27"
    assert table.loc["B", "cells ok"] == "1/2"
    notes = across.differences(machines)
    assert any(note.startswith("torch differs") for note in notes)
    assert any(note.startswith("CPU differs") for note in notes)
    assert not any(note.startswith("lightning") for note in notes)


def test_across_table_has_a_column_per_machine_and_the_ratio_to_the_reference(
        machines: list[across.Machine]) -> None:
    table = across.across_table(machines, "big").set_index("cell")
    assert list(table.index) == [BASE, BF16, DDP2]
    assert table.loc[BASE, "samples/s A"] == "200"
    assert table.loc[BASE, "samples/s B"] == "100"
    assert table.loc[BASE, "samples/s B/A"] == "0.50x"
    assert table.loc[BASE, "MFU B"] == "1.5%"
    assert table.loc[BF16, "samples/s B"] == "-"  # not run on small
    assert table.loc[BF16, "samples/s B/A"] == "-"
    assert table.loc[DDP2, "samples/s B"] == "failed"
    assert table.loc[DDP2, "samples/s B/A"] == "-"
    assert table.loc[DDP2, "peak MB B"] == "-"
    assert "to target s A" not in table  # nobody measured it
    # The other machine as the reference, named by its key.
    flipped = across.across_table(machines, "B").set_index("cell")
    assert flipped.loc[BASE, "samples/s A/B"] == "2.00x"
    with pytest.raises(ValueError, match="no machine 'nope'"):
        across.across_table(machines, "nope")


def test_a_partial_cell_says_how_many_repeats_were_ok(tmp_path: Path) -> None:
    records = [make_record(sps=100.0, repeat=0), make_record(sps=120.0, repeat=1),
               make_record(status="failed", reason="oom", sps=None, repeat=2),
               make_record("ddp", 2, status="failed", reason="oom", sps=None)]
    one = across.load_machines([write_run(tmp_path / "run", records)])
    table = across.across_table(one, "A").set_index("cell")
    assert table.loc[BASE, "samples/s A"] == "110 (2/3)"
    assert table.loc[DDP2, "samples/s A"] == "oom"  # every repeat out of memory


def test_fastest_across_picks_the_right_machine(machines: list[across.Machine]) -> None:
    table = across.fastest_across(machines)
    assert list(table["pick"]) == ["fastest", "fastest 32-true"]
    fastest, fp32 = table.iloc[0], table.iloc[1]
    assert (fastest["machine"], fastest["cell"], fastest["samples/s"]) == ("big", BF16, "400")
    assert fastest["MFU"] == "4.0%"
    assert (fastest["next machine"], fastest["vs next"]) == ("small", "4.00x")
    assert (fp32["machine"], fp32["cell"], fp32["samples/s"]) == ("big", DDP2, "300")
    assert (fp32["next machine"], fp32["vs next"]) == ("small", "3.00x")


def test_labels_outside_reference_are_host_and_device_and_kept_unique(tmp_path: Path) -> None:
    runs = [write_run(tmp_path / name, [on_machine(make_record(), "vm", "AMD EPYC", "2.5.1")],
                      env("vm", "AMD EPYC", "2.5.1", 2)) for name in ("r1", "r2", "r3")]
    # No env.json: the label comes from the records' env keys.
    (runs[2] / "env.json").unlink()
    labels = [label for label, _, _ in across.load_machines(runs)]
    assert labels == ["vm AMD EPYC", "vm AMD EPYC-2", "vm AMD EPYC-3"]


def test_the_plot_is_written(machines: list[across.Machine], tmp_path: Path) -> None:
    path = plot_across(machines, tmp_path / "plots")
    assert path == tmp_path / "plots" / "across-machines.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_to_plot_gives_no_file(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [make_record(status="failed", sps=None, reason="boom")])
    assert plot_across(across.load_machines([run]), tmp_path / "plots") is None
    assert not (tmp_path / "plots").exists()


def synthetic_second_machine(path: Path) -> Path:
    """The committed reference's records as if from a second, half-as-fast machine with
    another CPU and torch; its first cell missing and its second failed."""
    lines = (REFERENCE / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    cells = list(dict.fromkeys(r["cell_id"] for r in records))
    out = []
    for record in records:
        if record["cell_id"] == cells[0]:
            continue
        record["env_key"] |= {"hostname": "box", "device": "Intel Xeon", "torch": "2.6.0"}
        if record["cell_id"] == cells[1]:
            record |= {"status": "failed", "reason": "RuntimeError: boom"}
            record["metrics"] = dict.fromkeys(record["metrics"])
        else:
            record["metrics"]["samples_per_s"] /= 2
        out.append(record)
    return write_run(path, out, env("box", "Intel Xeon", "2.6.0", 8))


def test_the_committed_reference_beside_another_machine(tmp_path: Path) -> None:
    machines = across.load_machines([REFERENCE, synthetic_second_machine(tmp_path / "box")])
    assert [label for label, _, _ in machines] == ["cpu-AMD-EPYC-2-cores", "box Intel Xeon"]
    table = across.across_table(machines, "cpu-AMD-EPYC-2-cores").set_index("cell")
    assert len(table) == 7
    missing, failed = list(dict.fromkeys(load_records(REFERENCE)["cell_id"]))[:2]
    assert table.loc[missing, "samples/s B"] == "-"
    assert table.loc[failed, "samples/s B"] == "failed"
    assert set(table.loc[[missing, failed], "samples/s B/A"]) == {"-"}
    assert set(table.drop(index=[missing, failed])["samples/s B/A"]) == {"0.50x"}
    assert not table["samples/s A"].isin(["-", "failed"]).any()
    assert across.fastest_across(machines).iloc[0]["machine"] == "cpu-AMD-EPYC-2-cores"
    assert render(across.machines_table(machines)).count("\n") == 3
    assert plot_across(machines, tmp_path / "plots").is_file()
