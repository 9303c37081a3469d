"""bench.orchestrate.windows: a cell's time window is chosen once per run, by its first
repeat that ends ok, and every later repeat of the cell measures that count: handed on
the child's command line in the local walk, recovered from the kept records on a
resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cell as cell_entry
from bench.execute.faults import ENV_VAR
from bench.matrix import Cell
from bench.measure.window import Window, WindowChoice
from bench.orchestrate.isolate import CellOptions, CellProcess
from bench.orchestrate.local import run_local
from bench.orchestrate.plan import Matrix, make_plan
from bench.orchestrate.rundir import create_run_dir, open_resume
from bench.orchestrate.windows import ChosenWindows
from bench.record import Raw, Record, RunDir, Status, append_record
from strategies.registry import Machine

BOX = Machine(cpu_count=2, cuda_devices=0, cuda_bf16=False, deepspeed=True)
ENV_KEY = {"hostname": "h", "device": "d", "torch": "t", "lightning": "l"}
TIMED, FIXED = Cell(), Cell(window="fixed", batch_size=32)


def record(cell: Cell, repeat: int, status: Status, window: Window | None) -> Record:
    """A record of ``cell`` as its repeat left it, with the window it measured."""
    done = Record.new(cell, repeat, "run-1", status, ENV_KEY, None if status is Status.OK
                      else "it failed")
    done.raw = Raw(window=window.to_record() if window else None)
    return done


def chosen_in(repeat: int, steps: int, estimate: float) -> Window:
    return Window("time", 30, 2.0, repeat, WindowChoice(steps, repeat, estimate))


def test_later_repeats_get_the_count_the_first_chose() -> None:
    windows = ChosenWindows()
    assert windows.for_cell(TIMED.id) is None  # the first repeat chooses its own
    windows.note(record(TIMED, 0, Status.OK, chosen_in(0, 612, 0.0036)))
    assert windows.for_cell(TIMED.id) == WindowChoice(612, 0, 0.0036)
    # a later repeat's record repeats the choice; another never replaces it
    windows.note(record(TIMED, 1, Status.OK, chosen_in(1, 700, 0.0031)))
    assert windows.for_cell(TIMED.id) == WindowChoice(612, 0, 0.0036)
    windows.note(record(FIXED, 0, Status.OK, Window("fixed", 30, 2.0, 0)))
    assert windows.for_cell(FIXED.id) is None  # nothing to hand on: the count is the cell's


def test_a_repeat_that_failed_chose_nothing_and_the_next_chooses() -> None:
    windows = ChosenWindows()
    windows.note(record(TIMED, 0, Status.FAILED, chosen_in(0, 612, 0.0036)))
    windows.note(record(TIMED, 0, Status.TIMEOUT, None))
    assert windows.for_cell(TIMED.id) is None
    windows.note(record(TIMED, 1, Status.OK, chosen_in(1, 640, 0.0034)))
    assert windows.for_cell(TIMED.id) == WindowChoice(640, 1, 0.0034)


def test_a_resume_recovers_the_choices_from_the_records() -> None:
    records = [record(TIMED, 0, Status.FAILED, chosen_in(0, 612, 0.0036)),
               record(TIMED, 1, Status.OK, chosen_in(1, 640, 0.0034)),
               record(FIXED, 0, Status.OK, Window("fixed", 30, 2.0, 0))]
    old = record(Cell(batch_size=16), 0, Status.OK, None)  # written before windows existed
    windows = ChosenWindows.from_records([r.to_dict() for r in (*records, old)])
    assert windows.for_cell(TIMED.id) == WindowChoice(640, 1, 0.0034)
    assert windows.for_cell(FIXED.id) is None and windows.for_cell(old.cell_id) is None


def test_the_choice_reaches_the_cells_command_line(tmp_path: Path) -> None:
    choice = WindowChoice(612, 0, 0.0036)
    options = CellOptions(RunDir(tmp_path), "run-1", None, "disabled", False, 60.0,
                          window_choice=choice)
    command = CellProcess(TIMED, 1, options).command()
    assert cell_entry.parse_args(command[3:]).window_choice == choice
    first = CellOptions(RunDir(tmp_path), "run-1", None, "disabled", False, 60.0)
    command = CellProcess(TIMED, 0, first).command()
    assert "--window-choice" not in command
    assert cell_entry.parse_args(command[3:]).window_choice is None


@pytest.mark.slow
def test_a_resumed_walk_hands_the_kept_choice_to_the_next_repeat(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose repeat 0 chose 612 steps is resumed; its repeat 1 starts with that
    count on its command line, and reads it (it then fails at once, by request)."""
    plan = make_plan("run-1", Matrix((TIMED,), 2), BOX, "disabled")
    run_dir = create_run_dir(tmp_path, plan)
    append_record(run_dir.records, record(TIMED, 0, Status.OK, chosen_in(0, 612, 0.0036)))
    resumed, plan = open_resume(run_dir.path, None, BOX, "disabled")
    monkeypatch.setenv(ENV_VAR, f"{TIMED.id}=raise")
    assert run_local(plan, resumed, str(data_dir), verbose=False, cell_timeout_s=120)
    log = run_dir.cell_log(TIMED.id).read_text()
    [started] = [line for line in log.splitlines() if line.startswith("=== repeat 1")]
    handed = started.split("--window-choice ", 1)[1].split(" --")[0]
    assert WindowChoice.from_json(handed) == WindowChoice(612, 0, 0.0036)
    last = json.loads(run_dir.records.read_text().splitlines()[-1])
    assert last["repeat"] == 1  # the child parsed its command line and reached the fault
    assert last["reason"].startswith(f"RuntimeError: fault injected into {TIMED.id}")
