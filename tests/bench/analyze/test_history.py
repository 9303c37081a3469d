"""bench.history and bench.analyze.history: runs found and ordered by when they
started, the change-point rule on synthetic series, failed cells, the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import history as history_cli
from bench.analyze.history import cell_history, find_changes, load_runs, trend_table
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


def test_a_lasting_15_percent_drop_is_marked_at_the_run_where_it_happened(tmp_path: Path) -> None:
    write_history(tmp_path, [1000, 1004, 996, 850, 852])
    [(run, change, mark)] = marks(tmp_path)
    assert (run, mark) == (3, "confirmed")
    assert change == pytest.approx(-0.15, abs=0.005)


def test_noisy_but_flat_runs_have_no_change_point(tmp_path: Path) -> None:
    write_history(tmp_path, [1000, 1030, 970, 1025, 975])
    assert marks(tmp_path) == []


def test_a_single_outlier_run_is_not_a_change_point(tmp_path: Path) -> None:
    write_history(tmp_path, [1000, 1000, 800, 1000, 1000])
    assert marks(tmp_path) == []


def test_a_change_in_the_last_run_is_marked_unconfirmed() -> None:
    medians = [1000.0, 1002.0, 998.0, 1200.0]
    [change] = find_changes(medians, [[m * 0.99, m, m * 1.01] for m in medians])
    assert (change.position, change.confirmed) == (3, False)
    assert change.change == pytest.approx(0.2)


def test_noisy_repeats_widen_the_band_past_the_threshold() -> None:
    """A 10% step is a change for steady repeats, noise for repeats that spread +-10%."""
    medians = [1000.0, 1000.0, 900.0, 900.0]
    steady = [[m * 0.99, m, m * 1.01] for m in medians]
    spread = [[m * 0.9, m, m * 1.1] for m in medians]
    assert [c.position for c in find_changes(medians, steady)] == [2]
    assert find_changes(medians, spread) == []


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
    write_history(tmp_path / "results", [1000, 1004, 996, 850, 852], cells=("single", "ddp"))
    out = tmp_path / "out"
    assert history_cli.main([str(tmp_path / "results"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "5 runs, oldest first:" in printed
    assert "2026-11-13 c300000" in printed  # the run where it dropped: a column
    assert "850 [842-858] DROP -15.0%" in printed
    assert "| confirmed" not in printed and "confirmed" in printed  # terminal, not markdown
    markdown = (out / "history.md").read_text()
    assert "## Throughput per run (samples/s)" in markdown and "## Change points" in markdown
    assert "| 850 [842-858] DROP -15.0% |" in markdown
    assert (out / "history.html").read_text().count("<table") == 3
    assert sorted(p.name for p in out.glob("*.png")) == [
        "history-cpu-1x-single-32-true-bs64-tensor.png",
        "history-cpu-2x-ddp-32-true-bs64-tensor.png"]


def test_the_entry_point_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    write_history(root, [1000, 1004, 996, 850, 852], cells=("single", "ddp"))
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
