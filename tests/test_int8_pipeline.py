"""INT8 end to end on the trained fixture: accuracy kept, gate trips, reports and manifest honest.

The expensive export runs once per module (``int8_run``); other tests reuse its run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import miscalibration_set
from onnx import numpy_helper
from PIL import Image

from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.fixture.common import DatasetPaths, FixtureResult
from levit_edge.io import sha256_file
from levit_edge.quant.calibrate import Calibration
from levit_edge.quant.profiles import ORT_PROFILE
from levit_edge.quant.quantize import quantize
from levit_edge.quant.trt_rules import check_trt_ready

Fixture = tuple[DatasetPaths, FixtureResult, Path]


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess."""
    code = "from levit_edge.cli.app import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        timeout=600,
    )


def model_args(fx: Fixture) -> list[str]:
    _data, result, checkpoint = fx
    return [
        "--model",
        result.model_name,
        "--img-size",
        str(result.img_size),
        "--num-classes",
        str(len(result.classes)),
        "--checkpoint",
        str(checkpoint),
    ]


def engine_missing() -> str | None:
    from levit_edge.backends.trt_env import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason()


@pytest.fixture(scope="module")
def int8_run(trained_fixture: Fixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``--target all`` with the engine requested: exit 4 where TensorRT/GPU are missing, else 0."""
    data = trained_fixture[0]
    out = tmp_path_factory.mktemp("int8")
    proc = cli(
        "export",
        "--int8",
        "--target",
        "all",
        *model_args(trained_fixture),
        "--calib",
        data.calib,
        "--val",
        data.val,
        "--out",
        out,
        "--name",
        "run",
    )
    assert "Traceback" not in proc.stderr
    if engine_missing():
        assert proc.returncode == 4, proc.stderr
        line = proc.stderr.strip()
        assert line.startswith("error: TensorRT engine not built") and "build-engine" in line
        assert len(line.splitlines()) == 1
    else:
        assert proc.returncode == 0, proc.stderr
    return out / "run"


def report(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "report.json").read_text()))


def own_logits(model_path: Path, data: DatasetPaths) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels computed here, independently of levit-edge's validation code: the files, the
    folder labels (timm's natural order equals sorted order for these names), ONNX Runtime itself."""
    model = onnx.load(str(model_path))
    pre = json.loads({p.key: p.value for p in model.metadata_props}["levit_edge.preprocess"])
    transform = PreprocessConfig.from_dict(pre).transform()
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    out, labels = [], []
    for label, name in enumerate(data.classes):
        files = sorted((data.val / name).glob("*.png"))
        images = np.stack([transform(Image.open(f)) for f in files]).astype(np.float32)
        out.append(session.run(None, {"images": images})[0])
        labels += [label] * len(files)
    return np.concatenate(out), np.array(labels)


def softmax_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        m = x.max(1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(1, keepdims=True))

    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return float((np.exp(lp) * (lp - lq)).sum(1).mean())


def test_report_figures_match_an_independent_evaluation(int8_run: Path, trained_fixture: Fixture) -> None:
    """Every accuracy figure of the report, recomputed here with numpy from ONNX Runtime's logits."""
    data = trained_fixture[0]
    rep = report(int8_run)
    assert rep["status"] == ("no-engine" if engine_missing() else "passed")
    files = {"fp32": "model.fp32.onnx", "int8.ort": "model.int8.ort.onnx", "int8.trt": "model.int8.trt.onnx"}
    logits = {k: own_logits(int8_run / f, data)[0] for k, f in files.items()}
    labels = own_logits(int8_run / files["fp32"], data)[1]
    top5 = {k: np.argsort(-v, axis=1, kind="stable")[:, :5] for k, v in logits.items()}
    for artifact, values in logits.items():
        acc = rep["accuracy"][artifact]
        assert acc["n"] == len(labels) == len(data.samples("val"))
        assert acc["top1"] == pytest.approx(100 * np.mean(values.argmax(1) == labels))
        assert acc["top5"] == pytest.approx(100 * np.mean((top5[artifact] == labels[:, None]).any(1)))
    ref_top = logits["fp32"].argmax(1)
    for artifact in ("int8.ort", "int8.trt"):
        cand_top = logits[artifact].argmax(1)
        top1 = {k: 100 * np.mean(logits[k].argmax(1) == labels) for k in ("fp32", artifact)}
        assert rep["drop"][artifact] == pytest.approx(top1["fp32"] - top1[artifact])
        assert rep["agreement"][artifact] == pytest.approx(100 * np.mean(ref_top == cand_top))
        assert rep["kl"][artifact] == pytest.approx(softmax_kl(logits["fp32"], logits[artifact]), rel=1e-6)
        rows = {row["class"]: row for row in rep["per_class"][artifact]}
        assert sorted(rows) == sorted(data.classes)
        for label, name in enumerate(data.classes):
            mine = labels == label
            assert rows[name]["n"] == int(mine.sum()), name
            assert rows[name]["fp32"] == pytest.approx(100 * np.mean(ref_top[mine] == label)), name
            assert rows[name]["int8"] == pytest.approx(100 * np.mean(cand_top[mine] == label)), name
        # INT8 keeps the accuracy the default gate (1.0 point) promises, by the figures computed here
        assert top1["fp32"] - top1[artifact] <= rep["thresholds"]["max_drop"] == 1.0


def test_top5_is_not_top1_on_a_model_that_errs(int8_run: Path, trained_fixture: Fixture) -> None:
    """Where FP32 makes mistakes whose true class is among its top 5, top-5 must exceed top-1."""
    logits, labels = own_logits(int8_run / "model.fp32.onnx", trained_fixture[0])
    top5 = np.argsort(-logits, axis=1)[:, :5]
    near_misses = (logits.argmax(1) != labels) & (top5 == labels[:, None]).any(1)
    if not near_misses.any():
        pytest.skip("this fixture's FP32 model has no top-5 near miss")
    acc = report(int8_run)["accuracy"]["fp32"]
    assert acc["top5"] > acc["top1"]


def test_report_contract_keys(int8_run: Path) -> None:
    rep = report(int8_run)
    for key in ("schema_version", "status", "model", "preprocess", "calibration", "thresholds", "stages"):
        assert key in rep
    assert rep["thresholds"]["max_drop"] == 1.0
    assert rep["calibration"]["method"] == "minmax"
    assert rep["calibration"]["count"] > 0
    assert set(rep["latency"]) >= {"fp32", "int8.ort", "int8.trt"}
    assert {"load", "fuse", "export", "calibrate", "quantize.ort", "quantize.trt", "validate"} <= set(
        rep["stages"]
    )
    assert rep["quantization"]["int8.trt"]["note"].startswith("TensorRT Q/DQ simulated")
    assert rep["validation"]["class_order"] == list(rep["model"]["class_names"])
    assert "trtexec --onnx=" in rep["trtexec"]
    per_class = rep["per_class"]["int8.ort"]
    assert len(per_class) == len(rep["model"]["class_names"])
    for name in ("report.html", "report.md"):
        assert (int8_run / name).stat().st_size > 0


def test_manifest_hashes_every_file(int8_run: Path) -> None:
    manifest = json.loads((int8_run / "manifest.json").read_text())
    on_disk = {p.name for p in int8_run.iterdir() if p.name != "manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(int8_run / name)
        assert entry["size"] == (int8_run / name).stat().st_size
    assert manifest["status"] == ("no-engine" if engine_missing() else "passed")
    if engine_missing():
        # Everything but the engine was produced.
        assert {
            "model.fp32.onnx",
            "calibration.json",
            "model.int8.ort.onnx",
            "model.int8.trt.onnx",
        } <= on_disk
        assert "model.int8.plan" not in on_disk
        assert json.loads((int8_run / "report.json").read_text())["engine"]["reason"]
    assert manifest["command"][:2] == ["levit-edge", "export"]
    proc = cli("verify", int8_run)
    assert proc.returncode == 0, proc.stderr


def test_quantized_models_follow_their_profiles(int8_run: Path) -> None:
    ort_model = onnx.load(str(int8_run / "model.int8.ort.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in ort_model.graph.initializer}
    q_nodes = [n for n in ort_model.graph.node if n.op_type == "QuantizeLinear"]
    assert q_nodes, "no activations quantized"
    assert all(inits[n.input[2]].dtype == np.uint8 for n in q_nodes if len(n.input) > 2)
    weights_int8 = [v for v in inits.values() if v.dtype == np.int8 and v.ndim >= 2]
    assert weights_int8, "no int8 weights"
    # reduce_range: 7-bit weights, |w| <= 64 in ORT's symmetric int8 with reduce_range.
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights_int8) <= 64
    assert not any(
        n.op_type == "Softmax" and n.input[0].endswith("DequantizeLinear_Output")
        for n in ort_model.graph.node
    )
    assert check_trt_ready(int8_run / "model.int8.trt.onnx") == []


def test_build_engine_without_tensorrt_exits_4_with_the_trtexec_line(int8_run: Path) -> None:
    if not engine_missing():
        pytest.skip("TensorRT and a GPU are present: the engine test in test_tensorrt_backend covers it")
    proc = cli("build-engine", int8_run / "model.int8.trt.onnx")
    assert proc.returncode == 4
    assert "trtexec --onnx=" in proc.stdout
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert not (int8_run / "model.int8.plan").exists()


def test_quantization_reuses_the_saved_calibration(int8_run: Path, tmp_path: Path) -> None:
    """Every quantized target is rebuilt from calibration.json alone, byte for byte."""
    cal = Calibration.load(int8_run / "calibration.json")
    assert cal.model_sha256 == sha256_file(int8_run / "model.fp32.onnx")
    assert cal.ranges and all(lo <= hi for lo, hi in cal.ranges.values())
    again = tmp_path / "again.onnx"
    original = onnx.load(str(int8_run / "model.int8.ort.onnx"))
    meta = {p.key: p.value for p in original.metadata_props}
    quantize(int8_run / "model.fp32.onnx", cal, ORT_PROFILE, again, metadata=meta)
    assert again.read_bytes() == (int8_run / "model.int8.ort.onnx").read_bytes()


def test_gate_trips_with_exit_3_and_keeps_artifacts(trained_fixture: Fixture, tmp_path: Path) -> None:
    """Ranges 1000x too wide (helpers.miscalibration_set) cost most of the accuracy on any CPU: the gate
    must fail with exit 3 and keep the artifacts for review."""
    data, result, _ = trained_fixture
    bad = miscalibration_set(tmp_path / "bad.npy", result.img_size)
    proc = cli(
        "export",
        "--int8",
        "--target",
        "ort",
        *model_args(trained_fixture),
        "--calib",
        bad,
        "--val",
        data.val,
        "--max-drop",
        "1",
        "--out",
        tmp_path,
        "--name",
        "gated",
    )
    run_dir = tmp_path / "gated"
    rep = report(run_dir)
    # precondition, from the fixture's own figures: INT8 falls at least halfway to chance
    chance = 100.0 / len(result.classes)
    assert rep["drop"]["int8.ort"] > (rep["accuracy"]["fp32"]["top1"] - chance) / 2, rep["drop"]
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().startswith("error: accuracy gate failed")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert rep["status"] == "failed-accuracy"
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed-accuracy"
    assert (run_dir / "model.int8.ort.onnx").is_file()
    # Re-validating the same run with a budget above its drop passes and updates status everywhere.
    budget = f"{rep['drop']['int8.ort'] + 0.5:.2f}"
    proc = cli("validate", run_dir, "--val", data.val, "--max-drop", budget)
    assert proc.returncode == 0, proc.stderr
    assert report(run_dir)["status"] == "passed"
    assert cli("verify", run_dir).returncode == 0
    proc = cli("validate", run_dir, "--val", data.val, "--max-drop", "0")
    assert proc.returncode == 3
    # The boundary: a drop exactly equal to the allowed maximum passes.
    drop = report(run_dir)["drop"]["int8.ort"]
    proc = cli("validate", run_dir, "--val", data.val, "--max-drop", repr(drop))
    assert proc.returncode == 0, proc.stderr
    assert report(run_dir)["status"] == "passed"


def test_int8_without_validation_is_unvalidated_not_passed(trained_fixture: Fixture, tmp_path: Path) -> None:
    data = trained_fixture[0]
    proc = cli(
        "export", "--int8", "--target", "ort", *model_args(trained_fixture),
        "--calib", data.calib, "--out", tmp_path, "--name", "nv",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "unvalidated" in proc.stdout
    assert report(tmp_path / "nv")["status"] == "unvalidated"
    assert report(tmp_path / "nv").get("accuracy") in ({}, None)
    assert json.loads((tmp_path / "nv" / "manifest.json").read_text())["status"] == "unvalidated"


def test_unlabelled_validation_reports_agreement(
    int8_run: Path, trained_fixture: Fixture, tmp_path: Path
) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, (path, _label) in enumerate(trained_fixture[0].samples("val")[::5]):
        shutil.copy(path, flat / f"{i:04d}.png")
    copy = tmp_path / "run"
    shutil.copytree(int8_run, copy)
    proc = cli("validate", copy, "--val", flat, "--max-drop", "100")
    assert proc.returncode == 0, proc.stderr
    rep = report(copy)
    assert rep["accuracy"] == {}
    assert rep["validation"]["labelled"] is False
    assert 90.0 <= rep["agreement"]["int8.ort"] <= 100.0
    assert rep["drop"]["int8.ort"] == pytest.approx(100.0 - rep["agreement"]["int8.ort"])


def test_config_file_carries_options_and_flags_override(trained_fixture: Fixture, tmp_path: Path) -> None:
    _data, result, checkpoint = trained_fixture
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'model = "{result.model_name}"\nimg_size = {result.img_size}\nnum_classes = {len(result.classes)}\n'
        f'checkpoint = "{checkpoint}"\ntarget = "onnx"\nout = "runs"\nname = "from-config"\nopset = 13\n'
    )
    proc = cli("export", "--config", cfg, "--opset", "17")
    assert proc.returncode == 0, proc.stderr
    model = onnx.load(str(tmp_path / "runs" / "from-config" / "model.fp32.onnx"))
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    cfg.write_text(cfg.read_text() + "colour = 3\n")
    proc = cli("export", "--config", cfg)
    assert proc.returncode == 1
    assert "unknown key 'colour'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--int8", "--target", "ort"], "--int8 needs calibration images"),
        (["--target", "trt"], "add --int8"),
        (["--target", "tpu"], "Invalid value for '--target'"),  # a bad choice is a usage error (exit 2)
        (["--calib-method", "kmeans", "--int8", "--calib", "."], "Invalid value for '--calib-method'"),
        (["--max-drop", "-1"], "--max-drop must be a non-negative"),
        (["--val", "/nonexistent/val"], "data path not found"),
    ],
)
def test_bad_int8_options_fail_in_one_line(
    trained_fixture: Fixture, tmp_path: Path, extra: list[str], message: str
) -> None:
    proc = cli("export", *model_args(trained_fixture), *extra, "--out", tmp_path, "--name", "x")
    lines = proc.stderr.strip().splitlines()
    if message.startswith("Invalid value"):
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and message in lines[-1], proc.stderr
    else:
        assert proc.returncode == 1, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr
    assert not (tmp_path / "x").exists()
    assert not list(tmp_path.glob(".x.partial-*"))


