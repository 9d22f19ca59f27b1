"""TensorRT backend: settings, the trtexec equivalent and availability everywhere; engine build and
inference on GPU hosts with TensorRT (marked ``gpu``, skipped with the reason elsewhere)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from levit_edge.backends.tensorrt import TensorRTRunner
from levit_edge.backends.trt_build import EngineSettings, build_engine, onnx_input_shape, trtexec_command
from levit_edge.backends.trt_env import tensorrt_unavailable_reason
from levit_edge.errors import EngineUnavailable, UserError
from levit_edge.quant.trt_rules import check_trt_ready

REASON = tensorrt_unavailable_reason()
needs_engine = pytest.mark.skipif(REASON is not None, reason=f"needs TensorRT and a GPU: {REASON}")
without_engine = pytest.mark.skipif(REASON is None, reason="TensorRT and a GPU are available here")


def _export(path: Path, *, dynamic: bool, batch: int = 2) -> Path:
    """A small Conv -> ReLU -> mean -> Linear net exported by PyTorch's ONNX exporter."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x: Any) -> Any:
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    torch.manual_seed(0)
    axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            Net().eval(),
            (torch.randn(batch, 3, 32, 32),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes=axes,
        )
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    return {
        "dynamic": _export(root / "dynamic.onnx", dynamic=True),
        "fixed": _export(root / "fixed.onnx", dynamic=False, batch=2),
    }


