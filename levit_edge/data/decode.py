"""Reading image files safely: regular files only, and errors as one line."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path


def open_regular(path: Path) -> io.BufferedReader:
    """Open an image file for reading, refusing anything but a regular file: a FIFO or device named
    ``*.png`` would block the read (and with it SIGINT/SIGTERM) forever. O_NONBLOCK makes the open itself
    return at once for a FIFO; it means nothing for a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) else "special"
            raise OSError(f"not a regular file ({kind})")
        os.set_blocking(fd, True)
        return io.BufferedReader(io.FileIO(fd, "rb"))
    except BaseException:
        os.close(fd)
        raise


def one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())
