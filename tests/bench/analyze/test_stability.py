"""How far a throughput can be trusted: one slow step inside the window, or repeats
that disagree, flag the cell "unstable" in the record's metrics, the results table
and the comparison's verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.analyze import load, summary, tables
from bench.analyze.compare import compare_runs, display_table
from bench.measure.derive import derive_metrics
from bench.record import RankRaw, Raw
from tests.bench.analyze.test_report import BASE, make_record, write_run


def test_one_slow_step_shows_in_the_window_to_median_ratio() -> None:
    """As in a bf16-true bs256 reference cell: its first measured step took 0.868 s
    against a 0.159 s median, so the window figure is 1.2x slower than its steps."""
    steps = [0.868] + [0.159] * 29
    rank = RankRaw(rank=0, step_s=steps, data_wait_s=[0.0] * 30, samples=30 * 256,
                   window_s=sum(steps))
    metrics = derive_metrics(Raw(ranks=[rank]), world_size=1)
    assert metrics["window_median_ratio"] == pytest.approx(sum(steps) / (30 * 0.159))
    assert metrics["window_median_ratio"] > 1.1
    assert metrics["samples_per_s_median"] == pytest.approx(256 / 0.159)
    assert metrics["samples_per_s"] == pytest.approx(30 * 256 / sum(steps))


@pytest.mark.parametrize(("repeats", "unstable"), [
    ([dict(sps=100.0), dict(sps=101.0), dict(sps=99.0)], False),
    ([dict(sps=100.0), dict(sps=140.0), dict(sps=170.0)], True),  # cv about 26%
    ([dict(sps=100.0, window_median_ratio=1.15), dict(sps=100.0)], True),  # one slow window
])
def test_a_cell_is_unstable_past_the_documented_thresholds(
        tmp_path: Path, repeats: list[dict], unstable: bool) -> None:
    records = [make_record(repeat=i, **values) for i, values in enumerate(repeats)]
    df = load.load_records(write_run(tmp_path / "run", records))
    row = summary.summarize(df).iloc[0]
    assert bool(row["unstable"]) is unstable
    status = tables.main_table(summary.summarize(df))["status"].iloc[0]
    assert status == ("ok, unstable" if unstable else "ok")


def test_compare_says_which_side_was_unstable(tmp_path: Path) -> None:
    steady = [make_record(repeat=i, sps=100.0 + i) for i in range(3)]
    shaky = [make_record(repeat=i, sps=sps) for i, sps in enumerate((60.0, 100.0, 140.0))]
    a = load.load_records(write_run(tmp_path / "a", steady))
    b = load.load_records(write_run(tmp_path / "b", shaky))
    table = display_table(compare_runs(a, b))
    [verdict] = table.loc[table["cell"] == BASE, "verdict"]
    assert verdict.endswith("(B unstable)")
