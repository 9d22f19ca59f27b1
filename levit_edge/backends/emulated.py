"""A runner that infers with the aarch64 build of ONNX Runtime under user-mode emulation (qemu-aarch64).

Each ``infer`` call is one emulator process (start-up under emulation costs seconds, so callers pass all
their images at once): the batch goes in as an .npy, the standalone script
``levit_edge/platforms/ort_infer.py`` runs the model with the emulated Python, and the logits come back as
an .npy. Its latencies measure the emulator, never the board: they are not to be reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from levit_edge.backends.base import Runner
from levit_edge.errors import UserError
from levit_edge.platforms.aarch64 import Aarch64Platform, Runtime, emulator_env

SCRIPT = Path(__file__).resolve().parents[1] / "platforms" / "ort_infer.py"
OPTIMIZATIONS = ("all", "disable")


class EmulatedOrtRunner(Runner):
    """ONNX Runtime's CPU execution provider on an emulated aarch64 CPU."""

    name = "onnxruntime-aarch64"

    def __init__(
        self,
        model: Path,
        platform: Aarch64Platform,
        runtime: Runtime,
        threads: int | None = None,
        optimization: str = "all",
    ) -> None:
        super().__init__()
        if optimization not in OPTIMIZATIONS:
            raise UserError(
                f"emulated runs take optimization {' or '.join(OPTIMIZATIONS)}, got '{optimization}'"
            )
        self.model = model
        self.platform = platform
        self.runtime = runtime
        self.threads = threads or (os.cpu_count() or 1)
        self.optimization = optimization
        self.info: dict[str, Any] = {}  # what the emulated process reported (versions, machine)
        self._tmp: Path | None = None

    def activate(self) -> None:
        if not self.model.is_file():
            raise UserError(f"model not found: {self.model}")
        self._tmp = Path(tempfile.mkdtemp(prefix="levit-edge-aarch64-"))

    def _infer(self, images: np.ndarray) -> np.ndarray:
        assert self._tmp is not None
        inputs, logits, info = self._tmp / "inputs.npy", self._tmp / "logits.npy", self._tmp / "info.json"
        np.save(inputs, images)
        cmd = self.platform.command(
            str(SCRIPT), str(self.runtime.site), str(self.model), str(inputs), str(logits), str(info),
            str(self.threads), self.optimization,
        )  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=emulator_env())
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            why = lines[-1].strip()[:300] if lines else f"exit status {proc.returncode}"
            raise UserError(f"ONNX Runtime on emulated aarch64 cannot run {self.model.name}: {why}")
        self.info = json.loads(info.read_text())
        out = np.load(logits)
        if out.shape[0] != images.shape[0]:
            raise RuntimeError(f"emulated run returned {out.shape[0]} rows for {images.shape[0]} images")
        return np.asarray(out, dtype=np.float32)

    def threads_in_use(self) -> int | None:
        return int(self.info["threads"]) if "threads" in self.info else None

    def deactivate(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
