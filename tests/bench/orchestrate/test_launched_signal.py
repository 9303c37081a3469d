"""bench.orchestrate.launched.TermSignal: SIGTERM under a launcher stops the walk, but
never in the middle of appending a record."""

from __future__ import annotations

import os
import signal
import time

import pytest

from bench.orchestrate.launched import Interrupted, TermSignal


def deliver_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)  # Python runs the handler at the next bytecode boundary


def test_sigterm_interrupts_at_once_outside_held_and_after_it_inside() -> None:
    before = signal.getsignal(signal.SIGTERM)
    steps: list[str] = []
    with TermSignal() as term:
        with pytest.raises(Interrupted):
            deliver_sigterm()
            steps.append("went on")
        with pytest.raises(Interrupted):
            with term.held():
                deliver_sigterm()
                steps.append("appended")
            steps.append("after the block")
    assert steps == ["appended"]
    assert signal.getsignal(signal.SIGTERM) is before
