"""check-trt rules on real ONNX models: one realistic Q/DQ model from onnxruntime's quantizer that
must pass, and variants of it each broken in one way that must give exactly the expected rule."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from levit_edge.errors import UserError
from levit_edge.quant.trt_rules import Violation, check_trt_ready, count_qdq


def _float_model(batch: str | int = "batch") -> onnx.ModelProto:
    """Conv(+bias) -> Relu -> GlobalAveragePool -> Flatten -> MatMul -> Add: logits (N, 10)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.normal(size=(4, 3, 3, 3)) * 0.3).astype(np.float32), "conv_w"),
        numpy_helper.from_array((rng.normal(size=(4,)) * 0.1).astype(np.float32), "conv_b"),
        numpy_helper.from_array((rng.normal(size=(4, 10)) * 0.3).astype(np.float32), "fc_w"),
        numpy_helper.from_array((rng.normal(size=(10,)) * 0.1).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("MatMul", ["f", "fc_w"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "fc_b"], ["logits"], name="fc_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


class _RandomImages(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        batches = [{"images": rng.normal(size=(2, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
        self._it: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _quantize(tmp: Path, fmt: QuantFormat) -> onnx.ModelProto:
    src, dst = tmp / "fp32.onnx", tmp / f"int8.{fmt.name}.onnx"
    onnx.save(_float_model(), str(src))
    quantize_static(
        str(src),
        str(dst),
        _RandomImages(),
        quant_format=fmt,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    return onnx.load(str(dst))


@pytest.fixture(scope="module")
def qdq(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    return _quantize(tmp_path_factory.mktemp("qdq"), QuantFormat.QDQ)


@pytest.fixture
def model(qdq: onnx.ModelProto) -> onnx.ModelProto:
    """A fresh copy of the realistic Q/DQ model to break."""
    return copy.deepcopy(qdq)


def _rules(violations: list[Violation]) -> set[str]:
    return {v.rule for v in violations}


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _set_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == name:
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(value, name))
            return
    model.graph.initializer.append(numpy_helper.from_array(value, name))


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    tensor = next(t for t in model.graph.initializer if t.name == name)
    return np.asarray(numpy_helper.to_array(tensor))


def _set_attr(node: onnx.NodeProto, name: str, value: int) -> None:
    for attr in node.attribute:
        if attr.name == name:
            attr.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


# --- the realistic model --------------------------------------------------------------------------
def test_ort_symmetric_int8_qdq_model_passes(qdq: onnx.ModelProto) -> None:
    assert check_trt_ready(qdq) == []
    per_channel = [
        n for n in qdq.graph.node if n.name in ("conv_w_DequantizeLinear", "fc_w_DequantizeLinear")
    ]
    assert len(per_channel) == 2  # the quantizer really produced per-channel weights


def test_check_and_count_from_a_file(qdq: onnx.ModelProto, tmp_path: Path) -> None:
    path = tmp_path / "model.int8.trt.onnx"
    onnx.save(qdq, str(path))
    assert check_trt_ready(path) == []
    n_q, n_dq = count_qdq(path)
    assert (n_q, n_dq) == count_qdq(qdq)
    assert n_q == sum(n.op_type == "QuantizeLinear" for n in qdq.graph.node) > 0
    assert n_dq == sum(n.op_type == "DequantizeLinear" for n in qdq.graph.node) > n_q


def test_float_model_has_nothing_to_flag() -> None:
    model = _float_model()
    assert check_trt_ready(model) == []
    assert count_qdq(model) == (0, 0)


# --- each broken variant gives its rule ---------------------------------------------------------
def test_nonzero_zero_point(model: onnx.ModelProto) -> None:
    _set_init(model, "c_zero_point", np.array(3, dtype=np.int8))
    violations = check_trt_ready(model)
    assert _rules(violations) == {"zero-point"}
    assert {v.node for v in violations} == {"c_QuantizeLinear", "c_DequantizeLinear"}


def test_uint8_internal_tensor(model: onnx.ModelProto) -> None:
    _set_init(model, "r_zero_point", np.array(0, dtype=np.uint8))
    violations = check_trt_ready(model)
    assert _rules(violations) == {"uint8-internal"}
    assert {v.node for v in violations} == {"r_QuantizeLinear", "r_DequantizeLinear"}


def test_negative_scale(model: onnx.ModelProto) -> None:
    _set_init(model, "m_scale", -np.abs(_init(model, "m_scale")))
    violations = check_trt_ready(model)
    assert _rules(violations) == {"scale-value"}
    assert {v.node for v in violations} == {"m_QuantizeLinear", "m_DequantizeLinear"}


def test_non_constant_scale(model: onnx.ModelProto) -> None:
    model.graph.node.insert(0, helper.make_node("Abs", ["m_scale"], ["m_scale_abs"], name="scale_abs"))
    _node(model, "m_DequantizeLinear").input[1] = "m_scale_abs"
    violations = check_trt_ready(model)
    assert _rules(violations) == {"scale-not-constant"}
    assert [v.node for v in violations] == ["m_DequantizeLinear"]


def test_conv_weight_axis_mismatch(model: onnx.ModelProto) -> None:
    _set_attr(_node(model, "conv_w_DequantizeLinear"), "axis", 1)
    violations = check_trt_ready(model)
    assert _rules(violations) == {"axis"}
    assert [v.node for v in violations] == ["conv_w_DequantizeLinear"]


def test_axis_out_of_range(model: onnx.ModelProto) -> None:
    _set_attr(_node(model, "fc_w_DequantizeLinear"), "axis", 2)
    violations = check_trt_ready(model)
    assert _rules(violations) == {"axis"}
    assert "out of range" in violations[0].message


def test_int32_dequantize_of_a_quantized_bias(model: onnx.ModelProto) -> None:
    bias = _init(model, "conv_b")
    _set_init(model, "conv_b_int32", np.round(bias / 1e-4).astype(np.int32))
    _set_init(model, "conv_b_scale", np.array(1e-4, dtype=np.float32))
    model.graph.node.insert(
        0,
        helper.make_node(
            "DequantizeLinear",
            ["conv_b_int32", "conv_b_scale"],
            ["conv_b_dq"],
            name="conv_b_DequantizeLinear",
        ),
    )
    _node(model, "conv").input[2] = "conv_b_dq"
    violations = check_trt_ready(model)
    assert _rules(violations) == {"int32-dequantize"}
    assert [v.node for v in violations] == ["conv_b_DequantizeLinear"]


def test_qoperator_model(tmp_path: Path) -> None:
    qop = _quantize(tmp_path, QuantFormat.QOperator)
    violations = check_trt_ready(qop)
    assert _rules(violations) == {"qoperator"}
    assert any("QLinearConv" in v.message for v in violations)


def test_com_microsoft_op(model: onnx.ModelProto) -> None:
    relu = _node(model, "relu")
    relu.op_type, relu.domain = "Gelu", "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    violations = check_trt_ready(model)
    assert _rules(violations) == {"custom-domain"}
    assert [v.node for v in violations] == ["relu"]


def test_op_the_parser_does_not_support(model: onnx.ModelProto) -> None:
    _node(model, "relu").op_type = "Det"
    violations = check_trt_ready(model)
    assert _rules(violations) == {"unsupported-op"}
    assert str(violations[0]) == "relu: Det is not supported by the TensorRT ONNX parser"


def test_op_newer_than_the_oldest_target(model: onnx.ModelProto) -> None:
    _node(model, "relu").op_type = "RMSNormalization"
    violations = check_trt_ready(model)
    assert _rules(violations) == {"unsupported-op"}
    assert "10.15" in violations[0].message
    assert check_trt_ready(model, min_tensorrt=(10, 15)) == []


def test_dynamic_spatial_dim(model: onnx.ModelProto) -> None:
    dim = model.graph.input[0].type.tensor_type.shape.dim[2]
    dim.Clear()
    dim.dim_param = "height"
    violations = check_trt_ready(model)
    assert _rules(violations) == {"dynamic-dim"}
    assert [v.node for v in violations] == ["images"]


def test_dynamic_batch_alone_is_fine(model: onnx.ModelProto) -> None:
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert check_trt_ready(model) == []


def test_opset_12_with_per_channel(model: onnx.ModelProto) -> None:
    model.opset_import[0].version = 12
    violations = check_trt_ready(model)
    assert _rules(violations) == {"opset"}
    assert len(violations) == 1
    assert "2 per-channel" in violations[0].message


# --- finer points -----------------------------------------------------------------------------
def test_constant_node_scale_is_constant(model: onnx.ModelProto) -> None:
    value = _init(model, "r_scale")
    model.graph.node.insert(
        0, helper.make_node("Constant", [], ["r_scale_c"], name="r_scale_const", value_float=float(value))
    )
    for name in ("r_QuantizeLinear", "r_DequantizeLinear"):
        _node(model, name).input[1] = "r_scale_c"
    assert check_trt_ready(model) == []


def test_quantize_without_zero_point_is_uint8(model: onnx.ModelProto) -> None:
    for name in ("r_QuantizeLinear", "r_DequantizeLinear"):
        del _node(model, name).input[2]
    violations = check_trt_ready(model)
    assert _rules(violations) == {"uint8-internal"}


def _mini(
    op: str, weight_shape: tuple[int, int], axis: int, *, trans_b: int | None = None
) -> onnx.ModelProto:
    """x (N, K) -> op with a per-channel int8 weight -> y."""
    k = weight_shape[1] if trans_b else weight_shape[0]
    out = weight_shape[0] if trans_b else weight_shape[1]
    n_scales = weight_shape[axis]
    inits = [
        numpy_helper.from_array(np.ones(weight_shape, dtype=np.int8), "w_q"),
        numpy_helper.from_array(np.full((n_scales,), 0.1, dtype=np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros((n_scales,), dtype=np.int8), "w_zp"),
    ]
    attrs: dict[str, Any] = {"transB": trans_b} if trans_b is not None else {}
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_dq", axis=axis),
        helper.make_node(op, ["x", "w"], ["y"], name="layer", **attrs),
    ]
    graph = helper.make_graph(
        nodes,
        "mini",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", out])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("op", "shape", "axis", "trans_b", "ok"),
    [
        ("MatMul", (8, 8), 1, None, True),
        ("MatMul", (8, 8), -1, None, True),
        ("MatMul", (8, 8), 0, None, False),
        ("Gemm", (8, 8), 0, 1, True),
        ("Gemm", (8, 8), 1, 1, False),
        ("Gemm", (8, 8), 1, 0, True),
        ("Gemm", (8, 8), 0, 0, False),
    ],
)
def test_weight_output_channel_axis(
    op: str, shape: tuple[int, int], axis: int, trans_b: int | None, ok: bool
) -> None:
    violations = check_trt_ready(_mini(op, shape, axis, trans_b=trans_b))
    if ok:
        assert violations == []
    else:
        assert _rules(violations) == {"axis"}
        assert "output-channel axis" in violations[0].message


def test_per_channel_activation(model: onnx.ModelProto) -> None:
    # g is (N, 4, 1, 1): a per-channel scale along axis 1 is shape-valid but not allowed on activations
    scale = float(_init(model, "r_scale"))
    _set_init(model, "r_scale_pc", np.full((4,), scale, dtype=np.float32))
    _set_init(model, "r_zp_pc", np.zeros((4,), dtype=np.int8))
    for name in ("r_QuantizeLinear", "r_DequantizeLinear"):
        node = _node(model, name)
        node.input[1], node.input[2] = "r_scale_pc", "r_zp_pc"
        _set_attr(node, "axis", 1)
    violations = check_trt_ready(model)
    assert _rules(violations) == {"per-channel-activation"}


def test_uint8_network_input_is_refused() -> None:
    """onnx-tensorrt docs/operators.md: DequantizeLinear takes INT8 and FP8 only, a graph input too."""
    nodes = [helper.make_node("DequantizeLinear", ["pixels", "s", "zp"], ["x"], name="dq")]
    nodes.append(helper.make_node("Relu", ["x"], ["y"], name="relu"))
    graph = helper.make_graph(
        nodes,
        "u8io",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 4, 4])],
        [
            numpy_helper.from_array(np.array(0.02, dtype=np.float32), "s"),
            numpy_helper.from_array(np.array(0, dtype=np.uint8), "zp"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    violations = check_trt_ready(model)
    assert _rules(violations) == {"uint8-io"} and {v.node for v in violations} == {"dq"}
    assert "pixels" in str(violations[0])


def test_violation_is_one_line() -> None:
    v = Violation(node="conv", rule="axis", message="bad axis")
    assert str(v) == "conv: bad axis"


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        check_trt_ready(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 not a protobuf \x13\x37" * 10)
    with pytest.raises(UserError):
        count_qdq(junk)
