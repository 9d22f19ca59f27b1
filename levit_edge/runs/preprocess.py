"""The preprocessing a finished run is re-run with: its manifest's, checked against every model it holds.

A model's metadata is not trusted on its own: someone with write access can edit it (an absurd
``input_size`` made ``validate`` allocate until it was killed) or put a model exported at another size
in an artifact's place and re-seal the manifest. Such a run is refused with one line before any image is
decoded or any session is created.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.errors import UserError
from levit_edge.io import read_json
from levit_edge.runs.layout import MANIFEST

PREPROCESS_KEY = "levit_edge.preprocess"


def _image_size(model: Any, name: str) -> tuple[int, int] | None:
    """(H, W) of the model's first input when both are fixed; None when they are dynamic."""
    if not model.graph.input:
        raise UserError(f"{name} has no input")
    vi = model.graph.input[0]
    if vi.type.WhichOneof("value") != "tensor_type" or len(vi.type.tensor_type.shape.dim) != 4:
        raise UserError(f"{name}'s input is not an image batch (N, 3, H, W)")
    dims = vi.type.tensor_type.shape.dim
    if not (dims[2].HasField("dim_value") and dims[3].HasField("dim_value")):
        return None
    return int(dims[2].dim_value), int(dims[3].dim_value)


def run_preprocess(run_dir: Path, model_files: Iterable[str]) -> PreprocessConfig:
    """The run's preprocessing (from manifest.json where it records one, else the first model's metadata),
    after checking that every model in ``model_files`` (names in ``run_dir``, the FP32 model first) records
    the same preprocessing and takes images of that size. UserError naming the model otherwise."""
    from levit_edge.export.onnx import load_onnx

    names = [n for n in model_files if n.endswith(".onnx") and (run_dir / n).is_file()]  # not engines
    manifest = read_json(run_dir / MANIFEST) if (run_dir / MANIFEST).is_file() else {}
    recorded = manifest.get("preprocess")
    trusted: PreprocessConfig | None = None
    if recorded is not None:
        try:
            trusted = PreprocessConfig.from_dict(recorded)
        except UserError as exc:
            raise UserError(f"{run_dir / MANIFEST}: {exc}") from None
    for name in names:
        model = load_onnx(run_dir / name)
        props = {p.key: p.value for p in model.metadata_props}
        try:
            own = json.loads(props[PREPROCESS_KEY]) if PREPROCESS_KEY in props else None
        except ValueError:
            raise UserError(f"{run_dir / name}: malformed {PREPROCESS_KEY} metadata (not JSON)") from None
        if trusted is None:  # no manifest to trust (a bare folder of models): the first model's metadata
            if own is None:
                raise UserError(f"{run_dir / name} has no {PREPROCESS_KEY} metadata: not a levit-edge model")
            try:
                trusted = PreprocessConfig.from_dict(own)
            except UserError as exc:
                raise UserError(f"{run_dir / name}: {exc}") from None
        size_hw = _image_size(model, name)
        _, height, width = trusted.input_size
        if size_hw is not None and size_hw != (height, width):
            raise UserError(
                f"{run_dir / name} takes {size_hw[1]}x{size_hw[0]} images, but the run's preprocessing is "
                f"{width}x{height}: the run mixes models of different sizes; refusing to use it"
            )
        if own is not None and own != trusted.to_dict() and own != recorded:
            size = own.get("input_size") if isinstance(own, dict) else own
            raise UserError(
                f"{run_dir / name}'s {PREPROCESS_KEY} metadata (input_size {size}) differs from the run's "
                f"{MANIFEST} preprocess (input_size {list(trusted.input_size)}): refusing to use the run"
            )
    if trusted is None:
        raise UserError(f"{run_dir} has no model to take its preprocessing from")
    return trusted
