"""tests/cpu_profile.py: a test's CPU, its children's included, in the table at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPINNING = '''
import subprocess, sys

def test_spins_in_a_child():
    subprocess.run([sys.executable, "-c",
                    "import time\\nend = time.process_time() + 0.5\\n"
                    "while time.process_time() < end: pass"], check=True)

def test_idles():
    pass
'''


def test_the_table_sums_a_tests_children_and_puts_the_costliest_first(tmp_path: Path) -> None:
    (tmp_path / "test_spin.py").write_text(SPINNING)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's options
    out = tmp_path / "cpu.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CPU_PROFILE_OUT": str(out)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.cpu_profile", "-p", "no:cacheprovider",
         "-p", "no:xdist", "-q", str(tmp_path / "test_spin.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.split("CPU per test (tests.cpu_profile)", 1)[1].splitlines()
    assert table[1].startswith("2 tests: ")
    first, second = table[3].split(), table[4].split()
    assert first[3].endswith("test_spins_in_a_child")  # the costliest first
    assert float(first[1]) >= 0.45  # the child's half second of CPU
    assert second[3].endswith("test_idles") and float(second[1]) < 0.1
    assert len(out.read_text().splitlines()) == 6  # setup, call, teardown of each
