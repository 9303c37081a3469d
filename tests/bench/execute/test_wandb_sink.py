"""bench.execute.wandb_sink: the mode rules and that a disabled wandb costs nothing
(the offline files themselves are checked end to end in tests/e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.execute.wandb_sink import cell_logger, resolve_mode
from bench.matrix import Cell


def test_the_flag_wins_then_the_environment_then_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(None) == "disabled"
    assert resolve_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # wandb's old name for offline
    assert resolve_mode(None) == "offline"
    with pytest.raises(ValueError, match="unknown wandb mode 'loud'"):
        resolve_mode("loud")


def test_disabled_makes_no_logger_and_no_files(tmp_path: Path) -> None:
    assert cell_logger(Cell(), 0, "run", tmp_path, "disabled") is None
    assert list(tmp_path.iterdir()) == []
