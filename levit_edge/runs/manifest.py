"""manifest.json: the hashes of every file of a run, sealed by a digest of its own content."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from levit_edge.errors import UserError
from levit_edge.io import read_json, sha256_file, write_json
from levit_edge.runs.layout import MANIFEST, REPORT_JSON
from levit_edge.runs.lock import abandoned_update, recover_updates, run_lock

# 2: the manifest carries ``manifest_sha256``, a digest of its own canonical content (see :func:`seal`).
SCHEMA_VERSION = 2
DIGEST_KEY = "manifest_sha256"


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


def files_entry(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
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
        and files_entry(manifest) is not None
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
    report_path = run_dir / REPORT_JSON
    if REPORT_JSON in manifest.get("files", {}) and report_path.is_file() and not report_path.is_symlink():
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
        return verify_locked(run_dir)


def verify_locked(run_dir: Path) -> list[str]:
    manifest = read_json(run_dir / MANIFEST)
    files = files_entry(manifest)
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
        if p.name not in files and p.name != MANIFEST and not abandoned_update(p)
    )
    problems.extend(f"{name}: not listed in the manifest" for name in extra)
    return problems


def require_intact(run_dir: Path, action: str) -> dict[str, Any]:
    """The run's manifest, after checking that every file matches it; else a UserError (the run is left
    as it is): a command that rewrites a run must never re-hash, and so launder, someone else's edit."""
    problems = verify_manifest(run_dir)
    if problems:
        raise mismatch(run_dir, problems, action)
    return read_json(run_dir / MANIFEST)


def mismatch(run_dir: Path, problems: list[str], action: str) -> UserError:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return UserError(
        f"{run_dir} does not match its {MANIFEST}: {problems[0]}{more}; refusing to {action} it "
        f"(see 'levit-edge verify {run_dir}')"
    )
