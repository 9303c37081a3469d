from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import record as rec
from bench.cell import base_record
from bench.matrix import Cell


def test_base_record_follows_the_schema() -> None:
    record = base_record(Cell(), 0, "run", "skipped", "no CUDA device on this machine")
    rec.validate(record)
    assert record["cell_id"] == "cpu-1x-single-32-true-bs64-tensor"
    assert set(record["env_key"]) == {"hostname", "device", "torch", "lightning"}


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
        rec.append_record(path, base_record(Cell(), repeat, "run", "ok"))
    with open(path, "a") as handle:
        handle.write('{"schema": 1, "cut sho')  # a crash mid-write
    assert [r["repeat"] for r in rec.read_records(path)] == [0, 1]


def test_atomic_json_write_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "env.json"
    rec.write_json_atomic(path, {"a": 1})
    rec.write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["env.json"]
