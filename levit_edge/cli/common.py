"""Helpers shared by the command modules: progress display and the closing summary line."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from levit_edge.cli.app import console, err_console


class RichHooks:
    """Pipeline hooks drawing stage names and progress bars on stderr (quiet when not a terminal)."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Self:
        self._progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def stage(self, name: str) -> None:
        # Only for people at a terminal: in pipelines stderr carries just the one error line.
        if err_console.is_terminal:
            err_console.print(f"[dim]stage[/dim] {name}", highlight=False)

    def progress(self, task: str, done: int, total: int) -> None:
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(task, total=total)
        self._progress.update(self._tasks[task], completed=done, total=total)


def summary(text: str) -> None:
    """The one closing line every command prints."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)
