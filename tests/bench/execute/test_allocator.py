"""bench.execute.allocator: a cell's host allocator, each mode in a fresh process (an
allocator's settings hold for the whole process), page faults counted by the kernel."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from bench.execute.allocator import allocator_environment, apply_malloc, jemalloc_loaded
from strategies.host import JEMALLOC_CONF, JEMALLOC_VAR, jemalloc_library

REPO = Path(__file__).resolve().parents[3]
GLIBC = platform.libc_ver()[0] == "glibc"
JEMALLOC = jemalloc_library()

# Page faults per 128 MiB tensor, allocated, written and freed over and over.
SAME_BUFFER_AGAIN = """
import torch
for _ in range(10):  # 128 MiB: retained, the heap grows to hold it; within a few
    torch.ones(2**25)  # allocations (as training's warm-up steps) it serves it again
before = faults()
for _ in range(5):
    torch.ones(2**25)
print((faults() - before) / 5)
"""
# The same, with a small tensor made (and kept) while each lives, as a collective's
# temporary is allocated and freed among a training step's other tensors.
AMONG_OTHERS = """
import torch
kept = []
def one():
    big = torch.ones(2**25)
    kept.append(torch.ones(1024))
    del big
for _ in range(4):
    one()
before = faults()
for _ in range(5):
    one()
print((faults() - before) / 5)
"""
PROLOGUE = """
import resource, sys
from bench.execute.allocator import apply_malloc
apply_malloc(sys.argv[1])
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
"""


def faults_per_allocation(program: str, modes: tuple[str, ...]) -> dict[str, float]:
    return {mode: float(subprocess.run(
        [sys.executable, "-c", PROLOGUE + program, mode], capture_output=True, text=True,
        check=True, cwd=REPO, env=os.environ | allocator_environment(mode)).stdout)
        for mode in modes}


@pytest.mark.skipif(not GLIBC, reason="malloc retain sets glibc's mallopt")
def test_malloc_retain_reuses_freed_memory_instead_of_faulting_in_new_pages() -> None:
    """By default glibc maps a 128 MiB tensor afresh each time and unmaps it when freed:
    32,768 pages of 4 KiB, each a page fault (fewer where the kernel gives huge
    pages). Retained, the heap keeps the freed memory and the next tensor reuses it."""
    faults = faults_per_allocation(SAME_BUFFER_AGAIN, ("system", "retain"))
    assert faults["retain"] < 100 < 1000 < faults["system"]


@pytest.mark.skipif(not (GLIBC and JEMALLOC), reason="needs glibc and jemalloc")
def test_only_jemalloc_reuses_a_freed_buffer_among_other_allocations() -> None:
    """What gloo's temporaries meet in training: glibc at retain grows its heap for
    each new buffer (an aligned request does not fit the exact hole the last one left),
    so every one faults its pages in afresh (as at system, the test above); jemalloc,
    never purging, reuses it."""
    faults = faults_per_allocation(AMONG_OTHERS, ("retain", "jemalloc"))
    assert faults["jemalloc"] < 100 < 10_000 < faults["retain"]


def test_jemalloc_is_here_where_ci_installed_it() -> None:
    """.ci/run installs libjemalloc2 and says so: the tests that need it must not skip."""
    if os.environ.get("MNIST_BENCH_REQUIRE_JEMALLOC") == "1":
        assert JEMALLOC is not None, "CI installed libjemalloc2, yet no jemalloc is found"


def test_jemalloc_is_asked_for_in_the_environment_a_process_starts_with(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    monkeypatch.setenv(JEMALLOC_VAR, sys.executable)  # any file that exists
    env = allocator_environment("jemalloc")
    assert env == {"LD_PRELOAD": f"{sys.executable} libother.so", "MALLOC_CONF": JEMALLOC_CONF}
    assert allocator_environment("retain") == allocator_environment("system") == {}


def test_jemalloc_library_can_be_named_or_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(JEMALLOC_VAR, "")
    assert jemalloc_library() is None
    monkeypatch.setenv(JEMALLOC_VAR, "/nonexistent/libjemalloc.so.2")
    assert jemalloc_library() is None
    monkeypatch.setenv(JEMALLOC_VAR, sys.executable)
    assert jemalloc_library() == sys.executable


@pytest.mark.skipif(jemalloc_loaded(), reason="this process started with jemalloc")
def test_a_cell_at_jemalloc_in_a_process_without_it_fails_saying_how_to_start() -> None:
    with pytest.raises(RuntimeError, match="did not start with jemalloc preloaded; start it "
                                           "with LD_PRELOAD="):
        apply_malloc("jemalloc")
