"""Rich progress bars on stderr for backup, restore and verify (one bar per collection)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..backup.snapshot import Progress as Sink
from .common import console


def bars(disable: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description:>14}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, disable=disable)


class BarSink(Sink):
    def __init__(self, progress: Progress):
        self.progress, self.tasks = progress, {}

    def start(self, collection: str, total: int | None) -> None:
        self.tasks[collection] = self.progress.add_task(collection, total=total or None)

    def advance(self, collection: str, n: int) -> None:
        if collection in self.tasks and n:
            self.progress.advance(self.tasks[collection], n)

    def done(self, collection: str) -> None:
        task = self.tasks.get(collection)
        if task is not None:
            done = self.progress._tasks[task].completed
            self.progress.update(task, total=done or 1, completed=done or 1)
