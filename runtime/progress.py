"""The terminal progress bar of `recurc train` (rich). Kept out of the training core on purpose:
the core (and so the emitted script) depends on torch, numpy, sentencepiece and the standard
library only, and takes a progress display as an object the CLI layer hands it."""
from __future__ import annotations


class RichProgress:
    """start / advance / print / stop, as RunLogger calls them."""

    def __init__(self, cap: float | None = None) -> None:
        self._bar = None
        self._task = None
        self._cap = cap          # the wall-clock cap in seconds (train.max_wallclock_seconds), if any

    def start(self, total: int, completed: int = 0) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        self._bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), _eta_column(self._cap),
                             transient=True)
        self._bar.start()
        self._task = self._bar.add_task("train", total=total, completed=completed, info="", first=completed)

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


def eta_seconds(done: int, total: int, elapsed: float, cap: float | None) -> float | None:
    """Seconds left: the steps still to run at the rate so far, or what is left of the
    wall-clock cap when that comes first; None before the first step."""
    if done <= 0 or elapsed <= 0:
        return None
    left = max(total - done, 0) * elapsed / done
    return max(0.0, min(left, cap - elapsed)) if cap else left


def _eta_column(cap: float | None):
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        """`ETA 1:23 (cap)` when the wall-clock cap ends the run before its steps do."""

        def render(self, task) -> Text:
            eta = eta_seconds(int(task.completed - task.fields.get("first", 0)),
                              int(task.total - task.fields.get("first", 0)), task.elapsed or 0.0, cap)
            if eta is None:
                return Text("ETA -:--", style="progress.remaining")
            capped = bool(cap) and (task.elapsed or 0.0) + eta >= cap - 1e-6
            m, s = divmod(int(round(eta)), 60)
            return Text(f"ETA {m}:{s:02d}" + (" (cap)" if capped else ""), style="progress.remaining")

    return EtaColumn()

