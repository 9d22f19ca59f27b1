"""Firmware deliverables: ORT-format models, reduced-build operator configs, the example pipeline script.

Two full exports in this module, both through ``examples/firmware_pipeline.sh`` on the trained fixture: one
that delivers (INT8 + ``ort_format_fp32``), one whose accuracy gate fails. Everything else reuses them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import miscalibration_set
from PIL import Image

from levit_edge.data.preprocess import PreprocessConfig
from levit_edge.errors import UserError
from levit_edge.export.ort_format import (
    OPS_CONFIG,
    TYPES_CONFIG,
    convert_to_ort,
    is_firmware_file,
    ort_file_name,
    parse_config,
)
from levit_edge.fixture.common import DatasetPaths, FixtureResult
from levit_edge.inspect import inspect_path
from levit_edge.io import sha256_file
from levit_edge.runs.manifest import verify_manifest
from levit_edge.settings import Targets, load_config

Fixture = tuple[DatasetPaths, FixtureResult, Path]
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "firmware_pipeline.sh"
FIRMWARE = ("model.int8.ort", "model.fp32.ort", OPS_CONFIG, TYPES_CONFIG)


@dataclass(frozen=True)
class ScriptRun:
    proc: subprocess.CompletedProcess[str]
    run_dir: Path
    dest: Path


def write_config(path: Path, fx: Fixture, calib: Path, **extra: object) -> Path:
    """A TOML config as a pipeline would keep it under review (relative paths resolve against it)."""
    data, result, checkpoint = fx
    values: dict[str, object] = {
        "model": result.model_name,
        "img_size": result.img_size,
        "num_classes": len(result.classes),
        "checkpoint": str(checkpoint),
        "target": "ort",
        "int8": True,
        "calib": str(calib),
        "val": str(data.val),
        **extra,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]  # JSON scalars are valid TOML here
    path.write_text("\n".join(lines) + "\n")
    return path


def run_script(*args: str | Path, runs: Path, name: str = "fw") -> subprocess.CompletedProcess[str]:
    """The example script as a CI job runs it: levit-edge from the virtual environment on PATH."""
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHON": sys.executable,
        "RUNS_DIR": str(runs),
        "RUN_NAME": name,
        "COLUMNS": "200",
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    code = "from levit_edge.cli.app import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


@pytest.fixture(scope="module")
def delivered(trained_fixture: Fixture, tmp_path_factory: pytest.TempPathFactory) -> ScriptRun:
    root = tmp_path_factory.mktemp("firmware")
    config = write_config(
        root / "edge.toml", trained_fixture, trained_fixture[0].calib, max_drop=1.0, ort_format_fp32=True
    )
    proc = run_script(config, root / "deliver", runs=root / "runs")
    return ScriptRun(proc, root / "runs" / "fw", root / "deliver")


def val_images(model_path: Path, data: DatasetPaths) -> np.ndarray:
    """The validation images preprocessed here, from the model's own metadata (not levit-edge's loader)."""
    model = onnx.load(str(model_path), load_external_data=False)
    pre = json.loads({p.key: p.value for p in model.metadata_props}["levit_edge.preprocess"])
    transform = PreprocessConfig.from_dict(pre).transform()
    return np.stack([transform(Image.open(path)) for path, _ in data.samples("val")]).astype(np.float32)


def run_model(path: Path, images: np.ndarray, no_nchwc: bool = False) -> np.ndarray:
    """Logits of ``path`` on ``images`` with default session options (optionally without NCHWc)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(
        str(path),
        opts,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=["NchwcTransformer"] if no_nchwc else None,
    )
    return np.concatenate(
        [sess.run(None, {"images": images[i : i + 50]})[0] for i in range(0, len(images), 50)]
    )


def config_ops(path: Path) -> set[tuple[str, str]]:
    """(domain, op) pairs of an untyped reduced-build config, parsed here with plain string splits."""
    out = set()
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            domain, _opset, ops = line.split(";")
            out.update((domain, op) for op in ops.split(","))
    return out


