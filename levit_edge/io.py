"""Durable file operations used everywhere: atomic writes, JSON, sha256, no-replace renames.

Every file levit-edge writes goes through :func:`write_atomic` (temporary file, fsync, rename), so a
reader never sees half a file and an environmental failure (full disk, quota, size limit, read-only file
system) is one :class:`~levit_edge.errors.UserError` line naming the file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from levit_edge.errors import UserError

# Write failures that are the environment's, not a bug: full disk, quota, file-size limit, read-only
# file system, permissions. They become one clear UserError line (and a staged run is removed).
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
# How a file inside a staged run (``.NAME.partial-*``, levit_edge/runs/staging.py) or a run's rewrite
# folder (``.update-*``) is named in an error: by the run it was going to be part of.
_PARTIAL = re.compile(r"\.(?P<name>.+)\.partial-")
_DEFERRED_SIGNALS = tuple(getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create 0600 files and 0700 folders; a finished run gets the modes an ordinary write
# would give it (0644 / 0755 under the usual umask), so a CI uploader or another user can read it.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
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
        fsync_dir(Path(dirpath))


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
    # Names that are not UTF-8 (a class folder on a Latin-1 file system) reach here as surrogates: keep
    # the report valid UTF-8 and the name recognisable (``\udce9``) rather than failing the whole run.
    payload = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise write_error(path, exc) from None
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
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
    fsync_dir(path.parent)


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


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def _renameat2(a: Path, b: Path, flags: int) -> bool:
    """Linux ``renameat2``; False where the system has no such call or flag (the caller falls back)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (``RENAME_EXCHANGE``); False where the system cannot, so
    the caller falls back to two renames."""
    return _renameat2(a, b, 2)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` only if ``dst`` does not exist, atomically (``RENAME_NOREPLACE``): a run
    of the same name that appeared meanwhile (a concurrent export) is never swapped away. Raises
    FileExistsError when it exists. Without renameat2, rename(2) itself refuses a non-empty ``dst``."""
    try:
        if _renameat2(src, dst, 1):
            return
    except FileExistsError:
        raise
    if dst.exists() or dst.is_symlink():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        raise
