"""Reopening a finished run: the one way validate, bench and debug read a run directory and write back."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from levit_edge.artifacts import Artifact
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.errors import UserError
from levit_edge.io import read_json
from levit_edge.runs.layout import ARTIFACT_FILES, FP32_FILE, MANIFEST, ONNX_ARTIFACTS, REPORT_JSON
from levit_edge.runs.manifest import require_intact
from levit_edge.runs.preprocess import run_preprocess
from levit_edge.runs.update import update_run


@dataclass(frozen=True)
class FinishedRun:
    """A run directory as a later command sees it: its files, its manifest and its report."""

    path: Path

    @classmethod
    def open(
        cls, path: Path, action: str | None = None, *, manifest: bool = True, hint: str = ""
    ) -> FinishedRun:
        """The run at ``path``; a UserError unless it holds the FP32 model (and, with ``manifest``, its
        manifest.json). With ``action`` (what the command will do to it, for the error line) every file
        must match the manifest first (a command that rewrites a run never re-hashes someone's edit) and
        the folder must be writable (``hint`` ends that error line), all before minutes of work."""
        if not path.is_dir():
            raise UserError(f"not a run directory: {path}")
        missing = [FP32_FILE] if not (path / FP32_FILE).is_file() else []
        if manifest and not (path / MANIFEST).is_file():
            missing.append(MANIFEST)
        if missing:
            raise UserError(f"{path} is not a complete run directory: it has no {' and no '.join(missing)}")
        if action is not None:
            require_intact(path, action)  # before reading a model that may have been swapped
            if not os.access(path, os.W_OK | os.X_OK):  # a read-only mount refuses even root
                raise UserError(f"cannot {action} {path}: it is not writable{hint}")
        return cls(path)

    def preprocess(self) -> PreprocessConfig:
        """The preprocessing the run's models are fed with: its manifest's, checked against every model
        (levit_edge/runs/preprocess.py): a model's own metadata is not trusted alone."""
        return run_preprocess(self.path, ARTIFACT_FILES.values())

    @property
    def fp32(self) -> Path:
        return self.path / FP32_FILE

    def file(self, artifact: Artifact) -> Path | None:
        """The artifact's file, or None where the run has none."""
        path = self.path / ARTIFACT_FILES[artifact]
        return path if path.is_file() else None

    def onnx_models(self, int8_only: bool = False) -> dict[Artifact, Path]:
        """The run's ONNX models ONNX Runtime can run, by artifact."""
        found = {a: self.file(a) for a in ONNX_ARTIFACTS if not (int8_only and a is Artifact.FP32)}
        return {a: p for a, p in found.items() if p is not None}

    def manifest(self) -> dict[str, Any]:
        return read_json(self.path / MANIFEST)

    def report(self) -> dict[str, Any]:
        return read_json(self.path / REPORT_JSON)

    def options(self) -> dict[str, Any]:
        """The options the run was exported with (manifest.json ``options``; empty without a manifest)."""
        if not (self.path / MANIFEST).is_file():
            return {}
        options = self.manifest().get("options")
        return options if isinstance(options, dict) else {}

    def rewrite(
        self,
        write: Callable[[Path], None],
        changes: Mapping[str, Any] | None = None,
        remove: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """Rewrite files of the run (``write(folder)``) and its manifest as one all-or-nothing step
        (levit_edge/runs/update.py); ``changes`` replace manifest keys, ``remove`` drops keys. Returns the
        new manifest."""
        body = {k: v for k, v in self.manifest().items() if k not in ("files", "schema_version", *remove)}
        return update_run(self.path, write, {**body, **(changes or {})})
