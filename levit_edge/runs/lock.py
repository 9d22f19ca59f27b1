"""The run lock and the recovery of rewrites a dead process left half-done."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from levit_edge.errors import UserError
from levit_edge.io import fsync_dir
from levit_edge.runs.layout import COMMIT_MARKER, MANIFEST, UPDATE_PREFIX


@contextlib.contextmanager
def run_lock(run_dir: Path, shared: bool = False) -> Iterator[None]:
    """An flock on the run directory itself: rewrites (and verify) of one run take turns. The kernel drops
    it when its process dies, however it dies, so a staging folder found while holding it is abandoned."""
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise UserError(f"not a run directory: {run_dir}") from None
    except NotADirectoryError:
        raise UserError(f"not a run directory: {run_dir}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def abandoned_update(path: Path) -> bool:
    """An ``.update-*`` staging folder that never reached its commit marker: the run is as it was (only
    called with the run's lock held, so its owner is gone)."""
    return (
        path.name.startswith(UPDATE_PREFIX)
        and path.is_dir()
        and not path.is_symlink()
        and not (path / COMMIT_MARKER).exists()
    )


def roll_forward(staging: Path, run_dir: Path, names: list[str]) -> None:
    """Move the staged files still in ``staging`` into the run, manifest last; idempotent."""
    for name in [n for n in names if n != MANIFEST] + [MANIFEST]:
        if (staging / name).is_file():
            os.replace(staging / name, run_dir / name)
    fsync_dir(run_dir)


def recover_updates(run_dir: Path) -> None:
    """Finish or drop rewrites left by a dead process (call with the run's lock held).

    A staging folder with its commit marker was decided: its remaining files are moved in (manifest last);
    one without it is removed, the run being exactly as before. Without write access they stay: an
    undecided one is then ignored by verify, a decided one is reported.
    """
    for staging in sorted(run_dir.glob(f"{UPDATE_PREFIX}*")):
        if staging.is_symlink() or not staging.is_dir():
            continue
        with contextlib.suppress(OSError):
            marker = staging / COMMIT_MARKER
            if marker.is_file():
                names = json.loads(marker.read_text())
                if isinstance(names, list) and all(isinstance(n, str) and "/" not in n for n in names):
                    roll_forward(staging, run_dir, names)
            shutil.rmtree(staging)
