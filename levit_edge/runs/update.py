"""update_run: the one commit protocol of every command that rewrites files of a finished run."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from levit_edge.io import WRITE_ERRNOS, fsync_tree, read_json, signals_deferred, write_error, write_json
from levit_edge.runs.layout import COMMIT_MARKER, MANIFEST, UPDATE_PREFIX
from levit_edge.runs.lock import recover_updates, roll_forward, run_lock
from levit_edge.runs.manifest import SCHEMA_VERSION, files_entry, hash_files, mismatch, seal, verify_locked


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
        problems = verify_locked(run_dir)
        if problems:
            raise mismatch(run_dir, problems, "rewrite")
        old_files = files_entry(read_json(run_dir / MANIFEST)) or {}
        try:
            staging = Path(tempfile.mkdtemp(prefix=UPDATE_PREFIX, suffix=f"-{os.getpid()}", dir=run_dir))
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
            fsync_tree(staging)
            with signals_deferred():
                write_json(staging / COMMIT_MARKER, [*new, MANIFEST])  # the commit point
                roll_forward(staging, run_dir, [*new, MANIFEST])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest
