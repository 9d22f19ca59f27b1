"""Paths the system cannot take, refused by the option that gave them before anything is read or made.

An over-long name otherwise surfaces as ``OSError: [Errno 36] File name too long`` from whichever call
meets it first (``exists()``, ``mkdir``), possibly after output folders were made on the way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from levit_edge.errors import UserError

_NAME_MAX = 255  # POSIX file systems' usual limits, where pathconf cannot say
_PATH_MAX = 4096


def _limits(path: Path) -> tuple[int, int]:
    """NAME_MAX and PATH_MAX of the file system of ``path``'s nearest existing ancestor."""
    for folder in (path, *path.parents):
        try:
            if folder.is_dir():
                return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
        except (OSError, ValueError):
            continue
    return _NAME_MAX, _PATH_MAX


def check_length(option: str, path: Path) -> None:
    """UserError naming ``option`` and ``path`` when a component or the whole path is beyond the limits."""
    absolute = Path(os.path.abspath(path))
    name_max, path_max = _limits(absolute)
    for part in absolute.parts:
        if len(os.fsencode(part)) > name_max:
            raise UserError(
                f"{option} path is too long: its name {part!r} has {len(os.fsencode(part))} bytes "
                f"(at most {name_max} here): {path}"
            )
    size = len(os.fsencode(str(absolute)))
    if size >= path_max:
        raise UserError(f"{option} path is too long: {size} bytes (at most {path_max - 1} here): {path}")


def check_lengths(paths: Mapping[str, Path | None]) -> None:
    """:func:`check_length` for each ``{option: path}`` given (None: not given)."""
    for option, path in paths.items():
        if path is not None:
            check_length(option, path)


def job_paths(job: Any) -> dict[str, Path | None]:
    """The paths of an export job (:class:`levit_edge.flows.job.ExportJob`) by the option that gives them."""
    out: dict[str, Path | None] = {"--out": job.out, "--checkpoint": job.model.checkpoint}
    out["--config"] = job.config
    for option, spec in (("--calib", job.calib), ("--val", job.val)):
        if spec is not None:
            out[option] = spec.path
            out["--data-root"] = out.get("--data-root") or spec.data_root
            out["--exclude"] = out.get("--exclude") or spec.exclude
            out["--class-list"] = out.get("--class-list") or spec.class_list
    return out
