"""Each cell's time window, chosen once per run and handed to its later repeats.

The first repeat of a cell that measures chooses its step count at the end of its
warm-up (bench.measure.window) and its record says so (``raw.window``); every
later repeat of the cell in the run measures that count, so that the repeats are
comparable. A repeat that did not end ok chose nothing: the next one chooses. A
resumed run recovers the choices from the ok records it kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.measure.window import WindowChoice
from bench.record import Record


class ChosenWindows:
    """The run's time-window choices, by cell id."""

    def __init__(self) -> None:
        self._by_cell: dict[str, WindowChoice] = {}

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> ChosenWindows:
        """The choices in a run's records (their JSON form), the first of each cell's."""
        chosen = cls()
        for record in records:
            if record.get("status") == "ok" and record.get("cell_id") not in chosen._by_cell:
                chosen._note(record["cell_id"], (record.get("raw") or {}).get("window"))
        return chosen

    def note(self, record: Record) -> None:
        """Keep the choice an ok record made, unless the cell already has one."""
        if record.ok and record.cell_id not in self._by_cell:
            self._note(record.cell_id, record.raw.window)

    def _note(self, cell_id: str, window: dict[str, Any] | None) -> None:
        choice = WindowChoice.from_record(window)
        if choice is not None:
            self._by_cell[cell_id] = choice

    def for_cell(self, cell_id: str) -> WindowChoice | None:
        """The count this cell's next repeat measures; None: it chooses its own."""
        return self._by_cell.get(cell_id)