def test_corrupt_calibration_image_named_or_skipped(trained_fixture: Fixture, tmp_path: Path) -> None:
    data = trained_fixture[0]
    calib = tmp_path / "calib"
    shutil.copytree(data.calib, calib)
    bad = sorted(calib.rglob("*.png"))[3]
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    args = ["export", "--int8", "--target", "ort", *model_args(trained_fixture), "--calib", calib]
    proc = cli(*args, "--out", tmp_path, "--name", "bad")
    assert proc.returncode == 1
    assert bad.name in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad").exists()
    proc = cli(*args, "--skip-bad", "--out", tmp_path, "--name", "skipped")
    assert proc.returncode == 0, proc.stderr
    assert report(tmp_path / "skipped")["calibration"]["skipped"] == 1


def test_calibration_ranges_match_an_independent_pass(int8_run: Path, trained_fixture: Fixture) -> None:
    """calibration.json's MinMax ranges, recomputed here: every float tensor of the FP32 model exposed as
    an output, ONNX Runtime over every calibration image, numpy min/max over all of them."""
    data = trained_fixture[0]
    cal = json.loads((int8_run / "calibration.json").read_text())
    files = sorted(data.calib.rglob("*.png"))
    assert cal["method"] == "minmax" and cal["count"] == len(files) and cal["skipped"] == 0
    model = onnx.shape_inference.infer_shapes(onnx.load(str(int8_run / "model.fp32.onnx")))
    floats = {
        v.name
        for v in model.graph.value_info
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and v.name in cal["ranges"]
    }
    assert len(floats) > 50, "the FP32 graph should expose its activations"
    del model.graph.output[:]
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in sorted(floats)
    )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    pre = json.loads({p.key: p.value for p in model.metadata_props}["levit_edge.preprocess"])
    transform = PreprocessConfig.from_dict(pre).transform()
    names = [o.name for o in session.get_outputs()]
    lo = dict.fromkeys(names, np.inf)
    hi = dict.fromkeys(names, -np.inf)
    for start in range(0, len(files), 50):
        images = np.stack([transform(Image.open(f)) for f in files[start : start + 50]]).astype(np.float32)
        for name, value in zip(names, session.run(None, {"images": images}), strict=True):
            lo[name], hi[name] = min(lo[name], float(value.min())), max(hi[name], float(value.max()))
    for name in names:
        want = (lo[name], hi[name])
        got = tuple(cal["ranges"][name])
        scale = max(abs(want[0]), abs(want[1]), 1e-6)
        assert got == pytest.approx(want, abs=1e-4 * scale), name
