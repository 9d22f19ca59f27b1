"""Apply a saved calibration to the FP32 model with ONNX Runtime's QDQ quantizer, for one profile."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantFormat, quantize_static
from onnxruntime.quantization.calibrate import save_tensors_data

from levit_edge.errors import UserError
from levit_edge.export.ort_levers import fuse_attention
from levit_edge.io import sha256_file, write_atomic
from levit_edge.quant.calibrate import Calibration, ort_scratch
from levit_edge.quant.profiles import QuantProfile


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _root_notices_muted() -> Iterator[None]:
    """Drop the notices ONNX Runtime's quantizer logs on the *root* logger (a pre-processing hint we
    follow knowingly) for the duration of one call. A logger filter sees only records logged on the root
    logger itself, not those other loggers propagate to it; the root's level is never touched."""
    root = logging.getLogger()
    muted = _ErrorsOnly()
    root.addFilter(muted)
    try:
        yield
    finally:
        root.removeFilter(muted)


@dataclass(frozen=True)
class QuantResult:
    """What one quantization produced."""

    path: Path
    profile: str
    quantized_nodes: int
    excluded_nodes: tuple[str, ...]
    qdq_pairs: int


def quantize(
    model_path: Path,
    calibration: Calibration,
    profile: QuantProfile,
    out: Path,
    exclude: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> QuantResult:
    """Write ``out``: the QDQ model of ``profile`` built from ``calibration`` (no model re-run).

    ``exclude`` names nodes kept in float (accuracy-aware fallback).
    """
    if calibration.model_sha256 != sha256_file(model_path):
        raise UserError(
            f"calibration was computed for another model (sha256 {calibration.model_sha256[:12]}...) "
            f"than {model_path}; calibrate again"
        )
    model = onnx.load(str(model_path))
    selected = profile.select_nodes(model)
    nodes = [n for n in selected if n not in set(exclude)]
    op_types = sorted({n.op_type for n in model.graph.node if n.name in set(nodes)})
    activation_type, weight_type = profile.quant_types()
    with tempfile.TemporaryDirectory(prefix="levit-edge-quant-") as tmp:
        cache = Path(tmp) / "ranges.json"
        tensors = calibration.tensors_data()
        save_tensors_data(tensors, cache)
        tmp_out = Path(tmp) / "model.onnx"
        with _root_notices_muted(), ort_scratch(model_path, Path(tmp), out) as local:
            quantize_static(
                str(local),
                str(tmp_out),
                calibration_data_reader=None,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=op_types,
                per_channel=True,
                reduce_range=profile.reduce_range,
                activation_type=activation_type,
                weight_type=weight_type,
                nodes_to_quantize=nodes,
                calibrate_method=tensors.calibration_method,
                extra_options=profile.extra_options(),
                calibration_cache_path=str(cache),
            )
        qmodel = onnx.load(str(tmp_out))
    if profile.float_bypass:
        bypass_unquantized_consumers(qmodel, set(nodes))
    if exclude:
        read_float_inputs(qmodel, set(selected) - set(nodes))
    if profile.fuse_attention:
        # last, on the finished QDQ graph: the sensitivity ranking fuses its FP32 reference the same way
        # (ort_levers.in_layout_of) before swapping a layer's FP32 weights in, so head-major weights match
        fuse_attention(qmodel, head_major=profile.head_major)
    qmodel.producer_name = "levit-edge"
    del qmodel.metadata_props[:]
    props = {p.key: p.value for p in model.metadata_props}
    props.update(metadata or {})
    props["levit_edge.quant_profile"] = profile.name
    props["levit_edge.calibration_method"] = calibration.method
    props["levit_edge.calibration_data_hash"] = calibration.data_hash
    for key in sorted(props):
        qmodel.metadata_props.add(key=key, value=props[key])
    write_atomic(out, qmodel.SerializeToString(deterministic=True))
    pairs = sum(1 for n in qmodel.graph.node if n.op_type == "QuantizeLinear")
    return QuantResult(out, profile.name, len(nodes), tuple(sorted(set(selected) - set(nodes))), pairs)


def read_float_inputs(model: onnx.ModelProto, nodes: set[str]) -> int:
    """Make ``nodes`` (the excluded ones) read the float tensor behind any Q/DQ pair on their inputs.

    The quantizer still puts a pair on a tensor that an excluded node shares with a quantized one, and hands
    the dequantized copy to both: the "float" layer would then compute on a fake-quantized input and keep
    part of the error the fallback meant to remove. Returns the number of inputs rewired.
    """
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    rewired = 0
    for node in model.graph.node:
        if node.name not in nodes:
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in inits:
                node.input[i] = q.input[0]
                rewired += 1
    _drop_unused_qdq(model)
    return rewired


def bypass_unquantized_consumers(model: onnx.ModelProto, quantized: set[str]) -> int:
    """Let nodes outside ``quantized`` read an activation's float tensor instead of its Q/DQ copy.

    The QDQ quantizer puts one QuantizeLinear -> DequantizeLinear pair on a tensor and hands the dequantized
    copy to every consumer: a residual Add beside a quantized Gemm then adds a fake-quantized residual, and
    ONNX Runtime has to run that DequantizeLinear (it only fuses the ones feeding quantized ops). Returns the
    number of inputs rewired; pairs left without consumers are removed.
    """
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    rewired = 0
    for node in model.graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
                continue
            source = producer.get(q.input[0])
            if source is not None and source.name in quantized:
                # A quantized producer (Gemm) whose output feeds Q and another node is left unfused by ONNX
                # Runtime; with Q its only consumer it becomes a QGemm with a uint8 output.
                continue
            node.input[i] = q.input[0]
            rewired += 1
    _drop_unused_qdq(model)
    return rewired


def _drop_unused_qdq(model: onnx.ModelProto) -> None:
    outputs = {o.name for o in model.graph.output}
    used = {i for n in model.graph.node for i in n.input} | outputs
    while True:  # drop pairs nobody reads any more (DQ first, then its Q)
        dead = [
            n
            for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)
        ]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
        used = {i for n in model.graph.node for i in n.input} | outputs
