"""OpenVINO CPU backend: a reference runtime for the run's ONNX files (optional extra ``[openvino]``).

Not a target of levit-edge: ``levit-edge bench`` times it beside ONNX Runtime when the package is
importable, so users see what the same files run at on the other CPU runtime they would pick instead.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from levit_edge.backends.base import Runner


def openvino_unavailable_reason() -> str | None:
    """Why OpenVINO cannot run here (None: it can)."""
    if importlib.util.find_spec("openvino") is None:
        return "the openvino package is not installed (pip install 'levit-edge[openvino]')"
    try:
        import openvino  # noqa: F401  (a broken install is the unavailability being detected)
    except Exception as exc:
        return f"openvino does not import: {str(exc).strip().splitlines()[0][:200]}"
    return None


class OpenVinoRunner(Runner):
    """Runs an ONNX file with OpenVINO's CPU plugin, latency hint, ``threads`` inference threads.

    ``precision`` None keeps OpenVINO's default inference precision (bf16 on AMX / AVX-512 BF16 CPUs,
    f32 elsewhere); "f32" forces float32 arithmetic.
    """

    name = "openvino"

    def __init__(self, model: Path, threads: int | None = None, precision: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.threads = threads
        self.precision = precision
        self._compiled: Any = None
        self._request: Any = None

    def activate(self) -> None:
        import openvino as ov  # lazily: an optional extra

        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": self.threads or (os.cpu_count() or 1),
        }
        if self.precision:
            config["INFERENCE_PRECISION_HINT"] = self.precision
        self._compiled = ov.Core().compile_model(str(self.model), "CPU", config)
        self._request = self._compiled.create_infer_request()

    def _infer(self, images: np.ndarray) -> np.ndarray:
        self._request.infer({0: images})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)

    def threads_in_use(self) -> int | None:
        if self._compiled is None:
            return None
        return int(self._compiled.get_property("INFERENCE_NUM_THREADS"))

    def deactivate(self) -> None:
        self._request = None
        self._compiled = None
