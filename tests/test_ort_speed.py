"""The speed-shaped graph and recipe of issue 5: Gemm linears, QLinearConv stem, bench budget and spinning."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from levit_edge.backends.base import Runner
from levit_edge.bench import INTERLEAVED_SESSION_CONFIG, BenchSettings, time_variants
from levit_edge.data.open_source import open_source
from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.data.sources import DataSpec
from levit_edge.errors import UserError
from levit_edge.export.onnx import ExportSettings, export_onnx
from levit_edge.model.fuse import fuse_levit
from levit_edge.model.load import create_levit
from levit_edge.quant.calibrate import Calibration, calibrate
from levit_edge.quant.profiles import ORT_PROFILE, ORT_PROFILES, ORT_VNNI_PROFILE, TRT_PROFILE, QuantProfile
from levit_edge.quant.quantize import quantize
from levit_edge.settings import ORT_PROFILE_NAMES, QuantSettings

IMG = 64


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_levit("levit_128s", 10, IMG).eval()
    path = tmp_path_factory.mktemp("speed") / "model.fp32.onnx"
    path.write_bytes(export_onnx(fuse_levit(model), (3, IMG, IMG), ExportSettings(), {}))
    return path


def _ops(model: onnx.ModelProto) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in model.graph.node)


def test_every_linear_is_one_gemm(fp32_model: Path) -> None:
    model = onnx.load(str(fp32_model))
    inits = {i.name for i in model.graph.initializer}
    ops = _ops(model)
    assert ops["Gemm"] == 47  # 46 trunk linears + the merged head of LeViT-128S
    weighted_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and set(n.input) & inits]
    assert weighted_matmuls == []
    assert all(len(n.input) == 3 for n in model.graph.node if n.op_type == "Gemm")  # bias fused
    # Adds left: residuals (2 per block, 1 per downsample block) and the 11 attention-bias Adds.
    assert ops["Add"] == 31


def _calibration(model_path: Path) -> Calibration:
    """Ranges of the tool's own calibration over a few random uint8 images."""
    torch.manual_seed(0)
    preprocess = PreprocessConfig.from_model(create_levit("levit_128s", 10, IMG))
    images = np.random.default_rng(0).integers(0, 256, (8, IMG, IMG, 3), dtype=np.uint8)
    npy = model_path.with_name("calib.npy")
    np.save(npy, images)
    return calibrate(
        model_path, open_source(DataSpec(npy, None, None, 0, False)), preprocess, QuantSettings(), 4
    )


def _optimized_ops(fp32_model: Path, tmp_path: Path, profile: QuantProfile) -> collections.Counter[str]:
    """Op histogram of the graph ONNX Runtime actually runs for ``profile``'s INT8 model."""
    out = tmp_path / f"{profile.name}.onnx"
    quantize(fp32_model, _calibration(fp32_model), profile, out)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / f"{profile.name}.optimized.onnx")
    ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    return _ops(onnx.load(opts.optimized_model_filepath))


def test_ort_profile_keeps_the_stem_float(fp32_model: Path, tmp_path: Path) -> None:
    ops = _optimized_ops(fp32_model, tmp_path, ORT_PROFILE)
    # Every linear is a QGemm; the four stem convs are ordinary float Convs (NCHWc), not Convs on weights
    # dequantized at every call, and no MatMulIntegerToFloat + Add pairs are left.
    assert ops["QGemm"] == 47
    assert ops["Conv"] == 4
    assert "QLinearConv" not in ops and "MatMulIntegerToFloat" not in ops
    # Residual Adds read the float stream: the only DequantizeLinear left are the 2 behind the attention
    # downsampling blocks' projections, which ONNX Runtime folds into a QGemm with a uint8 output.
    assert ops["DequantizeLinear"] == 2


