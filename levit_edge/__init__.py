"""levit-edge: take a timm LeViT to edge devices (fused ONNX, INT8 for ONNX Runtime and TensorRT)."""

__version__ = "0.1.0"
