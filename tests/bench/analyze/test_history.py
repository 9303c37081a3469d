"""bench.history and bench.analyze.history: runs found and ordered by when they
started, the change-point rule on synthetic series, failed cells, the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import history as history_cli
from bench.analyze.history import (
    baseline_table,
    cell_history,
    find_changes,
    load_runs,
    trend_table,
)
from tests.bench.analyze.test_report import BASE, make_record, write_run

NOISE = 0.01  # repeats at median x (0.99, 1, 1.01)


def write_history(root: Path, medians: list[float | None], cells: tuple[str, ...] = ("single",),
                  names: list[str] | None = None) -> list[Path]:
    """One run per median (a day apart, sha c0, c1, ...), 3 repeats each of every
    strategy in ``cells``; None: the cell failed in that run."""
    paths = []
    for i, median in enumerate(medians):
        records: list[dict[str, Any]] = []
        for strategy in cells:
            devices = 1 if strategy == "single" else 2
            records += [make_record(strategy, devices, repeat=r, sps=median * (1 + NOISE * (r - 1)))
                        if median else make_record(strategy, devices, repeat=r, sps=None,
                                                   status="failed", reason="boom")
                        for r in range(3)]
        env = {"hostname": "box", "cpu_model": "Test CPU", "git_sha": f"c{i}{'0' * 39}",
               "git_dirty": i == 1, "started_at": f"2026-11-{10 + i:02d}T09:00:00+00:00"}
        paths.append(write_run(root / (names[i] if names else f"run{i}"), records, env))
    return paths


def marks(root: Path, threshold: float = 0.05) -> list[tuple[int, float, str]]:
    """(run index, change, confirmed/unconfirmed) of every change point of BASE."""
    history = cell_history(load_runs([root]), threshold=threshold)
    history = history[(history["cell_id"] == BASE) & history["mark"].notna()]
    return [(r["run"], r["change"], r["mark"]) for r in history.to_dict("records")]


# A lasting 15% drop at run index 5, after 5 steady runs (the rule needs 3 before it).
DROP = [1000, 1004, 996, 1002, 998, 850, 852, 848, 851]


def repeats(medians: list[float], spread: float = NOISE) -> list[list[float]]:
    return [[m * (1 - spread), m, m * (1 + spread)] for m in medians]


def test_a_lasting_15_percent_drop_is_marked_at_the_run_where_it_happened(tmp_path: Path) -> None:
    write_history(tmp_path, DROP)
    [(run, change, mark)] = marks(tmp_path)
    assert (run, mark) == (5, "confirmed")
    assert change == pytest.approx(-0.15, abs=0.005)


def test_flat_runs_noisier_than_the_threshold_have_no_change_point(tmp_path: Path) -> None:
    """Runs +-8% apart, more than the 5% threshold: the band is the noise between runs."""
    write_history(tmp_path, [1000, 1080, 920, 1070, 930, 1080, 920, 1075, 925, 1000])
    assert marks(tmp_path) == []


def test_a_single_outlier_run_is_not_a_change_point(tmp_path: Path) -> None:
    write_history(tmp_path, [1000, 1003, 998, 1001, 800, 1002, 999, 1001])
    assert marks(tmp_path) == []


def test_a_change_in_the_last_run_is_marked_unconfirmed() -> None:
    medians = [1000.0, 1002.0, 998.0, 1001.0, 999.0, 1200.0]
    [change] = find_changes(medians, repeats(medians))
    assert (change.position, change.confirmed) == (5, False)
    assert change.change == pytest.approx(0.2)


def test_no_change_point_before_the_segment_holds_3_runs() -> None:
    """A drop at run 2 is not called there (2 runs are too few to know the level):
    the first run that can be a change point is the one after 3."""
    medians = [1000.0, 1000.0, 850.0, 850.0, 850.0, 850.0, 850.0, 850.0]
    assert [c.position for c in find_changes(medians, repeats(medians))] == [3]


def test_four_runs_of_one_commit_are_not_a_rise() -> None:
    """docs/comparing.md's old example: 127, 125, 136, 142 samples/s on one commit was
    'RISE? +11.9%'; four runs say too little about the noise between runs to call it."""
    assert find_changes([127, 125, 136, 142], [[127], [120, 130], [131, 141], [141, 143]]) == []


def test_noisy_repeats_widen_the_band_past_the_threshold() -> None:
    """A 10% step is a change for steady repeats, noise for repeats that spread +-10%."""
    medians = [1000.0] * 4 + [900.0] * 4
    assert [c.position for c in find_changes(medians, repeats(medians))] == [4]
    assert find_changes(medians, repeats(medians, spread=0.1)) == []


def test_a_slow_slide_is_caught_against_the_baseline(tmp_path: Path) -> None:
    """2% slower every run: against the median of the first 3 runs the last two are
    beyond the band, a confirmed slowdown; against a baseline of runs 5-7 only the
    last run is beyond the band (6% below; run 8 is 4% below): not confirmed."""
    write_history(tmp_path, [1000 * 0.98 ** i for i in range(10)])
    runs = load_runs([tmp_path])
    history = cell_history(runs)
    [row] = baseline_table(history, runs).to_dict("records")
    assert (row["status"], row["change"]) == ("confirmed slowdown", "-14.9%")  # 0.98 ** 8
    assert row["baseline"] == f"{runs[0].label} (3 runs)"
    assert history.loc[history["run"] == 9, "fails"].all()
    [late] = baseline_table(cell_history(runs, baseline=5), runs).to_dict("records")
    assert late["status"] == "unconfirmed slowdown"


def test_runs_are_ordered_by_start_time_not_by_directory_name(tmp_path: Path) -> None:
    # "a" started last, "c" first: names sort the other way round.
    write_history(tmp_path, [100, 200, 300], names=["c", "b", "a"])
    runs = load_runs([tmp_path])
    assert [run.path.name for run in runs] == ["c", "b", "a"]
    assert [run.label for run in runs] == ["2026-11-10 c000000", "2026-11-11 c100000+dirty",
                                           "2026-11-12 c200000"]
    assert {run.time_source for run in runs} == {"env.json"}


def test_without_env_json_the_records_give_the_time_and_say_so(tmp_path: Path) -> None:
    [path, _] = write_history(tmp_path, [100, 100])
    (path / "env.json").unlink()
    runs = load_runs([tmp_path])
    by_path = {run.path.name: run for run in runs}
    assert by_path["run0"].time_source == "records"
    assert by_path["run0"].label.endswith(" ?")  # no sha known


def test_same_day_same_commit_runs_get_distinct_labels(tmp_path: Path) -> None:
    env = {"git_sha": "abcdef0123", "started_at": "2026-11-10T09:00:00+00:00"}
    write_run(tmp_path / "x", [make_record()], env)
    write_run(tmp_path / "y", [make_record()], env | {"started_at": "2026-11-10T17:30:00Z"})
    write_run(tmp_path / "z", [make_record()], env | {"started_at": "2026-11-10T17:30:00Z"})
    labels = [run.label for run in load_runs([tmp_path])]
    assert labels == ["2026-11-10 09:00 abcdef0", "2026-11-10 17:30 abcdef0 #1",
                      "2026-11-10 17:30 abcdef0 #2"]


def test_a_failed_cell_shows_its_status_and_is_left_out_of_the_walk(tmp_path: Path) -> None:
    write_history(tmp_path, [1000, 1000, None, 1000, 1000])
    runs = load_runs([tmp_path])
    history = cell_history(runs)
    row = trend_table(history, runs).set_index("cell").loc[BASE]
    assert row[runs[2].label] == "failed"
    assert row[runs[0].label] == "1,000 [990-1,010]"
    assert history["mark"].isna().all()


def test_the_entry_point_prints_the_trend_and_writes_the_pages(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_history(tmp_path / "results", DROP, cells=("single", "ddp"))
    out = tmp_path / "out"
    assert history_cli.main([str(tmp_path / "results"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "9 runs, oldest first:" in printed
    assert "2026-11-15 c500000" in printed  # the run where it dropped: a column
    assert "850 [842-858] DROP -15.0%" in printed
    assert "| confirmed" not in printed and "confirmed" in printed  # terminal, not markdown
    assert "Against the baseline (2026-11-10 c000000):" in printed
    assert "1,000 -> 851" in printed and "confirmed slowdown" in printed
    markdown = (out / "history.md").read_text()
    assert "## Throughput per run (samples/s)" in markdown and "## Change points" in markdown
    assert "| 850 [842-858] DROP -15.0% |" in markdown
    assert "## Against the baseline (2026-11-10 c000000)" in markdown
    assert (out / "history.html").read_text().count("<table") == 4
    assert sorted(p.name for p in out.glob("*.png")) == [
        "history-cpu-1x-single-32-true-bs64-tensor.png",
        "history-cpu-2x-ddp-32-true-bs64-tensor.png"]


def test_the_entry_point_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    write_history(root, DROP, cells=("single", "ddp"))
    assert history_cli.main([str(root), "--fail-on-change"]) == 1
    assert "slowdown: " + BASE in capsys.readouterr().err
    assert history_cli.main([str(root), "--fail-on-change", "--threshold", "20"]) == 0
    assert "No change point (threshold 20%)." in capsys.readouterr().out
    assert history_cli.main([str(root), "--cells", "ddp", "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert "| cell " in printed and BASE not in printed
    assert history_cli.main([str(root), "--cells", "nothing-like-it"]) == 2
    assert capsys.readouterr().err == "error: no cell id contains 'nothing-like-it'\n"
    assert history_cli.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: no such directory")
    (tmp_path / "empty").mkdir()
    assert history_cli.main([str(tmp_path / "empty")]) == 2
    assert "no records.jsonl under" in capsys.readouterr().err


def test_one_run_is_nothing_to_compare(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    write_history(tmp_path, [1000])
    assert history_cli.main([str(tmp_path)]) == 0
    assert "Nothing to compare" in capsys.readouterr().out


def test_an_outlier_last_run_is_printed_unconfirmed_and_does_not_fail(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_history(tmp_path, [1000, 1003, 998, 1001, 999, 1002, 800])
    assert history_cli.main([str(tmp_path), "--fail-on-change"]) == 0
    captured = capsys.readouterr()
    assert "800 [792-808] DROP? -20.0%" in captured.out
    assert "unconfirmed slowdown" in captured.out  # against the baseline: the last run alone
    assert captured.err.splitlines() == [
        f"unconfirmed slowdown (not failed): {BASE} at 2026-11-16 c600000: -20.0% (change point)",
        f"unconfirmed slowdown (not failed): {BASE} at 2026-11-16 c600000: -20.0% "
        "(against the baseline)"]


def test_a_slide_fails_the_gate_against_the_default_baseline_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """At a 10% threshold the walk marks nothing (the segment's median slides with the
    runs: the last is 9.6% below it), but the last two runs are 13% and 15% below the
    first three."""
    write_history(tmp_path, [1000 * 0.98 ** i for i in range(10)])
    assert history_cli.main([str(tmp_path), "--fail-on-change", "--threshold", "10"]) == 1
    captured = capsys.readouterr()
    assert "No change point (threshold 10%)." in captured.out
    assert captured.err.splitlines() == [
        f"slowdown: {BASE} at 2026-11-19 c900000: -14.9% (against the baseline)"]
    for late in ("6", "c600000", "2026-11-16 c600000", str(tmp_path / "run6"), "-4"):
        assert history_cli.main([str(tmp_path), "--fail-on-change", "--threshold", "10",
                                 "--baseline", late]) == 0, late
        assert "Against the baseline (2026-11-16 c600000):" in capsys.readouterr().out


def test_an_unknown_baseline_is_bad_input(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    write_history(tmp_path, [1000, 1000, 1000, 1000])
    for spec, error in [("4", "--baseline 4: there are 4 runs (0 to 3)"),
                        ("nothing", "--baseline 'nothing' names no runs"),
                        ("2026-11", "--baseline '2026-11' names 4 runs")]:
        assert history_cli.main([str(tmp_path), "--baseline", spec]) == 2
        assert capsys.readouterr().err.startswith(f"error: {error}")
