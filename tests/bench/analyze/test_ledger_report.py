"""The report's ledger sections and bench.run's harness line (bench.analyze.ledger) on
hand-built records whose parts are known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.analyze import ledger as ledgers
from bench.analyze import load
from bench.analyze.pages import markdown_page
from bench.analyze.report import report_sections
from bench.analyze.summary import not_run, summarize
from bench.metrics import LEDGER_PARTS
from tests.bench.analyze.test_report import make_record, write_run

PARTS = tuple(LEDGER_PARTS)  # start imports setup warmup window validation teardown wandb
#                              exit handoff other


def with_ledger(record: dict[str, Any], wall: float | None, *values: float | None
                ) -> dict[str, Any]:
    record["ledger"] = None if wall is None else {
        "wall_s": wall, "parts": dict(zip(PARTS, values, strict=True)), "marks": {},
        "note": None}
    return record


def records() -> list[dict[str, Any]]:
    return [
        with_ledger(make_record(repeat=0), 20.0, 0.5, 6, 4, 1.5, 3, 1.25, 1, 0.5, 0.5, 0.25,
                    1.5),
        with_ledger(make_record(repeat=1), 17.0, 0.5, 5, 3, 1.5, 3, 1.25, 1, 0.25, 0.5, 0.25,
                    0.75),
        with_ledger(make_record("ddp", 2), 40.0, 0.5, 6, 20, 3, 5, 2, 2, 0, 1, 0.5, 0),
        with_ledger(make_record("raw"), 11.0, 0.5, 5, 1, 1, 2, 0.5, 0, 0, 0.5, 0.5, 0),
        with_ledger(make_record("ddp", 2, repeat=1, status="timeout", sps=None,
                                reason="no result after 30 s"),
                    30.0, *[None] * 9, 0.5, 29.5),
        with_ledger(make_record(accelerator="cuda", status="skipped", sps=None,
                                reason="no CUDA"), None),
    ]


@pytest.fixture
def frame(tmp_path: Path) -> pd.DataFrame:
    return load.load_records(write_run(tmp_path / "run-a", records()))


def test_each_record_gets_its_wall_overhead_and_efficiency_on_read(frame: pd.DataFrame) -> None:
    assert frame["cell_wall_s"].tolist()[:5] == [20.0, 17.0, 40.0, 11.0, 30.0]
    assert frame["overhead_s"].tolist()[:5] == [15.5, 12.5, 32.0, 8.0, 30.0]
    assert frame["harness_efficiency"].tolist()[:4] == [0.15, 3 / 17, 0.125, 2 / 11]
    assert frame.loc[4:, "harness_efficiency"].isna().all()  # no window
    assert frame.loc[5:, ["cell_wall_s", "overhead_s"]].isna().all().all()  # skipped
    single = summarize(frame).set_index("cell_id").loc["cpu-1x-single-32-true-bs64-tensor"]
    assert single["overhead_s"] == 14.0  # the median over its ok repeats


def test_the_runs_efficiency_counts_every_cell_run_with_a_wall(frame: pd.DataFrame) -> None:
    # windows 3 + 3 + 5 + 2 = 13 s of 118 s; warm-ups 7 s
    assert ledgers.efficiency_note(frame) == (
        "harness efficiency: 11.0% (measured windows 13.0 s of 118 s of cell wall time over "
        "5 cell run(s)); outside warm-up and window: 98.0 s")


def test_the_kinds_table_holds_the_median_parts(frame: pd.DataFrame) -> None:
    table = ledgers.kinds_table(ledgers.ledger_rows(frame)).set_index("kind")
    assert table.index.tolist() == ["cpu 1 device, Lightning", "cpu 2 devices, Lightning",
                                    "cpu 1 device, hand-written"]
    single = table.loc["cpu 1 device, Lightning"]
    assert (single["runs"], single["wall s"], single["efficiency"]) == ("2", "18.5", "16.3%")
    assert (single["imports"], single["setup"], single["wandb"]) == ("5.50", "3.50", "0.38")
    ddp = table.loc["cpu 2 devices, Lightning"]  # the timed-out run has a wall, no window
    assert (ddp["wall s"], ddp["efficiency"], ddp["setup"], ddp["other"]) == (
        "35.0", "12.5%", "20.0", "14.8")


def test_the_cells_with_most_overhead_name_their_largest_parts(frame: pd.DataFrame) -> None:
    table = ledgers.most_overhead_table(ledgers.ledger_rows(frame), n=3)
    assert table["overhead s"].tolist() == ["32.0", "30.0", "15.5"]
    assert table["status"].tolist() == ["ok", "timeout", "ok"]
    assert table["largest overhead parts"].tolist() == [
        "setup 20.0 s, imports 6.00 s, validation 2.00 s", "other 29.5 s, handoff 0.50 s",
        "imports 6.00 s, setup 4.00 s, other 1.50 s"]


def test_the_report_gets_both_sections_and_older_runs_none(frame: pd.DataFrame) -> None:
    sections = report_sections(summarize(frame), not_run(frame), frame)
    titles = [s.title for s in sections]
    assert titles[-3:-1] == ["Where a cell's wall time goes", "Cells with the most overhead"]
    page = markdown_page("r", [], sections, [])
    assert "- harness efficiency: 11.0% (measured windows 13.0 s" in page
    assert "\n| cpu 2 devices, Lightning   |    2 |   35.0 |      12.5% |" in page
    older = frame.assign(ledger=None)
    assert "Cells with the most overhead" not in [
        s.title for s in report_sections(summarize(older), not_run(older), older)]


def test_the_harness_line_is_the_runs_wall_less_windows_and_warm_ups() -> None:
    line = ledgers.harness_line((r["ledger"] for r in records()), run_wall_s=130.0)
    assert line == ("harness: 5 cell run(s), run wall 130 s, cell wall 118 s, measured "
                    "windows 13.0 s (efficiency 11.0%), warm-ups 7.00 s; harness cost 110 s "
                    "(run wall less windows and warm-ups)")
