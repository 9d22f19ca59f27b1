"""ONNX export of a fused LeViT loaded from a real checkpoint: graph contents, I/O names and shapes,
ONNX Runtime agreement at several batch sizes, byte-for-byte determinism, metadata, opsets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import logits, random_images, random_levit, save_state_dict
from onnx import helper

from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.errors import UserError
from levit_edge.export.metadata import model_metadata
from levit_edge.export.onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportSettings,
    check_graph,
    export_onnx,
    metadata_json,
    op_histogram,
    read_metadata,
    verify_with_onnxruntime,
)
from levit_edge.model.fuse import FusedLevit, fuse_levit, max_relative_diff
from levit_edge.model.load import LoadedModel, ModelSpec, load_model

NAME = "levit_128s"
IMG = 112
CLASSES = 10
CLASS_NAMES = tuple(f"class_{i:02d}" for i in range(CLASSES))
TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """Two small cores shared with other jobs: one intra-op thread avoids OpenMP oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class Exported:
    checkpoint: Path
    loaded: LoadedModel
    preprocess: PreprocessConfig
    fused: FusedLevit
    meta: dict[str, str]
    dynamic: bytes
    fixed: bytes


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    checkpoint = save_state_dict(
        random_levit(NAME, CLASSES, IMG, seed=21), tmp_path_factory.mktemp("ck") / "w.pth"
    )
    loaded = load_model(ModelSpec(NAME, checkpoint=checkpoint, img_size=IMG))
    preprocess = PreprocessConfig.from_model(loaded.model)
    fused = fuse_levit(loaded.model)
    meta = model_metadata(loaded, preprocess, CLASS_NAMES)
    dynamic = export_onnx(fused, preprocess.input_size, ExportSettings(), meta)
    fixed = export_onnx(fused, preprocess.input_size, ExportSettings(batch=4), meta)
    return Exported(checkpoint, loaded, preprocess, fused, meta, dynamic, fixed)


def _session(model: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in value.type.tensor_type.shape.dim]


# ---- graph ------------------------------------------------------------------------------------------


def test_graph_has_no_dynamic_or_unfused_ops(exported: Exported) -> None:
    graph = onnx.load_from_string(exported.dynamic)
    ops = op_histogram(graph)
    for op in (
        "BatchNormalization",
        "Gather",
        "GatherElements",
        "GatherND",
        "Identity",
        "Shape",
        "If",
        "Loop",
    ):
        assert op not in ops, f"{op} in exported graph: {dict(ops)}"
    check_graph(graph)  # the production check agrees
    hardswish_modules = sum(isinstance(m, torch.nn.Hardswish) for m in exported.fused.modules())
    assert hardswish_modules > 0
    assert ops["HardSwish"] == hardswish_modules
    assert ops["Softmax"] == 11  # one per attention block of LeViT-128S (2+3+4 blocks, 2 subsamples)
    assert ops.get("Mul", 0) == 0  # key_dim 16: the attention scale is folded into the weights
    assert graph.opset_import[0].version == 17


def test_every_initializer_is_used_and_the_checker_passes(exported: Exported) -> None:
    graph = onnx.load_from_string(exported.dynamic)
    onnx.checker.check_model(graph, full_check=True)
    used = {i for node in graph.graph.node for i in node.input}
    assert [i.name for i in graph.graph.initializer if i.name not in used] == []


@pytest.mark.parametrize("op", ["BatchNormalization", "Gather"])
def test_check_graph_rejects_unfused_ops(op: str) -> None:
    """check_graph must be able to fail: a graph holding a forbidden op is refused."""
    node = helper.make_node(
        op, ["x", "s", "b", "m", "v"] if op == "BatchNormalization" else ["x", "i"], ["y"]
    )
    graph = helper.make_graph([node], "g", [], [])
    with pytest.raises(RuntimeError, match=op):
        check_graph(helper.make_model(graph))


# ---- inputs and outputs -----------------------------------------------------------------------------


def test_dynamic_batch_io(exported: Exported) -> None:
    graph = onnx.load_from_string(exported.dynamic).graph
    assert [i.name for i in graph.input] == [INPUT_NAME] == ["images"]
    assert [o.name for o in graph.output] == [OUTPUT_NAME] == ["logits"]
    in_dims, out_dims = _dims(graph.input[0]), _dims(graph.output[0])
    assert isinstance(in_dims[0], str) and in_dims[0]
    assert in_dims[1:] == [3, IMG, IMG]
    assert isinstance(out_dims[0], str) and out_dims[0] == in_dims[0]
    assert out_dims[1:] == [CLASSES]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_fixed_batch_io(exported: Exported) -> None:
    graph = onnx.load_from_string(exported.fixed).graph
    assert _dims(graph.input[0]) == [4, 3, IMG, IMG]
    assert _dims(graph.output[0]) == [4, CLASSES]
    session = _session(exported.fixed)
    (out,) = session.run(None, {INPUT_NAME: random_images(4, IMG, seed=22).numpy()})
    assert out.shape == (4, CLASSES)
    with pytest.raises(Exception, match=r"(?i)dimension|shape"):
        session.run(None, {INPUT_NAME: random_images(3, IMG, seed=22).numpy()})


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch(exported: Exported, batch: int) -> None:
    images = random_images(batch, IMG, seed=23 + batch)
    (out,) = _session(exported.dynamic).run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    assert out.shape == (batch, CLASSES)
    fused_ref = logits(exported.fused, images)
    assert max_relative_diff(fused_ref, torch.from_numpy(out)) < TOL
    # and end to end, against the unfused timm model loaded from the checkpoint
    assert max_relative_diff(logits(exported.loaded.model, images), torch.from_numpy(out)) < TOL
    # the production verifier agrees
    assert verify_with_onnxruntime(exported.dynamic, exported.fused, images.numpy()) < TOL


