"""Describe an ONNX model, a manifest or a run directory as plain data (the CLI prints it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from levit_edge.errors import UserError
from levit_edge.export.ort_format import is_firmware_file, operators_of
from levit_edge.io import read_json, sha256_file
from levit_edge.runs.layout import MANIFEST
from levit_edge.runs.manifest import DIGEST_KEY, seal

if TYPE_CHECKING:  # onnx is imported only to describe a model: a run directory needs just its manifest
    import onnx


def _shape(vi: onnx.ValueInfoProto) -> list[int | str] | None:
    """Dims of a tensor input/output; None where it is no tensor or has no shape (a sequence, no type)."""
    kind = vi.type.WhichOneof("value")
    if kind not in ("tensor_type", "sparse_tensor_type"):
        return None
    tensor = getattr(vi.type, kind)
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]


def _elem(vi: onnx.ValueInfoProto) -> str:
    """The element type (``float32``), or what the value is when it is no tensor of a known type: a valid
    ONNX graph may declare a sequence, a map, an optional, or no type at all."""
    return _type_text(vi.type)


def _type_text(tp: onnx.TypeProto) -> str:
    from onnx import helper

    kind = tp.WhichOneof("value")
    if kind is None:
        return "(no type)"
    if kind in ("tensor_type", "sparse_tensor_type"):
        elem = getattr(tp, kind).elem_type
        try:
            name = str(helper.tensor_dtype_to_np_dtype(elem).name)
        except (KeyError, TypeError, ValueError):
            name = "undefined" if elem == 0 else f"elem_type {elem}"
        return name if kind == "tensor_type" else f"sparse {name}"
    if kind == "sequence_type":
        return f"sequence of {_type_text(tp.sequence_type.elem_type)}"
    if kind == "optional_type":
        return f"optional {_type_text(tp.optional_type.elem_type)}"
    if kind == "map_type":
        return f"map to {_type_text(tp.map_type.value_type)}"
    return kind.removesuffix("_type")


def describe_onnx(path: Path) -> dict[str, Any]:
    """Inputs, outputs, opset, op histogram, Q/DQ count and levit-edge metadata of an ONNX file."""
    from levit_edge.export.onnx import load_onnx, op_histogram, read_metadata

    model = load_onnx(path)
    ops = op_histogram(model)
    meta: dict[str, Any] = {}
    for key, value in read_metadata(model).items():
        try:
            meta[key] = json.loads(value) if value[:1] in "[{" else value
        except json.JSONDecodeError:
            meta[key] = value
    return {
        "kind": "onnx",
        "path": str(path),
        "size": path.stat().st_size,
        "opset": {op.domain or "ai.onnx": op.version for op in model.opset_import},
        "inputs": [{"name": i.name, "shape": _shape(i), "type": _elem(i)} for i in model.graph.input],
        "outputs": [{"name": o.name, "shape": _shape(o), "type": _elem(o)} for o in model.graph.output],
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "nodes": len(model.graph.node),
        "quantize_linear": ops.get("QuantizeLinear", 0),
        "dequantize_linear": ops.get("DequantizeLinear", 0),
        "metadata": meta,
    }


def describe_run(path: Path) -> dict[str, Any]:
    """The deliverables a manifest lists, with hashes, status and the run's options."""
    manifest_path = path / MANIFEST if path.is_dir() else path
    if path.is_dir() and not manifest_path.exists():
        raise UserError(f"{path} is not a complete run directory (no {MANIFEST})")
    manifest = read_json(manifest_path)
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("size"), int)
        for e in files.values()
    ):
        raise UserError(
            f"{manifest_path} is not a levit-edge manifest ('files' must map names to sha256/size)"
        )
    digest = manifest.get(DIGEST_KEY)
    return {
        "kind": "run",
        "path": str(manifest_path.parent),
        "status": manifest.get("status"),
        # False: the manifest is not as levit-edge wrote it (edited, or unsealed): its status is no proof
        "sealed": isinstance(digest, str) and seal(manifest)[DIGEST_KEY] == digest,
        "model": manifest.get("model", {}).get("name"),
        "files": manifest["files"],
        "firmware": sorted(name for name in manifest["files"] if is_firmware_file(name)),
        "command": manifest.get("command"),
        "versions": manifest.get("versions"),
    }


def describe_ort_format(path: Path) -> dict[str, Any]:
    """An ONNX Runtime format (.ort) model: loadable by ONNX Runtime, described through a session."""
    from levit_edge.backends.onnxruntime import load_session

    session = load_session(path, threads=1)
    meta = session.get_modelmeta()
    return {
        "kind": "ort-format",
        "path": str(path),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "inputs": [{"name": i.name, "shape": list(i.shape), "type": i.type} for i in session.get_inputs()],
        "outputs": [{"name": o.name, "shape": list(o.shape), "type": o.type} for o in session.get_outputs()],
        "metadata": dict(meta.custom_metadata_map),
        "operators": [op.to_dict() for op in operators_of([path])],
    }


def inspect_path(path: Path) -> dict[str, Any]:
    """Dispatch on what ``path`` is: run directory, manifest, ONNX or ORT-format model."""
    if not path.exists():
        raise UserError(f"not found: {path}")
    if path.is_dir() or path.name == MANIFEST:
        return describe_run(path)
    if path.suffix == ".ort":
        return describe_ort_format(path)
    if path.suffix == ".json":
        raise UserError(
            f"{path} is not a manifest.json; inspect takes an ONNX/.ort model, a manifest or a run directory"
        )
    return describe_onnx(path)