def test_ort_vnni_profile_runs_the_stem_as_qlinearconv(fp32_model: Path, tmp_path: Path) -> None:
    ops = _optimized_ops(fp32_model, tmp_path, ORT_VNNI_PROFILE)
    # Three of the four stem convs are QLinearConv; the 3-channel first one stays a float Conv.
    assert ops["QLinearConv"] == 3
    assert ops["Conv"] == 1
    assert ops["QGemm"] == 47


def test_profiles_choose_their_convs(fp32_model: Path) -> None:
    model = onnx.load(str(fp32_model))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 4

    def picked(profile: QuantProfile) -> list[bool]:
        chosen = set(profile.select_nodes(model))
        return [c in chosen for c in convs]

    assert picked(ORT_PROFILE) == [False] * 4
    assert picked(ORT_VNNI_PROFILE) == [False, True, True, True]
    assert picked(TRT_PROFILE) == [True] * 4
    assert ORT_VNNI_PROFILE.extra_options()["OpTypesToExcludeOutputQuantization"] == ["MatMul", "Gemm"]
    # TensorRT keeps Q/DQ on weighted-op inputs only (its rules are checked in test_trt_rules.py).
    assert TRT_PROFILE.extra_options()["OpTypesToExcludeOutputQuantization"] == ["Conv", "MatMul", "Gemm"]


def test_ort_profile_setting() -> None:
    assert tuple(ORT_PROFILES) == ORT_PROFILE_NAMES
    assert QuantSettings(ort_profile="ort-vnni").ort_profile == "ort-vnni"
    with pytest.raises(UserError, match="--ort-profile"):
        QuantSettings(ort_profile="vnni")


class _Sleeper(Runner):
    name = "sleeper"

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def activate(self) -> None:
        pass

    def _infer(self, images: np.ndarray) -> np.ndarray:
        import time

        time.sleep(self.seconds)
        return np.zeros((images.shape[0], 1), np.float32)


def test_budget_caps_calls_per_round() -> None:
    settings = BenchSettings(
        batches=(1,), warmup=1, rounds=2, per_round=50, input_size=(3, 4, 4), budget_s=0.2
    )
    results = time_variants({"a": lambda t: _Sleeper(0.01), "b": lambda t: _Sleeper(0.01)}, settings, ("a",))
    # A sleep never ends early: a round of the two variants takes >= 20 ms, so 0.2 s over 2 rounds allows
    # at most 5 calls per round (10 in all), far fewer than 50; the floor is one call per round. Both
    # variants get the same count. A loaded machine only lowers the count, within the same bounds.
    assert len({r.calls for r in results}) == 1
    assert all(2 <= r.calls <= 10 for r in results), [r.calls for r in results]
    assert {r.variant for r in results} == {"a", "b"}


def test_interleaved_sessions_stop_spinning() -> None:
    assert INTERLEAVED_SESSION_CONFIG == {"session.force_spinning_stop": "1"}


def test_float_bypass_rewires_only_unquantized_consumers(fp32_model: Path, tmp_path: Path) -> None:
    cal = _calibration(fp32_model)
    plain = tmp_path / "plain.onnx"
    quantize(fp32_model, cal, dataclasses.replace(ORT_PROFILE, float_bypass=False), plain)
    out = tmp_path / "bypass.onnx"
    quantize(fp32_model, cal, ORT_PROFILE, out)

    def adds_on_dq(path: Path) -> int:
        model = onnx.load(str(path))
        producer = {o: n for n in model.graph.node for o in n.output}
        return sum(
            1
            for n in model.graph.node
            if n.op_type == "Add"
            for i in n.input
            if i in producer and producer[i].op_type == "DequantizeLinear"
        )

    assert adds_on_dq(plain) > 10
    assert adds_on_dq(out) == 2  # the two downsampling projections, kept for their QGemm fusion
    ops = _ops(onnx.load(str(out)))
    assert ops["QuantizeLinear"] == _ops(onnx.load(str(plain)))["QuantizeLinear"]
