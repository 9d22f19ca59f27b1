"""Helpers shared by the command modules: progress display and the closing summary line."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Self

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from levit_edge.cli.consoles import console, err_console
from levit_edge.cli.output import MODE, log, set_result

# Off a terminal a line is printed at each tenth of a task (and with -v at every update).
_LINE_STEPS = 10


class RichHooks:
    """Pipeline hooks: stage names and progress bars (%, ETA) on a terminal, plain lines elsewhere.

    Off a terminal the lines are debug detail (``-v``), except with ``lines=True`` (``debug``,
    ``--accuracy-budget``: minutes of work), where each stage and each tenth of a task is a line, so a CI
    log shows progress; plain commands keep stderr to the one error line a failure prints.
    """

    def __init__(self, lines: bool = False) -> None:
        live = err_console.is_terminal and not MODE.quiet
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=not live,
        )
        self._live = live
        self._level = logging.INFO if (lines or err_console.is_terminal) else logging.DEBUG
        self._tasks: dict[str, TaskID] = {}
        self._printed: dict[str, int] = {}

    def __enter__(self) -> Self:
        self._progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def stage(self, name: str) -> None:
        log.log(self._level, "stage %s", name)

    def progress(self, task: str, done: int, total: int) -> None:
        if self._live:
            if task not in self._tasks:
                self._tasks[task] = self._progress.add_task(task, total=total)
            self._progress.update(self._tasks[task], completed=done, total=total)
            return
        # a line at each tenth (and the end) at the hooks' level, every other update as debug detail
        tenth = done * _LINE_STEPS // max(total, 1)
        level = self._level if tenth > self._printed.get(task, -1) or done >= total else logging.DEBUG
        self._printed[task] = max(tenth, self._printed.get(task, -1))
        log.log(level, "%s %d/%d (%d%%)", task, done, total, 100 * done // max(total, 1))


def summary(text: str, result: dict[str, Any] | None = None) -> None:
    """The one closing line every command prints; ``result`` is what ``--json`` prints instead."""
    if result is not None:
        set_result(result)
    console.print(text, markup=False, highlight=False, soft_wrap=True)
