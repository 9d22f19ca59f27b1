"""--trt-fp16: the TensorRT Q/DQ model's float regions in FP16, still TensorRT-ready and accurate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from levit_edge.data.sources import DataSpec
from levit_edge.fixture.common import DatasetPaths, FixtureResult
from levit_edge.flows.export import run_export
from levit_edge.flows.job import ExportJob
from levit_edge.model.load import ModelSpec
from levit_edge.quant.fp16 import KEEP_FP32, float_regions_to_fp16
from levit_edge.quant.trt_rules import check_trt_ready
from levit_edge.settings import QuantSettings, Targets


def test_fp16_float_regions(
    trained_fixture: tuple[DatasetPaths, FixtureResult, Path], tmp_path: Path
) -> None:
    data, result, checkpoint = trained_fixture
    job = ExportJob(
        model=ModelSpec(result.model_name, checkpoint, len(result.classes), result.img_size),
        targets=Targets.parse("trt", int8=True, engine=False),
        calib=DataSpec(data.calib, size=32),
        quant=QuantSettings(calib_size=32),
        out=tmp_path,
        name="run",
    )
    run = run_export(job).run_dir
    plain = onnx.load(str(run / "model.int8.trt.onnx"))
    half = float_regions_to_fp16(plain)
    assert check_trt_ready(half) == []
    fp16_inits = [i for i in half.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert fp16_inits, "no weights or constants were converted"
    types = {vi.name: vi.type.tensor_type.elem_type for vi in half.graph.input}
    assert types["images"] == onnx.TensorProto.FLOAT  # I/O stays FP32
    # Q/DQ and Softmax keep FP32 inputs: each is fed by a Cast back to float32 or a float32 tensor.
    casts_to_fp32 = {n.output[0] for n in half.graph.node if n.op_type == "Cast" and n.attribute[0].i == 1}
    fp32_inits = {i.name for i in half.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    for node in half.graph.node:
        if node.op_type in ("QuantizeLinear", "Softmax"):
            assert node.input[0] in casts_to_fp32 | fp32_inits | {"images"}, node.name
    assert set(KEEP_FP32) >= {"QuantizeLinear", "DequantizeLinear"}
    x = np.stack(
        [np.random.default_rng(i).standard_normal((3, result.img_size, result.img_size)) for i in range(4)]
    )
    x = x.astype(np.float32)
    a = ort.InferenceSession(plain.SerializeToString()).run(None, {"images": x})[0]
    b = ort.InferenceSession(half.SerializeToString()).run(None, {"images": x})[0]
    assert np.abs(a - b).max() < 0.02 * float(np.ptp(a))
    assert (a.argmax(1) == b.argmax(1)).all()
