"""The ``metadata_props`` that make a levit-edge ONNX model self-describing: written at export, read back
by every command that reopens a run (the one home of that contract)."""

from __future__ import annotations

import json
from pathlib import Path

from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.errors import UserError
from levit_edge.export.onnx import load_onnx, metadata_json, package_versions
from levit_edge.model.load import LoadedModel


def model_metadata(
    loaded: LoadedModel, preprocess: PreprocessConfig, class_names: tuple[str, ...] | None
) -> dict[str, str]:
    """The ONNX ``metadata_props`` of an exported model."""
    versions = package_versions()
    props = {
        "levit_edge.model": loaded.spec.name,
        "levit_edge.num_classes": str(loaded.num_classes),
        "levit_edge.preprocess": json.dumps(preprocess.to_dict(), sort_keys=True),
        "levit_edge.checkpoint_sha256": loaded.checkpoint_sha256 or "",
        "levit_edge.checkpoint_format": loaded.checkpoint_format,
        "levit_edge.checkpoint_key": loaded.checkpoint_key or "",
        "levit_edge.versions": json.dumps(versions, sort_keys=True),
    }
    if class_names:
        props["levit_edge.class_names"] = json.dumps(list(class_names))
    return props


def preprocess_from_onnx(path: Path) -> tuple[PreprocessConfig, tuple[str, ...] | None, int]:
    """Preprocessing, class names and class count recorded in a levit-edge ONNX model's metadata."""
    model = load_onnx(path)
    pre = metadata_json(model, "levit_edge.preprocess")
    if not isinstance(pre, dict):
        raise UserError(f"{path}: malformed levit_edge.preprocess metadata")
    props = {p.key: p.value for p in model.metadata_props}
    try:
        names = json.loads(props["levit_edge.class_names"]) if "levit_edge.class_names" in props else None
        num_classes = int(props.get("levit_edge.num_classes", "0"))
    except ValueError:
        raise UserError(f"{path}: malformed levit_edge.class_names / num_classes metadata") from None
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise UserError(f"{path}: malformed levit_edge.class_names metadata (not a list of names)")
    return PreprocessConfig.from_dict(pre), tuple(names) if names else None, num_classes


def fixed_batch_of(path: Path) -> int | None:
    """The fixed batch size of an exported model's input (None: dynamic)."""
    dim = load_onnx(path).graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None
