"""bench.compare and bench.analyze.compare: verdicts, cells on one side only,
environment checks, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import compare
from bench.analyze.compare import compare_runs, throughput_verdict
from bench.analyze.load import load_records
from bench.metrics import STORED_NAMES as METRIC_NAMES
from bench.record import validate

FAST = "cpu-1x-single-32-true-bs64-tensor"  # 10% slower in B, tight repeats
NOISY = "cpu-2x-ddp-32-true-bs64-tensor"  # 2% faster in B, wide repeats
GONE = "cpu-1x-single-bf16-mixed-bs64-tensor"  # in A only


CPU_PRINT = {"vendor": "AuthenticAMD", "family": "25", "model": "17", "stepping": "1",
             "model_name": "Test CPU", "isa": "avx2 avx512f avx512_bf16", "cores": 2,
             "cores_usable": 2, "memory_gib": 23.5, "caches": "L2 1024K, L3 32768K"}


def record(strategy: str, devices: int, precision: str, sps: float, repeat: int,
           device: str = "Test CPU", torch: str = "2.5.1",
           cpu: dict[str, Any] | None = None, peak: float | None = None) -> dict[str, Any]:
    """A valid ok record (bench.record schema) with the given throughput."""
    metrics: dict[str, Any] = dict.fromkeys(METRIC_NAMES)
    metrics.update(samples_per_s=sps, step_ms_p50=64_000 * devices / sps, mfu=sps / 10_000,
                   peak_rss_mb=900.0, val_acc=None)
    if peak is not None:  # a calibrated CPU peak per rank, TFLOP/s
        metrics.update(peak_tflops=peak * devices, peak_source="calibrated (cpu bf16)")
    cell_id = f"cpu-{devices}x-{strategy}-{precision}-bs64-tensor"
    rec = {"schema": 1, "run_id": "r", "cell_id": cell_id,
           "cell": {"accelerator": "cpu", "devices": devices, "num_nodes": 1, "strategy": strategy,
                    "precision": precision, "batch_size": 64, "loader": "tensor",
                    "compile": "none", "optimizer": "adam", "optimizer_impl": "default",
                    "mode": "throughput", "seed": 0},
           "repeat": repeat, "seed": repeat, "status": "ok", "reason": None,
           "effective": {"world_size": devices}, "raw": {"ranks": []}, "metrics": metrics,
           "env_key": {"hostname": "box", "device": device, "torch": torch, "lightning": "2.4.0",
                       "hardware": {"cpu": cpu or CPU_PRINT}},
           "started_at": "2026-11-27T10:00:00Z", "wall_s": 1.0}
    validate(rec)
    return rec


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.mkdir(parents=True)
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run_a(tmp_path: Path) -> Path:
    return write(tmp_path / "a", [
        *(record("single", 1, "32-true", v, i) for i, v in enumerate((100, 101, 99))),
        *(record("ddp", 2, "32-true", v, i) for i, v in enumerate((100, 80, 120))),
        record("single", 1, "bf16-mixed", 150, 0),
    ])


def run_b(tmp_path: Path, name: str = "b", **env: str) -> Path:
    return write(tmp_path / name, [
        *(record("single", 1, "32-true", v, i, **env) for i, v in enumerate((90, 91, 89))),
        *(record("ddp", 2, "32-true", v, i, **env) for i, v in enumerate((102, 82, 122))),
    ])


def test_verdicts(tmp_path: Path) -> None:
    result = compare_runs(load_records(run_a(tmp_path)), load_records(run_b(tmp_path)),
                                  threshold=5).set_index("cell_id")
    fast = result.loc[FAST]
    assert fast["verdict"] == "slower"
    assert fast["samples_per_s_ratio"] == pytest.approx(0.9)
    assert fast["change_pct"] == pytest.approx(-10, abs=0.01)  # of the geometric means
    assert fast["ci_low_pct"] < -10 < fast["ci_high_pct"] < -5
    assert fast["p_value"] < 0.001
    assert fast["step_ms_p50_ratio"] == pytest.approx(100 / 90)
    assert fast["peak_mem_mb_ratio"] == pytest.approx(1.0)
    noisy = result.loc[NOISY]  # +2%, but 20% spread: three repeats cannot say "same"
    assert noisy["verdict"] == "inconclusive"
    assert noisy["change_pct"] == pytest.approx(2, abs=0.5)
    assert noisy["repeats_needed"] > 3 and "repeats a side would decide 5%" in noisy["basis"]
    assert result.loc[GONE, "present"] == "A only"


def test_a_large_change_in_noisy_repeats_is_inconclusive_not_a_coin_flip() -> None:
    row = throughput_verdict([100, 60, 140], [80, 40, 130])
    assert row["verdict"] == "inconclusive" and row["detectable_pct"] > 50


def test_main_output_and_missing_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main([str(run_a(tmp_path)), str(run_b(tmp_path) / "records.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "slower" in out and "inconclusive" in out and "95% CI" in out
    assert "B vs A: 0 faster, 1 slower, 0 same, 1 inconclusive" in out
    assert f"cells in A only (not in B): {GONE}" in out
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--markdown"]) == 0
    assert "| cell" in capsys.readouterr().out


def test_fail_on_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = str(run_a(tmp_path)), str(run_b(tmp_path))
    assert compare.main([a, b, "--fail-on-regression"]) == 1
    err = capsys.readouterr().err
    assert f"regression in B: {FAST}: slower -10.0%" in err
    assert f"missing in B: {GONE}" in err  # a missing cell fails by default
    assert compare.main([a, b, "--fail-on-regression", "--threshold", "15"]) == 1
    assert compare.main([a, b, "--fail-on-regression", "--threshold", "15",
                         "--allow-missing"]) == 0
    assert compare.main([b, b, "--fail-on-regression"]) == 0


def test_hardware_mismatch_refused_unless_forced(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    a, b = str(run_a(tmp_path)), str(run_b(tmp_path, device="Other CPU", torch="2.6.0"))
    assert compare.main([a, b]) == 2
    err = capsys.readouterr().err
    assert "cannot be compared" in err and "device: A Test CPU vs B Other CPU" in err
    assert "--force" in err
    assert compare.main([a, b, "--force"]) == 0
    out = capsys.readouterr().out
    assert "compared anyway (--force): device" in out and "different versions: torch" in out


def test_version_mismatch_only_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main([str(run_a(tmp_path)), str(run_b(tmp_path, torch="2.6.0"))]) == 0
    assert "different versions: torch: A 2.5.1 vs B 2.6.0" in capsys.readouterr().out


def test_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main([str(run_a(tmp_path)), str(tmp_path / "nope")]) == 2
    assert "no records.jsonl" in capsys.readouterr().err


def failed(rec: dict[str, Any], status: str = "failed", reason: str = "RuntimeError: boom"
           ) -> dict[str, Any]:
    rec = rec | {"status": status, "reason": reason,
                 "metrics": dict.fromkeys(METRIC_NAMES)}
    validate(rec)
    return rec


def test_a_cell_that_broke_is_a_regression_named_with_its_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ok in A, failed in B: --fail-on-regression fails, naming the cell and why."""
    a = write(tmp_path / "a", [record("single", 1, "32-true", 100, i) for i in range(2)])
    b = write(tmp_path / "b", [failed(record("single", 1, "32-true", 100, i)) for i in range(2)])
    result = compare_runs(load_records(a), load_records(b)).set_index("cell_id")
    assert result.loc[FAST, "verdict"] == "broken"
    assert compare.main([str(a), str(b)]) == 0  # reported, not failed, without the flag
    out = capsys.readouterr().out
    assert f"broken in B: {FAST}" in out and "RuntimeError: boom" in out
    assert compare.main([str(a), str(b), "--fail-on-regression"]) == 1
    assert FAST in capsys.readouterr().err
    # the other way round it is a fix, and nothing fails
    assert compare_runs(load_records(b), load_records(a)).set_index("cell_id").loc[
        FAST, "verdict"] == "fixed"
    assert compare.main([str(b), str(a), "--fail-on-regression"]) == 0


