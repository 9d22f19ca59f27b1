"""ONNX Runtime CPU backend: a session loader and a timed runner."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from levit_edge.backends.base import Runner
from levit_edge.errors import UserError

# ONNX Runtime's telemetry is on by default where the platform supports it; this tool must make no
# network access of its own. levit_edge/__init__.py sets ORT_DISABLE_TELEMETRY (which stops the native
# uploader); telemetry events are switched off here too, before any session exists, and again, cheaply,
# in ``session_options`` (the setting is process-wide: nothing may turn it back on unnoticed).
ort.disable_telemetry_events()

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(
    threads: int | None = None,
    optimization: str = "all",
    optimized_path: Path | None = None,
    config: Mapping[str, str] | None = None,
) -> ort.SessionOptions:
    """Session options: intra-op threads (None = all cores), optimization level, optional saved graph,
    and ONNX Runtime session config entries (e.g. ``{"session.intra_op.allow_spinning": "0"}``)."""
    if optimization not in _LEVELS:
        raise UserError(f"unknown graph optimization level '{optimization}'; use one of {', '.join(_LEVELS)}")
    ort.disable_telemetry_events()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = _LEVELS[optimization]
    opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    return opts


def load_session(
    model: bytes | Path,
    threads: int | None = None,
    optimization: str = "all",
    config: Mapping[str, str] | None = None,
) -> ort.InferenceSession:
    """Create a CPU inference session; an unloadable model is a user error naming the file."""
    source = model if isinstance(model, bytes) else str(model)
    ort.disable_telemetry_events()
    try:
        return ort.InferenceSession(
            source,
            sess_options=session_options(threads, optimization, config=config),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        where = "model" if isinstance(model, bytes) else str(model)
        first = str(exc).strip().splitlines()[0][:300]
        raise UserError(f"ONNX Runtime cannot load {where}: {first}") from None


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX model with ONNX Runtime's CPU execution provider.

    A model exported with a fixed batch (``--batch N``) declares it as ``batch_range``: ``Runner.infer``
    then feeds it exactly N images per call (chunked, a short last chunk padded, the padding dropped).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model: bytes | Path,
        threads: int | None = None,
        optimization: str = "all",
        config: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.threads = threads
        self.optimization = optimization
        self.config = dict(config or {})
        self.session: ort.InferenceSession | None = None

    def activate(self) -> None:
        self.session = load_session(self.model, self.threads, self.optimization, self.config)
        first = self.session.get_inputs()[0]
        self._input = first.name
        self._output = self.session.get_outputs()[0].name
        # A fixed-batch model (export --batch N) takes exactly N images: Runner.infer pads and chunks.
        dim = first.shape[0] if first.shape else None
        self.batch_range = (dim, dim) if isinstance(dim, int) and dim > 0 else None

    def _infer(self, images: np.ndarray) -> np.ndarray:
        assert self.session is not None
        (out,) = self.session.run([self._output], {self._input: images})
        return np.asarray(out, dtype=np.float32)

    def threads_in_use(self) -> int | None:
        if self.session is None:
            return None
        return int(self.session.get_session_options().intra_op_num_threads)

    def deactivate(self) -> None:
        self.session = None
