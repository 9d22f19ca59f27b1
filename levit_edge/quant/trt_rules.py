"""Static checks that a Q/DQ ONNX model suits TensorRT explicit quantization (``check-trt``).

Pure ``onnx``: nothing here imports TensorRT, so the check runs on any machine before an engine is
built on the GPU host. The rules follow TensorRT's explicit-quantization requirements (the "Explicit
Quantization" section of NVIDIA's TensorRT developer guide) and the ONNX parser's operator support
matrix (onnx-tensorrt ``docs/operators.md``):

* ``opset``: the default-domain opset is at least 13 (per-channel ``axis`` needs it);
* ``qoperator``: no QOperator-format ops (QLinearConv, MatMulInteger, ...): Q/DQ format only;
* ``custom-domain``: no ops outside the ONNX default domain (``com.microsoft`` and others);
* ``unsupported-op``: only ops the TensorRT ONNX parser supports, at the oldest TensorRT targeted;
* ``zero-point``: every Q/DQ zero point is a constant 0 (symmetric quantization);
* ``uint8-internal`` / ``uint8-io`` / ``quant-type``: quantized tensors are INT8. The ONNX parser's
  QuantizeLinear/DequantizeLinear take INT8 (and FP8), never UINT8, network inputs and outputs
  included (onnx-tensorrt ``docs/operators.md``): TensorRT's UINT8 I/O is a plain typed tensor, not Q/DQ;
* ``int32-dequantize``: no INT32 DequantizeLinear (quantized bias): keep biases in float;
* ``scale-not-constant`` / ``scale-value`` / ``scale-rank``: scales are constant, finite, > 0,
  scalar (per-tensor) or 1-D (per-channel);
* ``axis``: a per-channel axis lies within the tensor's rank, matches the scale's length and is the
  weight's output-channel axis (Conv 0; MatMul with a constant [in, out] weight 1; Gemm 0 when
  ``transB=1``, else 1);
* ``per-channel-activation``: per-channel scales only on constant (weight) tensors;
* ``dynamic-dim``: only dim 0 (batch) of graph inputs and outputs may be dynamic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from levit_edge.errors import UserError

__all__ = [
    "DEFAULT_MIN_TENSORRT",
    "NEWER_TENSORRT_OPS",
    "QOPERATOR_OPS",
    "TENSORRT_ONNX_OPS",
    "Violation",
    "check_trt_ready",
    "count_qdq",
    "read_onnx_model",
]

#: Oldest TensorRT the checked model must build on: JetPack 6.1/6.2 ship TensorRT 10.3.
DEFAULT_MIN_TENSORRT: tuple[int, int] = (10, 3)

#: ONNX default-domain ops the TensorRT 10.x ONNX parser supports ("Y" rows of onnx-tensorrt
#: docs/operators.md for TensorRT 10.15; the ops added after 10.3 are in NEWER_TENSORRT_OPS).
TENSORRT_ONNX_OPS: frozenset[str] = frozenset(
    {
        "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
        "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
        "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum",
        "DeformConv", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu",
        "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements",
        "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater",
        "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU", "HardSigmoid", "HardSwish",
        "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN",
        "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop",
        "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean",
        "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression",
        "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu",
        "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
        "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
        "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
        "Relu", "Reshape", "Resize", "ReverseSequence", "RNN", "RoiAlign", "Round", "ScaledTanh",
        "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid",
        "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth",
        "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK",
        "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
    }
)  # fmt: skip

#: Ops the parser gained after TensorRT 10.3 (onnx-tensorrt CHANGELOG), with the first version.
NEWER_TENSORRT_OPS: dict[str, tuple[int, int]] = {
    "BlackmanWindow": (10, 4),
    "HammingWindow": (10, 4),
    "HannWindow": (10, 4),
    "STFT": (10, 5),
    "Attention": (10, 14),
    "RMSNormalization": (10, 15),
    "RotaryEmbedding": (10, 15),
    "TensorScatter": (10, 15),
}

#: QOperator-format ops (quantized kernels as single nodes); TensorRT wants Q/DQ format instead.
#: Anything named ``QLinear*`` counts as well.
QOPERATOR_OPS: frozenset[str] = frozenset(
    {
        "ConvInteger",
        "MatMulInteger",
        "QGemm",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QAttention",
        "QEmbedLayerNormalization",
    }
)

_DEFAULT_DOMAINS = ("", "ai.onnx")
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_MIN_OPSET = 13

_TYPE_NAMES = {value: name for name, value in TensorProto.DataType.items()}


@dataclass(frozen=True)
class Violation:
    """One broken rule: the node (or graph input/output) at fault, the rule id and a message."""

    node: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.node}: {self.message}"


def read_onnx_model(model: onnx.ModelProto | Path | str) -> tuple[onnx.ModelProto, Path | None]:
    """Return the model (loaded without external weights) and the folder external data lives in."""
    if isinstance(model, onnx.ModelProto):
        return model, None
    path = Path(model)
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    try:
        loaded = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError; onnx may raise its own types
        raise UserError(f"{path} is not a readable ONNX model: {exc}") from exc
    return loaded, path.parent


def count_qdq(model: onnx.ModelProto | Path | str) -> tuple[int, int]:
    """Number of (QuantizeLinear, DequantizeLinear) nodes in the main graph and its subgraphs."""
    proto, _ = read_onnx_model(model)
    n_q = n_dq = 0
    for node in _walk_nodes(proto.graph):
        if node.domain in _DEFAULT_DOMAINS:
            if node.op_type == "QuantizeLinear":
                n_q += 1
            elif node.op_type == "DequantizeLinear":
                n_dq += 1
    return n_q, n_dq


def check_trt_ready(
    model: onnx.ModelProto | Path | str,
    *,
    min_tensorrt: tuple[int, int] = DEFAULT_MIN_TENSORRT,
) -> list[Violation]:
    """List every way the model breaks TensorRT's explicit-quantization rules (empty: ready).

    ``min_tensorrt`` is the oldest TensorRT the model must build on; ops the ONNX parser only
    gained later are flagged as ``unsupported-op``.
    """
    proto, base_dir = read_onnx_model(model)
    return _Checker(proto, base_dir, min_tensorrt).run()


def _walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk_nodes(sub)


def _type_name(elem_type: int) -> str:
    return _TYPE_NAMES.get(elem_type, str(elem_type))


class _Checker:
    def __init__(self, model: onnx.ModelProto, base_dir: Path | None, min_tensorrt: tuple[int, int]):
        self.model = model
        self.graph = model.graph
        self.base_dir = base_dir
        self.min_tensorrt = min_tensorrt
        self.violations: list[Violation] = []
        self.initializers: dict[str, TensorProto] = {t.name: t for t in self.graph.initializer}
        self.constants: dict[str, TensorProto] = {}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in self.graph.node:
            for out in node.output:
                if out:
                    self.producers[out] = node
            for idx, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, idx))
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS and node.output:
                value = _constant_value(node)
                if value is not None:
                    self.constants[node.output[0]] = value
        self.graph_inputs = {vi.name: vi for vi in self.graph.input if vi.name not in self.initializers}
        self.graph_outputs = {vi.name: vi for vi in self.graph.output}
        self.value_infos = {vi.name: vi for vi in self.graph.value_info}
        self.node_names: dict[int, str] = {}
        for index, node in enumerate(self.graph.node):
            self.node_names[id(node)] = node.name or f"{node.op_type}#{index}"

    # --- helpers -------------------------------------------------------------------------------
    def add(self, node: str, rule: str, message: str) -> None:
        self.violations.append(Violation(node=node, rule=rule, message=message))

    def name_of(self, node: onnx.NodeProto) -> str:
        return self.node_names.get(id(node)) or node.name or node.op_type

    def constant(self, name: str) -> TensorProto | None:
        return self.initializers.get(name) or self.constants.get(name)

    def array(self, tensor: TensorProto) -> np.ndarray:
        base = str(self.base_dir) if self.base_dir is not None else ""
        return np.asarray(numpy_helper.to_array(tensor, base_dir=base))

    def opset(self) -> int | None:
        for entry in self.model.opset_import:
            if entry.domain in _DEFAULT_DOMAINS:
                return int(entry.version)
        return None

    def tensor_elem_type(self, name: str) -> int | None:
        """Element type of a tensor, from constants, Q producers or declared value infos."""
        const = self.constant(name)
        if const is not None:
            return int(const.data_type)
        producer = self.producers.get(name)
        if producer is not None and producer.op_type == "QuantizeLinear":
            return self.quantize_output_type(producer)
        for table in (self.graph_inputs, self.value_infos, self.graph_outputs):
            info = table.get(name)
            if info is not None and info.type.HasField("tensor_type"):
                elem = int(info.type.tensor_type.elem_type)
                if elem != TensorProto.UNDEFINED:
                    return elem
        return None

    def quantize_output_type(self, node: onnx.NodeProto) -> int:
        for attr in node.attribute:
            if attr.name == "output_dtype" and attr.i:
                return int(attr.i)
        if len(node.input) > 2 and node.input[2]:
            zp_type = self.tensor_elem_type(node.input[2])
            if zp_type is not None:
                return zp_type
        return TensorProto.UINT8  # the ONNX default when no zero point is given

    def weight_source(self, name: str) -> TensorProto | None:
        """The constant behind a tensor: itself, or the input of the QuantizeLinear producing it
        (weights quantized in the graph, ORT's ``AddQDQPairToWeight``); None for activations."""
        const = self.constant(name)
        if const is not None:
            return const
        producer = self.producers.get(name)
        if producer is not None and producer.op_type == "QuantizeLinear" and producer.input:
            return self.constant(producer.input[0])
        return None

    # --- rules ---------------------------------------------------------------------------------
    def run(self) -> list[Violation]:
        self.check_opset()
        self.check_graph_io()
        for node in _walk_nodes(self.graph):
            self.check_op(node)
        for node in self.graph.node:
            if node.domain in _DEFAULT_DOMAINS and node.op_type in _QDQ_OPS:
                self.check_qdq(node)
        return self.violations

    def check_opset(self) -> None:
        opset = self.opset()
        if opset is not None and opset < _MIN_OPSET:
            per_channel = sum(1 for node in self.graph.node if self.is_per_channel(node))
            extra = f"; {per_channel} per-channel Q/DQ node(s) need it" if per_channel else ""
            self.add(
                "<model>",
                "opset",
                f"default-domain opset is {opset}; TensorRT explicit quantization needs opset >= "
                f"{_MIN_OPSET} (per-channel Q/DQ axis){extra}",
            )

    def is_per_channel(self, node: onnx.NodeProto) -> bool:
        """A Q/DQ node with a constant 1-D scale of more than one value."""
        if node.op_type not in _QDQ_OPS or len(node.input) < 2:
            return False
        const = self.constant(node.input[1])
        return const is not None and len(const.dims) == 1 and const.dims[0] > 1

    def check_graph_io(self) -> None:
        for kind, infos in (("input", self.graph_inputs), ("output", self.graph_outputs)):
            for name, info in infos.items():
                tensor_type = info.type.tensor_type
                if not tensor_type.HasField("shape"):
                    if kind == "input":
                        self.add(name, "dynamic-dim", "graph input has no static shape")
                    continue
                for axis, dim in enumerate(tensor_type.shape.dim):
                    if axis == 0 or dim.HasField("dim_value"):
                        continue
                    label = dim.dim_param or "?"
                    self.add(
                        name,
                        "dynamic-dim",
                        f"graph {kind} dim {axis} is dynamic ('{label}'); only the batch dim "
                        "(dim 0) may be dynamic",
                    )

    def check_op(self, node: onnx.NodeProto) -> None:
        name = self.name_of(node)
        op = node.op_type
        if op.startswith("QLinear") or op in QOPERATOR_OPS:
            domain = f"{node.domain}::" if node.domain not in _DEFAULT_DOMAINS else ""
            self.add(
                name,
                "qoperator",
                f"{domain}{op} is a QOperator-format op; TensorRT needs the QDQ format",
            )
        elif node.domain not in _DEFAULT_DOMAINS:
            self.add(
                name,
                "custom-domain",
                f"{node.domain}::{op} is outside the ONNX default domain; the TensorRT ONNX "
                "parser does not support it",
            )
        elif op in NEWER_TENSORRT_OPS:
            needed = NEWER_TENSORRT_OPS[op]
            if needed > self.min_tensorrt:
                self.add(
                    name,
                    "unsupported-op",
                    f"{op} needs TensorRT >= {needed[0]}.{needed[1]}; the oldest target is "
                    f"{self.min_tensorrt[0]}.{self.min_tensorrt[1]}",
                )
        elif op not in TENSORRT_ONNX_OPS:
            self.add(name, "unsupported-op", f"{op} is not supported by the TensorRT ONNX parser")

    def check_qdq(self, node: onnx.NodeProto) -> None:
        name = self.name_of(node)
        if len(node.input) < 2:
            return  # malformed; onnx.checker reports it
        is_dq = node.op_type == "DequantizeLinear"
        self.check_quantized_type(node, name, is_dq)
        self.check_zero_point(node, name)
        scale = self.check_scale(node, name)
        if scale is not None and scale.ndim == 1 and scale.size > 1:
            self.check_per_channel(node, name, scale.size, is_dq)

    def check_quantized_type(self, node: onnx.NodeProto, name: str, is_dq: bool) -> None:
        if is_dq:
            quantized = node.input[0]
            elem = self.tensor_elem_type(quantized)
            if elem is None and len(node.input) > 2 and node.input[2]:
                elem = self.tensor_elem_type(node.input[2])
            is_network_io = quantized in self.graph_inputs
        else:
            quantized = node.output[0] if node.output else ""
            elem = self.quantize_output_type(node)
            is_network_io = quantized in self.graph_outputs
        if elem is None or elem == TensorProto.INT8:
            return
        if elem == TensorProto.INT32 and is_dq:
            self.add(
                name,
                "int32-dequantize",
                "DequantizeLinear of INT32 (a quantized bias) is not accepted by TensorRT; keep "
                "biases in float (QuantizeBias=False)",
            )
        elif elem == TensorProto.UINT8:
            if is_network_io:
                self.add(
                    name,
                    "uint8-io",
                    f"network {'input' if is_dq else 'output'} '{quantized}' is UINT8 through "
                    f"{node.op_type}; the TensorRT ONNX parser takes INT8 there, not UINT8 (Cast a UINT8 "
                    "input to float instead)",
                )
            else:
                self.add(
                    name,
                    "uint8-internal",
                    f"quantized tensor '{quantized}' is UINT8; TensorRT needs INT8",
                )
        else:
            self.add(
                name,
                "quant-type",
                f"quantized tensor '{quantized}' is {_type_name(elem)}; TensorRT explicit "
                "INT8 quantization needs INT8",
            )

    def check_zero_point(self, node: onnx.NodeProto, name: str) -> None:
        if len(node.input) < 3 or not node.input[2]:
            return
        zp_name = node.input[2]
        const = self.constant(zp_name)
        if const is None:
            self.add(name, "zero-point", f"zero point '{zp_name}' is not a constant")
            return
        values = self.array(const)
        if np.any(values != 0):
            shown = np.unique(values)[:4].tolist()
            self.add(
                name,
                "zero-point",
                f"zero point '{zp_name}' is {shown}; TensorRT needs symmetric quantization (zero point 0)",
            )

    def check_scale(self, node: onnx.NodeProto, name: str) -> np.ndarray | None:
        scale_name = node.input[1]
        const = self.constant(scale_name)
        if const is None:
            self.add(
                name,
                "scale-not-constant",
                f"scale '{scale_name}' is computed in the graph; TensorRT needs a constant "
                "(initializer or Constant node)",
            )
            return None
        scale = self.array(const).astype(np.float64)
        if scale.ndim > 1:
            self.add(
                name,
                "scale-rank",
                f"scale '{scale_name}' has shape {list(scale.shape)}; use a scalar (per-tensor) "
                "or a 1-D scale (per-channel)",
            )
            return None
        bad = ~np.isfinite(scale) | (scale <= 0)
        if np.any(bad):
            shown = np.unique(scale[bad])[:4].tolist()
            self.add(
                name,
                "scale-value",
                f"scale '{scale_name}' has {int(bad.sum())} value(s) that are not finite and "
                f"positive: {shown}",
            )
        return scale

    def check_per_channel(self, node: onnx.NodeProto, name: str, n_scales: int, is_dq: bool) -> None:
        axis = 1
        for attr in node.attribute:
            if attr.name == "axis":
                axis = int(attr.i)
        quantized = node.input[0]
        source = self.weight_source(quantized)
        if source is None:
            self.add(
                name,
                "per-channel-activation",
                f"per-channel scale on activation '{quantized}'; TensorRT quantizes activations "
                "per-tensor only (per-channel is for weights)",
            )
            return
        shape = [int(d) for d in source.dims]
        rank = len(shape)
        if not -rank <= axis < rank:
            self.add(name, "axis", f"axis {axis} is out of range for a rank-{rank} tensor")
            return
        axis %= rank
        if shape[axis] != n_scales:
            self.add(
                name,
                "axis",
                f"{n_scales} scales but axis {axis} of '{quantized}' has {shape[axis]} elements "
                f"(shape {shape})",
            )
            return
        if not is_dq or not node.output:
            return
        for consumer, index in self.consumers.get(node.output[0], []):
            expected = self.expected_weight_axis(consumer, index, shape)
            if expected is not None and axis != expected:
                self.add(
                    name,
                    "axis",
                    f"per-channel axis {axis} on the weight of {consumer.op_type} "
                    f"'{self.name_of(consumer)}'; its output-channel axis is {expected}",
                )

    @staticmethod
    def expected_weight_axis(consumer: onnx.NodeProto, index: int, shape: list[int]) -> int | None:
        if index != 1:
            return None
        if consumer.op_type == "Conv":
            return 0
        if consumer.op_type == "MatMul" and len(shape) >= 2:
            return len(shape) - 1
        if consumer.op_type == "Gemm":
            trans_b = next((int(a.i) for a in consumer.attribute if a.name == "transB"), 0)
            return 0 if trans_b else 1
        return None


def _constant_value(node: onnx.NodeProto) -> TensorProto | None:
    """The tensor a Constant node produces, for the attribute forms a scale could take."""
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            return attr.t
        if attr.name == "value_float":
            return numpy_helper.from_array(np.array(attr.f, dtype=np.float32))
        if attr.name == "value_floats":
            return numpy_helper.from_array(np.array(list(attr.floats), dtype=np.float32))
        if attr.name == "value_int":
            return numpy_helper.from_array(np.array(attr.i, dtype=np.int64))
        if attr.name == "value_ints":
            return numpy_helper.from_array(np.array(list(attr.ints), dtype=np.int64))
    return None