def test_fail_on_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = str(run_a(tmp_path)), str(run_b(tmp_path))
    assert compare.main([a, b]) == 0
    assert compare.main([a, b, "--fail-on-missing"]) == 1
    assert f"missing in B: {GONE}" in capsys.readouterr().err
    assert compare.main([b, a, "--fail-on-missing"]) == 0  # B may have more cells


def test_three_runs_side_by_side(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One table, a column per run (median [min-max]) and the change against the first;
    the gates apply to every run against the first."""
    a, b = run_a(tmp_path), run_b(tmp_path)
    c = write(tmp_path / "c", [
        *(record("single", 1, "32-true", v, i) for i, v in enumerate((110, 111, 109))),
        failed(record("ddp", 2, "32-true", 100, 0)),
    ])
    assert compare.main([str(a), str(b), str(c)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(FAST))
    assert "100 [99.0-101]" in row and "90.0 [89.0-91.0]" in row and "110 [109-111]" in row
    assert "-10.0%" in row and "+10.0%" in row
    noisy = next(line for line in out.splitlines() if line.startswith(NOISY))
    assert "failed" in noisy  # C's ddp cell: its status instead of a number
    assert "C vs A: 1 faster, 0 slower" in out and f"broken in C: {NOISY}" in out
    assert compare.main([str(a), str(b), str(c), "--fail-on-regression"]) == 1
    err = capsys.readouterr().err
    assert f"regression in B: {FAST}" in err and f"regression in C: {NOISY}" in err
    assert compare.main([str(a)]) == 2


def test_same_name_other_cpu_is_refused_naming_the_difference(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Same hostname, same model name: only the fingerprint tells the CPUs apart."""
    other = CPU_PRINT | {"stepping": "0", "isa": "avx2 avx512f"}
    a = write(tmp_path / "a", [record("single", 1, "32-true", 100, i) for i in range(2)])
    b = write(tmp_path / "b", [record("single", 1, "32-true", 100, i, cpu=other)
                               for i in range(2)])
    assert compare.main([str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "cannot be compared" in err
    assert "cpu stepping: A 1 vs B 0" in err
    assert "cpu isa: A avx2 avx512f avx512_bf16 vs B avx2 avx512f" in err
    # a little less memory (the kernel's share) is the same machine
    same = write(tmp_path / "c", [record("single", 1, "32-true", 100, i,
                                         cpu=CPU_PRINT | {"memory_gib": 23.4})
                                  for i in range(2)])
    assert compare.main([str(a), str(same)]) == 0


def test_calibrated_peaks_far_apart_are_different_hardware(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The committed reference and another 2-core VM: same name, peaks 2x apart."""
    a = write(tmp_path / "a", [record("single", 1, "bf16-true", 100, i, peak=0.86)
                               for i in range(2)])
    b = write(tmp_path / "b", [record("single", 1, "bf16-true", 100, i, peak=0.41)
                               for i in range(2)])
    near = write(tmp_path / "c", [record("single", 1, "bf16-true", 100, i, peak=0.75)
                                  for i in range(2)])
    assert compare.main([str(a), str(b)]) == 2
    assert "calibrated CPU peak bf16-true (1 rank(s)): A 0.86 vs B 0.41" in \
        capsys.readouterr().err
    assert compare.main([str(a), str(near)]) == 0  # calibration noise, not hardware


def test_records_without_a_fingerprint_are_refused_unless_forced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without one, a hardware change would read as a code change ("slower -32%")."""
    old = record("single", 1, "32-true", 100, 0)
    del old["env_key"]["hardware"]
    a = write(tmp_path / "a", [old])
    b = write(tmp_path / "b", [record("single", 1, "32-true", 100, 0)])
    assert compare.main([str(a), str(b)]) == 2
    assert "A's records carry no hardware fingerprint" in capsys.readouterr().err
    assert compare.main([str(a), str(b), "--force"]) == 0
    assert "compared anyway (--force): A's records carry no hardware fingerprint" in \
        capsys.readouterr().out


def test_across_lines_up_other_machines_and_refuses_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the pair compare refuses (another CPU, other versions), --across shows."""
    other = CPU_PRINT | {"stepping": "0", "model_name": "Other CPU"}
    a = write(tmp_path / "reference" / "amd", [record("single", 1, "32-true", 100, i)
                                               for i in range(2)])
    b = write(tmp_path / "reference" / "intel", [
        record("single", 1, "32-true", 150, i, device="Other CPU", torch="2.6.0", cpu=other)
        for i in range(2)])
    out = tmp_path / "out"
    assert compare.main([str(a), str(b), "--across", "--reference", "amd", "--out",
                         str(out)]) == 0
    printed = capsys.readouterr().out
    for title in ("Machines:", "Per cell:", "Fastest per accelerator:"):
        assert title in printed
    assert "1.50x" in printed  # intel against the chosen reference
    assert "AuthenticAMD 25/17/0" in printed  # the fingerprints, shown
    markdown = (out / "across.md").read_text()
    assert "## Per cell" in markdown and "| cell" in markdown
    assert (out / "across.html").read_text().count("<table") == 3
    assert (out / "across-machines.png").stat().st_size > 10_000
    assert compare.main([str(a), str(b), "--across", "--reference", "nowhere"]) == 2
    assert "no machine 'nowhere'" in capsys.readouterr().err


def test_pair_compare_writes_its_tables_as_pages(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert compare.main([str(run_a(tmp_path)), str(run_b(tmp_path)), "--out", str(out)]) == 0
    markdown = (out / "compare.md").read_text()
    assert "## B against A" in markdown and "slower" in markdown
    assert "B vs A:" in markdown  # the verdict counts, under their table
    assert "<table" in (out / "compare.html").read_text()



# -- like with like: val_acc only between the same validation images ----------------------

def validated_run(tmp_path: Path, name: str, val_acc: float,
                  *images: int | None) -> Path:
    """Repeats with ``val_acc`` on ``images`` images each; None: a record written before
    val_images existed (no such key), which validated on the whole split."""
    recs = [record("single", 1, "32-true", 100 + i, i) for i in range(len(images))]
    for rec, count in zip(recs, images, strict=True):
        rec["metrics"]["val_acc"] = val_acc
        rec["metrics"]["val_images"] = count
        if count is None:
            del rec["metrics"]["val_images"]
        validate(rec)
    return write(tmp_path / name, recs)


def fast_row(a: Path, b: Path) -> Any:
    return compare_runs(load_records(a), load_records(b)).set_index("cell_id").loc[FAST]


def test_val_acc_on_other_images_is_not_a_ratio_nor_an_alarm(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An older run (the whole split, no val_images field) against one whose throughput
    cells validate on the sanity subset: the values are kept, their ratio is not shown,
    the basis says why, and the gate does not compare them (0.80 -> 0.30 would
    otherwise be a collapse). A side that mixes the two (a resume across the change)
    is not like with like either."""
    from bench.metrics import SANITY_VAL_IMAGES as SUBSET

    a = validated_run(tmp_path, "a", 0.80, None, None, None)
    b = validated_run(tmp_path, "b", 0.30, SUBSET, SUBSET, SUBSET)
    row = fast_row(a, b)
    assert (row["val_acc_a"], row["val_acc_b"]) == pytest.approx((0.80, 0.30))
    assert row["val_acc_ratio"] != row["val_acc_ratio"]  # NaN: not a ratio
    assert row["samples_per_s_ratio"] == pytest.approx(1.0)  # the rest as ever
    assert f"val_acc not compared: A validated on 5000 images, B on {SUBSET}" in row["basis"]
    assert row["alarms"] == ""
    assert compare.main([str(a), str(b), "--fail-on-regression"]) == 0
    out = capsys.readouterr().out
    assert "val_acc not compared" in out and "collapsed" not in out
    mixed = fast_row(a, validated_run(tmp_path, "mixed", 0.80, None, SUBSET, SUBSET))
    assert mixed["val_acc_ratio"] != mixed["val_acc_ratio"]
    assert f"B on {SUBSET}/5000" in mixed["basis"]


def test_val_acc_on_the_same_images_is_compared(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The subset on both sides: a ratio, and a collapse still fails the gate; an older
    record (no field) and an accuracy cell's 5000 images are the same set."""
    from bench.metrics import SANITY_VAL_IMAGES as SUBSET

    a = validated_run(tmp_path, "a", 0.80, SUBSET, SUBSET, SUBSET)
    b = validated_run(tmp_path, "b", 0.30, SUBSET, SUBSET, SUBSET)
    row = fast_row(a, b)
    assert row["val_acc_ratio"] == pytest.approx(0.30 / 0.80)
    assert "not compared" not in row["basis"] and "val_acc collapsed" in row["alarms"]
    assert compare.main([str(a), str(b), "--fail-on-regression"]) == 1
    assert "val_acc collapsed: 0.800 -> 0.300" in capsys.readouterr().err
    row = fast_row(validated_run(tmp_path, "old", 0.80, None, None),
                   validated_run(tmp_path, "full", 0.79, 5000, 5000))
    assert row["val_acc_ratio"] == pytest.approx(0.79 / 0.80)


# -- windows: a note when the two sides measured other step counts ------------------------

def windowed_run(tmp_path: Path, name: str, *counts: int | None) -> Path:
    """Repeats that measured ``counts`` steps (metric window_steps); None: a record
    written before the metric existed, whose first rank's 30 steps say it."""
    recs = [record("single", 1, "32-true", 100 + i, i) for i in range(len(counts))]
    for rec, count in zip(recs, counts, strict=True):
        rec["metrics"]["window_steps"] = count
        if count is None:
            del rec["metrics"]["window_steps"]
            rec["raw"]["ranks"] = [{"step_s": [0.1] * 30}]
        validate(rec)
    return write(tmp_path / name, recs)


def test_windows_of_other_step_counts_are_noted_in_the_basis(tmp_path: Path) -> None:
    older = windowed_run(tmp_path, "a", None, None, None)
    timed = fast_row(older, windowed_run(tmp_path, "b", 612, 612, 612))
    assert timed["basis"].endswith("; windows differ: A measured 30 steps, B 612")
    assert timed["samples_per_s_ratio"] == pytest.approx(1.0)  # still compared
    mixed = fast_row(windowed_run(tmp_path, "c", 612, 640, 612),
                     windowed_run(tmp_path, "d", 612, 612, 612))
    assert mixed["basis"].endswith("; windows differ: A measured 612/640 steps, B 612")
    same = fast_row(older, windowed_run(tmp_path, "e", 30, 30, 30))
    assert "windows differ" not in same["basis"]


# -- how the cells' processes started (bench.orchestrate.preload) --------------------------

def started_run(tmp_path: Path, name: str, *preloaded: bool | None) -> Path:
    """Repeats whose processes were forked from the preload server (True), new
    interpreters (False), or records from before the field existed (None)."""
    recs = [record("single", 1, "32-true", 100 + i, i) for i in range(len(preloaded))]
    for rec, value in zip(recs, preloaded, strict=True):
        if value is not None:
            rec["preloaded"] = value
    return write(tmp_path / name, recs)


def test_the_basis_says_when_the_sides_started_their_cells_differently(tmp_path: Path) -> None:
    forked = started_run(tmp_path, "forked", True, True, True)
    fresh = started_run(tmp_path, "fresh", False, False, False)
    row = fast_row(fresh, forked)
    assert row["basis"].endswith("; A's cells new interpreters, "
                                 "B's forked from the preload server")
    assert row["verdict"] == "same"  # a note; the verdict is the figures'
    mixed = fast_row(forked, started_run(tmp_path, "mixed", True, False, None))
    assert mixed["basis"].endswith("; A's cells forked from the preload server, "
                                   "B's forked from the preload server/new interpreters")
    for a, b in ((forked, started_run(tmp_path, "forked2", True, True)),
                 (fresh, started_run(tmp_path, "old", None, None, None))):
        assert "cells" not in fast_row(a, b)["basis"]  # alike, or nothing known
