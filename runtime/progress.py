"""The terminal progress bar of `recurc train` (rich). Kept out of the training core on purpose:
the core (and so the emitted script) depends on torch, numpy, sentencepiece and the standard
library only, and takes a progress display as an object the CLI layer hands it."""
from __future__ import annotations


class RichProgress:
    """start / advance / print / stop, as RunLogger calls them."""

    def __init__(self) -> None:
        self._bar = None
        self._task = None

    def start(self, total: int, completed: int = 0) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        self._bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), transient=True)
        self._bar.start()
        self._task = self._bar.add_task("train", total=total, completed=completed, info="")

    @property
    def active(self) -> bool:
        return self._bar is not None

    def advance(self, step: int, info: str = "") -> None:
        self._bar.update(self._task, completed=step, info=info)

    def print(self, line: str) -> None:
        self._bar.console.print(line, markup=False, highlight=False)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
