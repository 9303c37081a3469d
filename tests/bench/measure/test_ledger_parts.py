"""The ledger's arithmetic (bench.measure.ledger) on hand-built marks and raw values:
every part, the wall, other, and the cells that stopped early."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.measure import ledger
from bench.metrics import LEDGER_PARTS
from bench.record import RankRaw, Raw

# A Lightning cell in its own process, every mark reached.
PROCESS_CELL = {"asked": 1000.0, "interpreter": 1000.5, "imported": 1006.0, "execute": 1006.1,
                "prepared": 1007.0, "training_start": 1010.0, "training_end": 1016.0,
                "record_built": 1017.0, "wandb_done": 1017.5, "written": 1017.75,
                "exited": 1018.0, "read": 1018.25}


def rank0(paused_s: float = 1.25, host_step_s: list[float] | None = None) -> RankRaw:
    return RankRaw(rank=0, step_s=[1.0, 1.0, 1.0], data_wait_s=[0.0] * 3, samples=192,
                   window_s=3.0, warmup_step_s=[1.0, 0.5], paused_s=paused_s,
                   host_step_s=host_step_s)


def test_a_process_cell_is_split_into_every_part_and_they_add_up_to_its_wall() -> None:
    block = ledger.build(PROCESS_CELL, Raw(ranks=[rank0()]))
    assert block["wall_s"] == 18.25
    assert block["parts"] == {
        "start": 0.5, "imports": 5.5, "setup": 4.0,  # imported -> the first warm-up step
        "warmup": 1.5, "window": 3.0, "validation": 1.25,  # the clock's own figures
        "teardown": 1.25,  # training end -> record built, and wandb done -> written
        "wandb": 0.5, "exit": 0.25, "handoff": 0.25,
        "other": 0.25}  # the training span beyond the clock's figures: 6 - 1.5 - 3 - 1.25
    assert list(block["parts"]) == list(LEDGER_PARTS)
    assert sum(block["parts"].values()) == block["wall_s"]
    assert block["marks"] == PROCESS_CELL and block["note"] is None


def test_a_validation_after_training_comes_out_of_teardown() -> None:
    """The hand-written loops validate after the clock has closed the window."""
    marks = PROCESS_CELL | {"eval_start": 1016.25, "eval_end": 1016.75}
    parts = ledger.build(marks, Raw(ranks=[rank0(paused_s=0.0)]))["parts"]
    assert parts["validation"] == 0.5
    assert parts["teardown"] == 0.75  # 1.0 + 0.25 less the validation
    assert parts["other"] == 1.5  # the training span: 6 - 1.5 - 3, nothing paused


def test_on_cuda_the_window_is_the_hosts() -> None:
    parts = ledger.build(PROCESS_CELL, Raw(ranks=[rank0(host_step_s=[1.25] * 3)]))["parts"]
    assert parts["window"] == 3.75  # not window_s (3.0, the device's events)


def test_a_cell_that_failed_in_setup_keeps_what_it_reached() -> None:
    marks = {name: PROCESS_CELL[name] for name in ("asked", "interpreter", "imported",
                                                    "execute", "written", "exited", "read")}
    marks["record_built"] = 1008.0  # where execute caught the error
    block = ledger.build(marks, Raw())
    parts = block["parts"]
    assert parts["setup"] == 2.0  # imported -> the failure
    for part in ("warmup", "window", "validation", "teardown", "wandb"):
        assert parts[part] is None, part
    assert (parts["start"], parts["imports"], parts["exit"], parts["handoff"]) == (
        0.5, 5.5, 0.25, 0.25)
    assert parts["other"] == 9.75  # record built -> written: 18.25 - 8.5
    assert block["wall_s"] == 18.25


def test_a_cell_that_left_no_record_has_its_wall_and_handoff_only() -> None:
    """A timeout or a killed process: the orchestrator's marks alone."""
    block = ledger.close(None, Raw(), asked=1000.0, exited=1015.0, read=1015.5)
    assert block["wall_s"] == 15.5
    assert block["parts"]["handoff"] == 0.5 and block["parts"]["other"] == 15.0
    assert [p for p, v in block["parts"].items() if v is not None] == ["handoff", "other"]


def test_the_orchestrator_closes_the_cells_own_ledger_with_its_marks() -> None:
    child = {name: at for name, at in PROCESS_CELL.items() if name not in ("exited", "read")}
    written = ledger.build(child, Raw(ranks=[rank0()]))
    assert written["wall_s"] is None and written["parts"]["other"] is None
    assert written["parts"]["start"] == 0.5 and written["parts"]["exit"] is None
    closed = ledger.close(written, Raw(ranks=[rank0()]), asked=1000.0, exited=1018.0,
                          read=1018.25)
    assert closed == ledger.build(PROCESS_CELL, Raw(ranks=[rank0()]))


def test_under_torchrun_there_is_no_process_start_and_it_says_so() -> None:
    marks = {name: PROCESS_CELL[name] for name in (
        "execute", "prepared", "training_start", "training_end", "record_built",
        "wandb_done")}
    block = ledger.close({"marks": marks}, Raw(ranks=[rank0()]), asked=1006.0, exited=None,
                         read=1018.0, in_process=True)
    parts = block["parts"]
    assert parts["start"] is None and parts["imports"] is None and parts["exit"] is None
    assert parts["setup"] == 3.9  # execute -> the first warm-up step
    assert parts["handoff"] == 0.5  # wandb done -> every rank has left the cell
    assert parts["teardown"] == 1.0
    assert block["wall_s"] == 12.0 and parts["other"] == 0.35  # 0.1 before execute + 0.25
    assert block["note"] == ledger.IN_PROCESS_NOTE


def test_a_new_cell_forgets_the_last_ones_marks_but_not_the_processes() -> None:
    ledger.begin_cell()
    ledger.mark("interpreter", 5.0)
    ledger.mark("training_start", 6.0)
    ledger.begin_cell()
    marks = ledger.marks()
    assert marks["interpreter"] == 5.0 and "training_start" not in marks
    assert time.time() - marks["execute"] < 5
    ledger._marks.pop("interpreter")  # leave no process mark to the next test


@pytest.mark.parametrize("environ,expected", [
    ({ledger.ASKED_AT_VAR: "1764720000.25"}, 1764720000.25),
    ({ledger.ASKED_AT_VAR: "soon"}, None), ({}, None)])
def test_asked_at_comes_from_the_environment(environ: dict[str, str],
                                             expected: float | None) -> None:
    assert ledger.asked_at(environ) == expected


def test_a_process_knows_when_it_started() -> None:
    before = time.time()
    out = subprocess.run([sys.executable, "-c", "from bench.measure.ledger import "
                          "process_started_at as s; print(repr(s()))"],
                         capture_output=True, text=True, check=True)
    after = time.time()
    started = float(out.stdout)
    # /proc counts in clock ticks (10 ms) and /proc/uptime in hundredths of a second
    assert before - 0.05 <= started <= after
