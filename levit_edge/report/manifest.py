"""Run directories: atomic file writes, staged runs that only appear complete, and the manifest."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from levit_edge.errors import UserError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
# Write failures that are the environment's, not a bug: full disk, quota, file-size limit, read-only
# file system, permissions. They become one clear UserError line (and the staged run is removed).
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
_PARTIAL = re.compile(r"\.(?P<name>.+)\.partial-")
_DEFERRED_SIGNALS = tuple(getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create 0600 files and 0700 folders; a finished run gets the modes an ordinary write
# would give it (0644 / 0755 under the usual umask), so a CI uploader or another user can read it.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every regular file under ``root`` and every folder, so a rename publishes durable bytes."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(dirpath))


def write_error(path: Path, exc: OSError) -> UserError:
    """One clear line for an environmental write failure (disk full, quota, size limit, read-only...).

    A file inside a staged ``.NAME.partial-*`` directory is named by the run it was going to be part of.
    """
    where = str(path)
    match = _PARTIAL.match(path.parent.name)
    if match:
        where = f"{path.name} of run {path.parent.parent / match['name']}"
    elif path.parent.name.startswith(".update-"):  # update_run's staging folder inside the run
        where = f"{path.name} of run {path.parent.parent}"
    code = errno.errorcode.get(exc.errno or 0, "")
    return UserError(f"cannot write {where}: {exc.strerror or exc}{f' [{code}]' if code else ''}")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    A full disk (or quota, file-size limit, read-only file system) raises a UserError naming the file;
    the temporary file is removed and an existing ``path`` is left as it was.
    """
    payload = data.encode() if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise write_error(path, exc) from None
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _FILE_MODE)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise write_error(path, exc) from None
        raise
    _fsync_dir(path.parent)


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as stable, indented JSON."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object file, turning problems into one clear user error."""
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} does not hold a JSON object")
    return obj


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest's record of one file: sha256 and size."""
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def hash_files(run_dir: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every regular file in the run directory except the manifest itself."""
    return {
        p.name: file_entry(p)
        for p in sorted(run_dir.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }


def write_manifest(run_dir: Path, body: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` last: ``body`` plus the hashes of every file in the run directory."""
    manifest = {"schema_version": SCHEMA_VERSION, **body, "files": hash_files(run_dir)}
    write_json(run_dir / MANIFEST, manifest)
    return manifest


def verify_manifest(run_dir: Path) -> list[str]:
    """Re-hash every file the manifest lists; return one line per mismatch (empty when all match).

    Anything else in the run directory (an added file, hidden or not, a folder, a link) is a mismatch
    too; a manifest that is not a levit-edge manifest is a UserError.
    """
    manifest = read_json(run_dir / MANIFEST)
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("size"), int)
        for e in files.values()
    ):
        raise UserError(
            f"{run_dir / MANIFEST} is not a levit-edge manifest ('files' must map names to sha256/size)"
        )
    problems = []
    for name, entry in sorted(files.items()):
        if not name or "/" in name or "\\" in name or name in (".", "..", MANIFEST):
            problems.append(f"{name!r}: not a plain file name of the run directory")
            continue
        path = run_dir / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{name}: {'a link, not a file' if path.is_symlink() else 'missing'}")
            continue
        actual = file_entry(path)
        if actual["size"] != entry["size"]:
            problems.append(f"{name}: size {actual['size']} does not match the manifest's {entry['size']}")
        elif actual["sha256"] != entry["sha256"]:
            problems.append(f"{name}: sha256 {actual['sha256'][:12]}... does not match the manifest")
    extra = sorted(p.name for p in run_dir.iterdir() if p.name not in files and p.name != MANIFEST)
    problems.extend(f"{name}: not listed in the manifest" for name in extra)
    return problems


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends (a rename and its fsyncs are never cut in half).

    A signal that arrives meanwhile is re-raised right after the block. Only the main thread can install
    handlers; elsewhere this does nothing (SIGKILL can never be deferred: see :meth:`StagedRun.commit`).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def defer(signum: int, _frame: FrameType | None) -> None:
        pending.append(signum)

    previous = {s: signal.signal(s, defer) for s in _DEFERRED_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system cannot, so the caller falls back to two renames."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


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
        if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
            raise UserError(f"--name must be a plain directory name, got '{name}'")

    def __init__(self, out: Path, name: str, force: bool) -> None:
        self.check_name(name)
        self.final = out / name
        self.force = force
        if out.is_dir():
            self._recover(out, name)
        if self.final.exists() and not force:
            raise UserError(f"run directory {self.final} already exists; pass --force to replace it")
        if self.final.exists() and not self.final.is_dir():
            raise UserError(f"{self.final} exists and is not a directory")
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
                self.dir.chmod(_DIR_MODE)
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
            _fsync_tree(self.dir)
            old: Path | None = None
            if self.final.exists():
                if _exchange(self.dir, self.final):
                    old = self.dir  # the staged name now holds the previous run
                else:
                    old = self.final.with_name(f".{self.final.name}.old-{int(time.time())}-{os.getpid()}")
                    os.rename(self.final, old)
                    os.rename(self.dir, self.final)
            else:
                os.rename(self.dir, self.final)
            _fsync_dir(self.final.parent)
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


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


TMP_DIR = ".tmp"


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


def update_run(run_dir: Path, write: Callable[[Path], None], body: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite some files of a finished run and its manifest as one step; return the new manifest.

    ``write(folder)`` writes the new files (reports...) into a hidden staging folder inside the run; the
    manifest is then computed over the run's other files plus those, and everything is renamed into place
    at once with SIGINT/SIGTERM held, manifest last. An interruption before that leaves the run exactly as
    it was (never a report that its manifest does not match); the folder itself keeps its identity, so a
    shell or a process sitting in it is not left in a deleted directory.
    """
    for stale in run_dir.glob(".update-*"):
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".update-", suffix=f"-{os.getpid()}", dir=run_dir))
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise write_error(run_dir / MANIFEST, exc) from None
        raise
    try:
        write(staging)
        new = {p.name for p in staging.iterdir() if p.is_file() and not p.name.startswith(".")}
        files = {**hash_files(run_dir), **hash_files(staging)}
        manifest = {"schema_version": SCHEMA_VERSION, **body, "files": dict(sorted(files.items()))}
        write_json(staging / MANIFEST, manifest)
        _fsync_tree(staging)
        with signals_deferred():
            for name in [*sorted(new - {MANIFEST}), MANIFEST]:
                os.replace(staging / name, run_dir / name)
            _fsync_dir(run_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