# --- settings -------------------------------------------------------------------------------------
def test_settings_defaults_and_path_coercion(tmp_path: Path) -> None:
    settings = EngineSettings(onnx_path=str(tmp_path / "m.onnx"), plan_path=str(tmp_path / "m.plan"))  # type: ignore[arg-type]
    assert settings.onnx_path == tmp_path / "m.onnx"
    assert isinstance(settings.plan_path, Path)
    assert settings.timing_cache_path is None
    assert (settings.min_batch, settings.opt_batch, settings.max_batch) == (1, 1, 8)
    assert settings.input_name == "images"
    assert settings.hardware_compatibility == "none"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_batch": 0}, "min_batch must be a positive integer"),
        ({"min_batch": 4, "opt_batch": 2}, "min <= opt <= max"),
        ({"opt_batch": 16, "max_batch": 8}, "min <= opt <= max"),
        ({"workspace_mb": 0}, "workspace_mb"),
        ({"max_batch": 2.5}, "max_batch"),
        ({"hardware_compatibility": "ampere+"}, "hardware_compatibility must be one of"),
        ({"builder_optimization_level": 6}, "builder_optimization_level"),
        ({"builder_optimization_level": -1}, "builder_optimization_level"),
        ({"version_compatible": "yes"}, "version_compatible"),
        ({"input_name": ""}, "input_name"),
    ],
)
def test_settings_validation(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        EngineSettings(onnx_path=tmp_path / "m.onnx", plan_path=tmp_path / "m.plan", **kwargs)
    assert "\n" not in str(info.value)


def test_plan_must_not_overwrite_the_model(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="overwrite"):
        EngineSettings(onnx_path=tmp_path / "m.onnx", plan_path=tmp_path / "m.onnx")


# --- trtexec equivalent -----------------------------------------------------------------------------
def test_onnx_input_shape(exported: dict[str, Path]) -> None:
    assert onnx_input_shape(exported["dynamic"]) == [None, 3, 32, 32]
    assert onnx_input_shape(exported["fixed"]) == [2, 3, 32, 32]


def test_trtexec_command_dynamic_batch(exported: dict[str, Path], tmp_path: Path) -> None:
    settings = EngineSettings(
        onnx_path=exported["dynamic"],
        plan_path=tmp_path / "run dir" / "model.int8.plan",
        timing_cache_path=tmp_path / "run dir" / "timing.cache",
        min_batch=1,
        opt_batch=4,
        max_batch=16,
        workspace_mb=2048,
        version_compatible=True,
        hardware_compatibility="ampere_plus",
        builder_optimization_level=4,
    )
    command = trtexec_command(settings)
    args = shlex.split(command)  # paths with spaces survive the quoting
    assert args == [
        "trtexec",
        f"--onnx={exported['dynamic']}",
        f"--saveEngine={tmp_path / 'run dir' / 'model.int8.plan'}",
        "--stronglyTyped",
        "--minShapes=images:1x3x32x32",
        "--optShapes=images:4x3x32x32",
        "--maxShapes=images:16x3x32x32",
        "--memPoolSize=workspace:2048M",
        f"--timingCacheFile={tmp_path / 'run dir' / 'timing.cache'}",
        "--versionCompatible",
        "--hardwareCompatibilityLevel=ampere+",
        "--builderOptimizationLevel=4",
        "--profilingVerbosity=detailed",
        "--skipInference",
    ]
    for implicit in ("--int8", "--fp16", "--best", "--calib"):
        assert implicit not in command


def test_trtexec_command_fixed_batch(exported: dict[str, Path], tmp_path: Path) -> None:
    settings = EngineSettings(
        onnx_path=exported["fixed"],
        plan_path=tmp_path / "model.plan",
        hardware_compatibility="same_compute_capability",
    )
    args = shlex.split(trtexec_command(settings))
    assert not [a for a in args if a.startswith(("--minShapes", "--optShapes", "--maxShapes"))]
    assert "--hardwareCompatibilityLevel=sameComputeCapability" in args
    assert "--memPoolSize=workspace:1024M" in args
    assert "--stronglyTyped" in args
    assert not [a for a in args if a.startswith(("--timingCacheFile", "--versionCompatible", "--builderOpt"))]


def test_trtexec_command_rejects_bad_inputs(exported: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no input named 'pixels'"):
        trtexec_command(
            EngineSettings(onnx_path=exported["dynamic"], plan_path=tmp_path / "p", input_name="pixels")
        )
    model = onnx.load(str(exported["dynamic"]))
    dim = model.graph.input[0].type.tensor_type.shape.dim[3]
    dim.Clear()
    dim.dim_param = "width"
    spatial = tmp_path / "spatial.onnx"
    onnx.save(model, str(spatial))
    with pytest.raises(UserError, match="only the batch dim"):
        trtexec_command(EngineSettings(onnx_path=spatial, plan_path=tmp_path / "p"))
    with pytest.raises(UserError, match="not found"):
        trtexec_command(EngineSettings(onnx_path=tmp_path / "absent.onnx", plan_path=tmp_path / "p"))


# --- without TensorRT -------------------------------------------------------------------------------
def test_module_imports_without_tensorrt_or_pycuda() -> None:
    code = (
        "import sys, levit_edge.backends.tensorrt, levit_edge.backends.trt_build; "
        "assert 'tensorrt' not in sys.modules and 'pycuda' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unavailable_reason_is_one_line() -> None:
    if REASON is None:
        pytest.skip("TensorRT and a GPU are available here")
    assert isinstance(REASON, str)
    assert REASON and "\n" not in REASON
    assert "TensorRT" in REASON or "CUDA" in REASON or "pycuda" in REASON


@without_engine
def test_build_engine_without_tensorrt_is_engine_unavailable(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    settings = EngineSettings(onnx_path=exported["dynamic"], plan_path=tmp_path / "m.plan")
    with pytest.raises(EngineUnavailable) as info:
        build_engine(settings)
    assert str(info.value) == REASON
    assert info.value.exit_code == 4
    assert not settings.plan_path.exists()


@without_engine
def test_runner_without_tensorrt_is_engine_unavailable(tmp_path: Path) -> None:
    runner = TensorRTRunner(tmp_path / "m.plan")
    with pytest.raises(EngineUnavailable), runner:
        pass


# --- on a GPU host with TensorRT ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def qdq_models(exported: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The exported nets quantized like the TensorRT profile: symmetric S8S8, per-channel, float bias."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, batch: int) -> None:
            rng = np.random.default_rng(0)
            self._it: Iterator[dict[str, np.ndarray]] = iter(
                [{"images": rng.normal(size=(batch, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    root = tmp_path_factory.mktemp("qdq")
    out: dict[str, Path] = {}
    for kind, src in exported.items():
        dst = root / f"{kind}.int8.trt.onnx"
        quantize_static(
            str(src),
            str(dst),
            Reader(2),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
        assert check_trt_ready(dst) == []
        out[kind] = dst
    return out


def _ort_logits(model: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"images": images})[0])


def _assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape
    span = float(want.max() - want.min()) or 1.0
    assert float(np.abs(got - want).max()) <= 0.1 * span  # INT8 kernels round differently


@pytest.mark.gpu
@needs_engine
def test_build_and_run_dynamic_batch_engine(qdq_models: dict[str, Path], tmp_path: Path) -> None:
    settings = EngineSettings(
        onnx_path=qdq_models["dynamic"],
        plan_path=tmp_path / "run" / "model.int8.plan",
        timing_cache_path=tmp_path / "run" / "timing.cache",
        min_batch=1,
        opt_batch=2,
        max_batch=4,
        workspace_mb=256,
    )
    result = build_engine(settings)
    assert result.plan_path.is_file() and result.plan_path.stat().st_size > 0
    assert settings.timing_cache_path is not None and settings.timing_cache_path.is_file()
    assert result.dynamic_batch and result.batch_range == (1, 2, 4)
    assert result.tensorrt_version and result.gpu_name and result.seconds > 0
    assert result.num_layers and result.layer_info_json and result.layer_info_json.startswith("{")
    assert not list(result.plan_path.parent.glob("*.tmp"))

    rebuilt = build_engine(settings)  # reuses the saved timing cache
    assert rebuilt.plan_path.is_file()

    rng = np.random.default_rng(3)
    with TensorRTRunner(result.plan_path) as runner:
        assert runner.batch_range == (1, 4)
        for batch in (1, 3, 4):
            images = rng.normal(size=(batch, 3, 32, 32)).astype(np.float32)
            _assert_close(runner.infer(images), _ort_logits(qdq_models["dynamic"], images))
        # Above the profile's maximum: chunks of 4 (the validation default of 32 included).
        for batch in (5, 32):
            images = rng.normal(size=(batch, 3, 32, 32)).astype(np.float32)
            _assert_close(runner.infer(images), _ort_logits(qdq_models["dynamic"], images))
        with pytest.raises(UserError, match="shape"):
            runner.infer(np.zeros((1, 3, 16, 16), dtype=np.float32))
    assert len(runner.latencies_ms) == 5


@pytest.mark.gpu
@needs_engine
def test_build_and_run_fixed_batch_version_compatible_engine(
    qdq_models: dict[str, Path], tmp_path: Path
) -> None:
    settings = EngineSettings(
        onnx_path=qdq_models["fixed"], plan_path=tmp_path / "fixed.plan", version_compatible=True
    )
    result = build_engine(settings)
    assert not result.dynamic_batch and result.batch_range == (2, 2, 2)
    images = np.random.default_rng(4).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with TensorRTRunner(result.plan_path, version_compatible=True) as runner:
        _assert_close(runner.infer(images), _ort_logits(qdq_models["fixed"], images))
        # A short last batch is padded to the engine's fixed 2 and the padding dropped; 5 = 2 + 2 + 1.
        more = np.random.default_rng(5).normal(size=(5, 3, 32, 32)).astype(np.float32)
        _assert_close(runner.infer(more[:1]), _ort_logits(qdq_models["fixed"], more[:2])[:1])
        _assert_close(
            runner.infer(more),
            np.concatenate(
                [_ort_logits(qdq_models["fixed"], more[i : i + 2]) for i in (0, 2)]
                + [_ort_logits(qdq_models["fixed"], more[[4, 4]])[:1]]
            ),
        )


@pytest.mark.gpu
@needs_engine
def test_parser_errors_name_the_node(tmp_path: Path) -> None:
    node = helper.make_node("FusedGelu", ["images"], ["logits"], name="my_custom_gelu", domain="com.example")
    graph = helper.make_graph(
        [node],
        "bad",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UserError, match="my_custom_gelu") as info:
        build_engine(EngineSettings(onnx_path=path, plan_path=tmp_path / "bad.plan"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "bad.plan").exists()
