"""The success paths a new user takes first: ``levit-edge demo`` end to end, then ``check-trt`` and ``bench``
on the run it made (the README Quickstart's main job, with the test fixture's cache so nothing retrains)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import helpers
import pytest

from levit_edge.fixture.common import DatasetPaths, FixtureResult
from levit_edge.runs.manifest import verify_manifest

Fixture = tuple[DatasetPaths, FixtureResult, Path]
pytestmark = pytest.mark.slow


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return helpers.cli(*args, timeout=900, columns=80)


def test_demo_then_check_trt_and_bench(trained_fixture: Fixture, tmp_path: Path) -> None:
    cache = trained_fixture[2].parent.parent  # the fixture cache root: the demo reuses the trained model
    proc = cli("demo", "--cache", cache, "--out", tmp_path, "--name", "d", "--json")
    run = tmp_path / "d"
    # exit 0, or 4 where the engine cannot be built here (the demo asks for every target)
    assert proc.returncode in (0, 4), proc.stderr[-3000:]
    document = json.loads(proc.stdout)
    report = json.loads((run / "report.json").read_text())
    assert document["status"] == report["status"] in ("passed", "no-engine")
    # the demo's accuracy figures: a trained model, INT8 within the gate it reports
    assert report["accuracy"]["fp32"]["top1"] > 100 / len(trained_fixture[1].classes) * 5
    for artifact in ("int8.ort", "int8.trt"):
        assert report["drop"][artifact] <= report["thresholds"]["max_drop"]
    assert verify_manifest(run) == []

    proc = cli("check-trt", run / "model.int8.trt.onnx", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checked = json.loads(proc.stdout)
    assert checked["violations"] == [] and checked["status"] == "ok"
    assert checked["quantize_linear"] > 0 and checked["dequantize_linear"] >= checked["quantize_linear"]

    proc = cli(
        "bench", run, "--batches", "1", "--threads", "1", "--rounds", "1", "--repeat", "2", "--warmup", "1",
        "--no-torch", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)["results"]
    assert {"fp32", "int8.ort", "int8.trt"} <= {r["variant"] for r in rows}
    assert all(
        r["threads_used"] == 1 and r["p50_ms"] > 0 for r in rows if r["variant"].startswith(("fp32", "int8"))
    )
    saved = json.loads((run / "report.json").read_text())["bench"]["results"]
    assert {r["variant"] for r in saved} == {r["variant"] for r in rows}
    assert verify_manifest(run) == []  # bench re-hashed what it wrote, and only that
