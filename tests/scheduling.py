"""How pytest-xdist's two workers share the suite (pyproject: ``-n 2 --dist loadscope``).

Most of the suite's time is real processes: launches that wait on timeouts, ranks that
wait on each other, a SLURM cluster that polls. Two workers fill those waits. A test
goes where the fixture it needs is built, since a fixture is built once per worker:

- a test module is one unit, so its module fixtures are built once;
- the tests that read the one shared torchrun walk (``engine_walk``) are one unit, and
  those that read the two-node launch (``torchrun_two_nodes``) another, whatever their
  files;
- the heavy units are handed out first, so that no long unit starts last;
- a test marked ``alone`` (it asserts wall-clock timings that another worker's processes
  would stretch) runs while no other test runs: every test holds a shared lock from its
  setup to its teardown, an ``alone`` test an exclusive one, behind a turnstile so that
  it is not starved. They are one unit, handed out last.

xdist's scheduler sees test ids only, never fixtures, so the units are named here by id;
``check_units`` (at collection, in every worker and without xdist) fails the run when a
test uses a shared fixture outside its unit or a module fixture's tests are split.
Test ids are unchanged (xdist's ``loadgroup`` would suffix them)."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# Session fixtures that start processes, and the unit of the tests that read them.
SHARED_FIXTURE_UNITS = {"engine_walk": "walk", "torchrun_two_nodes": "two-nodes"}
UNIT_MEMBERS = {
    "walk": (
        "tests/e2e/test_validity.py",
        "tests/e2e/test_exit_status.py::test_under_torchrun_rank_0s_verdict_is_the_launchs",
        "tests/e2e/test_launched.py::test_torchrun_two_processes_walk_every_cell_in_step",
        "tests/e2e/test_launched.py::test_torchrun_a_one_device_cell_runs_on_rank_0_alone",
        "tests/e2e/test_scale_projection.py",
    ),
    "two-nodes": (
        "tests/e2e/test_slurm.py",
        "tests/e2e/test_launched.py::test_torchrun_two_nodes",
    ),
}
ALONE_UNIT = "alone"
ALONE = (  # every test marked alone, by id (the scheduler sees ids, not markers)
    "tests/bench/execute/test_time_breakdown.py::test_a_slowed_loader_is_the_data_wait",
    "tests/bench/measure/test_hooks.py::"
    "test_lightning_run_excludes_slow_first_step_and_validation",
    "tests/bench/measure/test_hooks.py::test_harness_cost",
    "tests/bench/execute/test_lightning_backend.py::"
    "test_a_throughput_cell_validates_inside_fit_and_never_after",
    "tests/bench/measure/test_machine_state.py::"
    "test_another_process_spinning_is_named_and_flags_the_interval_busy",
    "tests/bench/measure/test_peaks.py::test_calibration_agrees_with_an_outside_timing",
)
# Handed out first, longest first (their time on 2 quiet cores, in seconds, roughly).
HEAVY_FIRST = ("walk",  # 230
               "two-nodes",  # 150
               "tests/e2e/test_orchestrator.py",  # 75
               "tests/e2e/test_end_to_end.py",  # 70
               "tests/e2e/test_launched.py",  # 65
               "tests/e2e/test_comm_preset.py",  # 45
               "tests/bench/execute/test_accuracy_backend.py",  # 40
               "tests/scripts/test_gpu_check.py")  # 35


def unit_of(nodeid: str) -> str:
    """The unit a test runs in: a shared launch's, else its module's."""
    path = nodeid.split("::", 1)[0]
    function = nodeid.split("[", 1)[0]
    if function in ALONE:
        return ALONE_UNIT
    for unit, members in UNIT_MEMBERS.items():
        if path in members or function in members:
            return unit
    return path


def heavy_first(items: list[pytest.Item]) -> None:
    """Reorder in place: the heavy units first (in HEAVY_FIRST's order), then the rest as
    collected, the alone unit last. xdist hands units out in the order their first test
    was collected."""
    rank = {unit: position for position, unit in enumerate(HEAVY_FIRST)}
    rank[ALONE_UNIT] = len(rank) + 1
    items.sort(key=lambda item: rank.get(unit_of(item.nodeid), len(HEAVY_FIRST)))


def check_units(items: list[pytest.Item]) -> None:
    """A test that reads a shared launch is in its unit; the tests of a module fixture
    are in one unit. Otherwise a worker would build the fixture a second time."""
    module_fixture_units: dict[tuple[str, str], set[str]] = {}
    for item in items:
        unit = unit_of(item.nodeid)
        if (item.get_closest_marker("alone") is not None) != (unit == ALONE_UNIT):
            raise pytest.UsageError(f"{item.nodeid}: a test is marked alone exactly when "
                                    "it is in ALONE (tests/scheduling.py)")
        for name, definitions in _fixture_definitions(item).items():
            if name in SHARED_FIXTURE_UNITS and unit != SHARED_FIXTURE_UNITS[name]:
                raise pytest.UsageError(
                    f"{item.nodeid} uses {name}: add it to UNIT_MEMBERS"
                    f"[{SHARED_FIXTURE_UNITS[name]!r}] in tests/scheduling.py")
            if definitions and definitions[-1].scope == "module":
                key = (name, item.nodeid.split("::", 1)[0])
                module_fixture_units.setdefault(key, set()).add(unit)
    for (name, path), units in module_fixture_units.items():
        if len(units) > 1:
            raise pytest.UsageError(f"the tests of {path} that use its module fixture {name} "
                                    f"are in units {sorted(units)}: keep them in one "
                                    "(tests/scheduling.py)")


@contextmanager
def exclusive_if_alone(item: pytest.Item) -> Iterator[None]:
    """Around a test's setup, call and teardown under xdist: an ``alone`` test waits
    until no other test runs, and none starts until it ends; other tests share."""
    workerinput = getattr(item.config, "workerinput", None)
    if workerinput is None:  # one process: nothing runs beside the test anyway
        yield
        return
    folder = Path(tempfile.gettempdir())
    stem = f"mnist-bench-tests-{workerinput['testrunuid']}"
    alone = item.get_closest_marker("alone") is not None
    # Through the turnstile one at a time: an alone test waiting in it for the room
    # keeps new tests out, so the ones inside end and it gets in.
    with _locked(folder / f"{stem}.turnstile", fcntl.LOCK_EX):
        room = _open(folder / f"{stem}.room")
        fcntl.flock(room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
    try:
        yield
    finally:
        os.close(room)  # releases the room


@contextmanager
def _locked(path: Path, how: int) -> Iterator[None]:
    descriptor = _open(path)
    try:
        fcntl.flock(descriptor, how)
        yield
    finally:
        os.close(descriptor)


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def _fixture_definitions(item: pytest.Item) -> dict[str, Any]:
    info = getattr(item, "_fixtureinfo", None)
    return dict(info.name2fixturedefs) if info is not None else {}


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's loadscope scheduling with this module's units, in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    config.option.loadscopereorder = False  # keep heavy_first's order
    return UnitScheduling(config, log)
