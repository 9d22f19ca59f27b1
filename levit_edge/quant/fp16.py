"""FP16 for the float regions of a TensorRT Q/DQ model (``--trt-fp16``).

A strongly typed TensorRT network takes every tensor's precision from the graph, so FP16 outside the
INT8 regions must be written into the ONNX file. onnxconverter-common's converter does it; Q/DQ nodes
stay in FP32 (opset < 19 QuantizeLinear/DequantizeLinear only take float32 scales) behind Casts, and
Softmax stays FP32 for its accumulation. Network inputs and outputs keep FP32.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxconverter_common import float16

from levit_edge.io import write_atomic

KEEP_FP32 = ("QuantizeLinear", "DequantizeLinear", "Softmax")


def float_regions_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` whose non-quantized computation runs in FP16."""
    converted = float16.convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(KEEP_FP32), disable_shape_infer=False
    )
    converted.metadata_props.add(key="levit_edge.trt_fp16", value="true")
    return converted


def convert_file(path: Path) -> None:
    """Rewrite a Q/DQ model file in place (atomically) with FP16 float regions."""
    model = onnx.load(str(path))
    write_atomic(path, float_regions_to_fp16(model).SerializeToString(deterministic=True))
