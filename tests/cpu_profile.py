"""Where the suite's CPU time goes, test by test (opt-in: ``pytest -p tests.cpu_profile``).

On 2 cores the suite is bound by CPU, not by waiting: its wall time is about its CPU
time over the cores. Each test's setup, call and teardown is measured in the process
that runs it (an xdist worker): its own CPU (user + system) and its children's, and
its wall time. The table at the end sums them per test, the most CPU first.

A child's CPU counts once the child has been waited for, so the processes a test
starts and reaps (cells, torchrun, DDP ranks, compilers) are in; daemons it does not
reap (the SLURM cluster's, whose job steps run under slurmd) are not, and a fixture's
cost falls on the first test that asks for it. Lines go to CPU_PROFILE_OUT (default:
a file in the temporary folder), emptied when the session starts.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from collections.abc import Generator
from pathlib import Path

import pytest

OUT = Path(os.environ.get("CPU_PROFILE_OUT")
           or Path(tempfile.gettempdir()) / "mnist-bench-cpu-profile.jsonl")
SHOWN = int(os.environ.get("CPU_PROFILE_SHOWN", "25"))


def _cpu_s() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if not _is_worker(config):  # the controller (or the only process) starts afresh
        OUT.write_text("")


def _measure(item: pytest.Item, phase: str) -> Generator[None, None, None]:
    wall, (own, children) = time.monotonic(), _cpu_s()
    yield
    own_after, children_after = _cpu_s()
    with OUT.open("a") as handle:
        handle.write(json.dumps({"test": item.nodeid, "phase": phase,
                                 "wall_s": time.monotonic() - wall,
                                 "own_s": own_after - own,
                                 "children_s": children_after - children}) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    yield from _measure(item, "setup")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    yield from _measure(item, "call")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    yield from _measure(item, "teardown")


def per_test(lines: list[str]) -> dict[str, dict[str, float]]:
    """CPU (own + children) and wall seconds per test, its three phases together."""
    totals: dict[str, dict[str, float]] = {}
    for line in lines:
        row = json.loads(line)
        total = totals.setdefault(row["test"], {"cpu_s": 0.0, "children_s": 0.0, "wall_s": 0.0})
        total["cpu_s"] += row["own_s"] + row["children_s"]
        total["children_s"] += row["children_s"]
        total["wall_s"] += row["wall_s"]
    return totals


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    if _is_worker(config) or not OUT.is_file():
        return
    totals = per_test([line for line in OUT.read_text().splitlines() if line])
    if not totals:
        return
    write = terminalreporter.write_line
    terminalreporter.section("CPU per test (tests.cpu_profile)")
    cpu = sum(t["cpu_s"] for t in totals.values())
    wall = sum(t["wall_s"] for t in totals.values())
    write(f"{len(totals)} tests: {cpu:.0f} CPU-s in the tests' processes and their reaped "
          f"children, {wall:.0f} s of test time (summed over workers); lines in {OUT}")
    write(f"{'CPU s':>8} {'children':>8} {'wall s':>8}  test")
    for test, t in sorted(totals.items(), key=lambda kv: -kv[1]["cpu_s"])[:SHOWN]:
        write(f"{t['cpu_s']:8.1f} {t['children_s']:8.1f} {t['wall_s']:8.1f}  {test}")
