"""levit-edge: take a timm LeViT to edge devices (fused ONNX, INT8 for ONNX Runtime and TensorRT)."""

import os

# ONNX Runtime's native (OneDS) telemetry resolves and contacts its upload host on a timer, even after
# onnxruntime.disable_telemetry_events(); only its ORT_DISABLE_TELEMETRY switch, read when ONNX Runtime
# starts, keeps it quiet. This package runs before any of its modules imports onnxruntime.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

__version__ = "0.1.0"
