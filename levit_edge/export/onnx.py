"""Export a fused LeViT to ONNX, check it, stamp its metadata, and verify it against PyTorch."""

from __future__ import annotations

import io
import json
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from levit_edge.errors import UserError
from levit_edge.settings import DEFAULT_OPSET

if TYPE_CHECKING:  # torch is imported where a model is exported: inspect and check-trt start without it
    from torch import nn

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
MIN_OPSET = 13
MAX_OPSET = 21
# Ops a fused LeViT must not contain: their presence means a fold or the bias baking failed.
FORBIDDEN_OPS = frozenset({"BatchNormalization", "Gather", "GatherElements", "GatherND"})


@dataclass(frozen=True)
class ExportSettings:
    """How the ONNX graph is produced."""

    opset: int = DEFAULT_OPSET
    batch: int | None = None  # None: dynamic batch dimension

    def __post_init__(self) -> None:
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UserError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {self.opset}")
        if self.batch is not None and self.batch < 1:
            raise UserError(f"--batch must be at least 1 (or omitted for a dynamic batch), got {self.batch}")


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the artifacts."""
    out: dict[str, str] = {}
    for name in ("levit-edge", "torch", "timm", "onnx", "onnxruntime", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def export_onnx(
    fused: nn.Module,
    input_size: tuple[int, int, int],
    settings: ExportSettings,
    metadata_props: Mapping[str, str],
) -> bytes:
    """Export ``fused`` (fp32, eval) to serialized ONNX bytes with named I/O and metadata.

    The bytes are deterministic for the same model and settings: no timestamps or random names.
    """
    import torch

    fused = fused.float().cpu().eval()
    batch = settings.batch or 1
    dummy = torch.zeros(batch, *input_size)
    buf = io.BytesIO()
    dynamic_axes = None if settings.batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation notices
        torch.onnx.export(
            fused,
            (dummy,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter writes to any binary file object
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            opset_version=settings.opset,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    _inline_identity_initializers(model)
    model.producer_name = "levit-edge"
    model.producer_version = package_versions()["levit-edge"]
    del model.metadata_props[:]
    for key in sorted(metadata_props):
        model.metadata_props.add(key=key, value=metadata_props[key])
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)


def _inline_identity_initializers(model: onnx.ModelProto) -> None:
    """Replace ``Identity(initializer)`` nodes, which the exporter emits for deduplicated equal weights,
    with a copy of the initializer: quantizers only treat direct initializers as weights."""
    inits = {i.name: i for i in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    unused = [i for i in model.graph.initializer if i.name not in used]
    for init in unused:
        model.graph.initializer.remove(init)


def op_histogram(model: onnx.ModelProto) -> Counter[str]:
    """Count of each op type in the main graph (domain-qualified when not the default domain)."""
    return Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in model.graph.node
    )


def check_graph(model: onnx.ModelProto) -> None:
    """Assert the exported graph has the shape the fused model promises; raise RuntimeError if not."""
    ops = op_histogram(model)
    bad = sorted(op for op in ops if op in FORBIDDEN_OPS)
    if bad:
        raise RuntimeError(f"exported graph still contains {', '.join(bad)}: fusion is incomplete")


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The model's ``metadata_props`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def metadata_json(model: onnx.ModelProto, key: str) -> object:
    """Decode one JSON-valued metadata entry written by levit-edge."""
    props = read_metadata(model)
    if key not in props:
        raise UserError(f"ONNX model has no '{key}' metadata: was it exported by levit-edge?")
    try:
        return json.loads(props[key])
    except ValueError:
        raise UserError(f"ONNX model's '{key}' metadata is not valid JSON") from None


def verify_with_onnxruntime(
    onnx_bytes: bytes, fused: nn.Module, images: np.ndarray, tol: float = 1e-4
) -> float:
    """Run the ONNX model in ONNX Runtime (CPU) and compare with the fused PyTorch model."""
    import torch

    from levit_edge.backends.onnxruntime import OnnxRuntimeRunner
    from levit_edge.model.fuse import max_relative_diff

    with torch.no_grad():
        ref = fused.float().cpu().eval()(torch.from_numpy(images))
    with OnnxRuntimeRunner(onnx_bytes, threads=None, optimization="all") as runner:
        out = runner.infer(images)
    diff = max_relative_diff(ref, torch.from_numpy(out))
    if not diff <= tol:
        raise RuntimeError(
            f"ONNX Runtime output differs from PyTorch by {diff:.3g} of the logit range (> {tol})"
        )
    return diff


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load an ONNX file, turning a missing or unreadable file into one clear user error."""
    if not path.exists():
        raise UserError(f"file not found: {path}")
    if not path.is_file():
        raise UserError(f"not a file: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError, onnx raises various errors
        raise UserError(f"{path} is not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise UserError(f"{path} is not an ONNX model (no graph nodes)")
    return model
