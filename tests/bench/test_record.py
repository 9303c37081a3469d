from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import record as rec
from bench.matrix import Cell
from bench.metrics import STORED_NAMES
from bench.record import Record, Status

ENV_KEY = {"hostname": "h", "device": "d", "torch": "2", "lightning": "2"}


def base_record(cell: Cell, repeat: int, run_id: str, status: str,
                reason: str | None = None) -> dict:
    return Record.new(cell, repeat, run_id, Status(status), ENV_KEY, reason).to_dict()


def test_base_record_follows_the_schema() -> None:
    record = base_record(Cell(), 0, "run", "skipped", "no CUDA device on this machine")
    rec.validate(record)
    assert record["cell_id"] == "cpu-1x-single-32-true-bs64-tensor"
    assert record["status"] == "skipped" and record["log"] == f"cells/{record['cell_id']}/log.txt"


@pytest.mark.parametrize("change,message", [
    ({"status": "great"}, "status"), ({"schema": 99}, "schema"),
    ({"metrics": {"speed": 1}}, "unknown metrics"),
])
def test_invalid_records_are_refused(change: dict, message: str) -> None:
    record = base_record(Cell(), 0, "run", "ok") | change
    with pytest.raises(ValueError, match=message):
        rec.validate(record)
    incomplete = base_record(Cell(), 0, "run", "ok")
    del incomplete["raw"]
    with pytest.raises(ValueError, match="lacks raw"):
        rec.validate(incomplete)


def test_appends_are_whole_lines_and_a_torn_tail_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    for repeat in range(2):
        rec.append_record(path, Record.new(Cell(), repeat, "run", Status.OK, ENV_KEY))
    with open(path, "a") as handle:
        handle.write('{"schema": 1, "cut sho')  # a crash mid-write
    assert [r["repeat"] for r in rec.read_records(path)] == [0, 1]


def test_atomic_json_write_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "env.json"
    rec.write_json_atomic(path, {"a": 1})
    rec.write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["env.json"]


def test_a_record_round_trips_through_json_with_its_raw_values() -> None:
    record = Record.new(Cell(), 1, "run", Status.OK, ENV_KEY)
    record.raw = rec.Raw(ranks=[rec.RankRaw(rank=0, step_s=[0.1, 0.2], data_wait_s=[0.0, 0.0],
                                            samples=128, window_s=0.3, loss=[2.3, 2.2])],
                         flops_per_sample=1.0, peak_source="calibrated", val_acc=0.5)
    record.metrics = {name: None for name in STORED_NAMES}
    data = json.loads(json.dumps(record.to_dict()))
    assert "test_acc" not in data["raw"]  # empty optional values are left out, as in schema 1
    back = Record.from_dict(data)
    assert back == record and back.status is Status.OK and back.seed == 1


def test_the_committed_reference_records_still_load() -> None:
    reference = Path(__file__).resolve().parents[2] / "results" / "reference"
    paths = sorted(reference.glob("*/*records.jsonl"))
    assert paths, "no committed reference records"
    for path in paths:
        records = [Record.from_dict(data) for data in rec.read_records(path)]
        assert records and all(r.cell_id for r in records)
        assert any(r.ok and r.raw.ranks for r in records)


def test_a_records_ledger_round_trips_and_older_records_load_without_one() -> None:
    record = Record.new(Cell(), 0, "run", Status.OK, ENV_KEY)
    record.ledger = {"wall_s": 18.25, "parts": {"start": 0.5, "other": 17.75},
                     "marks": {"asked": 1000.0, "read": 1018.25}, "note": None}
    data = json.loads(json.dumps(record.to_dict()))
    assert Record.from_dict(data).ledger == record.ledger
    del data["ledger"]  # as every record written before the ledger existed
    rec.validate(data)
    assert Record.from_dict(data).ledger is None