def optimized_ops(model: Path, work: Path) -> tuple[set[tuple[str, str]], dict[str, int]]:
    """(domain, op) pairs of the graph ONNX Runtime runs, saved as ONNX with the conversion's settings
    (all optimizations, no x86-only NCHWc, generic QDQ handling), and the model's opset per domain."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(work / f"{model.stem}.optimized.onnx")
    opts.add_session_config_entry("session.qdqisint8allowed", "0")
    ort.InferenceSession(
        str(model), opts, providers=["CPUExecutionProvider"], disabled_optimizers=["NchwcTransformer"]
    )
    graph = onnx.load(opts.optimized_model_filepath)
    ops = {(n.domain or "ai.onnx", n.op_type) for n in graph.graph.node}
    return ops, {(o.domain or "ai.onnx"): o.version for o in graph.opset_import}


def manifest(run_dir: Path) -> dict[str, dict[str, object]]:
    files: dict[str, dict[str, object]] = json.loads((run_dir / "manifest.json").read_text())["files"]
    return files


# ---- the delivering run ----------------------------------------------------------------------------------


def test_script_delivers_verified_files(delivered: ScriptRun) -> None:
    proc = delivered.proc
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "==> delivered to" in proc.stdout
    expected = {*FIRMWARE, "manifest.json", "report.json", "report.html", "report.md", "SHA256SUMS"}
    assert {p.name for p in delivered.dest.iterdir()} == expected
    listed = manifest(delivered.dest)
    assert listed == manifest(delivered.run_dir)
    for name in expected - {"manifest.json", "SHA256SUMS"}:
        assert listed[name]["sha256"] == sha256_file(delivered.dest / name), name
        assert listed[name]["size"] == (delivered.dest / name).stat().st_size, name
    sums = dict(line.split("  ")[::-1] for line in (delivered.dest / "SHA256SUMS").read_text().splitlines())
    assert sums == {n: listed[n]["sha256"] for n in expected - {"manifest.json", "SHA256SUMS"}}


def test_manifest_records_firmware_files(delivered: ScriptRun) -> None:
    listed = manifest(delivered.run_dir)
    for name in FIRMWARE:
        assert listed[name]["sha256"] == sha256_file(delivered.run_dir / name), name
    on_disk = {p.name for p in delivered.run_dir.iterdir() if p.name != "manifest.json"}
    assert set(listed) == on_disk
    assert verify_manifest(delivered.run_dir) == []


def test_ort_models_give_the_onnx_outputs_on_validation(
    delivered: ScriptRun, trained_fixture: Fixture
) -> None:
    run = delivered.run_dir
    images = val_images(run / "model.fp32.onnx", trained_fixture[0])
    for ort_name, onnx_name in (
        ("model.int8.ort", "model.int8.ort.onnx"),
        ("model.fp32.ort", "model.fp32.onnx"),
    ):
        fmt = run_model(run / ort_name, images)
        # ONNX Runtime lays float convolutions out as NCHWc when it loads a .onnx on x86, differently on
        # AVX2 and AVX-512 machines; the portable .ort has no NCHWc. Against the source model loaded with
        # the same graph (no NCHWc) the outputs must be the very same numbers, on any CPU.
        ref = run_model(run / onnx_name, images, no_nchwc=True)
        assert fmt.shape == ref.shape == (len(images), len(trained_fixture[1].classes))
        assert np.array_equal(fmt, ref), (ort_name, float(np.abs(fmt - ref).max()))


def test_required_operators_are_the_models_operators(delivered: ScriptRun, tmp_path: Path) -> None:
    run = delivered.run_dir
    ops: set[tuple[str, str]] = set()
    opsets: dict[str, int] = {}
    for source in ("model.int8.ort.onnx", "model.fp32.onnx"):
        model_ops, model_opsets = optimized_ops(run / source, tmp_path)
        ops |= model_ops
        opsets.update(model_opsets)
    assert config_ops(run / OPS_CONFIG) == ops
    assert ("com.microsoft", "QGemm") in ops, "INT8 linears should run as fused QGemm"
    typed = parse_config((run / TYPES_CONFIG).read_text())
    assert {(o.domain, o.op) for o in typed} == ops
    for op in typed:  # kernel opsets (the version an op was introduced in) never exceed the model's opset
        assert op.opset <= opsets[op.domain], op
    types = {o.op: o.types for o in typed}
    assert types["QuantizeLinear"] == {"outputs": {"0": ["uint8_t"]}}
    assert types["Conv"] == {"inputs": {"0": ["float"]}}
    # Determinism: the configs carry file names, never the converter's temporary paths.
    header = [line for line in (run / OPS_CONFIG).read_text().splitlines() if line.startswith("# - ")]
    assert header == ["# - model.fp32.ort", "# - model.int8.ort"]


def test_report_states_what_a_reduced_build_needs(delivered: ScriptRun, trained_fixture: Fixture) -> None:
    rep = json.loads((delivered.run_dir / "report.json").read_text())
    fw = rep["firmware"]
    assert fw["optimization_style"] == "Fixed" and fw["type_reduction"] is True
    assert set(fw["models"]) == {"model.int8.ort", "model.fp32.ort"}
    for name, entry in fw["models"].items():
        assert entry["size"] == (delivered.run_dir / name).stat().st_size
        assert entry["source_size"] == (delivered.run_dir / entry["source"]).stat().st_size
    assert fw["models"]["model.int8.ort"]["check"]["identical"] is True
    assert (
        fw["operator_count"]
        == len(fw["operators"])
        == len(parse_config((delivered.run_dir / TYPES_CONFIG).read_text()))
    )
    assert set(fw["domains"]) == {"ai.onnx", "com.microsoft"}
    n_val = len(trained_fixture[0].samples("val"))
    for name in ("model.int8.ort", "model.fp32.ort"):
        assert fw["parity"][name]["n"] == n_val
        assert fw["parity"][name]["argmax_agreement"] == 100.0
    assert "--minimal_build" in fw["build"] and f"--include_ops_by_config {TYPES_CONFIG}" in fw["build"]
    assert "--enable_reduced_operator_type_support" in fw["build"]
    # The ORT-format runs stay out of the gated artifacts; the stage is timed.
    assert set(rep["accuracy"]) == {"fp32", "int8.ort"}
    assert "ort-format" in rep["stages"]
    md = (delivered.run_dir / "report.md").read_text()
    assert "Firmware deliverables (ONNX Runtime format)" in md and "| com.microsoft | 1 | QGemm |" in md
    assert "Firmware deliverables" in (delivered.run_dir / "report.html").read_text()


def test_inspect_lists_deliverables(delivered: ScriptRun) -> None:
    info = inspect_path(delivered.run_dir)
    assert sorted(info["firmware"]) == sorted(FIRMWARE)
    assert info["files"]["model.int8.ort"]["sha256"] == sha256_file(delivered.run_dir / "model.int8.ort")
    proc = cli("inspect", delivered.run_dir)
    assert proc.returncode == 0, proc.stderr
    assert "firmware" in proc.stdout and "(4 firmware)" in proc.stdout

    ort_path = delivered.dest / "model.int8.ort"
    info = inspect_path(ort_path)
    assert info["kind"] == "ort-format" and info["sha256"] == sha256_file(ort_path)
    assert info["size"] == ort_path.stat().st_size
    assert info["inputs"][0]["name"] == "images" and info["metadata"]["levit_edge.model"]
    assert {(o["domain"], o["op"]) for o in info["operators"]} <= config_ops(delivered.dest / OPS_CONFIG)
    proc = cli("inspect", ort_path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sha256"] == info["sha256"]  # stdout is exactly one JSON document


def test_conversion_is_repeatable(delivered: ScriptRun, tmp_path: Path) -> None:
    """Configs are byte-identical across conversions; .ort bytes need not be (ONNX Runtime's writer), but
    the models compute the same numbers."""
    source = delivered.run_dir / "model.int8.ort.onnx"
    images = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    results = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        results.append(convert_to_ort({"int8.ort": source}, tmp_path / str(i), images, threads=1))
    for name in (OPS_CONFIG, TYPES_CONFIG):
        assert (tmp_path / "0" / name).read_bytes() == (tmp_path / "1" / name).read_bytes()
    outs = [run_model(r.models[0].path, images) for r in results]
    assert np.array_equal(outs[0], outs[1])
    assert results[0].operators == results[1].operators
    assert all(r.models[0].check["identical"] for r in results)


# ---- the gate-failure run and fast failures -------------------------------------------------------------


def test_script_gate_failure_exits_3_and_delivers_nothing(trained_fixture: Fixture, tmp_path: Path) -> None:
    """Ranges 1000x too wide (helpers.miscalibration_set) cost most of the accuracy on any CPU."""
    bad = miscalibration_set(tmp_path / "bad.npy", trained_fixture[1].img_size)
    config = write_config(tmp_path / "edge.toml", trained_fixture, bad, max_drop=1)
    proc = run_script(config, tmp_path / "deliver", runs=tmp_path / "runs", name="gated")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "FAILED: accuracy gate" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "deliver").exists()
    run = tmp_path / "runs" / "gated"
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed-accuracy"
    assert (run / "model.int8.ort").is_file(), "artifacts are kept for review"


def test_script_usage_and_bad_config(trained_fixture: Fixture, tmp_path: Path) -> None:
    assert run_script(runs=tmp_path).returncode == 2
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "old.bin").write_bytes(b"x")
    proc = run_script(tmp_path / "edge.toml", busy, runs=tmp_path / "runs")
    assert proc.returncode == 1 and "not empty" in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('target = "onnx"\nort_format_fp32 = true\n')
    proc = run_script(bad, tmp_path / "d", runs=tmp_path / "runs")
    assert proc.returncode == 1 and "--ort-format-fp32" in proc.stderr
    assert "FAILED: bad input or config" in proc.stderr
    assert not (tmp_path / "d").exists()


# ---- units -------------------------------------------------------------------------------------------------


def test_parse_config_reads_types_with_commas() -> None:
    text = (
        "# Generated from model/s:\n# - m.ort\n"
        'ai.onnx;13;DequantizeLinear{"inputs": {"0": ["int8_t", "uint8_t"]}},Reshape,'
        'Slice{"inputs": {"0": ["float"], "1": ["int64_t"]}}\n'
        "com.microsoft;1;QGemm\n"
        "ai.onnx;11,12;Conv\n"
    )
    ops = parse_config(text)
    assert [(o.domain, o.opset, o.op) for o in ops] == [
        ("ai.onnx", 13, "DequantizeLinear"),
        ("ai.onnx", 13, "Reshape"),
        ("ai.onnx", 13, "Slice"),
        ("com.microsoft", 1, "QGemm"),
        ("ai.onnx", 11, "Conv"),
        ("ai.onnx", 12, "Conv"),
    ]
    assert ops[0].types == {"inputs": {"0": ["int8_t", "uint8_t"]}}
    assert ops[2].types_text() == "in0: float; in1: int64_t"
    assert ops[1].types is None and ops[1].types_text() == ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [("model.int8.ort.onnx", "model.int8.ort"), ("model.fp32.onnx", "model.fp32.ort"), ("m.onnx", "m.ort")],
)
def test_ort_file_name(name: str, expected: str) -> None:
    assert ort_file_name(name) == expected


def test_firmware_files_and_settings(tmp_path: Path) -> None:
    names: Iterable[str] = (
        "model.int8.ort",
        OPS_CONFIG,
        TYPES_CONFIG,
        "required_operators.with_runtime_opt.config",
    )
    assert all(is_firmware_file(n) for n in names)
    assert not any(is_firmware_file(n) for n in ("model.int8.ort.onnx", "report.json", "calibration.json"))
    assert Targets.parse("ort", True).ort_format and not Targets.parse("ort", True).ort_format_fp32
    assert Targets.parse("all", False, ort_format_fp32=True).ort_format
    assert not Targets.parse("onnx", False).ort_format
    with pytest.raises(UserError, match="--ort-format-fp32"):
        Targets.parse("trt", True, ort_format_fp32=True)
    config = tmp_path / "c.toml"
    config.write_text("ort_format_fp32 = true\n")
    assert load_config(config) == {"ort_format_fp32": True}
    config.write_text('ort_format_fp32 = "yes"\n')
    with pytest.raises(UserError, match="must be bool"):
        load_config(config)
