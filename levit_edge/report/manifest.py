"""Run directories: atomic file writes, staged runs that only appear complete, and the manifest."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from levit_edge.errors import UserError
from levit_edge.model.load import sha256_file

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
    """Re-hash every file the manifest lists; return one line per mismatch (empty when all match)."""
    manifest = read_json(run_dir / MANIFEST)
    problems = []
    for name, entry in sorted(manifest.get("files", {}).items()):
        path = run_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        actual = file_entry(path)
        if actual["size"] != entry.get("size") or actual["sha256"] != entry.get("sha256"):
            problems.append(f"{name}: sha256 {actual['sha256'][:12]}... does not match the manifest")
    listed = set(manifest.get("files", {}))
    extra = [n for n in hash_files(run_dir) if n not in listed]
    problems.extend(f"{name}: not listed in the manifest" for name in extra)
    return problems


class StagedRun:
    """A run directory built under a hidden temporary name and renamed into place when complete.

    An interrupted run leaves only a hidden ``.NAME.partial-*`` directory (cleaned up on the next run of
    the same name); an existing run is replaced only with ``force`` and only once the new one is complete.
    """

    def __init__(self, out: Path, name: str, force: bool) -> None:
        if not name or "/" in name or name in (".", "..") or name.startswith("."):
            raise UserError(f"--name must be a plain directory name, got '{name}'")
        self.final = out / name
        self.force = force
        if self.final.exists() and not force:
            raise UserError(f"run directory {self.final} already exists; pass --force to replace it")
        if self.final.exists() and not self.final.is_dir():
            raise UserError(f"{self.final} exists and is not a directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output directory {out}: {exc.strerror}") from None
        if not os.access(out, os.W_OK | os.X_OK):
            raise UserError(f"output directory {out} is not writable")
        for stale in out.glob(f".{name}.partial-*"):
            if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
                shutil.rmtree(stale, ignore_errors=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", suffix=f"-{os.getpid()}", dir=out))

    def commit(self) -> Path:
        """Move the finished run into place (replacing an old one only now) and return its path."""
        _fsync_dir(self.dir)
        old: Path | None = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}-{int(time.time())}")
            os.rename(self.final, old)
        os.rename(self.dir, self.final)
        _fsync_dir(self.final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        """Remove the partial run."""
        shutil.rmtree(self.dir, ignore_errors=True)


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
    """Context manager: the run is committed on success and discarded on any exception."""
    run = StagedRun(out, name, force)
    try:
        yield run
    except BaseException:
        run.discard()
        raise
