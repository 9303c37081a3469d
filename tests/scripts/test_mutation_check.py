"""scripts/mutation_check.py's list of mutations fits the code as it is: every text is
found exactly once in its file and every named test exists. (Whether each mutation
is caught is the script's own run: pytest inside pytest would take minutes.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_check",
                                                  REPO / "scripts" / "mutation_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_mutation_fits_the_code(script: ModuleType) -> None:
    assert script.MUTATIONS
    assert script.problems(script.MUTATIONS, REPO) == []


def test_every_mutation_changes_python_that_still_parses(script: ModuleType) -> None:
    """A mutation that breaks the syntax is caught by any import: it proves nothing."""
    for mutation in script.MUTATIONS:
        source = (REPO / mutation["file"]).read_text()
        compile(source.replace(mutation["find"], mutation["replace"], 1), mutation["file"],
                "exec")


def test_a_moved_text_a_missing_test_and_a_missing_key_are_named(script: ModuleType,
                                                                  tmp_path: Path) -> None:
    (tmp_path / "code.py").write_text("x = 1\nx = 1\n")
    moved = {"item": "9", "name": "gone", "file": "code.py", "find": "y = 2",
             "replace": "y = 3", "tests": ["tests/test_code.py::test_x"]}
    twice = moved | {"name": "twice", "find": "x = 1"}
    assert script.problems([moved, twice, {"name": "half"}], tmp_path) == [
        "mutation 'gone' (item 9): its text is found 0 times in code.py, not once "
        "(the code moved? update the entry's 'find')",
        "mutation 'gone' (item 9): no test file tests/test_code.py",
        "mutation 'twice' (item 9): its text is found 2 times in code.py, not once "
        "(the code moved? update the entry's 'find')",
        "mutation 'twice' (item 9): no test file tests/test_code.py",
        "mutation 'half' (item None): keys ['name'], expected "
        "['file', 'find', 'item', 'name', 'replace', 'tests']",
    ]


def test_only_a_test_failure_counts_as_caught(script: ModuleType) -> None:
    assert script.verdict(1) == "caught"
    assert script.verdict(0) == "MISSED"
    assert script.verdict(2).startswith("ERROR")  # a collection error proves nothing
