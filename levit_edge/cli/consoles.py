"""The two rich consoles every command prints through: results to stdout, messages to stderr."""

from __future__ import annotations

import os
import sys

from rich.console import Console


def _width(stream: object) -> int | None:
    """Off a terminal (a CI log, a file), lines are never cut or wrapped at rich's 80 columns."""
    isatty = getattr(stream, "isatty", None)
    if os.environ.get("COLUMNS") or (isatty is not None and isatty()):
        return None
    return 100_000


console = Console(stderr=False, highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))
