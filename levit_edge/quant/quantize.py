"""Apply a saved calibration to the FP32 model with ONNX Runtime's QDQ quantizer, for one profile."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantFormat, quantize_static
from onnxruntime.quantization.calibrate import save_tensors_data

from levit_edge.errors import UserError
from levit_edge.model.load import sha256_file
from levit_edge.quant.calibrate import Calibration
from levit_edge.quant.profiles import QuantProfile
from levit_edge.report.manifest import write_atomic


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
        logging.getLogger().setLevel(logging.ERROR)  # ORT logs a pre-processing hint we follow knowingly
        quantize_static(
            str(model_path),
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
