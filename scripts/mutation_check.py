#!/usr/bin/env python
"""Do the fast tests fail when the code is wrong? Break it and see.

Each entry of ``MUTATIONS`` breaks the code in one obvious way (an exact piece of
source text replaced) and names the fast tests that must then fail. A test that
still passes under its mutation checks less than it claims (issue 23: tests that
took their expected values from the code under test, or asserted truthiness only).

The mutations are applied one at a time to a scratch copy of the checkout (the
working tree as it is, committed or not: ``git ls-files`` with untracked files that
git does not ignore), never to the tree itself. The named tests first run once
unmutated (they must pass, or a failure would prove nothing); then, for each
mutation, ``pytest -x -q -m "not slow"`` on its tests, with MNIST_DATA_DIR passed
through. A table says, per mutation, ``caught`` (a test failed) or ``MISSED``.

    python scripts/mutation_check.py              # every mutation
    python scripts/mutation_check.py --only busy  # those whose item, name or file has "busy"
    python scripts/mutation_check.py --list       # check the list, run nothing

Exit status: 0 every mutation caught; 1 one missed, or its tests could not run
(a collection error is not a catch: fix the mutation); 2 the list is stale (a text
not found exactly once: the code moved) or the tests fail unmutated.

To add a mutation, append one dict to ``MUTATIONS``; keep its tests to a file or a
test id that runs in seconds. tests/scripts/test_mutation_check.py checks the list.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict


class Mutation(TypedDict):
    item: str  # what it checks: the issue and item, e.g. "23.2"
    name: str  # what it breaks, in a few words
    file: str  # relative to the repository root
    find: str  # exact source text, present exactly once in ``file``
    replace: str  # what it becomes
    tests: list[str]  # fast test files or test ids, of which one must fail


MUTATIONS: list[Mutation] = [
    {"item": "23.2", "name": "busy is always True",
     "file": "bench/measure/machine_state.py",
     "find": "    busy = others_cpu > BUSY_OTHERS_CPU or (steal",
     "replace": "    busy = True or (steal",
     "tests": ["tests/bench/measure/test_machine_state.py"]},
    {"item": "23.2", "name": "others_cpu not divided by the core count",
     "file": "bench/measure/machine_state.py",
     "find": "/ (wall * len(usable_cpus()))",
     "replace": "/ wall",
     "tests": ["tests/bench/measure/test_machine_state.py"]},
    {"item": "23.2", "name": "busy: a process pinned to other CPUs counts",
     "file": "bench/measure/machine_state.py",
     "find": "if spent > 0 and ((allowed := allowed_cpus(pid)) is None or allowed & cpus):",
     "replace": "if spent > 0:",
     "tests": ["tests/bench/measure/test_machine_state.py"]},
    {"item": "23.3", "name": "the fingerprint's ISA is empty",
     "file": "bench/measure/hardware.py",
     "find": '{"isa": " ".join(flag for flag in ISA_FLAGS if flag in flags)}',
     "replace": '{"isa": ""}',
     "tests": ["tests/bench/measure/test_hardware.py"]},
    {"item": "23.3", "name": "CPU family and model swapped",
     "file": "bench/measure/hardware.py",
     "find": '"cpu family": "family",\n                "model": "model",',
     "replace": '"cpu family": "model",\n                "model": "family",',
     "tests": ["tests/bench/measure/test_hardware.py"]},
    {"item": "23.4", "name": "version() returns None",
     "file": "bench/measure/env.py",
     "find": "        return importlib.metadata.version(distribution)",
     "replace": "        return None",
     "tests": ["tests/bench/measure/test_env.py"]},
    {"item": "23.5", "name": "the CUDA panel dropped from the bar plots",
     "file": "bench/analyze/plots.py",
     "find": '    groups = [group for _, group in data.groupby("accelerator", sort=False)]',
     "replace": '    groups = [group for _, group in data.groupby("accelerator", sort=False)][:1]',
     "tests": ["tests/bench/analyze/test_report.py::test_plots_panel_per_accelerator"]},
    {"item": "23.6", "name": "Plain.train_step does nothing",
     "file": "bench/execute/backends/engines.py",
     "find": "        self.zero_grad()\n        self.backward(loss)\n        self.step()",
     "replace": "        pass",
     "tests": ["tests/benchmarks/test_train_step.py::test_training_step[32-true-default]"]},
    {"item": "23 figures", "name": "params_mb is None",
     "file": "bench/measure/derive.py",
     "find": '"params_mb": largest("params")',
     "replace": '"params_mb": None',
     "tests": ["tests/bench/measure/test_derive.py"]},
    {"item": "23 figures", "name": "grads_mb is None",
     "file": "bench/measure/derive.py",
     "find": '"grads_mb": largest("grads")',
     "replace": '"grads_mb": None',
     "tests": ["tests/bench/measure/test_derive.py"]},
    {"item": "23 figures", "name": "optimizer_state_mb is None",
     "file": "bench/measure/derive.py",
     "find": '"optimizer_state_mb": largest("optimizer_state", "master_params")',
     "replace": '"optimizer_state_mb": None',
     "tests": ["tests/bench/measure/test_derive.py"]},
    {"item": "23 figures", "name": "optimizer_state_mb without the fp32 master copy",
     "file": "bench/measure/derive.py",
     "find": '"optimizer_state_mb": largest("optimizer_state", "master_params")',
     "replace": '"optimizer_state_mb": largest("optimizer_state")',
     "tests": ["tests/bench/measure/test_derive.py"]},
    {"item": "23 figures", "name": "host_step_ms_p50 is None",
     "file": "bench/measure/derive.py",
     "find": '"host_step_ms_p50": _percentile_ms(host_steps, 50)',
     "replace": '"host_step_ms_p50": None',
     "tests": ["tests/bench/measure/test_derive.py"]},
    {"item": "23 figures", "name": "host_step_ms_p50 read from the device steps",
     "file": "bench/measure/derive.py",
     "find": "for s in (r.host_step_s or r.step_s)]",
     "replace": "for s in r.step_s]",
     "tests": ["tests/bench/measure/test_derive.py"]},
    {"item": "23 figures", "name": "CPU peak calibrated in fp32 whatever the dtype",
     "file": "bench/measure/peaks.py",
     "find": "    a = torch.randn(size, size).to(dtype)\n    b = torch.randn(size, size).to(dtype)",
     "replace": "    a = torch.randn(size, size)\n    b = torch.randn(size, size)",
     "tests": ["tests/bench/measure/test_peaks.py"]},
    {"item": "23 figures", "name": "a cell's peak asked for in fp32 whatever its precision",
     "file": "bench/measure/peaks.py",
     "find": "    dtype = dtypes(precision).compute\n",
     "replace": "    dtype = torch.float32\n",
     "tests": ["tests/bench/measure/test_peaks.py"]},
    {"item": "23.1", "name": "repeats_needed without the factor 2",
     "file": "bench/analyze/noise.py",
     "find": "    return math.ceil(2 * (Z_TWO_SIDED + Z_POWER)",
     "replace": "    return math.ceil((Z_TWO_SIDED + Z_POWER)",
     "tests": ["tests/bench/analyze/test_noise.py"]},
    {"item": "23.1", "name": "repeats_needed without the power quantile",
     "file": "bench/analyze/noise.py",
     "find": "math.ceil(2 * (Z_TWO_SIDED + Z_POWER) ** 2",
     "replace": "math.ceil(2 * (Z_TWO_SIDED) ** 2",
     "tests": ["tests/bench/analyze/test_noise.py"]},
    {"item": "23.1", "name": "repeats_needed without the +1",
     "file": "bench/analyze/noise.py",
     "find": "sigma**2 / effect**2) + 1",
     "replace": "sigma**2 / effect**2)",
     "tests": ["tests/bench/analyze/test_noise.py"]},
    {"item": "23.1", "name": "repeats_needed with 4 for 2",
     "file": "bench/analyze/noise.py",
     "find": "    return math.ceil(2 * (Z_TWO_SIDED",
     "replace": "    return math.ceil(4 * (Z_TWO_SIDED",
     "tests": ["tests/bench/analyze/test_noise.py"]},
    {"item": "18.2", "name": "no 'same' verdict (the equivalence test dropped)",
     "file": "bench/analyze/noise.py",
     "find": "                                SAME, INCONCLUSIVE)).astype(object)",
     "replace": "                                INCONCLUSIVE, INCONCLUSIVE)).astype(object)",
     "tests": ["tests/bench/analyze/test_noise.py"]},
    {"item": "18.2", "name": "faster / slower without the threshold",
     "file": "bench/analyze/noise.py",
     "find": "np.where((p < alpha) & beyond,",
     "replace": "np.where((p < alpha),",
     "tests": ["tests/bench/analyze/test_noise.py"]},
    {"item": "18.3", "name": "the test at 0.10 instead of ALPHA",
     "file": "bench/analyze/noise.py",
     "find": "def decide(log_a: np.ndarray, log_b: np.ndarray, threshold: float,\n"
             "           alpha: float = ALPHA)",
     "replace": "def decide(log_a: np.ndarray, log_b: np.ndarray, threshold: float,\n"
                "           alpha: float = 0.10)",
     "tests": ["tests/bench/analyze/test_power.py::"
               "test_false_faster_or_slower_stays_under_six_percent"]},
    {"item": "18.4", "name": "a partly failed cell not an alarm",
     "file": "bench/analyze/gate.py",
     "find": "    if len(bad_b) and not len(bad_a) and len(ok_b):",
     "replace": "    if False:",
     "tests": ["tests/bench/analyze/test_gate.py"]},
    {"item": "18.4", "name": "a missing cell allowed by default",
     "file": "bench/analyze/gate.py",
     "find": 'if row["present"] == "A only" and not options.allow_missing:',
     "replace": 'if row["present"] == "A only" and options.allow_missing:',
     "tests": ["tests/bench/analyze/test_gate.py"]},
    {"item": "18.4", "name": "a collapsed val_acc not an alarm",
     "file": "bench/analyze/gate.py",
     "find": "        if after < COLLAPSE_FRACTION * before:",
     "replace": "        if False:",
     "tests": ["tests/bench/analyze/test_gate.py"]},
    {"item": "18.5", "name": "a change point after 1 run of segment",
     "file": "bench/analyze/series.py",
     "find": "MIN_SEGMENT_RUNS = 3  #",
     "replace": "MIN_SEGMENT_RUNS = 1  #",
     "tests": ["tests/bench/analyze/test_history.py"]},
    {"item": "18.6", "name": "a run without a fingerprint only noted",
     "file": "bench/analyze/identity.py",
     "find": "                found.refusals.append(f\"{side}'s records carry no hardware",
     "replace": "                found.notes.append(f\"{side}'s records carry no hardware",
     "tests": ["tests/bench/analyze/test_compare.py"]},
    {"item": "19.3", "name": "a time window without its margin",
     "file": "bench/measure/window.py",
     "find": "WINDOW_MARGIN = 1.1",
     "replace": "WINDOW_MARGIN = 1.0",
     "tests": ["tests/bench/measure/test_window.py"]},
    {"item": "19.3", "name": "a later repeat chooses its own window again",
     "file": "bench/measure/window.py",
     "find": "                   choice if cell.window == \"time\" else None)",
     "replace": "                   None)",
     "tests": ["tests/bench/measure/test_window.py"]},
    {"item": "19.3", "name": "a failed repeat's window handed on",
     "file": "bench/orchestrate/windows.py",
     "find": "        if record.ok and record.cell_id not in self._by_cell:",
     "replace": "        if record.cell_id not in self._by_cell:",
     "tests": ["tests/bench/orchestrate/test_windows.py"]},
    {"item": "19.3", "name": "compare silent on windows of other step counts",
     "file": "bench/analyze/compare.py",
     "find": "    return f\"windows differ: A measured",
     "replace": "    return None and f\"windows differ: A measured",
     "tests": ["tests/bench/analyze/test_compare.py"]},
    {"item": "20.5", "name": "a clock check that cannot fail",
     "file": "bench/analyze/clock_check.py",
     "find": "    return abs(value - reference) > relative * abs(reference) + absolute_s",
     "replace": "    return False",
     "tests": ["tests/bench/analyze/test_clock_check.py"]},
    {"item": "20.5", "name": "a step's own event pair keeps the pause before it",
     "file": "bench/measure/clock.py",
     "find": "            self._open_pair()  # the step's own pair leaves the pause out",
     "replace": "            pass  # the step's own pair leaves the pause out",
     "tests": ["tests/bench/measure/test_clock.py"]},
]

ROOT = Path(__file__).resolve().parent.parent
KEYS = set(Mutation.__annotations__)
PYTEST_TIMEOUT_S = 600  # one mutation's tests; a hang is reported, not waited out


def problems(mutations: list[Mutation], root: Path = ROOT) -> list[str]:
    """What is wrong with the list against the tree at ``root``: missing keys, a
    text not found exactly once (the code moved), tests that do not exist."""
    found = []
    names = [m.get("name") for m in mutations]
    found += [f"two mutations are named {name!r}" for name in sorted(
        {n for n in names if names.count(n) > 1}, key=str)]
    for mutation in mutations:
        label = f"mutation {mutation.get('name')!r} (item {mutation.get('item')})"
        if set(mutation) != KEYS:
            found.append(f"{label}: keys {sorted(mutation)}, expected {sorted(KEYS)}")
            continue
        path = root / mutation["file"]
        if not path.is_file():
            found.append(f"{label}: no file {mutation['file']}")
            continue
        count = path.read_text().count(mutation["find"])
        if count != 1:
            found.append(f"{label}: its text is found {count} times in {mutation['file']}, "
                         "not once (the code moved? update the entry's 'find')")
        if mutation["find"] == mutation["replace"]:
            found.append(f"{label}: 'replace' is 'find': it changes nothing")
        if not mutation["tests"]:
            found.append(f"{label}: no tests named")
        found += [f"{label}: no test file {test.split('::')[0]}" for test in mutation["tests"]
                  if not (root / test.split("::")[0]).is_file()]
    return found


def copy_checkout(root: Path, dest: Path) -> None:
    """The working tree's files as they are now (tracked, and untracked but not
    ignored); no build outputs, caches or results."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=root, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = root / name
        if source.is_file():  # a tracked file deleted in the tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def pytest_env(root: Path, scratch: Path) -> dict[str, str]:
    """This environment, with the scratch copy first on the import path and no
    bytecode written (a mutated module restored within the same second, at the same
    size, would otherwise be read back from a stale .pyc)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(scratch),
                                                        os.environ.get("PYTHONPATH")])))
    # tests/conftest.py's default is beside the checkout: the scratch copy has no such
    # neighbour, so the real checkout's default is passed on explicitly.
    env.setdefault("MNIST_DATA_DIR", str(root.parent / "shared" / "data"))
    return env


def run_tests(scratch: Path, tests: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    """(pytest's exit status, its output's tail, seconds)."""
    start = time.perf_counter()
    try:
        # -n 0: a mutation's few tests, in one process (no workers to start)
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-m", "not slow",
                               "-n", "0", "-p", "no:cacheprovider", *tests], cwd=scratch, env=env,
                              capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {PYTEST_TIMEOUT_S} s", time.perf_counter() - start
    return done.returncode, (done.stdout + done.stderr)[-3000:], time.perf_counter() - start


def verdict(returncode: int) -> str:
    """pytest's exit status as the mutation's outcome: 1 (tests failed) is a catch; 0 is
    a miss; anything else (collection error, no tests, timeout) is neither."""
    return {0: "MISSED", 1: "caught"}.get(returncode, f"ERROR (pytest exit {returncode})")


def table(rows: list[tuple[str, str, str, str]],
          header: tuple[str, str, str, str] = ("item", "mutation", "file", "result")) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def check(mutations: list[Mutation], root: Path = ROOT) -> int:
    """Run every mutation against its tests in a scratch copy; the exit status."""
    with tempfile.TemporaryDirectory(prefix="mutation-check-") as tmp:
        scratch = Path(tmp)
        copy_checkout(root, scratch)
        env = pytest_env(root, scratch)
        every_test = list(dict.fromkeys(t for m in mutations for t in m["tests"]))
        print(f"baseline: {len(every_test)} test paths, unmutated ...", flush=True)
        returncode, tail, seconds = run_tests(scratch, every_test, env)
        if returncode != 0:
            print(f"{tail}\nThe tests fail (pytest exit {returncode}) with no mutation: "
                  "a failure under a mutation would prove nothing. Fix them first.",
                  file=sys.stderr)
            return 2
        print(f"baseline: passed in {seconds:.0f} s", flush=True)
        rows, failed = [], []
        for mutation in mutations:
            path = scratch / mutation["file"]
            original = path.read_text()
            path.write_text(original.replace(mutation["find"], mutation["replace"], 1))
            try:
                returncode, tail, seconds = run_tests(scratch, mutation["tests"], env)
            finally:
                path.write_text(original)
            result = verdict(returncode)
            print(f"  {result:<8} {mutation['name']} ({seconds:.0f} s)", flush=True)
            rows.append((mutation["item"], mutation["name"], mutation["file"], result))
            if result != "caught":
                failed.append(f"--- {mutation['name']}: {result}\n{tail}")
    print("\n".join(failed), file=sys.stderr)
    print(table(rows))
    missed = sum(row[3] != "caught" for row in rows)
    print(f"\n{len(rows) - missed} of {len(rows)} mutations caught"
          + (f"; {missed} not: the tests above pass with the code broken" if missed else ""))
    return 1 if missed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="the mutations whose item, name or file contain this")
    parser.add_argument("--list", action="store_true", help="check the list; run nothing")
    args = parser.parse_args(argv)
    stale = problems(MUTATIONS)
    if stale:
        print("The mutation list no longer fits the code:\n  " + "\n  ".join(stale),
              file=sys.stderr)
        return 2
    chosen = [m for m in MUTATIONS if args.only is None
              or any(args.only in m[key] for key in ("item", "name", "file"))]
    if not chosen:
        print(f"no mutation matches {args.only!r}", file=sys.stderr)
        return 2
    if args.list:
        print(table([(m["item"], m["name"], m["file"], " ".join(m["tests"])) for m in chosen],
                    ("item", "mutation", "file", "tests")))
        return 0
    return check(chosen)


if __name__ == "__main__":
    sys.exit(main())
