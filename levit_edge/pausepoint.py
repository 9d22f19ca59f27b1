"""A named point where a run can be held, so that a test can signal it there and nowhere else.

Killing a run "while it calibrates" by watching files from outside is a race: on a fast or a loaded machine
the stage may be over before the signal lands. A run passes :func:`pause_point` at the start of every stage;
with ``LEVIT_EDGE_PAUSE_AT=NAME=MARKER`` in its environment it writes its pid to the file ``MARKER`` when it
reaches point ``NAME`` and sleeps there until a signal ends it, or until the test removes ``MARKER`` (the run
then goes on: the test changed the world at that point, e.g. filled the disk), or :data:`MAX_PAUSE_S`
passes. Without the variable, the call returns at once: nothing a user runs is ever held.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "LEVIT_EDGE_PAUSE_AT"
MAX_PAUSE_S = 600.0  # a test that never sends its signal fails by its own timeout, not by a hung run


def pause_point(name: str) -> None:
    """Hold the process at ``name`` if ``$LEVIT_EDGE_PAUSE_AT`` asks for it (see the module docstring)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, marker = spec.partition("=")
    if point != name or not marker:
        return
    held = Path(marker)
    held.write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + MAX_PAUSE_S
    while time.monotonic() < deadline and held.exists():
        time.sleep(0.05)  # a signal handler raises out of here
