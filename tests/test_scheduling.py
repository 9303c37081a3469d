"""tests/scheduling.py: which worker unit a test runs in."""

from __future__ import annotations

from tests.scheduling import HEAVY_FIRST, UNIT_MEMBERS, unit_of


def test_a_shared_launchs_readers_share_its_unit_whatever_their_file() -> None:
    assert unit_of("tests/e2e/test_validity.py::test_ddp_record_accounting") == "walk"
    assert unit_of("tests/e2e/test_launched.py::test_torchrun_two_processes_walk_every_cell_in_step"
                   ) == "walk"
    assert unit_of("tests/e2e/test_slurm.py::test_requeue_resumes_the_same_run") == "two-nodes"
    assert unit_of("tests/e2e/test_launched.py::test_torchrun_two_nodes") == "two-nodes"


def test_any_other_test_runs_with_its_module() -> None:
    name = ("tests/e2e/test_launched.py::"
            "test_torchrun_a_collective_timeout_ends_the_walk_with_its_record")
    assert unit_of(name) == "tests/e2e/test_launched.py"
    assert unit_of("tests/bench/test_matrix.py::test_x[a::b]") == "tests/bench/test_matrix.py"


def test_every_heavy_unit_is_a_unit() -> None:
    assert set(UNIT_MEMBERS) <= set(HEAVY_FIRST)
    assert all(unit in UNIT_MEMBERS or unit.endswith(".py") for unit in HEAVY_FIRST)


def test_timing_tests_are_one_unit_handed_out_last() -> None:
    name = "tests/bench/execute/test_time_breakdown.py::test_a_slowed_loader_is_the_data_wait[raw]"
    assert unit_of(name) == "alone"
    assert unit_of("tests/bench/execute/test_time_breakdown.py::test_other") == (
        "tests/bench/execute/test_time_breakdown.py")
