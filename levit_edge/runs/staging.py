"""Staged runs: a run directory is built under a hidden name and appears only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from levit_edge.errors import UserError
from levit_edge.io import (
    DIR_MODE,
    WRITE_ERRNOS,
    exchange,
    fsync_dir,
    fsync_tree,
    rename_noreplace,
    signals_deferred,
)
from levit_edge.runs.layout import MANIFEST, TMP_DIR
from levit_edge.runs.manifest import is_levit_run

# Room left in a file name for ``.NAME.partial-XXXXXXXX-PID`` (NAME_MAX is 255 bytes on Linux).
_MAX_NAME_BYTES = 200


class StagedRun:
    """A run directory built under a hidden temporary name and renamed into place when complete.

    An interrupted run leaves only a hidden ``.NAME.partial-*`` directory (cleaned up on the next run of
    the same name); an existing run is replaced only with ``force`` and only once the new one is complete,
    by an atomic swap where the system has one: at every instant ``out/NAME`` is the old complete run or the
    new complete run, even under SIGKILL or a power cut.
    """

    @staticmethod
    def check_name(name: str) -> None:
        """UserError unless ``name`` is a plain, visible directory name (no path, no leading dot)."""
        if (
            not name
            or "/" in name
            or "\\" in name
            or name in (".", "..")
            or name.startswith(".")
            or name != name.strip()
            or any(not ch.isprintable() for ch in name)
        ):
            raise UserError(f"--name must be a plain directory name, got {name!r}")
        size = len(os.fsencode(name))
        if size > _MAX_NAME_BYTES:
            raise UserError(f"--name is too long ({size} bytes; at most {_MAX_NAME_BYTES})")

    def __init__(self, out: Path, name: str, force: bool) -> None:
        self.check_name(name)
        self.final = out / name
        self.force = force
        absolute = out.absolute()
        inside = next((p for p in (absolute, *absolute.parents) if is_levit_run(p)), None)
        if inside is not None:
            raise UserError(f"--out {out} is inside the run {inside}; choose a folder outside it")
        if out.is_dir():
            self._recover(out, name)
        self._check_target()
        self._init_staging(out, name)

    def _check_target(self) -> None:
        """What may stand at ``out/NAME``: nothing, or (with ``--force``) a levit-edge run."""
        if self.final.is_symlink():
            raise UserError(f"{self.final} is a symbolic link; give --out/--name of a real folder")
        if self.final.exists() and not self.force:
            raise UserError(f"run directory {self.final} already exists; pass --force to replace it")
        if self.final.exists() and not self.final.is_dir():
            raise UserError(f"{self.final} exists and is not a directory")
        if self.final.exists() and not is_levit_run(self.final):
            raise UserError(
                f"{self.final} is not a levit-edge run (no valid {MANIFEST}); --force replaces runs "
                "only, so it was left as it is"
            )

    def _init_staging(self, out: Path, name: str) -> None:
        # Output folders made here are removed again with a discarded run: a failure leaves nothing.
        self._created = [p for p in (out, *out.parents) if not p.exists()][::-1]
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output directory {out}: {exc.strerror}") from None
        self.committed = False
        try:
            if not os.access(out, os.W_OK | os.X_OK):
                raise UserError(f"output directory {out} is not writable")
            for stale in out.glob(f".{name}.partial-*"):
                if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
                    shutil.rmtree(stale, ignore_errors=True)
            try:
                self.dir = Path(
                    tempfile.mkdtemp(prefix=f".{name}.partial-", suffix=f"-{os.getpid()}", dir=out)
                )
                self.dir.chmod(DIR_MODE)
            except OSError as exc:
                if exc.errno in WRITE_ERRNOS:
                    raise UserError(f"cannot write to output directory {out}: {exc.strerror}") from None
                raise
        except BaseException:
            self._remove_created()
            raise

    def _remove_created(self) -> None:
        for folder in reversed(self._created):
            with contextlib.suppress(OSError):  # not empty (another run wrote there meanwhile)
                folder.rmdir()

    @staticmethod
    def _recover(out: Path, name: str) -> None:
        """Put back a previous run left renamed aside by a replacement that died half-way (only where the
        atomic swap is missing), and drop such leftovers when the run itself is in place."""
        final = out / name
        for old in sorted(out.glob(f".{name}.old-*")):
            if _pid_alive(old.name.rsplit("-", 1)[-1]):
                continue
            if not final.exists() and (old / MANIFEST).is_file():
                os.rename(old, final)
            else:
                shutil.rmtree(old, ignore_errors=True)

    def commit(self) -> Path:
        """Move the finished run into place (replacing an old one only now) and return its path.

        Every file is fsynced first; SIGINT/SIGTERM are held until the run is in place.
        """
        with signals_deferred():
            shutil.rmtree(self.dir / TMP_DIR, ignore_errors=True)
            fsync_tree(self.dir)
            old: Path | None = None
            if self.force and (self.final.exists() or self.final.is_symlink()):
                if not is_levit_run(self.final):  # put there meanwhile: never delete what is not a run
                    raise UserError(
                        f"{self.final} is not a levit-edge run (no valid {MANIFEST}); --force replaces "
                        "runs only, so it was left as it is"
                    )
                if exchange(self.dir, self.final):
                    old = self.dir  # the staged name now holds the previous run
                else:
                    old = self.final.with_name(f".{self.final.name}.old-{int(time.time())}-{os.getpid()}")
                    os.rename(self.final, old)
                    os.rename(self.dir, self.final)
            else:
                try:
                    rename_noreplace(self.dir, self.final)
                except FileExistsError:
                    raise UserError(
                        f"run directory {self.final} already exists (it appeared while this run was "
                        "being built); pass --force to replace it"
                    ) from None
            fsync_dir(self.final.parent)
            self.committed = True
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        """Remove the partial run (never the committed one)."""
        if self.committed:
            return
        with signals_deferred():
            shutil.rmtree(self.dir, ignore_errors=True)
            self._remove_created()


def _pid_alive(text: str) -> bool:
    try:
        pid = int(text)
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


@contextlib.contextmanager
def staged_run(out: Path, name: str, force: bool) -> Iterator[StagedRun]:
    """Context manager: the run is discarded on any exception (the body commits it when complete).

    Meanwhile :mod:`tempfile` puts its files in the staged directory (``.tmp``), so that scratch models of
    calibration and quantization go wherever the run goes, and whatever a SIGKILL leaves behind is removed
    with the stale partial run.
    """
    run = StagedRun(out, name, force)
    saved = tempfile.tempdir
    try:
        (run.dir / TMP_DIR).mkdir()
        tempfile.tempdir = str(run.dir / TMP_DIR)
        yield run
    except BaseException:
        run.discard()
        raise
    finally:
        tempfile.tempdir = saved
