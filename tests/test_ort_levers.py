"""The ort-profile attention levers (levit_edge/export/ort_levers.py): same model, fewer nodes.

Outputs of each lever graph are compared with the plain graph run by real ONNX Runtime. Tolerances come from
the model's own figures: float graphs within a small fraction of their logit range (only summation order
differs); INT8 graphs no further from the plain INT8 model than that model already is from FP32, with the
same top-1 decisions, and on the trained fixture top-1 within 0.5 point.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import random_levit

from levit_edge.data.open_source import open_source
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import DataSpec
from levit_edge.export.onnx import ExportSettings, export_onnx
from levit_edge.export.ort_levers import fuse_attention, head_major_projections, in_layout_of
from levit_edge.fixture.common import DatasetPaths, FixtureResult
from levit_edge.model.fuse import fuse_levit
from levit_edge.model.load import ModelSpec, load_model
from levit_edge.quant.calibrate import calibrate
from levit_edge.quant.profiles import ORT_PROFILE, TRT_PROFILE
from levit_edge.quant.quantize import quantize
from levit_edge.settings import QuantSettings

IMG = 64
STANDARD_OPS = dataclasses.replace(ORT_PROFILE, name="ort-std", fuse_attention=False, head_major=False)
FUSED = ORT_PROFILE  # the ort profile fuses attention, head-major (see its why-texts)
Fixture = tuple[DatasetPaths, FixtureResult, Path]


def _run(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])


def _ops(model: onnx.ModelProto) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in model.graph.node)


@pytest.fixture(scope="module")
def random_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """A randomized LeViT-128S (non-trivial logits), its FP32 graph and its ort-profile INT8 graph."""
    root = tmp_path_factory.mktemp("levers")
    model = random_levit("levit_128s", 10, IMG, seed=3).eval()
    fp32 = root / "model.fp32.onnx"
    fp32.write_bytes(export_onnx(fuse_levit(model), (3, IMG, IMG), ExportSettings(), {}))
    rng = np.random.default_rng(0)
    npy = root / "calib.npy"
    np.save(npy, rng.integers(0, 256, (16, IMG, IMG, 3), dtype=np.uint8))
    pre = PreprocessConfig.from_model(model)
    cal = calibrate(fp32, open_source(DataSpec(npy, None, None, 0, False)), pre, QuantSettings(), 8)
    int8 = root / "model.int8.ort.onnx"
    quantize(fp32, cal, STANDARD_OPS, int8)
    quantize(fp32, cal, FUSED, root / "profile.int8.ort.onnx")
    quantize(fp32, cal, TRT_PROFILE, root / "model.int8.trt.onnx")
    x = rng.standard_normal((8, 3, IMG, IMG)).astype(np.float32)
    return fp32, int8, x


@pytest.mark.parametrize("head_major", [False, True])
def test_fused_attention_float_graph_matches(
    random_models: tuple[Path, Path, np.ndarray], head_major: bool
) -> None:
    fp32, _, x = random_models
    plain = onnx.load(str(fp32))
    lever = onnx.load(str(fp32))
    result = fuse_attention(lever, head_major=head_major)
    onnx.checker.check_model(lever)
    ops, before = _ops(lever), _ops(plain)
    # Every attention core became one node: no Softmax, no activation MatMul, no Transpose left in the trunk.
    assert result.fused == before["Softmax"] == ops["MultiHeadAttention"] == 11
    assert ops["Softmax"] == ops["MatMul"] == 0
    assert ops["Transpose"] == before["Transpose"] - 4 * 11
    # q, k and v reach the fused node through the graph's own Reshapes (rewritten to 3-D), except the
    # per-head Split outputs (q, k, v of 9 blocks; k, v of the 2 downsampling ones), which need one Reshape
    # each unless the projection is reordered head-major (then one Split on the channel axis feeds the node).
    assert result.head_major == (11 if head_major else 0)
    assert ops["Reshape"] == before["Reshape"] + (0 if head_major else 3 * 9 + 2 * 2)
    assert result.nodes_after < result.nodes_before
    ref, got = _run(plain, x), _run(lever, x)
    span = float(np.ptp(ref))
    assert span > 1.0  # the randomized model's logits are far from constant, so the check can fail
    assert float(np.abs(got - ref).max()) <= 1e-4 * span
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_head_major_weights_are_a_permutation(random_models: tuple[Path, Path, np.ndarray]) -> None:
    # Reordering changes the qkv weights (a broken reorder would be caught by the output check above).
    fp32, _, _ = random_models
    lever = onnx.load(str(fp32))
    fuse_attention(lever, head_major=True)
    before = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(fp32)).graph.initializer}
    after = {i.name: onnx.numpy_helper.to_array(i) for i in lever.graph.initializer}
    qkv = [n for n in before if n.endswith("attn.qkv.weight")]
    assert qkv
    changed = [n for n in qkv if not np.array_equal(before[n], after[n])]
    assert len(changed) == 9  # + the 2 downsampling blocks' kv projections
    for n in changed:  # same rows, other order
        assert np.array_equal(np.sort(before[n], axis=0), np.sort(after[n], axis=0))


@pytest.mark.parametrize("head_major", [False, True])
def test_fused_attention_int8_graph_matches(
    random_models: tuple[Path, Path, np.ndarray], head_major: bool
) -> None:
    fp32, int8, x = random_models
    lever = onnx.load(str(int8))
    result = fuse_attention(lever, head_major=head_major)
    assert result.fused == 11
    assert result.head_major == (11 if head_major else 0)
    ref, plain, got = _run(fp32, x), _run(int8, x), _run(lever, x)
    # The lever moves the INT8 model no further than quantization already moved it from FP32.
    quant_error = float(np.abs(plain - ref).max())
    assert float(np.abs(got - plain).max()) <= quant_error
    assert (got.argmax(1) == plain.argmax(1)).mean() >= (plain.argmax(1) == ref.argmax(1)).mean()


def test_a_fusing_profile_fuses_and_the_trt_profile_keeps_standard_ops(
    random_models: tuple[Path, Path, np.ndarray],
) -> None:
    _, int8, x = random_models
    profile = onnx.load(str(int8.with_name("profile.int8.ort.onnx")))
    assert _ops(profile)["MultiHeadAttention"] == 11 and _ops(profile)["Softmax"] == 0
    lever = onnx.load(str(int8))
    assert fuse_attention(lever, head_major=True).head_major == 11
    np.testing.assert_array_equal(_run(profile, x), _run(lever, x))  # the profile is exactly this lever
    trt = onnx.load(str(int8.with_name("model.int8.trt.onnx")))
    assert all(n.domain in ("", "ai.onnx") for n in trt.graph.node)
    assert _ops(trt)["Softmax"] == 11 and "MultiHeadAttention" not in _ops(trt)


def test_nothing_to_fuse_leaves_the_model_alone(random_models: tuple[Path, Path, np.ndarray]) -> None:
    fp32, _, _ = random_models
    model = onnx.load(str(fp32))
    for node in model.graph.node:  # no Softmax: nothing to fuse, nothing changed
        if node.op_type == "Softmax":
            node.op_type = "Sigmoid"
    before = model.SerializeToString()
    result = fuse_attention(model)
    assert result.fused == 0
    assert model.SerializeToString() == before


@pytest.mark.slow
def test_levers_keep_fixture_top1(trained_fixture: Fixture, tmp_path: Path) -> None:
    data, result, checkpoint = trained_fixture
    loaded = load_model(
        ModelSpec(
            name=result.model_name,
            checkpoint=checkpoint,
            num_classes=len(result.classes),
            img_size=result.img_size,
        )
    )
    pre = PreprocessConfig.from_model(loaded.model)
    torch.manual_seed(0)
    fp32 = tmp_path / "model.fp32.onnx"
    fp32.write_bytes(export_onnx(fuse_levit(loaded.model), pre.input_size, ExportSettings(), {}))
    cal = calibrate(fp32, open_source(DataSpec(data.calib, None, None, 0, False)), pre, QuantSettings(), 32)
    int8 = tmp_path / "model.int8.ort.onnx"
    quantize(fp32, cal, STANDARD_OPS, int8)
    batches = list(open_source(DataSpec(data.val, None, None, 0, False)).batches(pre, 64))
    x = np.concatenate([b.images for b in batches])
    y = np.concatenate([b.labels for b in batches if b.labels is not None])
    assert len(y) == len(x) >= 100
    plain = _run(int8, x)
    plain_top1 = float((plain.argmax(1) == y).mean() * 100)
    for head_major in (False, True):
        lever = onnx.load(str(int8))
        assert fuse_attention(lever, head_major=head_major).fused == 11
        got = _run(lever, x)
        assert abs(float((got.argmax(1) == y).mean() * 100) - plain_top1) <= 0.5
        assert (got.argmax(1) == plain.argmax(1)).mean() >= 0.99


def test_fp32_reference_in_the_fused_layout(random_models: tuple[Path, Path, np.ndarray]) -> None:
    """The per-layer fallback's FP32 reference is fused like the INT8 graph, head-major projections and all;
    unchanged for a standard-ops graph; refused for a graph of another network."""
    fp32_path, int8, x = random_models
    fp32 = onnx.load(str(fp32_path))
    fused = onnx.load(str(int8.with_name("profile.int8.ort.onnx")))
    assert len(head_major_projections(fused)) == 11
    assert in_layout_of(fp32, onnx.load(str(int8))) is fp32  # standard ops: nothing to match
    laid = in_layout_of(fp32, fused)
    assert _ops(laid)["MultiHeadAttention"] == 11 and head_major_projections(laid) == head_major_projections(
        fused
    )
    weights = {i.name for i in laid.graph.initializer}
    inputs = {n.name: n.input[1] for n in laid.graph.node if n.op_type == "Gemm"}
    assert all(inputs[g] in weights for g in head_major_projections(fused))
    ref = _run(fp32, x)
    np.testing.assert_allclose(_run(laid, x), ref, atol=1e-3 * float(np.ptp(ref)))
    other = onnx.load(str(fp32_path))
    for node in other.graph.node:  # one attention core fewer to fuse: not the same network
        if node.op_type == "Softmax":
            node.op_type = "Sigmoid"
            break
    with pytest.raises(ValueError, match="not the same network"):
        in_layout_of(other, fused)


def test_a_projection_that_cannot_be_reordered_keeps_its_weights(
    random_models: tuple[Path, Path, np.ndarray],
) -> None:
    """A qkv bias read by a second node cannot be reordered: that projection stays in its layout, weights
    included (they are reordered first), and the model computes what it did."""
    fp32_path, _, x = random_models
    model = onnx.load(str(fp32_path))
    split = next(n for n in model.graph.node if n.op_type == "Split")
    producer = {o: n for n in model.graph.node for o in n.output}
    gemm = producer[producer[split.input[0]].input[0]]
    assert gemm.op_type == "Gemm"
    model.graph.node.append(onnx.helper.make_node("Identity", [gemm.input[2]], ["bias_copy"]))
    model.graph.output.append(onnx.helper.make_tensor_value_info("bias_copy", onnx.TensorProto.FLOAT, None))
    ref = _run(model, x)
    result = fuse_attention(model, head_major=True)
    assert result.fused == 11 and result.head_major == 10 and gemm.name not in result.reordered
    np.testing.assert_allclose(_run(model, x), ref, atol=1e-3 * float(np.ptp(ref)))
