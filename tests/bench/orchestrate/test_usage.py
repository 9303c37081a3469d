"""`python -m bench.run` with nothing to run: the usage, the presets with their counts
here and an estimated time, exit 0; a lazy plan that counts without listing (a huge
--repeats answers at once) in exactly the old order; the estimate and what it says."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

from bench import run
from bench.matrix import Cell
from bench.measure.env import device_name
from bench.orchestrate.estimate import History, duration_text, estimate
from bench.orchestrate.plan import Matrix, make_plan, paired_order
from bench.orchestrate.presets import PRESETS, expand, load_matrix
from strategies.registry import Machine

BOX = Machine(cpu_count=2, cuda_devices=0, cuda_bf16=False, deepspeed=True)


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This 2-core CPU machine for every plan, and an empty working directory (so no
    earlier results/ feed the estimates)."""
    monkeypatch.setattr(Machine, "detect", classmethod(lambda cls: BOX))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv", [[], ["--matrix"]])
def test_no_matrix_named_lists_the_presets_and_exits_0(
        argv: list[str], box: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = main(argv, capsys)
    assert (code, err) == (0, "")
    assert out.startswith("usage: python -m bench.run --matrix NAME|FILE.toml")
    assert "Presets on this machine (2 CPU core(s), no CUDA GPU):" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.startswith("  ") and line.split()[0] in PRESETS}
    assert list(rows) == list(PRESETS)
    assert rows["smoke"][:4] == ["4", "4", "0", "1"] and rows["smoke"][4].startswith("~")
    assert rows["gpu"][1:] == ["0", "42", "1", "-"]  # nothing runs here: no estimate
    assert rows["accuracy"][3] == "3"  # its repeats
    assert "Estimates are rough" in out and "an upper bound" in out
    assert "python -m bench.run --matrix all" in out
    assert not list(box.iterdir())  # nothing written


