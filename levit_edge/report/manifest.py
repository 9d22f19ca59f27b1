"""Run directories: atomic file writes, staged runs that only appear complete, and the manifest."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
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
# 2: the manifest carries ``manifest_sha256``, a digest of its own canonical content (see :func:`seal`).
SCHEMA_VERSION = 2
DIGEST_KEY = "manifest_sha256"
COMMIT_MARKER = ".commit"  # in an ``.update-*`` staging folder: the rewrite is decided (roll forward)
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


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def seal(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` plus ``manifest_sha256``: the sha256 of its own canonical JSON (every other key).

    This catches an edit of manifest.json by hand (a status turned to "passed", a hash replaced); it
    cannot stop someone who recomputes the digest (see the README: sign the manifest for that).
    """
    body = json.loads(json.dumps(dict(manifest), default=str))  # what the file will hold, re-read
    body.pop(DIGEST_KEY, None)
    return {**body, DIGEST_KEY: hashlib.sha256(_canonical(body)).hexdigest()}


def write_manifest(run_dir: Path, body: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` last: ``body`` plus the hashes of every file in the run directory, sealed."""
    manifest = seal({**body, "schema_version": SCHEMA_VERSION, "files": hash_files(run_dir)})
    write_json(run_dir / MANIFEST, manifest)
    return manifest


def _files_entry(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("size"), int)
        for e in files.values()
    ):
        return None
    return files


def is_levit_run(path: Path) -> bool:
    """True for a real folder (not a link) holding a manifest.json that parses as a levit-edge manifest:
    the only kind of folder ``--force`` may replace."""
    manifest_path = path / MANIFEST
    if path.is_symlink() or not path.is_dir() or manifest_path.is_symlink() or not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except (OSError, ValueError):
        return False
    return (
        isinstance(manifest, dict)
        and isinstance(manifest.get("schema_version"), int)
        and _files_entry(manifest) is not None
    )


def _self_problems(run_dir: Path, manifest: Mapping[str, Any]) -> list[str]:
    """The manifest's own checks: its digest, and its status against report.json's."""
    problems = []
    digest = manifest.get(DIGEST_KEY)
    if not isinstance(digest, str):
        problems.append(
            f"{MANIFEST}: no {DIGEST_KEY} (an unsealed manifest: edited, or written before schema "
            f"{SCHEMA_VERSION}; re-export the run)"
        )
    elif digest != hashlib.sha256(_canonical(manifest)).hexdigest():
        problems.append(
            f"{MANIFEST}: its content does not match its {DIGEST_KEY} (edited after it was written)"
        )
    report_path = run_dir / "report.json"
    if "report.json" in manifest.get("files", {}) and report_path.is_file() and not report_path.is_symlink():
        try:
            status = json.loads(report_path.read_bytes()).get("status")
        except (OSError, ValueError, AttributeError):
            status = None  # a broken report.json shows as a hash mismatch
        if status is not None and status != manifest.get("status"):
            problems.append(
                f"{MANIFEST}: status {manifest.get('status')!r} differs from report.json's {status!r}"
            )
    return problems


def verify_manifest(run_dir: Path) -> list[str]:
    """Re-hash every file the manifest lists; return one line per mismatch (empty when all match).

    Anything else in the run directory (an added file, hidden or not, a folder, a link) is a mismatch
    too, and so is a manifest whose content no longer matches its own digest or whose status differs from
    report.json's; a manifest that is not a levit-edge manifest is a UserError. A rewrite left half-done by
    a dead ``validate``/``bench``/``debug`` is finished (or dropped) first, under the run's lock.
    """
    with run_lock(run_dir, shared=False):
        recover_updates(run_dir)
        return _verify_locked(run_dir)


def _verify_locked(run_dir: Path) -> list[str]:
    manifest = read_json(run_dir / MANIFEST)
    files = _files_entry(manifest)
    if files is None:
        raise UserError(
            f"{run_dir / MANIFEST} is not a levit-edge manifest ('files' must map names to sha256/size)"
        )
    problems = _self_problems(run_dir, manifest)
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
    extra = sorted(
        p.name
        for p in run_dir.iterdir()
        if p.name not in files and p.name != MANIFEST and not _abandoned_update(p)
    )
    problems.extend(f"{name}: not listed in the manifest" for name in extra)
    return problems


def require_intact(run_dir: Path, action: str) -> dict[str, Any]:
    """The run's manifest, after checking that every file matches it; else a UserError (the run is left
    as it is): a command that rewrites a run must never re-hash, and so launder, someone else's edit."""
    problems = verify_manifest(run_dir)
    if problems:
        raise _mismatch(run_dir, problems, action)
    return read_json(run_dir / MANIFEST)


def _mismatch(run_dir: Path, problems: list[str], action: str) -> UserError:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return UserError(
        f"{run_dir} does not match its {MANIFEST}: {problems[0]}{more}; refusing to {action} it "
        f"(see 'levit-edge verify {run_dir}')"
    )


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


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (``RENAME_EXCHANGE``); False where the system cannot, so
    the caller falls back to two renames."""
    return _renameat2(a, b, 2)


def _rename_noreplace(src: Path, dst: Path) -> None:
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
            if self.force and (self.final.exists() or self.final.is_symlink()):
                if not is_levit_run(self.final):  # put there meanwhile: never delete what is not a run
                    raise UserError(
                        f"{self.final} is not a levit-edge run (no valid {MANIFEST}); --force replaces "
                        "runs only, so it was left as it is"
                    )
                if _exchange(self.dir, self.final):
                    old = self.dir  # the staged name now holds the previous run
                else:
                    old = self.final.with_name(f".{self.final.name}.old-{int(time.time())}-{os.getpid()}")
                    os.rename(self.final, old)
                    os.rename(self.dir, self.final)
            else:
                try:
                    _rename_noreplace(self.dir, self.final)
                except FileExistsError:
                    raise UserError(
                        f"run directory {self.final} already exists (it appeared while this run was "
                        "being built); pass --force to replace it"
                    ) from None
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


def _abandoned_update(path: Path) -> bool:
    """An ``.update-*`` staging folder that never reached its commit marker: the run is as it was (only
    called with the run's lock held, so its owner is gone)."""
    return (
        path.name.startswith(".update-")
        and path.is_dir()
        and not path.is_symlink()
        and not (path / COMMIT_MARKER).exists()
    )


def _roll_forward(staging: Path, run_dir: Path, names: list[str]) -> None:
    """Move the staged files still in ``staging`` into the run, manifest last; idempotent."""
    for name in [n for n in names if n != MANIFEST] + [MANIFEST]:
        if (staging / name).is_file():
            os.replace(staging / name, run_dir / name)
    _fsync_dir(run_dir)


def recover_updates(run_dir: Path) -> None:
    """Finish or drop rewrites left by a dead process (call with the run's lock held).

    A staging folder with its commit marker was decided: its remaining files are moved in (manifest last);
    one without it is removed, the run being exactly as before. Without write access they stay: an
    undecided one is then ignored by verify, a decided one is reported.
    """
    for staging in sorted(run_dir.glob(".update-*")):
        if staging.is_symlink() or not staging.is_dir():
            continue
        with contextlib.suppress(OSError):
            marker = staging / COMMIT_MARKER
            if marker.is_file():
                names = json.loads(marker.read_text())
                if isinstance(names, list) and all(isinstance(n, str) and "/" not in n for n in names):
                    _roll_forward(staging, run_dir, names)
            shutil.rmtree(staging)


def update_run(run_dir: Path, write: Callable[[Path], None], body: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite some files of a finished run and its manifest as one step; return the new manifest.

    The one commit protocol of every command that writes into a run (validate, bench, debug). Under the
    run's lock: the run must match its manifest (:func:`require_intact`: a changed file is refused, never
    re-hashed into the new manifest); ``write(folder)`` writes the new files into a hidden staging folder
    inside the run; the new manifest keeps the verified entries of the other files and hashes only the
    new ones; a commit marker then decides the rewrite, and the files are renamed into place with
    SIGINT/SIGTERM held, manifest last. A crash before the marker leaves the run as it was; one after it
    is rolled forward by the next verify or rewrite. The folder keeps its identity, so a shell sitting in
    it is not left in a deleted directory.
    """
    with run_lock(run_dir):
        recover_updates(run_dir)
        problems = _verify_locked(run_dir)
        if problems:
            raise _mismatch(run_dir, problems, "rewrite")
        old_files = _files_entry(read_json(run_dir / MANIFEST)) or {}
        try:
            staging = Path(tempfile.mkdtemp(prefix=".update-", suffix=f"-{os.getpid()}", dir=run_dir))
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS or exc.errno in (errno.ENOENT, errno.EMLINK):
                raise write_error(run_dir / MANIFEST, exc) from None
            raise
        try:
            write(staging)
            new = sorted(p.name for p in staging.iterdir() if p.is_file() and not p.name.startswith("."))
            files = {**old_files, **hash_files(staging)}
            manifest = seal({**body, "schema_version": SCHEMA_VERSION, "files": dict(sorted(files.items()))})
            write_json(staging / MANIFEST, manifest)
            _fsync_tree(staging)
            with signals_deferred():
                write_json(staging / COMMIT_MARKER, [*new, MANIFEST])  # the commit point
                _roll_forward(staging, run_dir, [*new, MANIFEST])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest
