"""levit-edge: take a timm LeViT to edge devices (fused ONNX, INT8 for ONNX Runtime and TensorRT).

The commands as functions live in :mod:`levit_edge.api` (``from levit_edge import api``;
``api.export``, ``api.validate``, ``api.verify``, ``api.inspect``, ``api.check_trt``, ``api.export_job``,
``api.job_from_config``, ``api.run``; docs/API.md). The names that do not collide with a subpackage are
also here (``levit_edge.export`` is the ONNX export package, so that one cannot be a function).
Importing the package imports no heavy library.
"""

from __future__ import annotations

import os
from typing import Any

# ONNX Runtime's native (OneDS) telemetry resolves and contacts its upload host on a timer, even after
# onnxruntime.disable_telemetry_events(); only its ORT_DISABLE_TELEMETRY switch, read when ONNX Runtime
# starts, keeps it quiet. This package runs before any of its modules imports onnxruntime.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

__version__ = "0.1.0"

_API = ("export_job", "job_from_config", "run", "verify", "check_trt")
_ERRORS = ("UserError", "AccuracyGateFailed", "EngineUnavailable", "RunMismatch")
__all__ = ["__version__", "api", *_API, *_ERRORS]


def __getattr__(name: str) -> Any:
    # lazy: ``import levit_edge`` (and the CLI's start-up) must not pay for torch and timm
    import importlib

    if name == "api":
        return importlib.import_module("levit_edge.api")
    if name in _API:
        return getattr(importlib.import_module("levit_edge.api"), name)
    if name in _ERRORS:
        return getattr(importlib.import_module("levit_edge.errors"), name)
    raise AttributeError(f"module 'levit_edge' has no attribute {name!r}")