def test_a_bare_matrix_lays_the_given_settings_over_each_preset(
        box: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, once, _ = main(["--matrix"], capsys)
    code, twice, _ = main(["--matrix", "--repeats", "2"], capsys)
    assert code == 0
    smoke = [line for line in twice.splitlines() if line.startswith("  smoke ")]
    assert smoke and smoke[0].split()[1:5] == ["4", "4", "0", "2"]
    assert once != twice


def test_settings_without_a_matrix_are_an_error_not_a_silent_success(
        box: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = main(["--steps", "5"], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("error: no matrix named: give --matrix")
    assert "`--matrix all` runs everything" in err


def eager(cells: tuple[Cell, ...], repeats: int, finished: frozenset) -> list[tuple[Cell, int]]:
    """The plan as it was built before it became lazy: the reference order."""
    return [(cell, repeat) for repeat in range(repeats) for cell in paired_order(cells, repeat)
            if (cell.id, repeat) not in finished]


def test_the_lazy_plan_walks_the_old_order_and_counts_it() -> None:
    single, raw = Cell(strategy="single"), Cell(strategy="raw")
    single_bf16, raw_bf16 = (Cell(strategy=s, precision="bf16-mixed") for s in ("single", "raw"))
    fsdp = Cell(strategy="fsdp", devices=2)  # skipped on CPU
    cells = (single, single_bf16, fsdp, raw, raw_bf16)
    finished = frozenset({(single.id, 0), (raw_bf16.id, 1), (raw.id, 3), ("gone", 0),
                          (single.id, 9)})  # a foreign id and a repeat beyond the plan
    plan = make_plan("run", Matrix(cells, 4), BOX, "disabled", finished)
    expected = eager(cells, 4, finished)
    assert [(r.cell, r.repeat) for r in plan.pending] == expected
    assert [(r.cell, r.repeat) for r in plan.pending] == expected  # walked twice: the same
    assert len(plan.pending) == len(expected) == 4 * 5 - 3
    assert plan.pending.runnable == len(expected) - 4  # fsdp's four repeats are skipped
    assert all(r.skip_reason for r in plan.pending if r.cell == fsdp)
    assert plan.pending.repeats_left(single) == 3 and plan.pending.repeats_left(fsdp) == 4
    assert fsdp not in plan.pending.cells_to_run()
    assert [r.cell for r in plan.pending.first_round()] == paired_order(cells, 0)


def test_a_huge_repeat_count_is_counted_not_listed(box: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import strategies.preflight

    monkeypatch.setattr(strategies.preflight, "build_problems", lambda cell: [])
    started = time.perf_counter()
    code, out, err = main(["--matrix", "smoke", "--repeats", "100000000", "--dry-run"], capsys)
    assert (code, err) == (0, ""), err
    assert time.perf_counter() - started < 30  # the eager list took minutes and ~40 GB
    lines = out.splitlines()
    assert lines[0] == "4 cells x 100000000 repeat(s): 400000000 run(s) here, 0 skipped"
    assert re.fullmatch(r"estimated time: ~\S+ years \(a rough estimate, guessed .*\)", lines[1])
    assert len([line for line in lines if line.endswith("  run")]) == 4  # each cell once


def fake_record(cell: Cell, hostname: str, wall_s: float) -> dict:
    """The fields the estimate reads: 5 warm-up and 30 measured steps of 0.1 s."""
    return {"cell_id": cell.id, "cell": cell.to_dict(), "status": "ok", "wall_s": wall_s,
            "env_key": {"hostname": hostname, "device": device_name("cpu")},
            "raw": {"ranks": [{"step_s": [0.1] * 30, "window_s": 3.0,
                               "warmup_step_s": [0.1] * 5}]}}


def test_the_estimate_uses_this_machines_earlier_records(tmp_path: Path) -> None:
    cell, other = Cell(strategy="single"), Cell(strategy="single", batch_size=32)
    run_dir = tmp_path / "results" / "earlier-run"
    run_dir.mkdir(parents=True)
    records = [fake_record(cell, socket.gethostname(), wall_s=10.0),
               fake_record(other, "another-host", wall_s=1000.0)]
    (run_dir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    history = History.load(tmp_path / "results")

    known = estimate(make_plan("x", Matrix((cell,), 2), BOX, "disabled"), history)
    # start-up: a fork (START_S, 1 s) + wall_s 10 less 3.5 s of training; 35 steps of 0.1 s
    assert known.seconds == pytest.approx(2 * (1 + 6.5 + 35 * 0.1))
    assert "from this machine's earlier records of these cells" in known.text()

    guessed = estimate(make_plan("x", Matrix((cell, other), 1), BOX, "disabled"), history)
    assert (guessed.cells_from_records, guessed.cells) == (1, 2)  # the other host's is not used
    assert "1 of 2 cells from this machine's earlier records" in guessed.text()
    assert guessed.text().startswith("estimated time: ~")

    # A record with a ledger: its wall, from asking for the process to reading the
    # record, less the training, is the start-up (no START_S on top).
    ledgered = fake_record(cell, socket.gethostname(), wall_s=10.0) | {"ledger": {"wall_s": 14.0}}
    (run_dir / "records.jsonl").write_text(json.dumps(ledgered) + "\n")
    history = History.load(tmp_path / "results")
    known = estimate(make_plan("x", Matrix((cell,), 1), BOX, "disabled"), history)
    assert known.seconds == pytest.approx(14 - 3.5 + 35 * 0.1)


def test_every_runnable_preset_gets_a_finite_estimate() -> None:
    for name in PRESETS:
        plan = make_plan("x", Matrix(tuple(expand(load_matrix(name), BOX)), 1), BOX, "disabled")
        seconds = estimate(plan, History()).seconds
        assert (seconds > 0) == bool(plan.pending.runnable), name


@pytest.mark.parametrize("seconds, text", [(42, "~42 s"), (150, "~2 min"), (7200, "~2.0 h"),
                                           (5 * 86400, "~5 days"), (1e10, "~317 years")])
def test_durations_read_at_a_glance(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