def test_verify_with_onnxruntime_can_fail(exported: Exported) -> None:
    other = fuse_levit(random_levit(NAME, CLASSES, IMG, seed=99))
    images = random_images(2, IMG, seed=24).numpy()
    with pytest.raises(RuntimeError, match=r"differs from PyTorch"):
        verify_with_onnxruntime(exported.dynamic, other, images)


# ---- determinism and metadata -----------------------------------------------------------------------


def test_exports_are_byte_identical(exported: Exported) -> None:
    """A second fusion of the same loaded model, exported again, gives the same bytes."""
    again = export_onnx(
        fuse_levit(exported.loaded.model), exported.preprocess.input_size, ExportSettings(), exported.meta
    )
    assert hashlib.sha256(again).hexdigest() == hashlib.sha256(exported.dynamic).hexdigest()
    assert again == exported.dynamic


def test_metadata(exported: Exported) -> None:
    graph = onnx.load_from_string(exported.dynamic)
    props = read_metadata(graph)
    preprocess = metadata_json(graph, "levit_edge.preprocess")
    assert isinstance(preprocess, dict)
    assert preprocess["input_size"] == [3, IMG, IMG]
    assert preprocess["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert preprocess["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert preprocess["crop_pct"] == pytest.approx(0.9)
    assert preprocess["interpolation"] == "bicubic"
    assert PreprocessConfig.from_dict(preprocess) == exported.preprocess
    assert props["levit_edge.model"] == NAME
    assert props["levit_edge.num_classes"] == str(CLASSES)
    assert json.loads(props["levit_edge.class_names"]) == list(CLASS_NAMES)
    expected_sha = hashlib.sha256(exported.checkpoint.read_bytes()).hexdigest()
    assert props["levit_edge.checkpoint_sha256"] == expected_sha
    assert props["levit_edge.checkpoint_format"] == "state_dict"
    versions = json.loads(props["levit_edge.versions"])
    for package in ("torch", "timm", "onnx", "onnxruntime"):
        assert versions[package] == metadata.version(package)
    assert graph.producer_name == "levit-edge"
    # ONNX Runtime sees the same metadata (it is what a deployed consumer reads)
    custom = _session(exported.dynamic).get_modelmeta().custom_metadata_map
    assert custom["levit_edge.checkpoint_sha256"] == expected_sha
    with pytest.raises(UserError, match=r"no 'levit_edge.nothing' metadata"):
        metadata_json(graph, "levit_edge.nothing")


# ---- opsets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [13, 21])
def test_supported_opset_bounds(exported: Exported, opset: int) -> None:
    data = export_onnx(
        exported.fused, exported.preprocess.input_size, ExportSettings(opset=opset), exported.meta
    )
    graph = onnx.load_from_string(data)
    assert graph.opset_import[0].version == opset
    onnx.checker.check_model(graph, full_check=True)
    check_graph(graph)
    ops = op_histogram(graph)
    if opset == 13:  # HardSwish is an op from opset 14; before it the exporter decomposes it
        assert "HardSwish" not in ops and ops["HardSigmoid"] > 0
    images = random_images(2, IMG, seed=25)
    (out,) = _session(data).run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    assert max_relative_diff(logits(exported.fused, images), torch.from_numpy(out)) < TOL


@pytest.mark.parametrize("opset", [12, 99, 0, -1])
def test_unsupported_opset_rejected(opset: int) -> None:
    with pytest.raises(UserError, match=r"--opset must be between 13 and 21"):
        ExportSettings(opset=opset)


@pytest.mark.parametrize("batch", [0, -2])
def test_bad_batch_rejected(batch: int) -> None:
    with pytest.raises(UserError, match=r"--batch"):
        ExportSettings(batch=batch)


def test_export_of_a_conv_variant() -> None:
    """levit_conv_* keeps BCHW tokens: its graph must be just as static (no Gather/Shape) and agree."""
    model = random_levit("levit_conv_128s", CLASSES, 64, seed=26)
    fused = fuse_levit(model)
    data = export_onnx(fused, (3, 64, 64), ExportSettings(), {})
    graph = onnx.load_from_string(data)
    ops = op_histogram(graph)
    assert not {"BatchNormalization", "Gather", "Identity", "Shape"} & set(ops)
    check_graph(graph)
    images = random_images(3, 64, seed=27)
    (out,) = _session(data).run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    assert max_relative_diff(logits(model, images), torch.from_numpy(np.asarray(out))) < TOL
