"""Accuracy-aware INT8 on the trained fixture: sensitivity, fallback until the budget fits, debug.

A deliberately weak calibration (the first two images of one class, the skew a class-sorted listing
gives) costs about 1 top-1 point on the ONNX Runtime profile and about 3.5 on the TensorRT profile here,
so a 0.5 point budget forces the fallback on both. Three real exports in all: the forced fallback (once
per module, reused by the library-level tests), a budget met at once and an impossible budget.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from levit_edge.data.open_source import open_source
from levit_edge.data.sources import DataSpec
from levit_edge.errors import UserError
from levit_edge.export.metadata import preprocess_from_onnx
from levit_edge.fixture.common import DatasetPaths, FixtureResult
from levit_edge.quant import sensitivity
from levit_edge.quant.calibrate import Calibration
from levit_edge.quant.fallback import qdq_sqnr, tune_ranges
from levit_edge.quant.profiles import ORT_PROFILE, PROFILES, TRT_PROFILE
from levit_edge.quant.quantize import quantize
from levit_edge.quant.trt_rules import check_trt_ready
from levit_edge.settings import FallbackSettings, load_config

Fixture = tuple[DatasetPaths, FixtureResult, Path]
BUDGET = 0.5
WEAK_CLASS = "gradient"  # smooth images: ranges from them are far too narrow for the textured classes


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess."""
    code = "from levit_edge.cli.app import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=900,
    )


