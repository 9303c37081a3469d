"""How pytest-xdist's two workers share the suite (pyproject: ``-n 2 --dist loadscope``).

Most of the suite's time is real processes: launches that wait on timeouts, ranks that
wait on each other, a SLURM cluster that polls. Two workers fill those waits. A test
goes where the fixture it needs is built, since a fixture is built once per worker:

- a test module is one unit, so its module fixtures are built once;
- the tests that read the one shared torchrun walk (``engine_walk``) are one unit, and
  those that read the two-node launch (``torchrun_two_nodes``) another, whatever their
  files;
- the heavy units are handed out first, so that no long unit starts last.

xdist's scheduler sees test ids only, never fixtures, so the units are named here by id;
``check_units`` (at collection, in every worker and without xdist) fails the run when a
test uses a shared fixture outside its unit or a module fixture's tests are split.
Test ids are unchanged (xdist's ``loadgroup`` would suffix them)."""

from __future__ import annotations

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
    ),
    "two-nodes": (
        "tests/e2e/test_slurm.py",
        "tests/e2e/test_launched.py::test_torchrun_two_nodes",
    ),
}
# Handed out first, longest first (their time on 2 quiet cores, in seconds, roughly).
HEAVY_FIRST = ("walk",  # 230
               "two-nodes",  # 150
               "tests/e2e/test_orchestrator.py",  # 75
               "tests/e2e/test_end_to_end.py",  # 70
               "tests/e2e/test_launched.py",  # 65
               "tests/bench/execute/test_accuracy_backend.py",  # 40
               "tests/scripts/test_gpu_check.py")  # 35


def unit_of(nodeid: str) -> str:
    """The unit a test runs in: a shared launch's, else its module's."""
    path = nodeid.split("::", 1)[0]
    function = nodeid.split("[", 1)[0]
    for unit, members in UNIT_MEMBERS.items():
        if path in members or function in members:
            return unit
    return path


def heavy_first(items: list[pytest.Item]) -> None:
    """Reorder in place: the heavy units first (in HEAVY_FIRST's order), then the rest as
    collected. xdist hands units out in the order their first test was collected."""
    rank = {unit: position for position, unit in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(unit_of(item.nodeid), len(rank)))


def check_units(items: list[pytest.Item]) -> None:
    """A test that reads a shared launch is in its unit; the tests of a module fixture
    are in one unit. Otherwise a worker would build the fixture a second time."""
    module_fixture_units: dict[tuple[str, str], set[str]] = {}
    for item in items:
        unit = unit_of(item.nodeid)
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