def export(fx: Fixture, calib: Path, out: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    data, result, checkpoint = fx
    return cli(
        "export",
        "--int8",
        "--no-engine",
        "--model",
        result.model_name,
        "--img-size",
        str(result.img_size),
        "--num-classes",
        str(len(result.classes)),
        "--checkpoint",
        checkpoint,
        "--calib",
        calib,
        "--val",
        data.val,
        "--out",
        out,
        "--name",
        name,
        *extra,
    )


def report(run: Path) -> dict[str, Any]:
    return json.loads((run / "report.json").read_text())


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def plain_bytes(run: Path, key: str, tmp: Path) -> bytes:
    """The all-quantized model, rebuilt from the run's own FP32 model and calibration.json."""
    profile = PROFILES[metadata(run / f"model.{key}.onnx")["levit_edge.quant_profile"]]
    out = tmp / f"plain.{key}.onnx"
    quantize(run / "model.fp32.onnx", Calibration.load(run / "calibration.json"), profile, out)
    return out.read_bytes()


@pytest.fixture(scope="module")
def weak_calib(trained_fixture: Fixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weak") / WEAK_CLASS
    folder.mkdir()
    for image in sorted((trained_fixture[0].calib / WEAK_CLASS).glob("*.png"))[:2]:
        shutil.copy(image, folder / image.name)
    return folder


@pytest.fixture(scope="module")
def fallback_run(
    trained_fixture: Fixture, weak_calib: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("fallback")
    proc = export(
        trained_fixture, weak_calib, out, "run", "--target", "all", "--accuracy-budget", str(BUDGET)
    )
    return out / "run", proc


# ---- the forced fallback ------------------------------------------------------------------------------


def test_budget_forces_fallback_on_both_targets(fallback_run: tuple[Path, Any]) -> None:
    run, proc = fallback_run
    assert proc.returncode == 0, proc.stderr
    rep = report(run)
    assert rep["status"] == "passed"
    assert rep["thresholds"]["max_drop"] == BUDGET  # the budget is the gate
    assert "layer(s) in float" in proc.stdout
    for key in ("int8.ort", "int8.trt"):
        steps = [s for s in rep["fallback"] if s["artifact"] == key]
        assert steps[0]["action"] == "all-quantized" and steps[0]["drop"] > BUDGET, "precondition: weak calib"
        chosen = [s for s in steps if s["chosen"]]
        assert len(chosen) == 1 and chosen[0]["meets_budget"] and chosen[0]["float_layers"]
        assert all(
            not s["meets_budget"] for s in steps if len(s["float_layers"]) < len(chosen[0]["float_layers"])
        )
        for s in steps:
            assert {"step", "float_layers", "top1", "drop", "size", "latency_ms"} <= s.keys()
            assert s["size"] > 0 and s["latency_ms"] > 0
        # the pipeline's own validation of the promoted file agrees with the loop's measurement
        assert rep["drop"][key] == pytest.approx(chosen[0]["drop"], abs=1e-9)
        info = rep["accuracy_budget"]["artifacts"][key]
        assert info["met"] and info["promoted"] and info["float_layers"] == chosen[0]["float_layers"]
        model = run / f"model.{key}.onnx"
        assert json.loads(metadata(model)["levit_edge.float_nodes"]) == chosen[0]["float_layers"]
        qdq = onnx.load(str(model))
        producer = {o: n.op_type for n in qdq.graph.node for o in n.output}
        floats = set(chosen[0]["float_layers"])
        for node in qdq.graph.node:
            if node.name in floats:  # float layers lost their Q/DQ
                assert all(producer.get(i) != "DequantizeLinear" for i in node.input), node.name
        rows = [r for r in rep["sensitivity"] if r["artifact"] == key]
        assert rows and {"node", "sqnr_db", "agreement_delta", "kl", "rank"} <= rows[0].keys()
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        # the fallback floats a prefix of the ranking
        ranked = [r["node"] for r in rows]
        assert chosen[0]["float_layers"] == ranked[: len(chosen[0]["float_layers"])]
    assert check_trt_ready(run / "model.int8.trt.onnx") == []
    html = (run / "report.html").read_text()
    assert "Fallback" in html and "Layer sensitivity" in html
    assert cli("verify", run).returncode == 0


def test_float_only_equals_requantizing_with_exclude(fallback_run: tuple[Path, Any], tmp_path: Path) -> None:
    """The cheap per-layer variant of the ranking is exactly what quantize(exclude=...) produces."""
    run, _ = fallback_run
    fp32_path = run / "model.fp32.onnx"
    fp32 = onnx.load(str(fp32_path))
    calibration = Calibration.load(run / "calibration.json")
    images = np.random.default_rng(0).standard_normal((8, *preprocess_from_onnx(fp32_path)[0].input_size))
    batches = [images.astype(np.float32)]
    for key, profile in (("int8.ort", ORT_PROFILE), ("int8.trt", TRT_PROFILE)):
        path = run / f"model.{key}.onnx"
        qdq = onnx.load(str(path))
        already = json.loads(metadata(path)["levit_edge.float_nodes"])
        nodes = sensitivity.quantized_nodes(qdq, profile, fp32)
        assert not set(already) & set(nodes)
        pick = [nodes[0], nodes[len(nodes) // 2]]
        surgery = sensitivity.run_logits(
            sensitivity.float_only(qdq, fp32, pick, profile).SerializeToString(), batches, 1
        )
        out = tmp_path / f"{key}.onnx"
        quantize(fp32_path, calibration, profile, out, exclude=[*already, *pick])
        np.testing.assert_array_equal(surgery, sensitivity.run_logits(out, batches, 1))


def test_debug_prints_ranking_and_saves_it(fallback_run: tuple[Path, Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(fallback_run[0], run)
    proc = cli("debug", run, "--rank-images", "32", "--samples", "2", "--top", "3")
    assert proc.returncode == 0, proc.stderr
    assert "int8.ort (ort profile)" in proc.stdout and "int8.trt (trt profile)" in proc.stdout
    assert "most harmful layer" in proc.stdout
    rep = report(run)
    assert {i["rank_images"] for i in rep["sensitivity_info"]} == {32}
    assert {r["artifact"] for r in rep["sensitivity"]} == {"int8.ort", "int8.trt"}
    assert cli("verify", run).returncode == 0  # re-hashed after the report changed
    missing = cli("debug", tmp_path / "nowhere")
    assert missing.returncode == 1 and missing.stderr.startswith("error:")


def test_tune_ranges_repairs_a_spoiled_range(fallback_run: tuple[Path, Any], weak_calib: Path) -> None:
    run, _ = fallback_run
    fp32_path = run / "model.fp32.onnx"
    calibration = Calibration.load(run / "calibration.json")
    qdq = onnx.load(str(run / "model.int8.trt.onnx"))
    fp32 = onnx.load(str(fp32_path))
    node = sensitivity.quantized_nodes(qdq, TRT_PROFILE, fp32)[3]
    tensor = sensitivity.quantized_inputs(qdq, [node])[node][0]
    lo, hi = calibration.ranges[tensor]
    spoiled = dataclasses.replace(calibration, ranges={**calibration.ranges, tensor: (lo * 50, hi * 50)})
    preprocess = preprocess_from_onnx(fp32_path)[0]
    images = sensitivity.load_images(open_source(DataSpec(weak_calib)).batches(preprocess, 8))
    tuned, changed = tune_ranges(fp32_path, spoiled, TRT_PROFILE, [tensor], images)
    assert tensor in changed and changed[tensor]["method"] != "calibration (minmax)"
    assert changed[tensor]["sqnr_db"] > changed[tensor]["was_sqnr_db"] + 10
    assert max(map(abs, tuned.ranges[tensor])) < max(abs(lo), abs(hi)) * 5
    assert {t: r for t, r in tuned.ranges.items() if t != tensor} == {
        t: r for t, r in spoiled.ranges.items() if t != tensor
    }


def test_qdq_sqnr_prefers_clipping_rare_outliers() -> None:
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    x[:3] = 400.0  # three outliers stretch a min/max range 100-fold
    full = qdq_sqnr(x, float(x.min()), float(x.max()), TRT_PROFILE)
    clipped = qdq_sqnr(x, -4.0, 4.0, TRT_PROFILE)
    assert np.isfinite(full) and np.isfinite(clipped)
    assert qdq_sqnr(x, 0.0, 0.0, ORT_PROFILE) == -np.inf
    assert qdq_sqnr(x[3:], -4.0, 4.0, ORT_PROFILE) > qdq_sqnr(x[3:], -400.0, 400.0, ORT_PROFILE) + 20


# ---- budget met at once; impossible budget --------------------------------------------------------------


def test_budget_met_at_once_changes_nothing(
    trained_fixture: Fixture, weak_calib: Path, tmp_path: Path
) -> None:
    proc = export(trained_fixture, weak_calib, tmp_path, "easy", "--target", "ort", "--accuracy-budget", "5")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "easy"
    rep = report(run)
    assert rep["status"] == "passed"
    assert [s["step"] for s in rep["fallback"]] == [0] and rep["fallback"][0]["chosen"]
    assert "sensitivity" not in rep  # nothing to rank when every layer may stay quantized
    assert not rep["accuracy_budget"]["artifacts"]["int8.ort"]["promoted"]
    assert (run / "model.int8.ort.onnx").read_bytes() == plain_bytes(run, "int8.ort", tmp_path)


def test_impossible_budget_exits_3_and_promotes_nothing(
    trained_fixture: Fixture, weak_calib: Path, tmp_path: Path
) -> None:
    proc = export(
        trained_fixture,
        weak_calib,
        tmp_path,
        "hard",
        "--target",
        "ort",
        "--accuracy-budget",
        "0",
        "--max-float-layers",
        "1",
    )
    run = tmp_path / "hard"
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0]  # one error line, last
    # off a terminal --accuracy-budget prints a line per stage and per fallback step, naming float layers
    assert "stage fallback" in lines
    assert any(
        re.match(r"int8\.ort step \d+ \(float\): 1 layer\(s\) in float \[.+\]: drop ", x) for x in lines
    )
    err = errors[0]
    assert err.startswith("error: accuracy gate failed (int8.ort: accuracy budget 0 not met")
    assert "--max-float-layers 1" in err and "kept the all-quantized model" in err
    rep = report(run)
    assert rep["status"] == "failed-accuracy"
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed-accuracy"
    info = rep["accuracy_budget"]["artifacts"]["int8.ort"]
    assert not info["met"] and not info["promoted"]
    steps = rep["fallback"]
    assert steps[0]["drop"] > 0 and not any(s["chosen"] for s in steps)
    assert max(len(s["float_layers"]) for s in steps) == 1
    # nothing promoted: the run keeps exactly the all-quantized model, and its numbers in the report
    assert (run / "model.int8.ort.onnx").read_bytes() == plain_bytes(run, "int8.ort", tmp_path)
    assert rep["drop"]["int8.ort"] == pytest.approx(steps[0]["drop"], abs=1e-9)
    assert cli("verify", run).returncode == 0


# ---- settings ----------------------------------------------------------------------------------------


def test_fallback_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--accuracy-budget"):
        FallbackSettings(budget=-1.0)
    with pytest.raises(UserError, match="--accuracy-budget"):
        FallbackSettings(budget=float("nan"))
    with pytest.raises(UserError, match="--max-float-layers"):
        FallbackSettings(budget=1.0, max_float_layers=-1)
    assert not FallbackSettings().enabled and FallbackSettings(budget=0.0).enabled
    config = tmp_path / "c.toml"
    config.write_text("accuracy_budget = 0.5\nmax_float_layers = 4\n")
    assert load_config(config) == {"accuracy_budget": 0.5, "max_float_layers": 4}
    config.write_text('max_float_layers = "four"\n')
    with pytest.raises(UserError, match="max_float_layers"):
        load_config(config)


def test_budget_needs_validation_images(trained_fixture: Fixture, weak_calib: Path, tmp_path: Path) -> None:
    _data, result, checkpoint = trained_fixture
    proc = cli(
        "export",
        "--int8",
        "--target",
        "ort",
        "--model",
        result.model_name,
        "--checkpoint",
        checkpoint,
        "--calib",
        weak_calib,
        "--accuracy-budget",
        "1",
        "--out",
        tmp_path,
    )
    assert proc.returncode == 1
    assert "--accuracy-budget needs --int8 and validation images (--val)" in proc.stderr
    assert not any(tmp_path.iterdir())
